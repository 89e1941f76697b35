//! Gives the worker's binaries and tests an rpath to the libtorch they link (the shared piece
//! is `build/libtorch_rpath.rs`, also used by `workers/models` and `loadtest`).

include!("build/libtorch_rpath.rs");

fn main() {
    libtorch_rpath();
}
