#!/usr/bin/env bash
# The live demo on embedded defaults: a 3-broker development Kafka cluster, a camera
# simulator with 4 cameras, and an ingest node publishing their frames; frames are printed
# as they land in Kafka. Ctrl-C stops everything (DEMO_SECONDS=N stops after N seconds).
#
# Workers (detections) and the coordinator are not built yet: see README.md, "Status".
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/panoptes/target}"
echo "[demo] building (the first build takes several minutes)…" >&2
cargo build --quiet -p panoptes-devbroker -p panoptes-loadtest -p panoptes-ingest --bins
BIN="$CARGO_TARGET_DIR/debug"
CAMERAS="${DEMO_CAMERAS:-4}"
HTTP_PORT="${DEMO_HTTP_PORT:-9101}"

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

cat >&2 <<MSG
[demo] running: $CAMERAS simulated 720p cameras at 10 fps → ingest (5 fps, 640x360 JPEG) → Kafka
[demo]   broker          $BOOTSTRAP   (topic panoptes.frames)
[demo]   cameras         $RTSP/cam0 … cam$((CAMERAS - 1))
[demo]   ingest metrics  $HTTP/metrics   status $HTTP/cameras   health $HTTP/readyz
[demo]   consume frames  kcat -C -b $BOOTSTRAP -t panoptes.frames -o end -f '%k seq=%h\\n'
[demo]   logs            $work/*.log
[demo] Ctrl-C to stop.
MSG

status_line() {
  local m up frames
  m=$(curl -s "$HTTP/metrics" || true)
  up=$(grep -c '^panoptes_ingest_camera_up{.*} 1' <<<"$m" || true)
  frames=$(awk '/^panoptes_ingest_frames_total\{/ {s+=$2} END {print s+0}' <<<"$m")
  echo "[status] cameras up: $up/$CAMERAS, frames published: $frames" >&2
}

consume() {
  kcat -C -q -b "$BOOTSTRAP" -t panoptes.frames -o end -u \
    -f 'frame camera=%k partition=%p offset=%o bytes=%S %h\n' 2>/dev/null |
    sed -u -E 's/panoptes-//g; s/,traceparent=[^ ]*//'
}

consume &
pids+=($!)
end=$(( $(date +%s) + ${DEMO_SECONDS:-315360000} ))
while [ "$(date +%s)" -lt "$end" ]; do
  sleep 5
  status_line
done
