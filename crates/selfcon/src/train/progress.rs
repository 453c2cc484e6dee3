//! How the training loop reports to its caller: the CLI draws bars and prints summaries, tests
//! and library users stay quiet.

use std::path::Path;

pub trait Progress {
    /// Set-up is done (checkpoint restored, run folder created); training starts at `first_epoch`.
    fn run_started(&mut self, _stage: &str, _run_dir: &Path, _first_epoch: usize, _train_images: usize) {}
    /// One pass over the training data starts (`what`: "epoch 3", "epoch 3 · sub-network head").
    fn pass_started(&mut self, _what: &str, _batches: usize) {}
    /// After every step. `loss` is the newest loss the loop has read (the device is asked every
    /// `--print_freq` steps, not after each step): NaN before the pass's first read.
    fn step(&mut self, _epoch: usize, _step: usize, _loss: f64, _lr: f64, _images_per_s: f64) {}
    fn pass_finished(&mut self) {}
    /// The epoch's one-line summary (loss, lr, speed, accuracies).
    fn epoch_finished(&mut self, _summary: &str) {}
    /// Asked after every step: a signal number (SIGTERM, SIGINT) when the run should save where
    /// it stands and stop (the CLI answers from `stop_signals`).
    fn stop_requested(&mut self) -> Option<i32> {
        None
    }
}

pub struct Quiet;
impl Progress for Quiet {}
