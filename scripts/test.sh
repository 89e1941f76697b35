#!/usr/bin/env bash
# The project's test command (what CI runs): set up the machine, build, lint, test.
# Every test starts the real components it needs (development broker, camera simulator,
# nodes) as child processes on free ports and stops them, so nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Builds outlive the checkout, so a fresh clone on a warm machine reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/panoptes/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build binaries and tests"
# Integration tests run the workspace binaries as processes: build them all first.
cargo build --workspace --bins --tests --locked
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  # Without nextest's test groups, run one test at a time (see .config/nextest.toml).
  cargo test --workspace --locked --no-fail-fast -- --test-threads=1
fi
