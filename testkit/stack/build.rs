//! Gives this crate's test targets an rpath to libtorch, which it links through
//! `panoptes-workers` (shared piece: `workers/build/libtorch_rpath.rs`).

include!("../../workers/build/libtorch_rpath.rs");

fn main() {
    libtorch_rpath();
}
