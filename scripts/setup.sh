#!/usr/bin/env bash
# Turns a fresh Debian 12 machine into one that builds, tests and demos Panoptes.
# Idempotent: every step checks first and is quick when already done.
#   - Debian packages: GStreamer 1.22 (dev + plugins + RTSP server), redis-server, kcat, build tools,
#     prometheus (promtool and the server, for loadtest/tests/observability.rs)
#   - a Python virtual environment (.venv) with the PyTorch 2.11.0 wheel, whose libtorch the worker links
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
VENV=.venv
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

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  log "no Rust toolchain found: install rustup (https://rustup.rs) and re-run"
  exit 1
fi
log "setup complete"
