#!/usr/bin/env bash
# The live demo of the whole coordinated system on one machine: Redis, the development Kafka
# broker, a camera simulator, a coordinator, an ingest node and two workers running the
# reference detector, as real processes (`panoptes-loadtest demo`). It prints where to look
# (operator API, /metrics, `panoptes status`, the kcat command), detections as they land and
# a status line every 2 s. Ctrl-C stops everything in order, within 5 s.
#
#   scripts/demo.sh                          4 cameras, 2 workers, until Ctrl-C
#   scripts/demo.sh --cameras 8 --workers 3  any `panoptes-loadtest demo` option
#   scripts/demo.sh --keep-logs /tmp/demo-logs   keep the nodes' logs (copied there on exit)
#   scripts/demo.sh --spare 4                    room for 4 more cameras (`panoptes cameras add`,
#                                            the command line is printed; default 2)
#   DEMO_SECONDS=30 scripts/demo.sh          headless: stop after 30 s, print DEMO_SUMMARY,
#                                            exit 0 only if every camera had detections
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
. scripts/env.sh
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
echo "[demo] building (the first build takes several minutes on 2 cores)…" >&2
cargo build --quiet --workspace --bins

args=("$@")
if [ -n "${DEMO_SECONDS:-}" ]; then args+=(--seconds "$DEMO_SECONDS"); fi
exec "$CARGO_TARGET_DIR/debug/panoptes-loadtest" demo "${args[@]}"
