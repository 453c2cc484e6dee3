//! The one training loop that pre-training, linear evaluation and 1-stage CE share: batches from
//! the loader, the learning rate of each step, the forward pass under autocast, the loss in fp32,
//! loss scaling, the NaN/inf stop, SGD, progress and step logs. Each command supplies only its
//! forward pass and its objective.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use tch::{Device, Tensor};

use super::optimizer::Sgd;
use super::precision::{GradScaler, Precision};
use super::progress::Progress;
use super::schedule::LrSchedule;
use crate::data::DataLoader;
use crate::error::{Error, Result};
use crate::metrics::MetricsLog;

/// What one pass over the training data measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct EpochStats {
    /// Mean loss per image.
    pub loss: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    pub images: usize,
    pub seconds: f64,
    /// Steps skipped by the loss scaler because of inf/NaN gradients.
    pub skipped_steps: usize,
}

impl EpochStats {
    pub fn images_per_s(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }
}

/// The loop's per-run settings.
pub struct TrainLoop {
    /// "pretrain", "linear", "ce": named in messages and step records.
    pub stage: &'static str,
    pub device: Device,
    pub precision: Precision,
    pub schedule: LrSchedule,
    /// Every `print_freq` steps a step record goes to the metrics log (0: none).
    pub print_freq: usize,
    /// Appended to the NaN/inf message: what usually causes it at this stage.
    pub nan_hint: &'static str,
    /// Named in the NaN/inf message as the last good state, when it exists.
    pub last_checkpoint: Option<PathBuf>,
}

/// One pass: which loader, which shuffle order, which epoch, what to call it.
pub struct Pass<'a> {
    pub loader: &'a DataLoader,
    pub order: u64,
    pub epoch: usize,
    pub what: String,
}

impl TrainLoop {
    pub fn new(stage: &'static str, device: Device, precision: Precision, schedule: LrSchedule) -> Self {
        TrainLoop {
            stage,
            device,
            precision: precision.resolve(device),
            schedule,
            print_freq: 0,
            nan_hint: "",
            last_checkpoint: None,
        }
    }

    /// Trains `optimizer`'s parameters for one pass. `forward` maps the batch's images (on the
    /// device) to model outputs and runs under autocast; `objective` maps those outputs and the
    /// labels to the scalar loss, in fp32 outside autocast.
    pub fn run_pass<T>(
        &mut self,
        pass: Pass<'_>,
        optimizer: &mut Sgd,
        progress: &mut dyn Progress,
        log: &mut MetricsLog,
        mut forward: impl FnMut(&Tensor) -> Result<T>,
        mut objective: impl FnMut(T, &Tensor) -> Result<Tensor>,
    ) -> Result<EpochStats> {
        let batches = pass.loader.len();
        progress.pass_started(&pass.what, batches);
        let started = Instant::now();
        let mut stats = EpochStats { lr: self.schedule.epoch_lr(pass.epoch), ..EpochStats::default() };
        let mut loss_sum = 0.0;
        // As the official code: a fresh GradScaler (scale 65536) at the start of every epoch, so
        // checkpoints need no scaler state.
        let mut scaler = self.precision.needs_loss_scaling(self.device).then(|| GradScaler::new(self.device));
        for (step, batch) in pass.loader.epoch(pass.order).enumerate() {
            let batch = batch?;
            stats.lr = self.schedule.lr(pass.epoch, step, batches);
            let images = batch.images.to_device(self.device);
            let labels = batch.labels.to_device(self.device);
            let outputs = {
                let _autocast = self.precision.autocast(self.device)?;
                forward(&images)?
            };
            let loss = objective(outputs, &labels)?;
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(self.non_finite(value, pass.epoch, step));
            }
            optimizer.zero_grad();
            match &mut scaler {
                Some(scaler) => {
                    scaler.scale(&loss).backward();
                    if scaler.unscale(&optimizer.grads())? {
                        optimizer.step(stats.lr);
                    } else {
                        stats.skipped_steps += 1;
                    }
                    scaler.update();
                }
                None => {
                    loss.backward();
                    optimizer.step(stats.lr);
                }
            }
            let n = batch.indices.len();
            loss_sum += value * n as f64;
            stats.images += n;
            let rate = stats.images as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress.step(pass.epoch, step, value, stats.lr, rate);
            if self.print_freq > 0 && (step + 1) % self.print_freq == 0 {
                let serde_json::Value::Object(record) = json!({"kind": "step", "stage": self.stage, "epoch": pass.epoch,
                    "step": step + 1, "loss": value, "lr": stats.lr, "images_per_s": rate})
                else {
                    unreachable!("object literal")
                };
                log.record(record)?;
            }
        }
        progress.pass_finished();
        stats.seconds = started.elapsed().as_secs_f64();
        stats.loss = loss_sum / stats.images.max(1) as f64;
        Ok(stats)
    }

    fn non_finite(&self, value: f64, epoch: usize, step: usize) -> Error {
        let kept = match &self.last_checkpoint {
            Some(path) if path.exists() => format!("last good checkpoint {}", path.display()),
            _ => "no checkpoint was written yet".to_string(),
        };
        let hint = if self.nan_hint.is_empty() { String::new() } else { format!(" ({})", self.nan_hint) };
        Error::input(format!(
            "{} loss is {value} at epoch {epoch}, step {}: training stopped, {kept}{hint}",
            self.stage,
            step + 1
        ))
    }
}
