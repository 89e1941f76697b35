# The build environment of scripts/test.sh and scripts/demo.sh, to source (`. scripts/env.sh`)
# before running cargo by hand as they do. Builds and the PyTorch environment live outside the
# checkout (scripts/setup.sh), so a fresh clone on a warm machine reuses them.
export PANOPTES_CACHE="${PANOPTES_CACHE:-$HOME/.cache/panoptes}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PANOPTES_CACHE/target}"
# libtorch by a path that does not name the checkout, so torch-sys (a long C++ build) is not
# rebuilt for each fresh clone (.cargo/config.toml's value goes through the checkout's .venv).
export LIBTORCH="${LIBTORCH:-$PANOPTES_CACHE/venv/libtorch-cpu}"
export LIBTORCH_LIB="${LIBTORCH_LIB:-$LIBTORCH}"
