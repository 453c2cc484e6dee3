//! Gradient reduction across ranks, in buckets of about 25 MB (DDP's default cap; the shim's
//! `GradientBuckets`), divided by the world size unless every rank computed the same global loss
//! (see [`super::global_batch`]), where the sum itself is the gradient. Two ways, both tested to
//! give the same update:
//! - after backward (default): the gradients are packed into buckets and all buckets are
//!   all-reduced at once (Gloo works on them in parallel);
//! - overlapped with backward (`--dist_overlap`), as DDP's Reducer: hooks on the parameters pack
//!   each gradient as soon as autograd produces it and start a bucket's all-reduce once it is
//!   full. Measured on 2 CPU cores it gains nothing (no idle core for Gloo to work on while
//!   backward computes; bench/results/2026-11-28-distributed-cpu2.md), and with CUDA tensors
//!   staged through host memory (Gloo) its per-parameter copies would stall the GPU, so it is
//!   opt-in. With NCCL the buckets live on the GPU and are reduced on NCCL's stream, where
//!   overlapping is DDP's default; not yet measured on a GPU here, so still opt-in.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tch::Tensor;
use torch_shim::distributed::GradientBuckets;

use super::Distributed;
use crate::error::{Error, Result};

const BUCKET_BYTES: i64 = 25 << 20;

/// How the per-rank gradients combine into the update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Each rank's loss covers its own batch: the update uses the mean gradient (DDP).
    Mean,
    /// Every rank computed the loss of the whole global batch, with only its own samples live:
    /// the global-batch gradient is the sum of the ranks' gradients.
    Sum,
}

/// The gradient all-reduce of one optimizer's parameters over a group, owned by that optimizer
/// (with overlap, its hooks stay registered while it lives).
pub struct GradientSync {
    buckets: GradientBuckets,
    group: &'static Distributed,
    reduction: Reduction,
}

impl Distributed {
    /// The reduction of `params`' gradients for every step from now on (with `--dist_overlap`,
    /// hooks on them start it during backward).
    pub fn gradient_sync(&'static self, params: &[Tensor], reduction: Reduction) -> Result<GradientSync> {
        let buckets = GradientBuckets::new(&self.group, params, BUCKET_BYTES, self.options.overlap)
            .map_err(|e| Error::Distributed(format!("cannot set up the gradient all-reduce: {}", e.0)))?;
        Ok(GradientSync { buckets, group: self, reduction })
    }

    /// Seconds the host spent so far in the gradient all-reduce after backward (for `bench
    /// train`): with Gloo the reduction itself; with NCCL only starting it and ordering the CUDA
    /// stream after it (the reduction runs on the GPU; its cost shows in the step time).
    pub fn gradient_sync_seconds(&self) -> f64 {
        self.sync_nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }
}

impl GradientSync {
    /// After backward: completes the all-reduces and leaves the reduced gradients.
    pub fn finish(&self) -> Result<()> {
        let d = self.group;
        let scale = match self.reduction {
            Reduction::Mean => 1.0 / d.world_size as f64,
            Reduction::Sum => 1.0,
        };
        let started = Instant::now();
        let result = self.buckets.finish(scale);
        d.sync_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result.map_err(|e| d.failure("all-reducing the gradients", &e.0))
    }
}
