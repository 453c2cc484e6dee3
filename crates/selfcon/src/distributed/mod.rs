//! Data-parallel training over c10d, PyTorch's own distributed engine (through `torch-shim`):
//! one process per device, rendezvous through a TCPStore on rank 0, collectives on the NCCL
//! process group of libtorch_cuda (GPU ranks, when the NCCL shim is built) or the Gloo process
//! group of libtorch_cpu (CPU ranks; GPU ranks through host memory).
//!
//! A process joins at most one run, so the group is process-wide ([`init`], [`current`]), as
//! torch.distributed's default group is. What each part does:
//! - [`env`]: rank and rendezvous address from `selfcon launch` / torchrun / SLURM variables;
//! - [`launch`]: `selfcon launch`, which starts and supervises one process per device;
//! - [`gradients`]: bucketed all-reduce of the gradients after backward;
//! - [`global_batch`]: features and labels of the whole global batch for the contrastive loss;
//! - [`sync_bn`]: BatchNorm statistics over the global batch;
//! - [`health`]: heartbeats, and which rank to blame when a collective fails.

pub mod env;
pub mod global_batch;
pub mod gradients;
pub mod health;
pub mod launch;
pub mod options;
pub mod sync_bn;

use std::sync::OnceLock;
use std::time::Duration;

use tch::{nn::VarStore, Device, Kind, Tensor};
use torch_shim::distributed::{ProcessGroup, TcpStore};

pub use env::RankEnv;
pub use options::{Backend, DistributedOptions};

use crate::error::{Error, Result};
use health::Heartbeat;

/// This process's membership in a distributed run.
pub struct Distributed {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    /// This rank's device: the requested one, `cuda:LOCAL_RANK` for a GPU rank.
    pub device: Device,
    /// The backend carrying the collectives (`Gloo` or `Nccl`, never `Auto`).
    pub backend: Backend,
    /// Why `--dist_backend auto` put this GPU rank on Gloo (the NCCL shim missing or unusable).
    pub nccl_unavailable: Option<String>,
    pub options: DistributedOptions,
    /// `host:port` of the rendezvous store, for messages.
    master: String,
    store: TcpStore,
    group: ProcessGroup,
    /// The per-step stop votes' group when `group` works in device memory (NCCL): a Gloo group on
    /// the host, so that a vote never waits for the GPU's queued work (as torch.distributed runs
    /// its control messages on a CPU group beside NCCL). `None`: `group` is on the host already.
    control: Option<ProcessGroup>,
    _heartbeat: Heartbeat,
    /// Time spent in the gradient all-reduce, for benchmarks.
    sync_nanos: std::sync::atomic::AtomicU64,
}

static CURRENT: OnceLock<Distributed> = OnceLock::new();

/// The run this process belongs to, once [`init`] joined it.
pub fn current() -> Option<&'static Distributed> {
    CURRENT.get()
}

/// Whether this process writes files, logs and shows progress: rank 0, or any process that is
/// not part of a distributed run.
pub fn is_primary() -> bool {
    current().is_none_or(|d| d.rank == 0)
}

/// Integer counters summed over the ranks of a distributed run (unchanged outside one):
/// evaluation counts of each rank's shard become counts over the whole set.
pub fn total_counts(counts: Vec<i64>, what: &str) -> Result<Vec<i64>> {
    match current() {
        Some(d) if d.world_size > 1 => d.sum_counts(&counts, what),
        _ => Ok(counts),
    }
}

/// Joins the run described by the environment (no-op returning `None` outside one) on `device`
/// (the requested device; a GPU rank gets `cuda:LOCAL_RANK`). Blocks until every rank arrived, at
/// most `options.timeout_s`.
pub fn init(options: &DistributedOptions, device: Device) -> Result<Option<&'static Distributed>> {
    let Some(env) = RankEnv::from_env()? else {
        return Ok(None);
    };
    if let Some(d) = current() {
        return Ok(Some(d));
    }
    if std::env::var_os("TORCH_CPP_LOG_LEVEL").is_none() {
        // c10d logs its socket timeouts as warnings; our own error line says what happened.
        torch_shim::set_log_level(torch_shim::LogLevel::Error);
    }
    let device = rank_device(&env, device)?;
    let (backend, nccl_unavailable) = resolve_backend(options.backend, device)?;
    let timeout = Duration::from_secs(options.timeout_s.max(1));
    let master = format!("{}:{}", env.master_addr, env.master_port);
    let store = TcpStore::connect(&env.master_addr, env.master_port, env.rank == 0, Some(env.world_size), timeout)
        .map_err(|e| {
            if e.0.contains("EADDRINUSE") {
                return Error::input(format!(
                    "rank {}: port {} is already in use on {} (choose another --master_port / MASTER_PORT)",
                    env.rank, env.master_port, env.master_addr
                ));
            }
            let role = if env.rank == 0 { "could not listen on" } else { "could not reach" };
            Error::Distributed(format!(
                "rank {}: {role} the rendezvous store at {master} within {} s (MASTER_ADDR/MASTER_PORT, --master_port; {})",
                env.rank, options.timeout_s, e.0
            ))
        })?;
    agree_on_backend(&store, env.rank, backend, timeout)?;
    let group = match (backend, device) {
        (Backend::Nccl, Device::Cuda(index)) => ProcessGroup::nccl(&store, env.rank, env.world_size, timeout, index),
        _ => ProcessGroup::gloo(&store, env.rank, env.world_size, timeout),
    }
    .map_err(|e| {
        let avoid = if backend == Backend::Nccl { " (--dist_backend gloo avoids NCCL)" } else { "" };
        Error::Distributed(format!("rank {}: joining the {backend} process group failed{avoid}: {}", env.rank, e.0))
    })?;
    let control = match backend {
        Backend::Nccl => Some(
            store
                .prefixed("selfcon/control")
                .and_then(|store| ProcessGroup::gloo(&store, env.rank, env.world_size, timeout))
                .map_err(|e| {
                Error::Distributed(format!(
                    "rank {}: joining the host-side Gloo group for stop votes failed (across machines whose host names resolve to a loopback or unreachable address, name the interface with GLOO_SOCKET_IFNAME as well as NCCL_SOCKET_IFNAME): {}",
                    env.rank, e.0
                ))
            })?,
        ),
        _ => None,
    };
    let heartbeat = Heartbeat::start(&env.master_addr, env.master_port, env.rank, timeout)?;
    let d = Distributed {
        rank: env.rank,
        world_size: env.world_size,
        local_rank: env.local_rank,
        device,
        backend,
        nccl_unavailable,
        options: options.clone(),
        master,
        store,
        group,
        control,
        _heartbeat: heartbeat,
        sync_nanos: Default::default(),
    };
    let _ = CURRENT.set(d);
    Ok(current())
}

/// The device of a rank: `cuda:LOCAL_RANK` when `device` is a GPU (made the process's current
/// device, as `torch.cuda.set_device`), else `device`.
fn rank_device(env: &RankEnv, device: Device) -> Result<Device> {
    let Device::Cuda(_) = device else { return Ok(device) };
    // The CUDA backend before the first CUDA question (libtorch caches the answer).
    crate::engine::use_device(Device::Cuda(0))?;
    let count = tch::Cuda::device_count() as usize;
    if env.local_rank >= count {
        return Err(Error::input(format!(
            "rank {} has LOCAL_RANK {} but this machine shows {count} CUDA device(s) (--nproc_per_node at most the GPU count)",
            env.rank, env.local_rank
        )));
    }
    torch_shim::set_device(env.local_rank)
        .map_err(|e| Error::input(format!("rank {}: selecting cuda:{}: {}", env.rank, env.local_rank, e.0)))?;
    Ok(Device::Cuda(env.local_rank))
}

/// `--dist_backend` for a rank on `device` (libtorch's CUDA backend already loaded for a GPU):
/// `auto` is NCCL for GPU ranks when the NCCL shim is built and usable (else Gloo, through host
/// memory, with the reason) and Gloo for CPU ranks; `nccl` needs both.
fn resolve_backend(requested: Backend, device: Device) -> Result<(Backend, Option<String>)> {
    let nccl = || torch_shim::distributed::nccl_ready().map_err(|e| e.0);
    match (requested, device) {
        (Backend::Gloo, _) => Ok((Backend::Gloo, None)),
        (Backend::Nccl, Device::Cuda(_)) => match nccl() {
            Ok(_) => Ok((Backend::Nccl, None)),
            Err(why) => Err(Error::option("dist_backend", format!("nccl: {why}"))),
        },
        (Backend::Nccl, _) => {
            Err(Error::option("dist_backend", "nccl needs GPU ranks (--device cuda); CPU ranks use gloo"))
        }
        (Backend::Auto, Device::Cuda(_)) => match nccl() {
            Ok(_) => Ok((Backend::Nccl, None)),
            Err(why) => Ok((Backend::Gloo, Some(why))),
        },
        (Backend::Auto, _) => Ok((Backend::Gloo, None)),
    }
}

/// Refuses to build process groups of different kinds: `auto` is resolved on each rank (a node
/// without the NCCL shim would pick Gloo), so every rank compares its choice with rank 0's first.
fn agree_on_backend(store: &TcpStore, rank: usize, backend: Backend, timeout: Duration) -> Result<()> {
    let failed = |e: torch_shim::ShimError| {
        Error::Distributed(format!("rank {rank}: exchanging the --dist_backend choice failed: {}", e.0))
    };
    if rank == 0 {
        return store.set("selfcon/backend", backend.to_string().as_bytes()).map_err(failed);
    }
    let primary = store.get("selfcon/backend", timeout).map_err(failed)?;
    let primary = String::from_utf8_lossy(&primary);
    if primary != backend.to_string() {
        return Err(Error::option(
            "dist_backend",
            format!("rank {rank} would use {backend} but rank 0 uses {primary} (is the NCCL shim missing on some node?); name the backend explicitly"),
        ));
    }
    Ok(())
}

/// Ends this process's part in the run before it exits: the NCCL group's communicators and
/// watchdog threads stop before the process does (a no-op outside a run and for Gloo). After a
/// `clean` run they are shut down gracefully (pending work flushed, PyTorch's
/// `destroy_process_group`); otherwise aborted, since a collective left pending by a failure (a
/// peer gone) would never finish.
pub fn shutdown(clean: bool) -> Result<()> {
    match current() {
        Some(d) if d.backend == Backend::Nccl => {
            let (ended, how) = if clean { (d.group.shutdown(), "shutting") } else { (d.group.abort(), "aborting") };
            ended.map_err(|e| Error::Distributed(format!("rank {}: {how} NCCL down: {}", d.rank, e.0)))
        }
        _ => Ok(()),
    }
}

impl Distributed {
    /// Sums tensors over ranks in place.
    pub fn all_reduce_sum(&self, tensors: &[&Tensor], what: &str) -> Result<()> {
        self.group.all_reduce_sum(tensors).map_err(|e| self.failed(what, e))
    }

    /// Every rank's `t`, in rank order (not differentiable).
    pub fn all_gather(&self, t: &Tensor, what: &str) -> Result<Vec<Tensor>> {
        self.group.all_gather(t).map_err(|e| self.failed(what, e))
    }

    /// Sums host values over the ranks without involving the device: on the host-side group
    /// beside NCCL, else on the (host) Gloo group. For the per-step stop votes.
    pub fn sum_votes(&self, values: &[f64], what: &str) -> Result<Vec<f64>> {
        let group = self.control.as_ref().unwrap_or(&self.group);
        let t = Tensor::from_slice(values).to_kind(Kind::Double);
        group.all_reduce_sum(&[&t]).map_err(|e| self.failed(what, e))?;
        Ok(Vec::<f64>::try_from(&t).unwrap_or_default())
    }

    /// `t`'s sum over the ranks, element by element, added in rank order where `t` is (NCCL: on
    /// the GPU, the host does not wait): the same bits whatever `t`'s length, which an
    /// all-reduce (whose summation order follows the message's chunking) does not promise.
    pub fn sum_in_rank_order(&self, t: &Tensor, what: &str) -> Result<Tensor> {
        let parts = self.all_gather(t, what)?;
        let mut sum = parts[0].copy();
        for part in &parts[1..] {
            sum += part;
        }
        Ok(sum)
    }

    /// The sums over ranks of integer counters.
    pub fn sum_counts(&self, counts: &[i64], what: &str) -> Result<Vec<i64>> {
        let t = Tensor::from_slice(counts);
        self.all_reduce_sum(&[&t], what)?;
        Ok(Vec::<i64>::try_from(&t).unwrap_or_default())
    }

    /// Every rank's `t` stacked as `[world size, ...]`, differentiable (see
    /// `ProcessGroup::all_gather_autograd`).
    pub fn all_gather_autograd(&self, t: &Tensor, what: &str) -> Result<Tensor> {
        self.group.all_gather_autograd(t).map_err(|e| self.failed(what, e))
    }

    /// Rank 0's values of every variable of `vs` (at the start, as DDP does).
    pub fn broadcast_from_primary(&self, vs: &VarStore) -> Result<()> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors: Vec<&Tensor> = vars.iter().map(|(_, t)| t).collect();
        self.broadcast(&tensors, "broadcasting rank 0's weights")
    }

    /// Refuses to start unless every rank has the same run configuration (`config_json`, the
    /// serialised configuration of the stage about to run).
    pub fn agree_on_config(&self, config_json: &str) -> Result<()> {
        // One exchange per training stage this process runs, numbered alike on every rank.
        static EXCHANGES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = EXCHANGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = |r: usize| format!("selfcon/config/{n}/{r}");
        let timeout = Duration::from_secs(self.options.timeout_s.max(1));
        let store_error = |e: torch_shim::ShimError| self.failed("exchanging the run configuration", e);
        self.store.set(&key(self.rank), config_json.as_bytes()).map_err(store_error)?;
        let reference = self.store.get(&key(0), timeout).map_err(store_error)?;
        for r in 1..self.world_size {
            let other = self.store.get(&key(r), timeout).map_err(store_error)?;
            if other != reference {
                let difference = first_difference(&reference, &other);
                return Err(Error::input(format!(
                    "rank {r} was started with another configuration than rank 0 ({difference}); every rank needs the same command line"
                )));
            }
        }
        Ok(())
    }

    /// Overwrites every tensor with rank 0's values.
    pub fn broadcast(&self, tensors: &[&Tensor], what: &str) -> Result<()> {
        tch::no_grad(|| self.group.broadcast(tensors, 0)).map_err(|e| self.failed(what, e))
    }

    /// A collective that failed inside libtorch (e.g. during backward), diagnosed as [`health`] does.
    pub fn failure(&self, what: &str, cause: &str) -> Error {
        let first = cause.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or(cause);
        Error::Distributed(health::diagnose(self, what, first))
    }

    /// A failed collective as one line naming the rank that stopped responding (see [`health`]).
    fn failed(&self, what: &str, e: torch_shim::ShimError) -> Error {
        Error::Distributed(health::diagnose(self, what, &e.0))
    }
}

/// "batch_size: 64 vs 32" for the first top-level (or nested) field that differs.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let (Ok(a), Ok(b)) =
        (serde_json::from_slice::<serde_json::Value>(a), serde_json::from_slice::<serde_json::Value>(b))
    else {
        return "unreadable configuration".into();
    };
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                keys.into_iter().find_map(|k| {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    match (x.get(k), y.get(k)) {
                        (Some(u), Some(v)) => walk(&p, u, v),
                        (u, v) => Some(format!("{p}: {} vs {}", show(u), show(v))),
                    }
                })
            }
            _ if a != b => Some(format!("{path}: {a} vs {b}")),
            _ => None,
        }
    }
    fn show(v: Option<&serde_json::Value>) -> String {
        v.map_or("absent".into(), |v| v.to_string())
    }
    walk("", &a, &b).unwrap_or_else(|| "same values, different text".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_follows_the_rank_device_and_the_nccl_shim() {
        // No libtorch_cuda in this process: the NCCL shim, built or not, is never usable here.
        assert!(torch_shim::distributed::nccl_ready().is_err());
        assert_eq!(resolve_backend(Backend::Auto, Device::Cpu).unwrap(), (Backend::Gloo, None));
        assert_eq!(resolve_backend(Backend::Gloo, Device::Cuda(0)).unwrap(), (Backend::Gloo, None));
        let (backend, why) = resolve_backend(Backend::Auto, Device::Cuda(0)).unwrap();
        assert_eq!(backend, Backend::Gloo);
        assert!(why.is_some_and(|why| !why.is_empty()));
        let cpu = resolve_backend(Backend::Nccl, Device::Cpu).unwrap_err().to_string();
        assert!(cpu.contains("--dist_backend") && cpu.contains("GPU ranks"), "{cpu}");
        let gpu = resolve_backend(Backend::Nccl, Device::Cuda(1)).unwrap_err().to_string();
        assert!(gpu.contains("--dist_backend") && gpu.contains("nccl: "), "{gpu}");
        assert_eq!(gpu.trim_end().lines().count(), 1, "{gpu}");
    }

    #[test]
    fn ranks_that_resolved_different_backends_are_refused() {
        let timeout = Duration::from_secs(10);
        let primary = TcpStore::connect("127.0.0.1", 29618, true, None, timeout).unwrap();
        agree_on_backend(&primary, 0, Backend::Nccl, timeout).unwrap();
        let other = TcpStore::connect("127.0.0.1", 29618, false, None, timeout).unwrap();
        agree_on_backend(&other, 1, Backend::Nccl, timeout).unwrap();
        let err = agree_on_backend(&other, 2, Backend::Gloo, timeout).unwrap_err().to_string();
        assert!(err.contains("--dist_backend") && err.contains("rank 0 uses nccl"), "{err}");
    }
}
