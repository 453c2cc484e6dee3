//! The few libtorch C++ APIs that tch 0.24 does not expose, reached through a small C++ file
//! (`src/shim.cpp`) compiled against the headers of the same libtorch tch links:
//!
//! - autocast for any device and dtype (tch's `autocast` is CUDA-only and fp16-only);
//! - memory formats (channels-last);
//! - caching-allocator statistics of the accelerator (peak memory), without CUDA headers;
//! - c10d, the distributed engine: TCPStore, the Gloo process group, collectives, a
//!   differentiable all-gather and gradient buckets ([`distributed`]);
//! - TorchScript tracing to a module whose method returns one tuple ([`jit`]).

use std::ffi::{c_char, c_int, CStr};

use tch::{Device, Kind, Tensor};

/// The c10 enum values passed to the shim as ints (one list in `src/abi_enums.h`, asserted
/// against libtorch's headers when the shim compiles).
mod abi {
    include!(concat!(env!("OUT_DIR"), "/abi_enums.rs"));
}
pub mod distributed;
pub mod jit;

#[derive(Debug, thiserror::Error)]
#[error("libtorch: {0}")]
pub struct ShimError(pub String);

pub type Result<T> = std::result::Result<T, ShimError>;

mod ffi {
    use std::ffi::{c_char, c_int};

    // Tensors are passed as tch's `C_tensor` pointers, which are `at::Tensor*`.
    extern "C" {
        pub fn selfcon_shim_free_error(err: *mut c_char);
        pub fn selfcon_shim_autocast_get(
            device_type: c_int,
            enabled: *mut c_int,
            dtype: *mut c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn selfcon_shim_autocast_set(
            device_type: c_int,
            enabled: c_int,
            dtype: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn selfcon_shim_autocast_increment_nesting() -> c_int;
        pub fn selfcon_shim_set_flush_denormal(on: c_int) -> c_int;
        pub fn selfcon_shim_autocast_decrement_nesting() -> c_int;
        pub fn selfcon_shim_contiguous(tensor: *const u8, memory_format: c_int, err: *mut *mut c_char) -> *mut u8;
        pub fn selfcon_shim_is_contiguous(tensor: *const u8, memory_format: c_int, err: *mut *mut c_char) -> c_int;
        pub fn selfcon_shim_amp_unscale(
            grads: *const *const u8,
            n: i64,
            found_inf: *mut u8,
            inv_scale: *const u8,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn selfcon_shim_device_memory_stats(device_index: c_int, out: *mut i64, err: *mut *mut c_char) -> c_int;
        pub fn selfcon_shim_device_reset_peak(device_index: c_int, err: *mut *mut c_char) -> c_int;
        pub fn selfcon_shim_device_synchronize(device_index: c_int, err: *mut *mut c_char) -> c_int;
        pub fn selfcon_shim_set_log_level(level: c_int);
        pub fn selfcon_shim_set_deterministic(on: c_int);
        pub fn selfcon_shim_sgd_foreach(
            params: *const *const u8,
            grads: *const *const u8,
            buffers: *const *const u8,
            n: i64,
            weight_decay: f64,
            momentum: f64,
            lr: f64,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn selfcon_shim_sgd_fused(
            params: *const *const u8,
            grads: *const *const u8,
            buffers: *const *const u8,
            n: i64,
            weight_decay: f64,
            momentum: f64,
            lr: f64,
            found_inf: *const u8,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn selfcon_shim_set_grads_to_none(params: *const *const u8, n: i64);
        pub fn selfcon_shim_pin_memory(tensor: *const u8, err: *mut *mut c_char) -> *mut u8;
        pub fn selfcon_shim_is_pinned(tensor: *const u8) -> c_int;
        pub fn selfcon_shim_is_sole_owner(tensor: *const u8) -> c_int;
        pub fn selfcon_shim_copy_ahead(
            src: *const u8,
            device_index: c_int,
            ready: *mut *mut std::ffi::c_void,
            err: *mut *mut c_char,
        ) -> *mut u8;
        pub fn selfcon_shim_wait_ready(
            ready: *mut std::ffi::c_void,
            device_index: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn selfcon_shim_free_ready(ready: *mut std::ffi::c_void);
        pub fn selfcon_shim_set_device(device_index: c_int, err: *mut *mut c_char) -> c_int;
        pub fn selfcon_shim_empty_pinned(sizes: *const i64, ndim: i64, dtype: c_int, err: *mut *mut c_char) -> *mut u8;
        pub fn selfcon_shim_cpu_capabilities(err: *mut *mut c_char) -> *mut c_char;
    }
}

/// Calls a shim function that reports failure through an error string.
fn checked<T>(call: impl FnOnce(*mut *mut c_char) -> T) -> Result<T> {
    let mut err: *mut c_char = std::ptr::null_mut();
    let value = call(&mut err);
    if err.is_null() {
        return Ok(value);
    }
    // SAFETY: the shim wrote a NUL-terminated malloc'ed string, freed here exactly once.
    let message = unsafe { CStr::from_ptr(err) }.to_string_lossy().lines().next().unwrap_or_default().to_string();
    unsafe { ffi::selfcon_shim_free_error(err) };
    Err(ShimError(message))
}

/// What libtorch's cpuinfo reports of this CPU (`at::cpu::get_cpu_capabilities`, as
/// `torch.backends.cpu` shows it): `(key, value)` pairs such as `("avx512_bf16", "True")`,
/// `("cpu_name", "AMD EPYC")`, plus `aten_capability`, the vector ISA ATen dispatches its kernels to.
pub fn cpu_capabilities() -> Result<Vec<(String, String)>> {
    // SAFETY: the shim returns a NUL-terminated malloc'ed string (or null with `err` set).
    let text = checked(|err| unsafe { ffi::selfcon_shim_cpu_capabilities(err) })?;
    if text.is_null() {
        return Err(ShimError("no CPU capabilities returned".into()));
    }
    // SAFETY: as above; freed exactly once (the shim's strings share one free function).
    let owned = unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned();
    unsafe { ffi::selfcon_shim_free_error(text) };
    Ok(owned.lines().filter_map(|line| line.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// Severity of libtorch's own log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Info = abi::LOG_INFO as isize,
    Warning = abi::LOG_WARNING as isize,
    Error = abi::LOG_ERROR as isize,
}

/// Shows only libtorch log lines at `level` or above (what TORCH_CPP_LOG_LEVEL sets at start-up).
pub fn set_log_level(level: LogLevel) {
    // SAFETY: sets two logging flags.
    unsafe { ffi::selfcon_shim_set_log_level(level as c_int) }
}

/// `torch.use_deterministic_algorithms(on, warn_only=True)` plus cuDNN's deterministic mode and no
/// cuDNN autotuning: the same run gives the same bits on a GPU (cuBLAS also needs
/// `CUBLAS_WORKSPACE_CONFIG=:4096:8` in the environment before CUDA starts).
pub fn set_deterministic(on: bool) {
    // SAFETY: sets flags of libtorch's global context.
    unsafe { ffi::selfcon_shim_set_deterministic(c_int::from(on)) }
}

/// `c10::DeviceType` of a tch device.
fn device_type(device: Device) -> c_int {
    match device {
        Device::Cpu => abi::DEVICE_CPU,
        Device::Cuda(_) => abi::DEVICE_CUDA,
        Device::Mps => abi::DEVICE_MPS,
        Device::Vulkan => abi::DEVICE_VULKAN,
    }
}

/// `c10::ScalarType` of the dtypes autocast can use.
fn scalar_type(kind: Kind) -> Result<c_int> {
    match kind {
        Kind::Half => Ok(abi::DTYPE_HALF),
        Kind::Float => Ok(abi::DTYPE_FLOAT),
        Kind::BFloat16 => Ok(abi::DTYPE_BFLOAT16),
        other => Err(ShimError(format!("autocast cannot compute in {other:?}"))),
    }
}

/// Autocast (automatic mixed precision) for one device type while the guard lives, like
/// `with torch.autocast(device_type, dtype):`. Dropping it restores the previous state.
#[must_use = "autocast is active only while the guard lives"]
pub struct AutocastGuard {
    device_type: c_int,
    previous_enabled: c_int,
    previous_dtype: c_int,
}

impl AutocastGuard {
    pub fn new(device: Device, dtype: Kind) -> Result<Self> {
        let device_type = device_type(device);
        let dtype = scalar_type(dtype)?;
        let (mut previous_enabled, mut previous_dtype) = (0, 0);
        // SAFETY: plain C calls with valid out-pointers.
        let rc = checked(|err| unsafe {
            ffi::selfcon_shim_autocast_get(device_type, &mut previous_enabled, &mut previous_dtype, err)
        })?;
        debug_assert_eq!(rc, 0);
        checked(|err| unsafe { ffi::selfcon_shim_autocast_set(device_type, 1, dtype, err) })?;
        unsafe { ffi::selfcon_shim_autocast_increment_nesting() };
        Ok(AutocastGuard { device_type, previous_enabled, previous_dtype })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: restores the values read in `new`, which libtorch accepted then.
        unsafe { ffi::selfcon_shim_autocast_decrement_nesting() };
        let _ = checked(|err| unsafe {
            ffi::selfcon_shim_autocast_set(self.device_type, self.previous_enabled, self.previous_dtype, err)
        });
    }
}

/// Whether autocast is on for `device`'s type, and in which dtype.
pub fn autocast_state(device: Device) -> Result<(bool, Kind)> {
    let (mut enabled, mut dtype) = (0, 0);
    checked(|err| unsafe { ffi::selfcon_shim_autocast_get(device_type(device), &mut enabled, &mut dtype, err) })?;
    let kind = match dtype {
        5 => Kind::Half,
        15 => Kind::BFloat16,
        _ => Kind::Float,
    };
    Ok((enabled != 0, kind))
}

/// `torch.set_flush_denormal(on)`: subnormal floats become zero in CPU kernels (much faster when
/// activations underflow); returns whether the CPU supports it.
pub fn set_flush_denormal(on: bool) -> bool {
    // SAFETY: plain C call.
    unsafe { ffi::selfcon_shim_set_flush_denormal(c_int::from(on)) == 1 }
}

/// `c10::MemoryFormat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryFormat {
    Contiguous = abi::MEMORY_CONTIGUOUS as isize,
    ChannelsLast = abi::MEMORY_CHANNELS_LAST as isize,
}

/// `tensor.contiguous(memory_format)`: a copy in that layout (the tensor itself when it already is).
pub fn contiguous(tensor: &Tensor, format: MemoryFormat) -> Result<Tensor> {
    let ptr =
        checked(|err| unsafe { ffi::selfcon_shim_contiguous(tensor.as_ptr() as *const u8, format as c_int, err) })?;
    // SAFETY: on success the shim returned a new heap `at::Tensor*`, now owned by the tch Tensor.
    Ok(unsafe { Tensor::from_ptr(ptr as *mut _) })
}

pub fn is_contiguous(tensor: &Tensor, format: MemoryFormat) -> Result<bool> {
    checked(|err| unsafe { ffi::selfcon_shim_is_contiguous(tensor.as_ptr() as *const u8, format as c_int, err) })
        .map(|v| v == 1)
}

/// Multiplies every gradient by `inv_scale` in place, in one fused kernel per device and dtype
/// (`torch._amp_foreach_non_finite_check_and_unscale_`), and sets `found_inf` (a one-element
/// float tensor) to 1 when any of them holds an inf or NaN.
pub fn amp_unscale_(grads: &[Tensor], found_inf: &mut Tensor, inv_scale: &Tensor) -> Result<()> {
    if grads.is_empty() {
        return Ok(());
    }
    let ptrs: Vec<*const u8> = grads.iter().map(|g| g.as_ptr() as *const u8).collect();
    checked(|err| unsafe {
        ffi::selfcon_shim_amp_unscale(
            ptrs.as_ptr(),
            ptrs.len() as i64,
            found_inf.as_mut_ptr() as *mut u8,
            inv_scale.as_ptr() as *const u8,
            err,
        )
    })
    .map(|_| ())
}

fn pointers(tensors: &[Tensor]) -> Vec<*const u8> {
    tensors.iter().map(|t| t.as_ptr() as *const u8).collect()
}

/// One SGD update (momentum, weight decay; `torch.optim.SGD` without dampening or Nesterov) of
/// `params` from `grads`, momentum buffers in `buffers` (unused when `momentum` is 0; a zero
/// buffer acts as a first step), in place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    pub weight_decay: f64,
    pub momentum: f64,
    pub lr: f64,
}

impl SgdStep {
    fn check(&self, params: &[Tensor], grads: &[Tensor], buffers: &[Tensor]) -> Result<()> {
        if grads.len() != params.len() || (self.momentum != 0.0 && buffers.len() != params.len()) {
            return Err(ShimError(format!(
                "sgd: {} parameters, {} gradients, {} momentum buffers",
                params.len(),
                grads.len(),
                buffers.len()
            )));
        }
        Ok(())
    }

    /// With the multi-tensor `_foreach_*` kernels, operation for operation the per-tensor update
    /// `d = g + p·wd; buf = buf·momentum + d; p -= buf·lr` (the same bits).
    pub fn foreach(&self, params: &[Tensor], grads: &[Tensor], buffers: &[Tensor]) -> Result<()> {
        self.check(params, grads, buffers)?;
        let (p, g, b) = (pointers(params), pointers(grads), pointers(buffers));
        // SAFETY: three arrays of live `at::Tensor*` of the lengths checked above.
        checked(|err| unsafe {
            ffi::selfcon_shim_sgd_foreach(
                p.as_ptr(),
                g.as_ptr(),
                b.as_ptr(),
                p.len() as i64,
                self.weight_decay,
                self.momentum,
                self.lr,
                err,
            )
        })
        .map(|_| ())
    }

    /// With the fused `_fused_sgd_` kernel, which leaves everything unchanged, on the device, when
    /// `found_inf` holds a non-zero value (no host read). Weight decay by fused multiply-add: the
    /// last bit may differ from [`SgdStep::foreach`].
    pub fn fused(
        &self,
        params: &[Tensor],
        grads: &[Tensor],
        buffers: &[Tensor],
        found_inf: Option<&Tensor>,
    ) -> Result<()> {
        self.check(params, grads, buffers)?;
        let (p, g, b) = (pointers(params), pointers(grads), pointers(buffers));
        let inf = found_inf.map_or(std::ptr::null(), |t| t.as_ptr() as *const u8);
        // SAFETY: as in `foreach`; `inf` is null or a live tensor.
        checked(|err| unsafe {
            ffi::selfcon_shim_sgd_fused(
                p.as_ptr(),
                g.as_ptr(),
                b.as_ptr(),
                p.len() as i64,
                self.weight_decay,
                self.momentum,
                self.lr,
                inf,
                err,
            )
        })
        .map(|_| ())
    }
}

/// `p.grad = None` for each parameter (`optimizer.zero_grad(set_to_none=True)`).
pub fn set_grads_to_none(params: &[Tensor]) {
    let p = pointers(params);
    // SAFETY: live `at::Tensor*`s; resetting a gradient does not throw.
    unsafe { ffi::selfcon_shim_set_grads_to_none(p.as_ptr(), p.len() as i64) }
}

/// `tensor.pin_memory()`: a copy in page-locked host memory, from which a copy to an accelerator
/// can run asynchronously. Only for CPU tensors (libtorch refuses others; needs an accelerator).
pub fn pin_memory(tensor: &Tensor) -> Result<Tensor> {
    let ptr = checked(|err| unsafe { ffi::selfcon_shim_pin_memory(tensor.as_ptr() as *const u8, err) })?;
    // SAFETY: a new heap `at::Tensor*`, now owned by the tch Tensor.
    Ok(unsafe { Tensor::from_ptr(ptr as *mut _) })
}

/// An uninitialised CPU tensor in page-locked memory (u8 or f32), from libtorch's caching host
/// allocator. Needs an accelerator backend (an error without one).
pub fn empty_pinned(sizes: &[i64], kind: Kind) -> Result<Tensor> {
    let dtype = match kind {
        Kind::Uint8 => abi::DTYPE_UINT8,
        Kind::Float => abi::DTYPE_FLOAT,
        other => return Err(ShimError(format!("empty_pinned: {other:?} is not supported"))),
    };
    let ptr = checked(|err| unsafe { ffi::selfcon_shim_empty_pinned(sizes.as_ptr(), sizes.len() as i64, dtype, err) })?;
    // SAFETY: a new heap `at::Tensor*`, now owned by the tch Tensor.
    Ok(unsafe { Tensor::from_ptr(ptr as *mut _) })
}

/// A copy of a host tensor on accelerator `device_index`, started on a side stream so that it
/// overlaps the work queued on the compute stream; usable once [`CopyAhead::ready`] was called
/// (which makes the compute stream, not the host, wait for the copy).
pub struct CopyAhead {
    tensor: Tensor,
    device_index: usize,
    event: *mut std::ffi::c_void,
}

// SAFETY: the event is a heap `c10::Event` owned by this value alone.
unsafe impl Send for CopyAhead {}

impl CopyAhead {
    /// Starts copying `src` (a CPU tensor, pinned for the copy to be asynchronous).
    pub fn start(src: &Tensor, device_index: usize) -> Result<Self> {
        let mut event = std::ptr::null_mut();
        let ptr = checked(|err| unsafe {
            ffi::selfcon_shim_copy_ahead(src.as_ptr() as *const u8, device_index as c_int, &mut event, err)
        })?;
        // SAFETY: a new heap `at::Tensor*`, now owned by the tch Tensor.
        Ok(CopyAhead { tensor: unsafe { Tensor::from_ptr(ptr as *mut _) }, device_index, event })
    }

    /// The copy, once the compute stream waits for it.
    pub fn ready(mut self) -> Result<Tensor> {
        let event = std::mem::replace(&mut self.event, std::ptr::null_mut());
        // SAFETY: `event` came from `selfcon_shim_copy_ahead` and is consumed (freed) here once.
        checked(|err| unsafe { ffi::selfcon_shim_wait_ready(event, self.device_index as c_int, err) })?;
        Ok(self.tensor.shallow_clone())
    }
}

impl Drop for CopyAhead {
    fn drop(&mut self) {
        if !self.event.is_null() {
            // SAFETY: an event not consumed by `ready`.
            unsafe { ffi::selfcon_shim_free_ready(self.event) }
        }
    }
}

/// Makes accelerator `device_index` the calling thread's current device (`torch.cuda.set_device`):
/// what names no device (a pinned buffer's context, NCCL internals) then lands on it.
pub fn set_device(device_index: usize) -> Result<()> {
    checked(|err| unsafe { ffi::selfcon_shim_set_device(device_index as c_int, err) }).map(drop)
}

pub fn is_pinned(tensor: &Tensor) -> bool {
    // SAFETY: reads a flag of a live tensor.
    unsafe { ffi::selfcon_shim_is_pinned(tensor.as_ptr() as *const u8) == 1 }
}

/// Whether `tensor` is the only handle on its memory: no clone of the handle, no view or other
/// tensor sharing its storage. (A buffer for which this holds can be written again without anyone
/// seeing it change.) tch's `shallow_clone` and every view make it false until they are dropped.
pub fn is_sole_owner(tensor: &Tensor) -> bool {
    // SAFETY: reads two reference counts of a live tensor.
    unsafe { ffi::selfcon_shim_is_sole_owner(tensor.as_ptr() as *const u8) == 1 }
}

/// Bytes held by the accelerator's caching allocator (all pools).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub allocated: i64,
    pub peak_allocated: i64,
    pub reserved: i64,
    pub peak_reserved: i64,
}

/// Caching-allocator statistics of accelerator `index` (an error on CPU-only builds/machines).
pub fn device_memory_stats(index: usize) -> Result<MemoryStats> {
    let mut out = [0i64; 4];
    checked(|err| unsafe { ffi::selfcon_shim_device_memory_stats(index as c_int, out.as_mut_ptr(), err) })?;
    Ok(MemoryStats { allocated: out[0], peak_allocated: out[1], reserved: out[2], peak_reserved: out[3] })
}

pub fn reset_peak_memory(index: usize) -> Result<()> {
    checked(|err| unsafe { ffi::selfcon_shim_device_reset_peak(index as c_int, err) }).map(|_| ())
}

/// Waits for all queued work on accelerator `index` (for honest timings).
pub fn synchronize(index: usize) -> Result<()> {
    checked(|err| unsafe { ffi::selfcon_shim_device_synchronize(index as c_int, err) }).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_autocast_runs_matmul_in_bf16_and_restores_state() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        {
            let _guard = AutocastGuard::new(Device::Cpu, Kind::BFloat16).unwrap();
            assert_eq!(autocast_state(Device::Cpu).unwrap(), (true, Kind::BFloat16));
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
            // Nested regions restore the outer one.
            {
                let _inner = AutocastGuard::new(Device::Cpu, Kind::Half).unwrap();
                assert_eq!(a.matmul(&a).kind(), Kind::Half);
            }
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
        }
        assert!(!autocast_state(Device::Cpu).unwrap().0);
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
    }

    #[test]
    fn autocast_refuses_integer_dtypes() {
        assert!(AutocastGuard::new(Device::Cpu, Kind::Int64).is_err());
    }

    #[test]
    fn channels_last_copy_keeps_values() {
        let x = Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, Device::Cpu)).reshape([2, 3, 4, 5]);
        assert!(!is_contiguous(&x, MemoryFormat::ChannelsLast).unwrap());
        let y = contiguous(&x, MemoryFormat::ChannelsLast).unwrap();
        assert!(is_contiguous(&y, MemoryFormat::ChannelsLast).unwrap());
        assert_eq!(y.stride(), vec![60, 1, 15, 3]);
        assert!(y.equal(&x));
        // A 2-d tensor has no channels-last layout: libtorch's error comes back as a value.
        let err =
            contiguous(&Tensor::ones([2, 2], (Kind::Float, Device::Cpu)), MemoryFormat::ChannelsLast).unwrap_err();
        assert!(err.0.contains("rank"), "{err}");
    }

    #[test]
    fn amp_unscale_multiplies_and_flags_non_finite_values() {
        let opts = (Kind::Float, Device::Cpu);
        let inv = Tensor::from_slice(&[0.5f32]);
        let mut found = Tensor::zeros([1], opts);
        let grads = [Tensor::from_slice(&[2.0f32, 4.0]), Tensor::from_slice(&[8.0f32])];
        amp_unscale_(&grads, &mut found, &inv).unwrap();
        assert_eq!(Vec::<f32>::try_from(&grads[0]).unwrap(), vec![1.0, 2.0]);
        assert_eq!(Vec::<f32>::try_from(&grads[1]).unwrap(), vec![4.0]);
        assert_eq!(found.double_value(&[0]), 0.0);
        let bad = [Tensor::from_slice(&[1.0f32, f32::INFINITY])];
        amp_unscale_(&bad, &mut found, &inv).unwrap();
        assert_eq!(found.double_value(&[0]), 1.0);
    }

    #[test]
    fn flush_denormal_zeroes_subnormal_products() {
        let tiny = Tensor::from_slice(&[1e-30f32]);
        assert!(set_flush_denormal(true), "x86-64 CPUs support flush-to-zero");
        assert_eq!((&tiny * 1e-10).double_value(&[0]), 0.0);
        set_flush_denormal(false);
        assert!((&tiny * 1e-10).double_value(&[0]) > 0.0, "1e-40 is a subnormal float");
    }

    #[test]
    fn memory_stats_fail_cleanly_without_an_accelerator() {
        if tch::Cuda::is_available() {
            return;
        }
        assert!(device_memory_stats(0).is_err());
    }

    #[test]
    fn pinned_memory_and_side_stream_copies_fail_cleanly_without_an_accelerator() {
        if tch::Cuda::is_available() {
            return;
        }
        let t = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        assert!(!is_pinned(&t));
        assert!(pin_memory(&t).is_err());
        assert!(empty_pinned(&[2, 3], Kind::Uint8).is_err());
        assert!(empty_pinned(&[2], Kind::Int64).unwrap_err().0.contains("not supported"));
        assert!(CopyAhead::start(&t, 0).is_err());
        assert!(set_device(0).is_err());
    }

    #[test]
    fn sole_ownership_ends_with_every_clone_view_and_saved_tensor_and_returns_after() {
        let t = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        assert!(is_sole_owner(&t));
        let clone = t.shallow_clone();
        assert!(!is_sole_owner(&t) && !is_sole_owner(&clone));
        drop(clone);
        let view = t.permute([1, 0]);
        assert!(!is_sole_owner(&t));
        drop(view);
        let detached = t.detach();
        assert!(!is_sole_owner(&t), "a detached tensor shares the memory");
        drop(detached);
        let copy = t.copy();
        assert!(is_sole_owner(&t), "a copy has its own memory");
        drop(copy);
        // Autograd keeping the input for the backward pass holds the memory too.
        let w = Tensor::ones([3, 1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let out = t.matmul(&w);
        assert!(!is_sole_owner(&t));
        drop(out);
        assert!(is_sole_owner(&t));
    }

    #[test]
    fn foreach_sgd_checks_list_lengths() {
        let p = [Tensor::ones([2], (Kind::Float, Device::Cpu))];
        let step = SgdStep { weight_decay: 0.0, momentum: 0.9, lr: 0.1 };
        assert!(step.foreach(&p, &[], &[]).unwrap_err().0.contains("1 parameters, 0 gradients"));
    }
}
