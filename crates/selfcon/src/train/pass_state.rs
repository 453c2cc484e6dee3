//! Where a training pass stands after some of its steps: saved in a mid-epoch checkpoint
//! (`--save_every_steps`, SIGTERM) so that `--resume` continues at the next step with the same
//! batches, learning rate, loss scale and running sums, and ends exactly where an uninterrupted
//! run ends. Data order and augmentation derive from (seed, epoch, sample), so no RNG state is
//! needed.

use serde::{Deserialize, Serialize};

use crate::data::OrderKey;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PassState {
    /// The epoch in progress (1-based).
    pub epoch: usize,
    /// Which pass of the epoch (linear evaluation trains one classifier per pass; otherwise 0).
    pub pass: usize,
    /// Steps of this pass already taken.
    pub steps: usize,
    /// Steps in the whole pass: a resumed run must see the same (same data and batch size).
    pub batches: usize,
    /// What the pass's batches are drawn from: a resumed run must draw the same.
    pub order: OrderKey,
    /// Running sums of the pass so far (the epoch's mean loss and image count).
    pub loss_sum: f64,
    pub images: usize,
    pub skipped_steps: usize,
    /// fp16 loss scaler: scale and growth tracker (`None` without loss scaling).
    pub scaler: Option<(f64, i64)>,
    /// The command's own running counters of this pass (linear: correct, seen).
    #[serde(default)]
    pub counters: Vec<i64>,
    /// Results of the epoch's earlier passes (linear: the backbone classifier's training top-1).
    #[serde(default)]
    pub earlier: Vec<f64>,
}

impl PassState {
    /// The start of pass `pass` of `epoch`.
    pub fn start(epoch: usize, pass: usize, batches: usize, order: OrderKey) -> Self {
        PassState { epoch, pass, batches, order, ..PassState::default() }
    }

    /// "epoch 3, step 120 of 390" (linear adds the pass).
    pub fn describe(&self) -> String {
        let pass = if self.pass > 0 { format!(", pass {}", self.pass + 1) } else { String::new() };
        format!("epoch {}{pass}, step {} of {}", self.epoch, self.steps, self.batches)
    }
}
