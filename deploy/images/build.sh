#!/usr/bin/env bash
# Builds the Panoptes images on a machine without an image registry, from binaries that are
# already built (nothing is compiled here):
#   panoptes/coordinator  panoptes-coordinator, the panoptes CLI, panoptes-redis-acl
#   panoptes/ingest       panoptes-ingest (GStreamer runtime plugins, no -dev packages)
#   panoptes/worker       panoptes-worker (CPU; libtorch 2.11.0 from the PyTorch wheel)
#   panoptes/camsim       tools for the dev profile and demos: panoptes-camsim,
#                         panoptes-devbroker, panoptes-check
#   panoptes/redis        Debian's Redis 7 for the dev overlay (no Panoptes code)
#   panoptes/prometheus   Debian's Prometheus for the compose deployment (no Panoptes code)
#   panoptes/worker-cuda  only with --only worker-cuda (never in CI: ~6 GB, no GPU here): the
#                         worker binary + libtorch's CUDA 13 backend and the NVIDIA wheels
#                         torch 2.11.0 pins (installed from PyPI into $PANOPTES_CACHE/venv-cuda)
#
# How (each step is skipped when its output exists, so a warm machine rebuilds in seconds):
#   1. a Debian 12 root filesystem per package list (packages/*.txt) with mmdebstrap from the
#      Debian mirror (the lists in parallel), cached as a tarball under $PANOPTES_CACHE/images/ keyed by the list's
#      hash, and `docker import`ed as panoptes/base-<list>:<key>;
#   2. the binaries of $CARGO_TARGET_DIR/<profile>/, stripped of debug info (objcopy), and an
#      SBOM (CycloneDX JSON: the image's dpkg packages + the binary's crates from cargo tree)
#      staged into one folder per image;
#   3. `docker build` with the FINAL STAGE of the component's own Dockerfile (the lines after
#      its "final stage" marker), its base swapped for the imported one and `COPY --from=build`
#      for the staged folder: the layout, user, labels and entrypoint are the users' images'.
#
# Usage: deploy/images/build.sh [--profile debug|release] [--tag TAG] [--only NAME[,NAME…]]
#                               [--bin-dir DIR] [--bases-only]
#   --profile  which cargo profile's binaries to package (default debug: what scripts/test.sh
#              builds, so CI pays no release build; the label org.panoptes.build-profile and
#              docs/deploy.md say so). Use release for real deployments.
#   --bases-only  only the imported Debian bases of the --only images (step 1; needs no binaries)
#   --bin-dir  where the binaries are (default $CARGO_TARGET_DIR/<profile>)
#   --tag      image tag (default <version>-<short commit>[-dirty]); :dev is always added too.
# Output: images in the local engine; $PANOPTES_CACHE/images/out/<tag>/{sbom,sizes.txt,timings.txt}.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=deploy/images

log() { printf '\033[1;34m[images]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

PROFILE=debug
TAG=""
ONLY="coordinator,ingest,worker,camsim,redis,prometheus"
BASES_ONLY=0
BIN_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --bases-only) BASES_ONLY=1; shift ;;
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done

CACHE="${PANOPTES_CACHE:-$HOME/.cache/panoptes}"
TARGET="${CARGO_TARGET_DIR:-$CACHE/target}"
BIN="${BIN_DIR:-$TARGET/$PROFILE}"
VENV="$CACHE/venv"
TORCH_LIB="$VENV/lib/python3.11/site-packages/torch/lib"
CUDA_LIB="$VENV/lib/python3.11/site-packages/nvidia/cu13/lib"
# The NVIDIA runtime wheels of the CUDA image, in their own environment (several GB): the CPU
# environment above has only the two that libtorch_cpu names.
CUDA_VENV="$CACHE/venv-cuda"
# The legacy builder: the engine has no buildx, and each build here has one stage.
export DOCKER_BUILDKIT=0

docker info >/dev/null 2>&1 || die "docker is not usable (docker info failed)"
command -v mmdebstrap >/dev/null || die "mmdebstrap missing: scripts/setup.sh installs it"

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then REVISION="$REVISION-dirty"; fi
SHORT=$(echo "$REVISION" | cut -c1-12)
[ -n "$TAG" ] || TAG="$VERSION-${SHORT}${REVISION#"${REVISION%-dirty}"}"
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
OUT="$CACHE/images/out/$TAG"
mkdir -p "$OUT/sbom" "$CACHE/images"
: > "$OUT/timings.txt"

# Bumped when the recipe below changes, so cached root filesystems are rebuilt.
ROOTFS_RECIPE=1
SUITE=bookworm
MIRRORS=(
  "deb http://deb.debian.org/debian $SUITE main"
  "deb http://deb.debian.org/debian $SUITE-updates main"
  "deb http://deb.debian.org/debian-security $SUITE-security main"
)

packages() { grep -v '^\s*#' "$HERE/packages/$1.txt" | grep -v '^\s*$'; }

# Per list, files its packages bring that the image never uses (dpkg path-exclude patterns).
# prometheus: Debian's package depends on the JavaScript libraries of its web UI and console
# pages (libjs-moment-timezone alone is 218 MB); the compose deployment uses the API, the
# scrapes, the rules and promtool only.
declare -A EXCLUDE_OF=([prometheus]='/usr/share/javascript/*')

# Step 1: the base image for a package list; prints its tag.
base_image() {
  local list=$1 key tar tag started partial
  local exclude=${EXCLUDE_OF[$list]:-} extra=()
  [ -z "$exclude" ] || extra=(--dpkgopt="path-exclude=$exclude")
  key=$( (echo "recipe=$ROOTFS_RECIPE suite=$SUITE"; packages "$list"
          [ -z "$exclude" ] || echo "exclude=$exclude") | sha256sum | cut -c1-16)
  tar="$CACHE/images/rootfs-$list-$key.tar"
  tag="panoptes/base-$list:$key"
  if [ ! -s "$tar" ]; then
    log "building the $list root filesystem (mmdebstrap, $(packages "$list" | wc -l) packages)"
    started=$(date +%s)
    # mmdebstrap picks the output format from the extension: .tar
    partial="$CACHE/images/.partial-rootfs-$list-$key.tar"
    # essential variant: no apt, no shell beyond dash/bash from Essential; documentation,
    # manuals and locales are left out (copyright files stay). The panoptes user (10001) owns
    # nothing in the image: the root filesystem is read-only in every deployment.
    mmdebstrap --quiet --variant=essential \
      --include="$(packages "$list" | paste -sd, -)" \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      "${extra[@]}" \
      --customize-hook='echo "panoptes:x:10001:10001:Panoptes:/nonexistent:/usr/sbin/nologin" >> "$1/etc/passwd"' \
      --customize-hook='echo "panoptes:x:10001:" >> "$1/etc/group"' \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
      "$SUITE" "$partial" "${MIRRORS[@]}"
    mv "$partial" "$tar"
    echo "rootfs-$list fresh $(( $(date +%s) - started ))s" >> "$OUT/timings.txt"
  fi
  if ! docker image inspect "$tag" >/dev/null 2>&1; then
    log "importing $tar as $tag"
    docker import --message "Debian $SUITE + $HERE/packages/$list.txt" "$tar" "$tag" >/dev/null
  fi
  echo "$tag"
}

# Copies one binary, without debug info, into the staged root filesystem.
stage_bin() {
  local name=$1 dest=$2
  [ -x "$BIN/$name" ] || die "$BIN/$name not built: cargo build --workspace --bins (--release for --profile release)"
  objcopy --strip-debug "$BIN/$name" "$dest/usr/local/bin/$name"
}

# Step 2 for one image: binaries, libraries, SBOM. Args: component base crate bins...
# (crate "" for an image without Panoptes code)
stage() {
  local component=$1 base=$2 crate=$3 stage_dir
  shift 3
  stage_dir="$CACHE/images/stage/$component"
  rm -rf "$stage_dir"
  mkdir -p "$stage_dir/out/usr/local/bin" "$stage_dir/out/usr/share/doc/panoptes"
  for b in "$@"; do stage_bin "$b" "$stage_dir/out"; done
  if [ "$component" = worker-cuda ]; then
    # libtorch whole (but its Python bindings), and every NVIDIA wheel's lib/ folder laid out
    # as in site-packages, so libtorch_cuda's $ORIGIN/../../nvidia/<x>/lib rpaths resolve.
    local opt="$stage_dir/out/opt/panoptes" site="$CUDA_VENV/lib/python3.11/site-packages" d
    mkdir -p "$opt/torch/lib"
    find "$TORCH_LIB" -maxdepth 1 -name '*.so*' ! -name 'libtorch_python.so' ! -name 'libshm*' \
      -exec cp -L {} "$opt/torch/lib/" \;
    for d in "$site"/nvidia/*/lib; do
      mkdir -p "$opt/nvidia/$(basename "$(dirname "$d")")"
      cp -rL "$d" "$opt/nvidia/$(basename "$(dirname "$d")")/"
    done
  elif [ "$component" = worker ]; then
    # libtorch_cpu's own RPATH ($ORIGIN/../../nvidia/cu13/lib) finds libcudart/libcupti;
    # the image sets LD_LIBRARY_PATH to torch/lib (the binary's rpath names the build machine).
    local opt="$stage_dir/out/opt/panoptes"
    mkdir -p "$opt/torch/lib" "$opt/nvidia/cu13/lib"
    cp -L "$TORCH_LIB"/{libtorch_cpu.so,libc10.so,libgomp.so.1} "$opt/torch/lib/"
    cp -L "$CUDA_LIB"/{libcudart.so.13,libcupti.so.13} "$opt/nvidia/cu13/lib/"
  fi
  python3 "$HERE/sbom.py" --image "panoptes/$component:$TAG" --base "$base" --crate "$crate" \
    --version "$VERSION" --revision "$REVISION" \
    --torch "$(case $component in worker|worker-cuda) echo "$VENV" ;; esac)" \
    --cuda-venv "$([ "$component" = worker-cuda ] && echo "$CUDA_VENV" || true)" \
    > "$stage_dir/out/usr/share/doc/panoptes/sbom.cdx.json"
  cp "$stage_dir/out/usr/share/doc/panoptes/sbom.cdx.json" "$OUT/sbom/$component.cdx.json"
  echo "$stage_dir"
}

# The NVIDIA wheels torch 2.11.0 itself pins (its metadata's Linux requirements: cuda-toolkit
# with the libraries libtorch_cuda links, cuDNN, cuSPARSELt, NCCL, NVSHMEM), installed once into
# $CUDA_VENV; reinstalled when the pins change. Python-only ones (triton, cuda-bindings) are not.
cuda_venv() {
  local meta pins
  meta=$(echo "$VENV"/lib/python3.11/site-packages/torch-*.dist-info/METADATA)
  [ -f "$meta" ] || die "no torch in $VENV: scripts/setup.sh installs it"
  pins=$(sed -n 's/^Requires-Dist: \(\(nvidia-\|cuda-toolkit\)[^;]*\);.*Linux.*/\1/p' "$meta")
  [ -n "$pins" ] || die "no NVIDIA requirements in $meta"
  if [ "$(cat "$CUDA_VENV/pins" 2>/dev/null)" != "$pins" ]; then
    log "installing the NVIDIA runtime wheels into $CUDA_VENV (several GB from PyPI)"
    local started py=python3
    started=$(date +%s)
    if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; fi
    [ -x "$CUDA_VENV/bin/pip" ] || "$py" -m venv "$CUDA_VENV"
    # shellcheck disable=SC2086
    "$CUDA_VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir $pins
    echo "$pins" > "$CUDA_VENV/pins"
    echo "venv-cuda fresh $(( $(date +%s) - started ))s" >> "$OUT/timings.txt"
  fi
}

# Step 3: the component Dockerfile's final stage on the imported base.
build_image() {
  local component=$1 base=$2 stage_dir=$3 started
  started=$(date +%s)
  sed -n '/^# ---- final stage/,$p' "$HERE/$component.Dockerfile" \
    | sed -e "s|^FROM runtime-base\$|FROM $base|" -e 's|^COPY --from=[a-z-]* /out/|COPY out/|' \
    > "$stage_dir/Dockerfile"
  grep -q "^FROM $base\$" "$stage_dir/Dockerfile" && grep -q '^COPY out/' "$stage_dir/Dockerfile" \
    && ! grep -q '^COPY --from=' "$stage_dir/Dockerfile" \
    || die "$component.Dockerfile: final stage must start FROM runtime-base and copy only from /out/ of the build stage"
  log "building panoptes/$component:$TAG"
  local out
  if ! out=$(docker build --quiet --tag "panoptes/$component:$TAG" --tag "panoptes/$component:dev" \
    --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
    --build-arg PROFILE="$PROFILE" --build-arg CREATED="$CREATED" \
    "$stage_dir" 2>&1 >/dev/null); then
    echo "$out" >&2
    die "docker build of panoptes/$component failed"
  fi
  echo "image-$component $(( $(date +%s) - started ))s" >> "$OUT/timings.txt"
  printf '%s\t%s\n' "panoptes/$component:$TAG" \
    "$(docker image inspect --format '{{.Size}}' "panoptes/$component:$TAG")" >> "$OUT/sizes.txt"
}

one() {
  local component=$1 list=$2 crate=$3 base dir
  shift 3
  case ",$ONLY," in *",$component,"*) ;; *) return 0 ;; esac
  base=$(base_image "$list")
  dir=$(stage "$component" "$base" "$crate" "$@")
  build_image "$component" "$base" "$dir"
}

: > "$OUT/sizes.txt"
T0=$(date +%s)
# Step 1 for every image asked for, the bases in parallel (mmdebstrap mostly waits on the
# mirror): fresh, the four take about as long as the slowest.
declare -A LIST_OF=([coordinator]=base [ingest]=media [worker]=base [camsim]=sim [redis]=redis [prometheus]=prometheus [worker-cuda]=base)
lists=()
for component in ${ONLY//,/ }; do
  [ -n "${LIST_OF[$component]:-}" ] || die "unknown image $component"
  case " ${lists[*]} " in *" ${LIST_OF[$component]} "*) ;; *) lists+=("${LIST_OF[$component]}") ;; esac
done
pids=()
for list in "${lists[@]}"; do base_image "$list" >/dev/null & pids+=($!); done
for pid in "${pids[@]}"; do wait "$pid" || die "a base image failed (see above)"; done
case ",$ONLY," in *,worker-cuda,*) cuda_venv ;; esac
if [ "$BASES_ONLY" = 1 ]; then
  cat "$OUT/timings.txt" >&2
  exit 0
fi
# Steps 2 and 3 for every image at once: the engine's layer work (mostly I/O) overlaps.
pids=()
one coordinator base panoptes-coordinator panoptes-coordinator panoptes panoptes-redis-acl & pids+=($!)
one ingest media panoptes-ingest panoptes-ingest & pids+=($!)
one worker base panoptes-workers panoptes-worker & pids+=($!)
one worker-cuda base panoptes-workers panoptes-worker & pids+=($!)
one camsim sim panoptes-camsim panoptes-camsim panoptes-devbroker panoptes-check & pids+=($!)
one redis redis "" & pids+=($!)
one prometheus prometheus "" & pids+=($!)
for pid in "${pids[@]}"; do wait "$pid" || die "an image failed (see above)"; done
echo "total $(( $(date +%s) - T0 ))s" >> "$OUT/timings.txt"
# Earlier builds' layers that no tag names any more (ours only: the label is ours).
docker image prune --force --filter label=org.panoptes.build-profile >/dev/null
log "images (tag $TAG, profile $PROFILE):"
awk -F'\t' '{ printf "  %-40s %6.1f MB\n", $1, $2 / 1e6 }' "$OUT/sizes.txt" >&2
log "timings: $(paste -sd' ' "$OUT/timings.txt"); SBOMs: $OUT/sbom"
echo "TAG=$TAG"
