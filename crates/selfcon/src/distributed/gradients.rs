//! Gradient reduction across ranks, in buckets of about 25 MB (DDP's default cap), divided by the
//! world size unless every rank computed the same global loss (see [`super::global_batch`]), where
//! the sum itself is the gradient. Two ways, both tested to give the same update:
//! - after backward (default): the gradients are packed into buckets and all buckets are
//!   all-reduced at once (Gloo works on them in parallel);
//! - overlapped with backward (`--dist_overlap`), as DDP's Reducer: hooks on the parameters pack
//!   each gradient as soon as autograd produces it and start a bucket's all-reduce once it is
//!   full. Measured on 2 CPU cores it gains nothing (no idle core for Gloo to work on while
//!   backward computes; bench/results/2026-11-28-distributed-cpu2.md), and with CUDA tensors
//!   staged through host memory its per-parameter copies would stall the GPU, so it is opt-in.

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

/// The gradient all-reduce of one optimizer's parameters (hooks stay registered while it lives).
pub struct GradientSync {
    buckets: GradientBuckets,
}

impl Distributed {
    /// Starts reducing the gradients of `params` during every backward pass from now on.
    pub fn gradient_sync(&self, params: &[Tensor]) -> Result<GradientSync> {
        let buckets = GradientBuckets::new(&self.group, params, BUCKET_BYTES)
            .map_err(|e| Error::Distributed(format!("cannot set up the gradient all-reduce: {}", e.0)))?;
        Ok(GradientSync { buckets })
    }

    /// Replaces every gradient by its reduction over ranks.
    pub fn reduce_gradients(&self, grads: &[Tensor], reduction: Reduction) -> Result<()> {
        if grads.is_empty() {
            return Ok(());
        }
        let mut buckets: Vec<Vec<&Tensor>> = Vec::new();
        let mut bytes = 0i64;
        for g in grads {
            let size = g.numel() as i64 * g.kind().elt_size_in_bytes() as i64;
            let fits = buckets.last().is_some_and(|b: &Vec<&Tensor>| {
                bytes + size <= BUCKET_BYTES && b[0].kind() == g.kind() && b[0].device() == g.device()
            });
            if !fits {
                buckets.push(Vec::new());
                bytes = 0;
            }
            buckets.last_mut().expect("just pushed").push(g);
            bytes += size;
        }
        let flat: Vec<Tensor> =
            buckets.iter().map(|b| Tensor::cat(&b.iter().map(|g| g.reshape([-1])).collect::<Vec<_>>(), 0)).collect();
        let started = std::time::Instant::now();
        self.all_reduce_sum(&flat.iter().collect::<Vec<_>>(), "all-reducing the gradients")?;
        self.sync_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let scale = match reduction {
            Reduction::Mean => 1.0 / self.world_size as f64,
            Reduction::Sum => 1.0,
        };
        tch::no_grad(|| {
            for (bucket, sums) in buckets.iter().zip(&flat) {
                let mut offset = 0i64;
                for g in bucket {
                    let n = g.numel() as i64;
                    let mut g = g.shallow_clone();
                    let part = sums.narrow(0, offset, n).view_as(&g);
                    if scale == 1.0 {
                        g.copy_(&part);
                    } else {
                        g.copy_(&(part * scale));
                    }
                    offset += n;
                }
            }
        });
        Ok(())
    }

    /// Seconds spent so far waiting for gradient all-reduces after backward (for `bench train`).
    pub fn gradient_sync_seconds(&self) -> f64 {
        self.sync_nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }
}

impl GradientSync {
    /// After backward: waits for the all-reduces still running and leaves the reduced gradients.
    pub fn finish(&self, d: &Distributed, reduction: Reduction) -> Result<()> {
        let scale = match reduction {
            Reduction::Mean => 1.0 / d.world_size as f64,
            Reduction::Sum => 1.0,
        };
        let started = Instant::now();
        let result = self.buckets.finish(scale);
        d.sync_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result.map_err(|e| d.failure("all-reducing the gradients", &e.0))
    }
}
