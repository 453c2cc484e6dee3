//! The learning-rate schedule of the official `utils/util.py` (SPEC §5.3): set once per epoch
//! (cosine with floor `lr·rate³`, or step decay at milestones), then, during warm-up epochs,
//! overridden before every iteration by a linear ramp.

use serde::{Deserialize, Serialize};

/// Linear warm-up from `from` to `to` over the first `epochs` epochs, per iteration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Warmup {
    pub from: f64,
    pub to: f64,
    pub epochs: usize,
}

/// Not in the official code: a linear warm-up over the first `warmup_steps` iterations, then a
/// cosine per iteration down to zero at the last one. For budgets of a few epochs (the demo), where
/// the official per-epoch rate would move in a few coarse jumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCosine {
    pub warmup_steps: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub base_lr: f64,
    pub epochs: usize,
    pub cosine: bool,
    pub decay_rate: f64,
    /// Step-decay milestones (epochs); unused with `cosine`.
    pub milestones: Vec<usize>,
    pub warmup: Option<Warmup>,
    /// Replaces the official schedule when set.
    #[serde(default)]
    pub step_cosine: Option<StepCosine>,
}

impl LrSchedule {
    /// The official schedule; `warm` adds the 10-epoch warm-up from 0.01 (pre-training turns it on
    /// by itself for batch sizes ≥ 1024).
    pub fn new(base_lr: f64, epochs: usize, cosine: bool, decay_rate: f64, milestones: Vec<usize>, warm: bool) -> Self {
        let mut s = LrSchedule { base_lr, epochs, cosine, decay_rate, milestones, warmup: None, step_cosine: None };
        if warm {
            const WARM_EPOCHS: usize = 10;
            let to = if cosine { s.epoch_lr(WARM_EPOCHS) } else { base_lr };
            s.warmup = Some(Warmup { from: 0.01, to, epochs: WARM_EPOCHS });
        }
        s
    }

    /// Rate set at the start of `epoch` (1-based).
    pub fn epoch_lr(&self, epoch: usize) -> f64 {
        if self.cosine {
            let eta_min = self.base_lr * self.decay_rate.powi(3);
            let progress = std::f64::consts::PI * epoch as f64 / self.epochs as f64;
            eta_min + (self.base_lr - eta_min) * (1.0 + progress.cos()) / 2.0
        } else {
            let passed = self.milestones.iter().filter(|m| epoch > **m).count();
            self.base_lr * self.decay_rate.powi(passed as i32)
        }
    }

    /// [`StepCosine`] from `base_lr` over `epochs`.
    pub fn step_cosine(base_lr: f64, epochs: usize, warmup_steps: usize) -> Self {
        let mut s = LrSchedule::new(base_lr, epochs, true, 0.0, vec![], false);
        s.step_cosine = Some(StepCosine { warmup_steps });
        s
    }

    /// Rate used for iteration `batch_idx` (0-based) of `epoch` (1-based).
    pub fn lr(&self, epoch: usize, batch_idx: usize, batches_per_epoch: usize) -> f64 {
        if let Some(StepCosine { warmup_steps }) = self.step_cosine {
            let step = (epoch - 1) * batches_per_epoch + batch_idx;
            let total = (self.epochs * batches_per_epoch).max(1);
            if step < warmup_steps {
                return self.base_lr * (step + 1) as f64 / warmup_steps as f64;
            }
            let progress = (step - warmup_steps) as f64 / total.saturating_sub(warmup_steps).max(1) as f64;
            return self.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        }
        match self.warmup {
            Some(w) if epoch <= w.epochs => {
                let p = (batch_idx + (epoch - 1) * batches_per_epoch) as f64 / (w.epochs * batches_per_epoch) as f64;
                w.from + p * (w.to - w.from)
            }
            _ => self.epoch_lr(epoch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_ends_at_the_floor_and_step_decays_after_milestones() {
        let cos = LrSchedule::new(0.5, 1000, true, 0.1, vec![], false);
        assert!((cos.epoch_lr(1000) - 0.0005).abs() < 1e-15);
        assert!(cos.warmup.is_none());
        let step = LrSchedule::new(0.1, 100, false, 0.2, vec![60, 75, 90], false);
        assert_eq!(step.lr(60, 3, 10), 0.1);
        assert!((step.lr(61, 0, 10) - 0.02).abs() < 1e-15);
    }

    #[test]
    fn step_cosine_warms_up_linearly_then_decays_to_zero_per_iteration() {
        let s = LrSchedule::step_cosine(0.4, 2, 10);
        assert!((s.lr(1, 0, 55) - 0.04).abs() < 1e-15);
        assert!((s.lr(1, 9, 55) - 0.4).abs() < 1e-15);
        assert_eq!(s.lr(1, 10, 55), 0.4);
        // Half-way through the 100 steps after warm-up: half the rate.
        assert!((s.lr(2, 5, 55) - 0.2).abs() < 1e-12);
        assert!(s.lr(2, 54, 55) < 1e-3 && s.lr(2, 54, 55) > 0.0);
        let monotone: Vec<f64> = (10..110).map(|i| s.lr(1 + i / 55, i % 55, 55)).collect();
        assert!(monotone.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn warmup_ramps_per_iteration_to_the_epoch_10_rate() {
        let s = LrSchedule::new(0.5, 1000, true, 0.1, vec![], true);
        let w = s.warmup.unwrap();
        assert_eq!(w.to, s.epoch_lr(10));
        assert_eq!(s.lr(1, 0, 49), 0.01);
        assert!(s.lr(10, 48, 49) < w.to && s.lr(10, 48, 49) > s.lr(10, 0, 49));
        assert_eq!(s.lr(11, 0, 49), s.epoch_lr(11));
    }
}
