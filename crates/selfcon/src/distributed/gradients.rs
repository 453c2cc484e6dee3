//! Gradient averaging after backward: gradients are packed into buckets of about 25 MB (DDP's
//! default cap), every bucket is all-reduced at once (Gloo overlaps their transfers on its own
//! threads), then the sums are unpacked, divided by the world size unless every rank computed the
//! same global loss (see [`super::global_batch`]), where the sum itself is the gradient.

use tch::Tensor;

use super::Distributed;
use crate::error::Result;

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

impl Distributed {
    /// Seconds spent so far in the gradient all-reduce (for `selfcon bench train`).
    pub fn gradient_sync_seconds(&self) -> f64 {
        self.sync_nanos.load(std::sync::atomic::Ordering::Relaxed) as f64 * 1e-9
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
        self.sync_nanos.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
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
}
