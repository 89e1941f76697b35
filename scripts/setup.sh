#!/usr/bin/env bash
# Turns a fresh Debian 12 machine into one that builds, tests and demos Panoptes.
# Idempotent: every step checks first and is quick when already done.
#   - Debian packages: GStreamer 1.22 (dev + plugins + RTSP server), redis-server, kcat, build tools
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

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  log "no Rust toolchain found: install rustup (https://rustup.rs) and re-run"
  exit 1
fi
log "setup complete"
