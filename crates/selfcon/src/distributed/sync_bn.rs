//! SyncBatchNorm (`--syncbn`): in training, BatchNorm normalises with the mean and variance of
//! the whole global batch. Each rank computes its per-channel count, mean and centred sum of
//! squares; one differentiable all-gather shares them (its backward sums the statistics'
//! gradients over ranks, which is what makes every rank's input gradient include the other ranks'
//! losses): one collective forward and one backward per layer, as torch.nn.SyncBatchNorm; the rest
//! is ordinary autograd. Running statistics are updated as torch.nn.SyncBatchNorm does
//! (unbiased variance over the global count), so they agree on every rank. Which layers do this
//! is fixed when a model is built (`model::BatchNormKind::Synchronised`); a failed collective is
//! the forward pass's error.

use tch::{Kind, Tensor};

use super::Distributed;
use crate::error::Result;

/// The parts of a BatchNorm layer SyncBatchNorm needs.
pub struct BatchNormState<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub momentum: f64,
    pub eps: f64,
}

/// Whether CUDA runs take torch.nn.SyncBatchNorm's fused kernels (`SELFCON_SYNCBN_FUSED=1`):
/// built (the shim's `sync_batch_norm`) but not yet run on a GPU, so the composite path below stays
/// the default until `bench/gpu_check.sh`'s device test has compared the two there.
fn fused_on_cuda() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SELFCON_SYNCBN_FUSED").is_ok_and(|v| v == "1"))
}

impl Distributed {
    /// Training-mode batch norm of `x` (`[N, C, H, W]`) over the global batch.
    pub fn sync_batch_norm(&self, x: &Tensor, bn: &BatchNormState<'_>) -> Result<Tensor> {
        if x.device().is_cuda() && fused_on_cuda() {
            return self.sync_batch_norm_fused(x, bn);
        }
        self.sync_batch_norm_composite(x, bn)
    }

    /// With torch.nn.SyncBatchNorm's fused CUDA kernels (CUDA tensors only): per layer about
    /// three kernels forward instead of the composite's ~8, and the input stays in its dtype.
    pub fn sync_batch_norm_fused(&self, x: &Tensor, bn: &BatchNormState<'_>) -> Result<Tensor> {
        self.group
            .sync_batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps, bn.momentum)
            .map_err(|e| self.failed("SyncBatchNorm (fused CUDA kernels)", e))
    }

    /// From differentiable tensor operations and one differentiable all-gather (any device).
    pub fn sync_batch_norm_composite(&self, x: &Tensor, bn: &BatchNormState<'_>) -> Result<Tensor> {
        let input_kind = x.kind();
        // Statistics in fp32 even under autocast (as cuDNN's batch norm keeps them).
        let xf = if input_kind == Kind::Double { x.shallow_clone() } else { x.to_kind(Kind::Float) };
        let c = xf.size()[1];
        let dims: &[i64] = &[0, 2, 3];
        let count = (xf.numel() as i64 / c) as f64;
        let local_mean = xf.mean_dim(dims, false, xf.kind());
        let local_m2 = (&xf - local_mean.view([1, c, 1, 1])).square().sum_dim_intlist(dims, false, xf.kind());
        let n = Tensor::full([c], count, (xf.kind(), xf.device()));
        // Every rank's (mean, centred sum of squares, count) per channel, combined exactly as Chan
        // et al.'s parallel variance: no step subtracts large numbers (E[x²] − μ² would, and its
        // gradient would lose the digits the backward pass needs).
        let all = self.all_gather_autograd(
            &Tensor::stack(&[&local_mean, &local_m2, &n], 0),
            "all-gathering SyncBatchNorm statistics",
        )?;
        let (means, m2s, counts) = (all.select(1, 0), all.select(1, 1), all.select(1, 2));
        let sum = |t: Tensor| t.sum_dim_intlist(0, false, xf.kind());
        let global_count = sum(counts.shallow_clone());
        let mean = sum(&means * &counts) / &global_count;
        let var = sum(m2s + &counts * (&means - mean.unsqueeze(0)).square()) / &global_count;
        tch::no_grad(|| {
            // On the device: reading the count would make the host wait in every BatchNorm layer.
            let unbiased = &var * (&global_count / (&global_count - 1.0).clamp_min(1.0));
            let m = bn.momentum;
            let (mut rm, mut rv) = (bn.running_mean.shallow_clone(), bn.running_var.shallow_clone());
            let _ = rm.g_mul_scalar_(1.0 - m).g_add_(&(mean.detach().to_kind(rm.kind()) * m));
            let _ = rv.g_mul_scalar_(1.0 - m).g_add_(&(unbiased.detach().to_kind(rv.kind()) * m));
        });
        let scale = (var + bn.eps).rsqrt() * bn.weight.to_kind(xf.kind());
        let shift = bn.bias.to_kind(xf.kind()) - &mean * &scale;
        let y = xf * scale.view([1, c, 1, 1]) + shift.view([1, c, 1, 1]);
        Ok(if y.kind() == input_kind { y } else { y.to_kind(input_kind) })
    }
}
