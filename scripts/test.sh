#!/usr/bin/env bash
# The project's test command (what CI runs): set up the machine, build, lint, test.
# Every test starts the real components it needs (development broker, camera simulator,
# nodes) as child processes on free ports and stops them, so nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Builds and the PyTorch environment outlive the checkout (scripts/env.sh).
. scripts/env.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Each step's heading says when it started (seconds since this script began), so a slow CI
# run shows where its time went.
step() { echo "== $1 (at ${SECONDS} s)"; }

# The container images' Debian bases (deploy/images/build.sh --bases-only: mmdebstrap root
# filesystems cached under $PANOPTES_CACHE/images, ~4 min fresh, instant warm) build in the
# background while cargo compiles; loadtest/tests/deploy.rs packages binaries onto them.
bases_pid=""
bases_log="$(mktemp)"
if docker info >/dev/null 2>&1; then
  bash deploy/images/build.sh --bases-only >"$bases_log" 2>&1 &
  bases_pid=$!
  trap 'kill "$bases_pid" 2>/dev/null || true' EXIT
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "build binaries and tests"
# Integration tests run the workspace binaries as processes: build them all first.
cargo build --workspace --bins --tests --locked
if [ -n "$bases_pid" ]; then
  step "image bases"
  if ! wait "$bases_pid"; then cat "$bases_log"; echo "deploy/images/build.sh --bases-only failed"; exit 1; fi
  tail -n 3 "$bases_log"
fi
step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  # Without nextest's test groups, run one test at a time (see .config/nextest.toml).
  cargo test --workspace --locked --no-fail-fast -- --test-threads=1
fi
step "done"
