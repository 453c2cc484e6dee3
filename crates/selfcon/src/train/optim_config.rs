//! The optimisation and output settings every training command has (the official scripts'
//! common flags): SGD, schedule, batch, seed, where results go.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::schedule::LrSchedule;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Step-decay milestones (unused with `cosine`).
    pub lr_decay_epochs: Vec<usize>,
    pub lr_decay_rate: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub cosine: bool,
    /// Warm-up as given (pre-training and CE also switch it on for batches ≥ 1024).
    pub warm: bool,
    pub seed: u64,
    pub num_workers: usize,
    pub save_dir: PathBuf,
    pub exp_name: String,
}

impl OptimConfig {
    /// The schedule, with warm-up when asked for or, if `auto_warm`, for batch sizes ≥ 1024.
    pub fn schedule(&self, auto_warm: bool) -> LrSchedule {
        LrSchedule::new(
            self.learning_rate,
            self.epochs,
            self.cosine,
            self.lr_decay_rate,
            self.lr_decay_epochs.clone(),
            self.warmup_on(auto_warm),
        )
    }

    pub fn warmup_on(&self, auto_warm: bool) -> bool {
        self.warm || (auto_warm && self.batch_size >= 1024)
    }
}
