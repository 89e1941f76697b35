//! Loading libtorch's CUDA backend when a worker is configured for a GPU.
//!
//! The worker binary links `libtorch_cpu` only, so that one binary starts on machines without
//! CUDA. libtorch registers its CUDA backend from a static initialiser in `libtorch_cuda.so`;
//! since no symbol of ours references that library, the linker never loads it and
//! `tch::Cuda::is_available()` stays false. So, when a `cuda:N` device is configured, the
//! worker loads it itself, once, globally, before the model is loaded. The dynamic loader
//! finds it the usual way: on a GPU machine, `LD_LIBRARY_PATH` names the `torch/lib` folder
//! of that machine's PyTorch 2.11.0 (see docs/workers.md). Without CUDA, the worker stops at
//! start with [`ModelError::DeviceUnavailable`] naming the loader's reason.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::sync::OnceLock;

use tch::Device;

use crate::error::ModelError;

/// The library that carries libtorch's CUDA backend.
pub const CUDA_BACKEND: &CStr = c"libtorch_cuda.so";

/// Makes sure `device` can be used: a no-op for the CPU; for `cuda:N`, loads the CUDA backend
/// (once per process) and checks that GPU N exists.
pub fn ensure_device(device: Device) -> Result<(), ModelError> {
    let Device::Cuda(index) = device else {
        return Ok(());
    };
    let unavailable = |reason: String| ModelError::DeviceUnavailable {
        device: format!("cuda:{index}"),
        reason,
    };
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(load_backend)
        .clone()
        .map_err(unavailable)?;
    let count = tch::Cuda::device_count();
    if !tch::Cuda::is_available() || index >= usize::try_from(count).unwrap_or(0) {
        return Err(unavailable(format!(
            "libtorch sees {count} CUDA device(s) (is a driver installed?)"
        )));
    }
    Ok(())
}

fn load_backend() -> Result<(), String> {
    // SAFETY: dlopen with a valid NUL-terminated name; the handle is deliberately never
    // closed (the backend must stay loaded for the life of the process). dlerror returns a
    // thread-local, NUL-terminated string valid until the next dl* call on this thread, and
    // is copied out immediately.
    unsafe {
        let handle = libc::dlopen(CUDA_BACKEND.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if handle.is_null() {
            let err = libc::dlerror();
            let reason = if err.is_null() {
                "unknown dynamic loader error".to_string()
            } else {
                CStr::from_ptr(err).to_string_lossy().into_owned()
            };
            return Err(format!(
                "cannot load {}: {reason}",
                CUDA_BACKEND.to_string_lossy()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_needs_nothing() {
        assert!(ensure_device(Device::Cpu).is_ok());
    }
}
