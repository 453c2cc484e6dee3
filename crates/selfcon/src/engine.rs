//! The libtorch runtime: which device to run on, and loading libtorch's CUDA backend.
//!
//! The binary links only the CPU engine (`libtorch_cpu`), so the same build starts on machines
//! without NVIDIA libraries. CUDA support is libtorch's own `libtorch_cuda.so`, loaded here at run
//! time: its static initialisers register the CUDA backend with the already-loaded CPU engine.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// `--device`: `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceRequest {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceRequest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" => Ok(DeviceRequest::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceRequest::Cuda)
                .ok_or_else(|| Error::option("device", format!("'{s}' is not auto, cpu, cuda or cuda:N"))),
        }
    }
}

/// Resolves a request to a device, loading the CUDA backend when CUDA may be used.
pub fn select_device(request: DeviceRequest) -> Result<Device> {
    match request {
        DeviceRequest::Cpu => Ok(Device::Cpu),
        DeviceRequest::Auto => {
            let backend = cuda_backend();
            let available = backend.is_ok() && tch::Cuda::is_available();
            if let Some(note) = auto_on_cpu_note(Path::new(NVIDIA_DEVICE_NODE), &backend, available) {
                eprintln!("selfcon: warning: {note}");
            }
            Ok(if available { Device::Cuda(0) } else { Device::Cpu })
        }
        DeviceRequest::Cuda(index) => {
            use_device(Device::Cuda(index))?;
            Ok(Device::Cuda(index))
        }
    }
}

/// The device node the NVIDIA driver creates for the first GPU.
const NVIDIA_DEVICE_NODE: &str = "/dev/nvidia0";

/// Why `--device auto` trains on the CPU of a machine that has an NVIDIA GPU (`gpu_node`
/// exists), and how to use the GPU; `None` where there is no GPU or CUDA works. Without this a
/// GPU host whose libtorch lacks the CUDA parts (`scripts/setup.sh` installs the CPU engine only)
/// trains on the CPU without a word.
fn auto_on_cpu_note(gpu_node: &Path, backend: &std::result::Result<(), String>, available: bool) -> Option<String> {
    if available || !gpu_node.exists() {
        return None;
    }
    let why = match backend {
        Err(why) => why.clone(),
        Ok(()) => "libtorch's CUDA backend loaded but sees no usable GPU (driver too old for CUDA 13?)".into(),
    };
    Some(format!(
        "{} exists but --device auto runs on the CPU: {why}; give --device cuda to make this an error",
        gpu_node.display()
    ))
}

/// Makes `device` usable, or says why it is not: for CUDA, loads libtorch's CUDA backend (before
/// anything asks libtorch about CUDA: it caches a "no CUDA" answer from the first question) and
/// checks that the device exists. Every library entry point that takes a device calls it first,
/// so a library user who never went through [`select_device`] gets the same order.
pub fn use_device(device: Device) -> Result<()> {
    let Device::Cuda(index) = device else { return Ok(()) };
    cuda_backend().map_err(|why| Error::option("device", format!("cuda:{index} requested but {why}")))?;
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        return Err(Error::option("device", format!("cuda:{index} requested but {count} CUDA device(s) are visible")));
    }
    Ok(())
}

/// `t` on `device`, the one way every path (training, evaluation, benchmarks, probes) moves
/// batches: a host tensor goes to an accelerator from page-locked memory with an asynchronous copy
/// (the transfer overlaps work already queued on the device; a tensor the loader already pinned
/// is not copied again); a tensor already on `device` is returned as it is (no copy, and never
/// pinned: only host memory can be); anything else is a plain copy.
pub fn to_device(t: &Tensor, device: Device) -> Result<Tensor> {
    if t.device() == device {
        return Ok(t.shallow_clone());
    }
    match (t.device(), device) {
        (Device::Cpu, Device::Cuda(_)) => {
            let pinned = pinned(t)?;
            pinned.f_to_device_(device, pinned.kind(), true, false).map_err(Error::Torch)
        }
        _ => t.f_to_device(device).map_err(Error::Torch),
    }
}

/// `t` in page-locked memory: itself when the loader already put it there, else a pinned copy.
fn pinned(t: &Tensor) -> Result<Tensor> {
    if torch_shim::is_pinned(t) {
        return Ok(t.shallow_clone());
    }
    torch_shim::pin_memory(t).map_err(|e| Error::input(format!("pinning a batch in host memory: {e}")))
}

/// A host-to-device copy started ahead of its use ([`copy_ahead`]).
pub enum PendingCopy {
    Done(Tensor),
    /// On a side stream; [`PendingCopy::ready`] makes the compute stream wait for it.
    Copying(torch_shim::CopyAhead),
}

impl PendingCopy {
    /// The tensor on the device, usable by work queued from now on (the host never waits).
    pub fn ready(self) -> Result<Tensor> {
        match self {
            PendingCopy::Done(t) => Ok(t),
            PendingCopy::Copying(copy) => copy.ready().map_err(|e| Error::input(format!("copying a batch: {e}"))),
        }
    }
}

/// [`to_device`] for a batch needed one step from now: on CUDA the copy runs on a side stream
/// while the compute stream finishes the current step (from page-locked memory; a tensor the
/// loader did not pin is pinned first); elsewhere it is done at once.
pub fn copy_ahead(t: &Tensor, device: Device) -> Result<PendingCopy> {
    match (t.device(), device) {
        (Device::Cpu, Device::Cuda(index)) => torch_shim::CopyAhead::start(&pinned(t)?, index)
            .map(PendingCopy::Copying)
            .map_err(|e| Error::input(format!("copying a batch: {e}"))),
        _ => to_device(t, device).map(PendingCopy::Done),
    }
}

/// Loads `libtorch_cuda.so` once; `Err` says why CUDA cannot be used.
pub fn cuda_backend() -> std::result::Result<(), String> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED.get_or_init(load_libtorch_cuda).clone()
}

fn load_libtorch_cuda() -> std::result::Result<(), String> {
    // Next to the libtorch_cpu.so in use first (a full PyTorch/libtorch install keeps them
    // together), then the dynamic loader's own search (LD_LIBRARY_PATH, RUNPATH).
    let mut candidates: Vec<PathBuf> = libtorch_cpu_dir().map(|d| d.join("libtorch_cuda.so")).into_iter().collect();
    candidates.push(PathBuf::from("libtorch_cuda.so"));
    let mut errors = Vec::new();
    for path in candidates {
        // SAFETY: loading libtorch's CUDA backend runs its initialisers, which only register the
        // backend with libtorch; the library stays loaded for the life of the process.
        match unsafe { libloading::os::unix::Library::open(Some(&path), libc_flags()) } {
            Ok(lib) => {
                std::mem::forget(lib);
                return Ok(());
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(format!(
        "libtorch's CUDA backend could not be loaded ({}); put a CUDA build of libtorch 2.11 (e.g. PyPI torch==2.11.0's torch/lib and its nvidia/*/lib) on LD_LIBRARY_PATH",
        errors.last().map(String::as_str).unwrap_or("not found")
    ))
}

fn libc_flags() -> i32 {
    libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL
}

/// Folder of the libtorch_cpu.so mapped into this process.
fn libtorch_cpu_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .and_then(|path| PathBuf::from(path).parent().map(PathBuf::from))
}

static DETERMINISTIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Deterministic kernels from now on (libtorch's deterministic algorithms, cuDNN's deterministic
/// mode, no cuDNN autotuning): a GPU run repeats bit for bit, e.g. a resumed run equals the
/// uninterrupted one. Slower; CPU kernels are deterministic anyway. Process-wide, like
/// `torch.use_deterministic_algorithms`.
pub fn set_deterministic(on: bool) {
    DETERMINISTIC.store(on, std::sync::atomic::Ordering::Relaxed);
    torch_shim::set_deterministic(on);
}

pub fn deterministic() -> bool {
    DETERMINISTIC.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `build` right after seeding libtorch's global random generator, holding the generator's
/// lock (`with_generator`), so that models initialised in other threads at the same time
/// (parallel tests, library users running several trainings) cannot interleave their draws: the
/// same seed always gives the same weights.
pub fn seeded<T>(seed: u64, build: impl FnOnce() -> T) -> T {
    with_generator(|| {
        tch::manual_seed(seed as i64);
        build()
    })
}

/// Runs `draw` holding a process-wide lock on libtorch's global random generator. Every model
/// build takes it (`ConModel::build`), so an unseeded build in one thread cannot shift the draws
/// of a seeded one in another. Re-entrant within a thread: `seeded(s, || ConModel::build(..))`
/// takes it once.
pub fn with_generator<T>(draw: impl FnOnce() -> T) -> T {
    use std::cell::Cell;
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    thread_local!(static HELD: Cell<bool> = const { Cell::new(false) });
    if HELD.with(Cell::get) {
        return draw();
    }
    let _guard = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    /// Clears the thread's mark however `draw` ends (a panic included), before the lock is released.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            HELD.with(|h| h.set(false));
        }
    }
    HELD.with(|h| h.set(true));
    let _release = Release;
    draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_requests() {
        assert_eq!("auto".parse::<DeviceRequest>().unwrap(), DeviceRequest::Auto);
        assert_eq!("cpu".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!("cuda".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda(3));
        let err = "gpu".parse::<DeviceRequest>().unwrap_err().to_string();
        assert!(err.starts_with("--device: 'gpu'"), "{err}");
    }

    #[test]
    fn finds_the_loaded_cpu_engine_and_falls_back_to_cpu() {
        let _ = tch::Tensor::zeros([1], (tch::Kind::Float, Device::Cpu));
        assert!(libtorch_cpu_dir().is_some_and(|d| d.join("libtorch_cpu.so").exists()));
        assert_eq!(select_device(DeviceRequest::Cpu).unwrap(), Device::Cpu);
        let auto = select_device(DeviceRequest::Auto).unwrap();
        assert!(auto == Device::Cpu || tch::Cuda::is_available());
        if cuda_backend().is_err() {
            let err = select_device(DeviceRequest::Cuda(0)).unwrap_err().to_string();
            assert!(err.starts_with("--device: cuda:0 requested but libtorch's CUDA backend"), "{err}");
        }
    }

    #[test]
    fn auto_on_a_gpu_host_without_cuda_says_why_and_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("nvidia0");
        let missing = Err("libtorch's CUDA backend could not be loaded (x); put ... on LD_LIBRARY_PATH".to_string());
        assert_eq!(auto_on_cpu_note(&node, &missing, false), None, "no GPU: the CPU is the right choice");
        std::fs::write(&node, b"").unwrap();
        let note = auto_on_cpu_note(&node, &missing, false).unwrap();
        assert!(note.contains("nvidia0 exists but --device auto runs on the CPU") && note.contains("LD_LIBRARY_PATH"));
        assert!(note.contains("--device cuda"), "{note}");
        assert!(auto_on_cpu_note(&node, &Ok(()), false).unwrap().contains("sees no usable GPU"));
        assert_eq!(auto_on_cpu_note(&node, &Ok(()), true), None, "CUDA works");
    }
}
