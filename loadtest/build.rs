//! The worker benchmark links libtorch (through `panoptes-workers`), so every binary and test
//! of this crate gets the same rpath as the worker's (shared piece:
//! `workers/build/libtorch_rpath.rs`).

include!("../workers/build/libtorch_rpath.rs");

fn main() {
    libtorch_rpath();
}
