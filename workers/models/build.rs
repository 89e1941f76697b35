//! Gives the model generator's binary and tests an rpath to libtorch (shared piece:
//! `workers/build/libtorch_rpath.rs`).

include!("../build/libtorch_rpath.rs");

fn main() {
    libtorch_rpath();
}
