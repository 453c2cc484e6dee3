//! Batch tensors a loader worker writes again once nobody holds them any more.
//!
//! A CPU batch of 64 ImageNet crops is 38 MB of f32: more than glibc keeps in its heap, so every
//! fresh one is a new mapping whose pages the kernel must zero on first touch — about a tenth of
//! the loader's CPU time on ImageNet-size JPEGs. A worker instead keeps the few buffers that are in
//! flight (queued, in use by the trainer) and writes a batch into one whose user has let go of it.
//! Page-locked batches are not pooled: libtorch's caching host allocator already recycles them,
//! and only it knows when the asynchronous copies that read them have finished.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tch::{Device, Kind, Tensor};

pub(super) struct BatchPool {
    buffers: Vec<Tensor>,
    capacity: usize,
}

impl BatchPool {
    /// Keeps at most `capacity` buffers: a worker's queued batches, the one it is writing and the
    /// ones its consumer holds.
    pub(super) fn new(capacity: usize) -> Self {
        BatchPool { buffers: Vec::with_capacity(capacity), capacity }
    }

    /// An uninitialised CPU tensor of `shape` and `kind`, its own memory: a kept buffer nobody
    /// else holds, or a new one (kept when there is room, or in place of a free one of another
    /// shape). Caller and pool each have their own handle on the memory (`detach`: a new tensor on
    /// the same storage that, unlike a view, keeps no reference to its source), so that whatever
    /// the caller does to its tensor's metadata never reaches the kept handle, and the buffer
    /// counts as held until every handle and view of it (including any autograd saved) is gone.
    /// (A recycled batch is such a detached handle, a fresh one is not: neither is ever resized
    /// or re-pointed by its users, which detached handles refuse.)
    pub(super) fn take(&mut self, shape: &[i64], kind: Kind) -> Tensor {
        let fits = |t: &Tensor| t.kind() == kind && t.size() == shape;
        if let Some(free) = self.buffers.iter().find(|t| fits(t) && torch_shim::is_sole_owner(t)) {
            return free.detach();
        }
        let fresh = Tensor::empty(shape, (kind, Device::Cpu));
        if self.buffers.len() < self.capacity {
            self.buffers.push(fresh.detach());
        } else if let Some(slot) = self.buffers.iter_mut().find(|t| torch_shim::is_sole_owner(t)) {
            *slot = fresh.detach();
        }
        fresh
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.buffers.len()
    }
}

/// Pools handed from one epoch's workers to the next epoch's (a training loader's).
#[derive(Clone, Default)]
pub(super) struct KeptPools(Arc<Mutex<Vec<BatchPool>>>);

impl KeptPools {
    fn locked(&self) -> MutexGuard<'_, Vec<BatchPool>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A pool an earlier epoch's worker left, if any.
    pub(super) fn take(&self) -> Option<BatchPool> {
        self.locked().pop()
    }

    /// Keeps `pool` for the next epoch, unless `limit` pools are kept already (the workers of an
    /// abandoned epoch may still be finishing: never more than one epoch's pools are kept).
    pub(super) fn give_back(&self, pool: BatchPool, limit: usize) {
        let mut pools = self.locked();
        if pools.len() < limit {
            pools.push(pool);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_written_again_only_after_every_user_let_go() {
        let mut pool = BatchPool::new(2);
        let a = pool.take(&[2, 3], Kind::Float);
        let a_memory = a.data_ptr();
        let b = pool.take(&[2, 3], Kind::Float);
        assert_ne!(b.data_ptr(), a_memory, "a is still held");
        let view = a.narrow(0, 0, 1);
        drop(a);
        let c = pool.take(&[2, 3], Kind::Float);
        assert_ne!(c.data_ptr(), a_memory, "a view of a is still held");
        assert_eq!(pool.kept(), 2, "a third buffer is not kept");
        drop(view);
        let d = pool.take(&[2, 3], Kind::Float);
        assert_eq!(d.data_ptr(), a_memory, "a's memory is free again");
        assert!(pool.take(&[2, 3], Kind::Uint8).kind() == Kind::Uint8);
        drop((b, c, d));
    }

    #[test]
    fn a_free_buffer_of_another_shape_makes_room_and_a_held_one_is_never_replaced() {
        let mut pool = BatchPool::new(1);
        let full = pool.take(&[4, 3], Kind::Float);
        let short = pool.take(&[1, 3], Kind::Float);
        assert_eq!(pool.kept(), 1);
        drop(full);
        let short_again = pool.take(&[1, 3], Kind::Float);
        let memory = short_again.data_ptr();
        drop((short, short_again));
        assert_eq!(pool.take(&[1, 3], Kind::Float).data_ptr(), memory, "kept in place of the free [4, 3] buffer");
    }

    #[test]
    fn metadata_changes_by_the_user_do_not_reach_the_kept_buffer() {
        let mut pool = BatchPool::new(1);
        let t = pool.take(&[2, 3], Kind::Float).set_requires_grad(true);
        drop(t);
        let again = pool.take(&[2, 3], Kind::Float);
        assert!(!again.requires_grad());
        assert_eq!(again.size(), [2, 3]);
    }
}
