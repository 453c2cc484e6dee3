//! TorchScript by tracing, with a method that returns one tuple (see src/jit.cpp): what
//! `torch.jit.load(path)(x)` gives Python users as `(a, b, ...)`.

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::Path;

use tch::Tensor;

use crate::{checked, Result, ShimError};

extern "C" {
    fn selfcon_shim_trace_begin(
        name: *const c_char,
        inputs: *const *const u8,
        n: c_int,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    fn selfcon_shim_trace_end_tuple(
        module: *mut c_void,
        fn_name: *const c_char,
        outputs: *const *const u8,
        n: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    fn selfcon_shim_trace_abandon();
    fn selfcon_shim_module_save(module: *mut c_void, path: *const c_char, err: *mut *mut c_char) -> c_int;
    fn selfcon_shim_module_free(module: *mut c_void);
}

/// Owns a traced `torch::jit::Module`.
struct TracedModule(*mut c_void);

impl Drop for TracedModule {
    fn drop(&mut self) {
        // SAFETY: the pointer came from selfcon_shim_trace_begin and is freed once.
        unsafe { selfcon_shim_module_free(self.0) }
    }
}

/// Traces `f` applied to `inputs` into a module named `name` whose `forward(inputs...)` returns
/// the tuple of `f`'s outputs, and saves it to `path` (TorchScript zip). Tensors that `f` uses
/// besides its inputs become constants of the module, so they must not require gradients.
pub fn trace_and_save<E>(
    name: &str,
    inputs: &[Tensor],
    f: impl FnOnce(&[Tensor]) -> std::result::Result<Vec<Tensor>, E>,
    path: &Path,
) -> Result<std::result::Result<(), E>> {
    let name = CString::new(name).map_err(|_| ShimError("module name holds a NUL byte".into()))?;
    let path =
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| ShimError("path holds a NUL byte".into()))?;
    let ptrs: Vec<*const u8> = inputs.iter().map(|t| t.as_ptr() as *const u8).collect();
    // SAFETY: the inputs outlive the call; the returned module is owned by TracedModule.
    let module = TracedModule(checked(|err| unsafe {
        selfcon_shim_trace_begin(name.as_ptr(), ptrs.as_ptr(), ptrs.len() as c_int, err)
    })?);
    let outputs = match f(inputs) {
        Ok(o) => o,
        Err(e) => {
            // SAFETY: ends the tracing state begun above.
            unsafe { selfcon_shim_trace_abandon() };
            return Ok(Err(e));
        }
    };
    let outs: Vec<*const u8> = outputs.iter().map(|t| t.as_ptr() as *const u8).collect();
    let forward = CString::new("forward").expect("no NUL");
    let ended = checked(|err| unsafe {
        selfcon_shim_trace_end_tuple(module.0, forward.as_ptr(), outs.as_ptr(), outs.len() as c_int, err)
    });
    if ended.is_err() {
        // SAFETY: a failed end leaves the tracing state set; abandoning clears it.
        unsafe { selfcon_shim_trace_abandon() };
    }
    ended?;
    checked(|err| unsafe { selfcon_shim_module_save(module.0, path.as_ptr(), err) })?;
    Ok(Ok(()))
}
