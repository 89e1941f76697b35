// The libtorch rpath shared by every build script whose crate links libtorch through `tch`
// (`workers`, `workers/models`, `loadtest`): each `build.rs` `include!`s this file and calls
// `libtorch_rpath()`, so their binaries and tests start with plain `cargo run`/`cargo test`
// and no `LD_LIBRARY_PATH`. (A plain comment, not `//!`: the text is included mid-file.)
//
// `LIBTORCH_LIB` (or `LIBTORCH`), set in `.cargo/config.toml`, names the CPU-only libtorch view
// that `scripts/setup.sh` creates; its `lib/` holds symlinks into the PyTorch wheel. The rpath
// points at the wheel's real `torch/lib` (so libtorch_cpu's own `$ORIGIN` rpath finds
// `nvidia/cu13/lib/libcudart.so.13`), plus that CUDA runtime folder itself so the linker can
// check libtorch_cpu's dependencies. Deployments that move the libraries set `LD_LIBRARY_PATH`.

/// Prints the `cargo:` lines that give this crate's binaries and tests an rpath to libtorch.
fn libtorch_rpath() {
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(root) = std::env::var_os("LIBTORCH_LIB").or_else(|| std::env::var_os("LIBTORCH"))
    else {
        println!(
            "cargo:warning=LIBTORCH is not set: binaries need LD_LIBRARY_PATH to find libtorch"
        );
        return;
    };
    let lib = std::path::PathBuf::from(root).join("lib");
    let real = std::fs::canonicalize(lib.join("libtorch_cpu.so"))
        .ok()
        .and_then(|p| p.parent().map(std::path::PathBuf::from))
        .unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", real.display());
    if let Ok(cuda) = std::fs::canonicalize(real.join("../../nvidia/cu13/lib")) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", cuda.display());
    }
}
