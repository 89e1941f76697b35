#!/usr/bin/env bash
# The live demo on embedded defaults: a 3-broker development Kafka cluster, a camera
# simulator with 4 cameras, an ingest node publishing their frames and a worker running the
# reference detector; detections are printed as they land in Kafka, with a status line every
# 5 s. Ctrl-C stops everything (DEMO_SECONDS=N stops after N seconds).
#
# The coordinator is not built yet: cameras and partitions are assigned statically here.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/panoptes/target}"
echo "[demo] building (the first build takes several minutes)…" >&2
cargo build --quiet -p panoptes-devbroker -p panoptes-loadtest -p panoptes-ingest -p panoptes-workers --bins
BIN="$CARGO_TARGET_DIR/debug"
CAMERAS="${DEMO_CAMERAS:-4}"
HTTP_PORT="${DEMO_HTTP_PORT:-9101}"
WORKER_PORT="${DEMO_WORKER_PORT:-9201}"

work=$(mktemp -d -t panoptes-demo.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do pkill -TERM -P "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  echo "[demo] stopped; logs were in $work" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_line() { # file prefix → value
  for _ in $(seq 300); do
    if v=$(grep -m1 "^$2" "$1" 2>/dev/null); then echo "${v#"$2"}"; return 0; fi
    sleep 0.1
  done
  echo "[demo] timed out waiting for $2 in $1" >&2; return 1
}

"$BIN/panoptes-devbroker" --brokers 3 >"$work/broker.out" 2>"$work/broker.log" &
pids+=($!)
BOOTSTRAP=$(wait_line "$work/broker.out" BOOTSTRAP=)
"$BIN/panoptes-camsim" --listen 127.0.0.1:0 --control 127.0.0.1:0 \
  --cameras "$CAMERAS" --width 1280 --height 720 --fps 10 --codec h264 >"$work/camsim.out" 2>"$work/camsim.log" &
pids+=($!)
RTSP=$(wait_line "$work/camsim.out" RTSP=)

{
  printf 'node_id = "demo-ingest"\n[http]\nlisten = "127.0.0.1:%s"\n[kafka]\nbootstrap_servers = "%s"\n' "$HTTP_PORT" "$BOOTSTRAP"
  printf '[camera_defaults]\nfps = 5\nwidth = 640\nheight = 360\n'
  for i in $(seq 0 $((CAMERAS - 1))); do
    printf '[[cameras]]\nid = "cam%s"\nurl = "%s/cam%s"\n' "$i" "$RTSP" "$i"
  done
} >"$work/ingest.toml"
"$BIN/panoptes-ingest" --config "$work/ingest.toml" >"$work/ingest.out" 2>"$work/ingest.log" &
pids+=($!)
HTTP=$(wait_line "$work/ingest.out" HTTP=)

"$BIN/panoptes-models" --out "$work/models" --only reference >"$work/models.log" 2>&1
cat >"$work/worker.toml" <<TOML
worker_id = "demo-worker"
[http]
listen = "127.0.0.1:$WORKER_PORT"
[kafka]
bootstrap_servers = "$BOOTSTRAP"
[model]
path = "$work/models/reference-detector.pt"
TOML
"$BIN/panoptes-worker" --config "$work/worker.toml" >"$work/worker.out" 2>"$work/worker.log" &
pids+=($!)
WORKER=$(wait_line "$work/worker.out" HTTP=)

cat >&2 <<MSG
[demo] running: $CAMERAS simulated 720p cameras at 10 fps → ingest (5 fps, 640x360 JPEG) → Kafka → worker (reference detector) → detections
[demo]   broker          $BOOTSTRAP   (topics panoptes.frames, panoptes.detections)
[demo]   cameras         $RTSP/cam0 … cam$((CAMERAS - 1))
[demo]   ingest          $HTTP/metrics   $HTTP/cameras   $HTTP/readyz
[demo]   worker          $WORKER/metrics   $WORKER/readyz
[demo]   consume         kcat -C -b $BOOTSTRAP -t panoptes.detections -o end
[demo]   logs            $work/*.log
[demo] Ctrl-C to stop.
MSG

consume() {
  kcat -C -q -b "$BOOTSTRAP" -t panoptes.detections -o end -u -f '%s\n' 2>/dev/null |
    python3 -u scripts/demo_view.py detections
}

consume &
pids+=($!)
python3 -u scripts/demo_view.py status "$HTTP" "$WORKER" &
pids+=($!)
if [ -n "${DEMO_SECONDS:-}" ]; then sleep "$DEMO_SECONDS"; else wait; fi
