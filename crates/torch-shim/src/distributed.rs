//! c10d from Rust: the TCPStore rendezvous, the Gloo process group of libtorch_cpu and the NCCL
//! process group of libtorch_cuda (`src/distributed.cpp`, `src/nccl.cpp`). Gloo reduces in host
//! memory (tensors on an accelerator are staged there), its collectives block until done and
//! report peer failures (a closed connection, a timeout) as errors. NCCL reduces in its GPU's
//! memory and the host only waits where it reads a result; a peer that fails or hangs past the
//! timeout is caught by libtorch's NCCL watchdog, which ends the process (as in PyTorch).

use std::ffi::{c_char, c_int, CString};
use std::path::PathBuf;
use std::time::Duration;

use tch::Tensor;

use super::{checked, Result, ShimError};

mod ffi {
    use std::ffi::{c_char, c_int};

    #[repr(C)]
    pub struct SelfconStore {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct SelfconGroup {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct SelfconBuckets {
        _private: [u8; 0],
    }

    extern "C" {
        pub fn selfcon_shim_free_error(err: *mut c_char);
        pub fn selfcon_shim_tcp_store_new(
            host: *const c_char,
            port: c_int,
            world_size: c_int,
            is_server: c_int,
            timeout_ms: i64,
            err: *mut *mut c_char,
        ) -> *mut SelfconStore;
        pub fn selfcon_shim_store_free(store: *mut SelfconStore);
        pub fn selfcon_shim_store_prefixed(
            store: *mut SelfconStore,
            prefix: *const c_char,
            err: *mut *mut c_char,
        ) -> *mut SelfconStore;
        pub fn selfcon_shim_store_set(
            store: *mut SelfconStore,
            key: *const c_char,
            data: *const u8,
            len: i64,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn selfcon_shim_store_get(
            store: *mut SelfconStore,
            key: *const c_char,
            timeout_ms: i64,
            data: *mut *mut u8,
            len: *mut i64,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn selfcon_shim_store_check(store: *mut SelfconStore, key: *const c_char, err: *mut *mut c_char) -> c_int;
        pub fn selfcon_shim_store_add(
            store: *mut SelfconStore,
            key: *const c_char,
            value: i64,
            err: *mut *mut c_char,
        ) -> i64;
        pub fn selfcon_shim_gloo_group_new(
            store: *mut SelfconStore,
            rank: c_int,
            size: c_int,
            timeout_ms: i64,
            err: *mut *mut c_char,
        ) -> *mut SelfconGroup;
        pub fn selfcon_shim_nccl_group_new(
            store: *mut SelfconStore,
            rank: c_int,
            size: c_int,
            timeout_ms: i64,
            device: c_int,
            library: *const c_char,
            err: *mut *mut c_char,
        ) -> *mut SelfconGroup;
        pub fn selfcon_shim_nccl_check(library: *const c_char, err: *mut *mut c_char) -> c_int;
        pub fn selfcon_shim_group_shutdown(group: *mut SelfconGroup, err: *mut *mut c_char) -> c_int;
        pub fn selfcon_shim_group_abort(group: *mut SelfconGroup, err: *mut *mut c_char) -> c_int;
        pub fn selfcon_shim_group_free(group: *mut SelfconGroup);
        pub fn selfcon_shim_all_reduce_sum(
            group: *mut SelfconGroup,
            tensors: *const *mut u8,
            n: i64,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn selfcon_shim_all_gather(
            group: *mut SelfconGroup,
            input: *const u8,
            outputs: *mut *mut u8,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn selfcon_shim_broadcast(
            group: *mut SelfconGroup,
            tensors: *const *mut u8,
            n: i64,
            root: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn selfcon_shim_barrier(group: *mut SelfconGroup, err: *mut *mut c_char) -> c_int;
        pub fn selfcon_shim_buckets_new(
            group: *mut SelfconGroup,
            params: *const *mut u8,
            n: i64,
            bucket_bytes: i64,
            overlap: c_int,
            err: *mut *mut c_char,
        ) -> *mut SelfconBuckets;
        pub fn selfcon_shim_buckets_finish(buckets: *mut SelfconBuckets, scale: f64, err: *mut *mut c_char) -> c_int;
        pub fn selfcon_shim_buckets_free(buckets: *mut SelfconBuckets);
        pub fn selfcon_shim_all_gather_autograd(
            group: *mut SelfconGroup,
            input: *const u8,
            err: *mut *mut c_char,
        ) -> *mut u8;
        #[allow(clippy::too_many_arguments)]
        pub fn selfcon_shim_sync_batch_norm(
            group: *mut SelfconGroup,
            input: *const u8,
            weight: *const u8,
            bias: *const u8,
            running_mean: *const u8,
            running_var: *const u8,
            eps: f64,
            momentum: f64,
            err: *mut *mut c_char,
        ) -> *mut u8;
    }
}

fn c_string(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| ShimError(format!("'{s}' contains a NUL byte")))
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// A client of c10d's TCPStore (the key-value rendezvous of torch.distributed); the client of
/// rank 0 also runs the server.
pub struct TcpStore {
    raw: *mut ffi::SelfconStore,
}

// SAFETY: c10d::TCPStore serialises its operations internally; the handle is only freed in Drop.
unsafe impl Send for TcpStore {}
unsafe impl Sync for TcpStore {}

impl TcpStore {
    /// Connects to `host:port` (with `server`, listens there first). With `wait_for = Some(n)`
    /// the call returns once `n` clients joined; `timeout` bounds that and every later wait.
    pub fn connect(host: &str, port: u16, server: bool, wait_for: Option<usize>, timeout: Duration) -> Result<Self> {
        let host = c_string(host)?;
        let world = wait_for.map_or(0, |n| n as c_int);
        let raw = checked(|err| unsafe {
            ffi::selfcon_shim_tcp_store_new(host.as_ptr(), port as c_int, world, server as c_int, millis(timeout), err)
        })?;
        if raw.is_null() {
            return Err(ShimError("TCPStore: no store was created".into()));
        }
        Ok(TcpStore { raw })
    }

    /// The same store seen through a key prefix (c10d's PrefixStore, as torch.distributed gives
    /// each process group; key `k` is stored as `prefix/k`): a second group rendezvousing here
    /// never meets the first one's keys.
    pub fn prefixed(&self, prefix: &str) -> Result<Self> {
        let prefix = c_string(prefix)?;
        let raw = checked(|err| unsafe { ffi::selfcon_shim_store_prefixed(self.raw, prefix.as_ptr(), err) })?;
        if raw.is_null() {
            return Err(ShimError("PrefixStore: no store was created".into()));
        }
        Ok(TcpStore { raw })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let key = c_string(key)?;
        checked(|err| unsafe {
            ffi::selfcon_shim_store_set(self.raw, key.as_ptr(), value.as_ptr(), value.len() as i64, err)
        })
        .map(drop)
    }

    /// The value of `key`, waiting up to `timeout` for some client to set it.
    pub fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let key = c_string(key)?;
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut len: i64 = 0;
        checked(|err| unsafe {
            ffi::selfcon_shim_store_get(self.raw, key.as_ptr(), millis(timeout), &mut data, &mut len, err)
        })?;
        // SAFETY: the shim malloc'ed `len` (+1) bytes; copied out and freed exactly once.
        let value = unsafe { std::slice::from_raw_parts(data, len as usize) }.to_vec();
        unsafe { ffi::selfcon_shim_free_error(data as *mut c_char) };
        Ok(value)
    }

    /// Whether `key` is set (no waiting).
    pub fn contains(&self, key: &str) -> Result<bool> {
        let key = c_string(key)?;
        checked(|err| unsafe { ffi::selfcon_shim_store_check(self.raw, key.as_ptr(), err) }).map(|v| v == 1)
    }

    /// Atomically adds `value` to the counter `key` and returns the new value.
    pub fn add(&self, key: &str, value: i64) -> Result<i64> {
        let key = c_string(key)?;
        checked(|err| unsafe { ffi::selfcon_shim_store_add(self.raw, key.as_ptr(), value, err) })
    }
}

impl Drop for TcpStore {
    fn drop(&mut self) {
        // SAFETY: created by selfcon_shim_tcp_store_new, freed once.
        unsafe { ffi::selfcon_shim_store_free(self.raw) }
    }
}

/// A c10d process group of `size` processes: ProcessGroupGloo (TCP, host memory) or
/// ProcessGroupNCCL (one GPU per process, device memory).
pub struct ProcessGroup {
    raw: *mut ffi::SelfconGroup,
    rank: usize,
    size: usize,
}

// SAFETY: c10d backends are used from several threads in torch.distributed (the autograd engine
// calls into them during backward); Gloo queues work on its own threads.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

fn tensor_ptrs(tensors: &[&Tensor]) -> Vec<*mut u8> {
    tensors.iter().map(|t| t.as_ptr() as *mut u8).collect()
}

/// Where the NCCL shim object (`libselfcon_nccl.so`, built from `src/nccl.cpp` when the CUDA/NCCL
/// headers were installed) is, or why there is none. Looked for in `SELFCON_NCCL_LIB`, next to
/// the running executable, then where this build compiled it.
pub fn nccl_shim() -> Result<PathBuf> {
    const NAME: &str = "libselfcon_nccl.so";
    if let Some(path) = std::env::var_os("SELFCON_NCCL_LIB") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ShimError(format!("SELFCON_NCCL_LIB={} is not a file", path.display())))
        };
    }
    let beside_exe = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(NAME)));
    let built = Some(env!("SELFCON_NCCL_SHIM_BUILT")).filter(|p| !p.is_empty()).map(PathBuf::from);
    beside_exe.into_iter().chain(built.clone()).find(|p| p.is_file()).ok_or_else(|| {
        ShimError(match built {
            None => "this build has no NCCL shim: run `SELFCON_NCCL=1 ./scripts/setup.sh` (fetches the CUDA/NCCL headers), then rebuild".into(),
            Some(path) => format!("the NCCL shim built at {} is gone (rebuild, or set SELFCON_NCCL_LIB)", path.display()),
        })
    })
}

/// The NCCL shim object, checked: it loads (libtorch's CUDA backend must be loaded already, with
/// RTLD_GLOBAL) and its nccl.h is the version libtorch_cuda was built with. Run before a rank
/// commits to NCCL, so that a mismatch is refused (or avoided) before the rendezvous.
pub fn nccl_ready() -> Result<PathBuf> {
    let library = nccl_shim()?;
    let path = c_string(&library.to_string_lossy())?;
    checked(|err| unsafe { ffi::selfcon_shim_nccl_check(path.as_ptr(), err) })?;
    Ok(library)
}

impl ProcessGroup {
    /// Joins the group through `store`; every collective fails after `timeout` without peers.
    pub fn gloo(store: &TcpStore, rank: usize, size: usize, timeout: Duration) -> Result<Self> {
        let raw = checked(|err| unsafe {
            ffi::selfcon_shim_gloo_group_new(store.raw, rank as c_int, size as c_int, millis(timeout), err)
        })?;
        if raw.is_null() {
            return Err(ShimError("ProcessGroupGloo: no group was created".into()));
        }
        Ok(ProcessGroup { raw, rank, size })
    }

    /// Joins an NCCL group on `cuda:device` through `store` (its communicator is connected before
    /// this returns). libtorch's CUDA backend must be loaded already (RTLD_GLOBAL): the NCCL shim
    /// object ([`nccl_shim`]) takes libtorch_cuda's symbols from it.
    pub fn nccl(store: &TcpStore, rank: usize, size: usize, timeout: Duration, device: usize) -> Result<Self> {
        let library = nccl_shim()?;
        let library = c_string(&library.to_string_lossy())?;
        let raw = checked(|err| unsafe {
            ffi::selfcon_shim_nccl_group_new(
                store.raw,
                rank as c_int,
                size as c_int,
                millis(timeout),
                device as c_int,
                library.as_ptr(),
                err,
            )
        })?;
        if raw.is_null() {
            return Err(ShimError("ProcessGroupNCCL: no group was created".into()));
        }
        Ok(ProcessGroup { raw, rank, size })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Sums each tensor over all ranks, in place; all reductions are in flight together.
    pub fn all_reduce_sum(&self, tensors: &[&Tensor]) -> Result<()> {
        let ptrs = tensor_ptrs(tensors);
        checked(|err| unsafe { ffi::selfcon_shim_all_reduce_sum(self.raw, ptrs.as_ptr(), ptrs.len() as i64, err) })
            .map(drop)
    }

    /// Every rank's `input` (same shape on all ranks), in rank order. Not differentiable.
    pub fn all_gather(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        let mut outputs: Vec<*mut u8> = vec![std::ptr::null_mut(); self.size];
        checked(|err| unsafe {
            ffi::selfcon_shim_all_gather(self.raw, input.as_ptr() as *const u8, outputs.as_mut_ptr(), err)
        })?;
        // SAFETY: on success the shim filled every slot with a new at::Tensor we now own.
        Ok(outputs.into_iter().map(|p| unsafe { Tensor::from_ptr(p as *mut _) }).collect())
    }

    /// Overwrites every tensor with its value on `root`.
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<()> {
        let ptrs = tensor_ptrs(tensors);
        checked(|err| unsafe {
            ffi::selfcon_shim_broadcast(self.raw, ptrs.as_ptr(), ptrs.len() as i64, root as c_int, err)
        })
        .map(drop)
    }

    pub fn barrier(&self) -> Result<()> {
        checked(|err| unsafe { ffi::selfcon_shim_barrier(self.raw, err) }).map(drop)
    }

    /// Ends the group's work at a normal exit: NCCL's communicators and watchdog threads stop
    /// before the process does (PyTorch's `destroy_process_group`); a no-op for Gloo.
    pub fn shutdown(&self) -> Result<()> {
        checked(|err| unsafe { ffi::selfcon_shim_group_shutdown(self.raw, err) }).map(drop)
    }

    /// Ends the group's work after a failure: NCCL aborts its communicators, dropping pending
    /// collectives (which a graceful [`ProcessGroup::shutdown`] would wait for, forever when a
    /// peer is gone); a no-op for Gloo.
    pub fn abort(&self) -> Result<()> {
        checked(|err| unsafe { ffi::selfcon_shim_group_abort(self.raw, err) }).map(drop)
    }
}

impl ProcessGroup {
    /// Every rank's `input` stacked as `[size, ...]` in rank order, differentiable: the backward
    /// pass gives this rank's input the sum over ranks of the gradients of its own slice.
    pub fn all_gather_autograd(&self, input: &Tensor) -> Result<Tensor> {
        let ptr = checked(|err| unsafe {
            ffi::selfcon_shim_all_gather_autograd(self.raw, input.as_ptr() as *const u8, err)
        })?;
        // SAFETY: a new at::Tensor we now own.
        Ok(unsafe { Tensor::from_ptr(ptr as *mut _) })
    }

    /// Training-mode batch norm of `input` (`[N, C, ...]`, CUDA) over the group's global batch
    /// with torch.nn.SyncBatchNorm's fused CUDA kernels (`batch_norm_stats`,
    /// `batch_norm_gather_stats_with_counts`, `batch_norm_elemt` forward; `batch_norm_backward_reduce`,
    /// an all-reduce, `batch_norm_backward_elemt` backward); `running_mean`/`running_var` are
    /// updated in place. The input keeps its dtype and memory format; statistics are fp32.
    #[allow(clippy::too_many_arguments)]
    pub fn sync_batch_norm(
        &self,
        input: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        eps: f64,
        momentum: f64,
    ) -> Result<Tensor> {
        let ptr = checked(|err| unsafe {
            ffi::selfcon_shim_sync_batch_norm(
                self.raw,
                input.as_ptr() as *const u8,
                weight.as_ptr() as *const u8,
                bias.as_ptr() as *const u8,
                running_mean.as_ptr() as *const u8,
                running_var.as_ptr() as *const u8,
                eps,
                momentum,
                err,
            )
        })?;
        // SAFETY: a new at::Tensor we now own.
        Ok(unsafe { Tensor::from_ptr(ptr as *mut _) })
    }
}

/// Bucketed gradient all-reduce, as DDP's: gradients are packed into buckets of about
/// `bucket_bytes` and each bucket is all-reduced on its own; [`GradientBuckets::finish`] writes
/// `sum × scale` into each parameter's gradient. With `overlap`, hooks on the parameters pack each
/// gradient as autograd produces it and start a bucket's all-reduce as soon as it is full (DDP's
/// Reducer); then every rank must produce its gradients in the same order (same model), and each
/// parameter at most once per backward pass. The group must outlive the buckets.
pub struct GradientBuckets {
    raw: *mut ffi::SelfconBuckets,
}

// SAFETY: the C++ side locks its state; hooks run on autograd's threads by design.
unsafe impl Send for GradientBuckets {}
unsafe impl Sync for GradientBuckets {}

impl GradientBuckets {
    pub fn new(group: &ProcessGroup, params: &[Tensor], bucket_bytes: i64, overlap: bool) -> Result<Self> {
        let ptrs: Vec<*mut u8> = params.iter().map(|t| t.as_ptr() as *mut u8).collect();
        let raw = checked(|err| unsafe {
            ffi::selfcon_shim_buckets_new(
                group.raw,
                ptrs.as_ptr(),
                ptrs.len() as i64,
                bucket_bytes,
                overlap as c_int,
                err,
            )
        })?;
        if raw.is_null() {
            return Err(ShimError("no gradient buckets were created".into()));
        }
        Ok(GradientBuckets { raw })
    }

    /// After backward: every gradient becomes the sum over ranks times `scale`.
    pub fn finish(&self, scale: f64) -> Result<()> {
        checked(|err| unsafe { ffi::selfcon_shim_buckets_finish(self.raw, scale, err) }).map(drop)
    }
}

impl Drop for GradientBuckets {
    fn drop(&mut self) {
        // SAFETY: removes the hooks and frees the state created in `new`, once.
        unsafe { ffi::selfcon_shim_buckets_free(self.raw) }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by selfcon_shim_gloo_group_new / selfcon_shim_nccl_group_new, freed once.
        unsafe { ffi::selfcon_shim_group_free(self.raw) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// Runs `body(rank, group)` on two threads joined through a store on 127.0.0.1.
    fn two_ranks<T: Send + 'static>(port: u16, body: fn(usize, &ProcessGroup) -> T) -> Vec<T> {
        two_ranks_with(port, body, |rank, group, body| body(rank, group))
    }

    /// As [`two_ranks`], handing `arg` to every rank.
    fn two_ranks_with<A: Copy + Send + 'static, T: Send + 'static>(
        port: u16,
        arg: A,
        body: fn(usize, &ProcessGroup, A) -> T,
    ) -> Vec<T> {
        let timeout = Duration::from_secs(30);
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                std::thread::spawn(move || {
                    let store = TcpStore::connect("127.0.0.1", port, rank == 0, Some(2), timeout).unwrap();
                    let group = ProcessGroup::gloo(&store, rank, 2, timeout).unwrap();
                    body(rank, &group, arg)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn collectives_between_two_ranks() {
        let out = two_ranks(29611, |rank, group| {
            let a = Tensor::from_slice(&[1.0f32, 2.0]) * (rank as f64 + 1.0);
            let b = Tensor::from_slice(&[10i64]) * (rank as i64 + 1);
            group.all_reduce_sum(&[&a, &b]).unwrap();
            let gathered = group.all_gather(&Tensor::from_slice(&[rank as f32, 7.0])).unwrap();
            let c = Tensor::from_slice(&[rank as f32 + 5.0]);
            group.broadcast(&[&c], 1).unwrap();
            group.barrier().unwrap();
            (
                Vec::<f32>::try_from(&a).unwrap(),
                b.int64_value(&[0]),
                Vec::<f32>::try_from(&Tensor::cat(&gathered, 0)).unwrap(),
                c.double_value(&[0]),
            )
        });
        for (a, b, g, c) in out {
            assert_eq!(a, vec![3.0, 6.0]);
            assert_eq!(b, 30);
            assert_eq!(g, vec![0.0, 7.0, 1.0, 7.0]);
            assert_eq!(c, 6.0);
        }
    }

    #[test]
    fn differentiable_all_gather_sums_the_gradients_of_each_slice() {
        // Rank r computes loss_r = (r + 1) · Σ_k (k + 1) · Σ gathered[k]; d(loss_0 + loss_1)/dx_r = 3 · (r + 1).
        let out = two_ranks(29614, |rank, group| {
            let x = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
            let gathered = group.all_gather_autograd(&(&x * (rank as f64 + 1.0))).unwrap();
            let weights = Tensor::from_slice(&[1.0f64, 2.0]).view([2, 1]);
            let loss = (&gathered * &weights).sum(Kind::Double) * (rank as f64 + 1.0);
            loss.backward();
            (
                rank,
                gathered.size(),
                Vec::<f64>::try_from(&gathered.view([-1])).unwrap(),
                Vec::<f64>::try_from(&x.grad()).unwrap(),
            )
        });
        for (rank, size, values, grad) in out {
            assert_eq!(size, vec![2, 2]);
            assert_eq!(values, vec![1.0, 2.0, 2.0, 4.0]);
            let expect = 3.0 * (rank as f64 + 1.0) * (rank as f64 + 1.0);
            assert_eq!(grad, vec![expect, expect], "rank {rank}");
        }
    }

    /// A host-side control group beside the main one, rendezvousing through the same store under
    /// a prefix (what an NCCL run keeps for its stop votes): both groups work, interleaved, and
    /// the prefixed keys live apart from the others.
    #[test]
    fn two_groups_share_one_store_through_a_prefix() {
        let timeout = Duration::from_secs(30);
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                std::thread::spawn(move || {
                    let store = TcpStore::connect("127.0.0.1", 29619, rank == 0, Some(2), timeout).unwrap();
                    let main = ProcessGroup::gloo(&store, rank, 2, timeout).unwrap();
                    let prefixed = store.prefixed("control").unwrap();
                    let control = ProcessGroup::gloo(&prefixed, rank, 2, timeout).unwrap();
                    let mut sums = Vec::new();
                    for step in 0..3 {
                        let x = Tensor::from_slice(&[(rank + step) as f64]);
                        let vote = Tensor::from_slice(&[(rank * 10) as f64]);
                        main.all_reduce_sum(&[&x]).unwrap();
                        control.all_reduce_sum(&[&vote]).unwrap();
                        sums.push((x.double_value(&[0]), vote.double_value(&[0])));
                    }
                    if rank == 0 {
                        prefixed.set("mark", b"1").unwrap();
                    }
                    main.barrier().unwrap();
                    let keys = (store.contains("mark").unwrap(), store.contains("control/mark").unwrap());
                    (sums, keys, prefixed.get("mark", timeout).unwrap())
                })
            })
            .collect();
        for h in handles {
            let (sums, keys, mark) = h.join().unwrap();
            assert_eq!(sums, vec![(1.0, 10.0), (3.0, 10.0), (5.0, 10.0)]);
            assert_eq!(keys, (false, true));
            assert_eq!(mark, b"1");
        }
    }

    #[test]
    fn buckets_average_gradients_during_or_after_backward() {
        // Three parameters in buckets of at most 8 bytes: [c], [b], [a] (reverse order), f32.
        for (port, overlap) in [(29615, true), (29616, false)] {
            let out = two_ranks_with(port, overlap, |rank, group, overlap| {
                let r = rank as f64 + 1.0;
                let a = Tensor::from_slice(&[1.0f32, 1.0]).set_requires_grad(true);
                let b = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
                let c = Tensor::from_slice(&[1.0f32, 1.0]).set_requires_grad(true);
                let buckets =
                    GradientBuckets::new(group, &[a.shallow_clone(), b.shallow_clone(), c.shallow_clone()], 8, overlap)
                        .unwrap();
                let mut grads = Vec::new();
                for step in 0..2 {
                    for t in [&a, &b, &c] {
                        let mut g = t.grad();
                        if g.defined() {
                            let _ = g.zero_();
                        }
                    }
                    let loss =
                        ((&a * r).sum(Kind::Float) + &b * (2.0 * r) + (&c * (3.0 * r + step as f64)).sum(Kind::Float))
                            .sum(Kind::Float);
                    loss.backward();
                    buckets.finish(0.5).unwrap();
                    grads.push(
                        [&a, &b, &c].iter().map(|t| Vec::<f32>::try_from(&t.grad()).unwrap()).collect::<Vec<_>>(),
                    );
                }
                grads
            });
            // Mean over ranks r = 1, 2: a → 1.5, b → 3, c → 4.5 (+ step).
            for grads in out {
                assert_eq!(grads[0], vec![vec![1.5, 1.5], vec![3.0], vec![4.5, 4.5]]);
                assert_eq!(grads[1], vec![vec![1.5, 1.5], vec![3.0], vec![5.5, 5.5]]);
            }
        }
    }

    #[test]
    fn several_groups_in_one_process_start_collectives_at_once() {
        start_collectives_at_once(3, 29620);
    }

    #[test]
    #[ignore = "heavy (ten rounds of the race above): CI's extended set, cargo test -- --ignored"]
    fn several_groups_in_one_process_start_collectives_at_once_ten_rounds() {
        start_collectives_at_once(10, 29700);
    }

    /// libtorch's process-wide flight recorder is not safe against two groups enqueueing at the
    /// same moment (see start_collective in distributed.cpp); without the shim's lock this crashed
    /// about one run in three (six rounds). Each round: four two-rank groups, their eight threads
    /// released together into their first collectives; ports from `first_port` on.
    fn start_collectives_at_once(rounds: u16, first_port: u16) {
        const PAIRS: usize = 4;
        for round in 0..rounds {
            let start = std::sync::Arc::new(std::sync::Barrier::new(2 * PAIRS));
            let timeout = Duration::from_secs(30);
            let port = |pair: usize| first_port + round * PAIRS as u16 + pair as u16;
            // Servers listen before any client connects (a client that finds no server backs off ~1 s).
            let mut servers: Vec<Option<TcpStore>> = (0..PAIRS)
                .map(|p| Some(TcpStore::connect("127.0.0.1", port(p), true, None, timeout).unwrap()))
                .collect();
            let handles: Vec<_> = (0..2 * PAIRS)
                .map(|t| {
                    let start = start.clone();
                    let (rank, port) = (t % 2, port(t / 2));
                    let server = if rank == 0 { servers[t / 2].take() } else { None };
                    std::thread::spawn(move || {
                        let store = match server {
                            Some(store) => store,
                            None => TcpStore::connect("127.0.0.1", port, false, None, timeout).unwrap(),
                        };
                        let group = ProcessGroup::gloo(&store, rank, 2, timeout).unwrap();
                        start.wait();
                        let (pair, own) = ((t / 2) as f32, t as f32);
                        for _ in 0..20 {
                            let x = Tensor::from_slice(&[own]);
                            group.all_reduce_sum(&[&x]).unwrap();
                            assert_eq!(x.double_value(&[0]), f64::from(4.0 * pair + 1.0), "thread {t}");
                            let gathered = group.all_gather(&Tensor::from_slice(&[own])).unwrap();
                            let gathered = Vec::<f32>::try_from(&Tensor::cat(&gathered, 0)).unwrap();
                            assert_eq!(gathered, vec![2.0 * pair, 2.0 * pair + 1.0], "thread {t}");
                        }
                        group.barrier().unwrap();
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("a rank thread failed");
            }
        }
    }

    #[test]
    fn nccl_without_libtorch_cuda_is_an_error_not_a_crash() {
        // Without libtorch_cuda in the process, either the shim object is not built here (the
        // error says how to build it) or its libtorch symbols cannot resolve (dlopen fails).
        if std::env::var_os("SELFCON_LIBTORCH_CUDA").is_some() {
            return; // the next test loads libtorch_cuda into this process
        }
        let store = TcpStore::connect("127.0.0.1", 29612, true, Some(1), Duration::from_secs(10)).unwrap();
        let Err(err) = ProcessGroup::nccl(&store, 0, 1, Duration::from_secs(10), 0) else {
            panic!("an NCCL group without a CUDA backend")
        };
        let check = nccl_ready().expect_err("no CUDA backend here");
        for err in [err, check] {
            if env!("SELFCON_NCCL_SHIM_BUILT").is_empty() {
                assert!(err.0.contains("SELFCON_NCCL=1 ./scripts/setup.sh"), "{}", err.0);
            } else {
                assert!(err.0.contains("loading the NCCL shim") && err.0.contains("undefined symbol"), "{}", err.0);
            }
        }
    }

    /// With `SELFCON_LIBTORCH_CUDA=/path/to/libtorch_cuda.so` (a CUDA build of libtorch 2.11, e.g.
    /// the torch==2.11.0 wheel's, whose RUNPATH finds its NVIDIA libraries): the NCCL shim's symbols
    /// resolve against it, its nccl.h matches the one libtorch_cuda was built with, and
    /// ProcessGroupNCCL is created — on a machine without a GPU up to its "no GPUs" check.
    #[test]
    fn nccl_shim_loads_against_libtorch_cuda() {
        let Some(path) = std::env::var_os("SELFCON_LIBTORCH_CUDA") else { return };
        if env!("SELFCON_NCCL_SHIM_BUILT").is_empty() {
            panic!("SELFCON_LIBTORCH_CUDA is set but this build has no NCCL shim (SELFCON_NCCL=1 ./scripts/setup.sh)");
        }
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
        // SAFETY: libtorch's CUDA backend only registers itself with the loaded CPU engine.
        let lib = unsafe { libloading::os::unix::Library::open(Some(&path), flags) }.expect("loading libtorch_cuda");
        std::mem::forget(lib);
        nccl_ready().expect("the NCCL shim loads and matches libtorch_cuda's NCCL version");
        let store = TcpStore::connect("127.0.0.1", 29617, true, Some(1), Duration::from_secs(10)).unwrap();
        match ProcessGroup::nccl(&store, 0, 1, Duration::from_secs(30), 0) {
            Ok(group) => {
                let x = Tensor::from_slice(&[2.0f32]);
                group.all_reduce_sum(&[&x]).unwrap();
                assert_eq!(x.double_value(&[0]), 2.0);
            }
            Err(e) => {
                eprintln!("ProcessGroupNCCL on a machine without a GPU: {}", e.0.lines().next().unwrap_or(""));
                assert!(e.0.contains("no GPUs found"), "{}", e.0)
            }
        }
    }

    #[test]
    fn a_missing_peer_is_an_error_within_the_timeout() {
        let started = std::time::Instant::now();
        let err =
            TcpStore::connect("127.0.0.1", 29613, true, Some(2), Duration::from_secs(2)).err().expect("no peer joined");
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        assert!(!err.0.is_empty());
    }
}
