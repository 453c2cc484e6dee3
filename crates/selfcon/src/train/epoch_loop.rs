//! The one training loop that pre-training, linear evaluation and 1-stage CE share: batches from
//! the loader, the learning rate of each step, the forward pass under autocast, the loss in fp32,
//! loss scaling, the NaN/inf stop, SGD, progress and step logs. Each command supplies only its
//! forward pass and its objective.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::optim_config::OptimConfig;
use super::optimizer::Sgd;
use super::pass_state::PassState;
use super::precision::{GradScaler, Precision};
use super::progress::Progress;
use super::schedule::LrSchedule;
use crate::data::{Batch, DataLoader, EpochBatches, Waited};
use crate::distributed;
use crate::engine::PendingCopy;
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
    /// Peak bytes allocated on the accelerator so far (CUDA caching allocator), `None` on CPU.
    pub peak_memory_bytes: Option<i64>,
}

impl EpochStats {
    pub fn images_per_s(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }

    /// " · N steps skipped (fp16 overflow)" when the loss scaler skipped any.
    pub fn skipped_note(&self) -> String {
        if self.skipped_steps == 0 {
            String::new()
        } else {
            format!(" · {} steps skipped (fp16 overflow)", self.skipped_steps)
        }
    }

    /// " · peak 2.61 GiB" on an accelerator, "" on CPU.
    pub fn memory_note(&self) -> String {
        self.peak_memory_bytes.map(|b| format!(" · peak {:.2} GiB", b as f64 / (1u64 << 30) as f64)).unwrap_or_default()
    }
}

/// What a [`TrainLoop`] is made from: [`TrainLoopConfig::new`] gives the defaults, struct update
/// syntax the rest (`TrainLoop::new(TrainLoopConfig { print_freq: 10, ..TrainLoopConfig::new(...) })`).
pub struct TrainLoopConfig<'a> {
    /// "pretrain", "linear", "ce", "bench": named in messages and step records.
    pub stage: &'static str,
    pub device: Device,
    /// The run's precision, memory format, engine settings and `--save_every_steps`.
    pub optim: &'a OptimConfig,
    pub schedule: LrSchedule,
    /// Every `print_freq` steps a step record goes to the metrics log (0, the default: none).
    pub print_freq: usize,
    /// Appended to the NaN/inf message: what usually causes it at this stage.
    pub nan_hint: &'static str,
    /// Named in the NaN/inf message as the last good state, when it exists.
    pub last_checkpoint: Option<PathBuf>,
    /// The trained model (already through [`OptimConfig::prepare_model`] and any restore): in a
    /// distributed run every rank starts from rank 0's weights, as DDP does, and its buffers
    /// (BatchNorm running statistics) are made rank 0's after every pass. `None` (the default)
    /// for models every rank builds alike (linear evaluation's classifiers).
    pub model: Option<&'a VarStore>,
}

impl<'a> TrainLoopConfig<'a> {
    pub fn new(stage: &'static str, device: Device, optim: &'a OptimConfig, schedule: LrSchedule) -> Self {
        TrainLoopConfig {
            stage,
            device,
            optim,
            schedule,
            print_freq: 0,
            nan_hint: "",
            last_checkpoint: None,
            model: None,
        }
    }
}

/// The training loop of one run (see [`TrainLoopConfig`]).
pub struct TrainLoop {
    stage: &'static str,
    device: Device,
    precision: Precision,
    schedule: LrSchedule,
    print_freq: usize,
    /// Every `save_every_steps` steps mid-pass the pass's `save` writes a checkpoint (0: only at
    /// the end of each epoch, by the caller).
    save_every_steps: usize,
    nan_hint: &'static str,
    last_checkpoint: Option<PathBuf>,
    /// Input batches in channels-last layout (the model's weights are converted by the caller).
    channels_last: bool,
    /// Distributed runs: the model's buffers, set to rank 0's after every pass so that
    /// evaluation and checkpoints see one model.
    buffers: Vec<Tensor>,
}

/// What one [`TrainLoop::step`] left on the device: nothing in a step waits for the device, so
/// the loss is read later ([`super::loss_window::LossWindow`]).
pub struct StepOutput {
    /// This rank's loss (a detached scalar; the loss window averages it over the ranks).
    pub loss: Tensor,
    /// With fp16 loss scaling: 1 when the gradients overflowed and the update was skipped (the
    /// loss scale was lowered), else 0 (a one-element float tensor on the device).
    pub skipped: Option<Tensor>,
}

/// One pass: which loader, which shuffle order, which epoch, what to call it, and where to start.
pub struct Pass<'a> {
    pub loader: &'a DataLoader,
    pub order: u64,
    pub epoch: usize,
    /// Which pass of the epoch (linear evaluation trains one classifier per pass; otherwise 0).
    pub index: usize,
    pub what: String,
    /// Continue a pass that a mid-epoch checkpoint left after some steps.
    pub resume: Option<PassState>,
}

impl<'a> Pass<'a> {
    /// Epoch `epoch` as one pass over `loader` in that epoch's shuffle order (pretrain, ce),
    /// continuing `resume` when a mid-epoch checkpoint left one.
    pub fn epoch(loader: &'a DataLoader, epoch: usize, resume: Option<PassState>) -> Self {
        Pass { loader, order: epoch as u64, epoch, index: 0, what: format!("epoch {epoch}"), resume }
    }
}

/// Writes a checkpoint of the state mid-pass: gets the optimiser being stepped and where the pass
/// stands, returns the file written.
pub type SaveMidPass<'s> = dyn FnMut(&Sgd, &PassState) -> Result<PathBuf> + 's;

impl TrainLoop {
    /// The loop `config` describes, with the engine set up for it (the device's backend,
    /// denormal flushing, cuDNN autotuning) and, in a distributed run, every rank holding rank
    /// 0's weights of `config.model`.
    pub fn new(config: TrainLoopConfig<'_>) -> Result<Self> {
        let TrainLoopConfig { stage, device, optim, schedule, print_freq, nan_hint, last_checkpoint, model } = config;
        crate::engine::use_device(device)?;
        if optim.flush_denormal {
            torch_shim::set_flush_denormal(true);
        }
        if matches!(device, Device::Cuda(_)) && !crate::engine::deterministic() {
            // Fixed input shapes: let cuDNN pick the fastest convolution algorithms once (for
            // training and for evaluation, whose batches keep one shape too).
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let mut buffers = Vec::new();
        if let (Some(d), Some(vs)) = (distributed::current(), model) {
            // Every rank continues from rank 0's weights (as DDP starts), whatever each one loaded.
            d.broadcast_from_primary(vs)?;
            let mut named: Vec<(String, Tensor)> =
                vs.variables().into_iter().filter(|(_, t)| !t.requires_grad()).collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            buffers = named.into_iter().map(|(_, t)| t).collect();
        }
        optim.precision.announce(device);
        Ok(TrainLoop {
            stage,
            device,
            precision: optim.precision.resolve(device),
            schedule,
            print_freq,
            save_every_steps: optim.save_every_steps,
            nan_hint,
            last_checkpoint,
            channels_last: optim.channels_last,
            buffers,
        })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// Trains `optimizer`'s parameters for one pass. `forward` maps the batch's images (on the
    /// device) to model outputs and runs under autocast; `objective` maps those outputs and the
    /// labels to the scalar loss, in fp32 outside autocast. `save` writes the state mid-pass:
    /// every `save_every_steps` steps, and when a stop is requested (SIGTERM/SIGINT, asked through
    /// `progress`), after which the pass ends with [`Error::Interrupted`].
    #[allow(clippy::too_many_arguments)]
    pub fn run_pass<T>(
        &mut self,
        pass: Pass<'_>,
        optimizer: &mut Sgd,
        progress: &mut dyn Progress,
        log: &mut MetricsLog,
        mut forward: impl FnMut(&Tensor) -> Result<T>,
        mut objective: impl FnMut(T, &Tensor) -> Result<Tensor>,
        save: &mut SaveMidPass<'_>,
    ) -> Result<EpochStats> {
        let batches = pass.loader.len();
        let order = pass.loader.order_key();
        let mut state = match pass.resume {
            Some(state) => {
                if (state.epoch, state.pass) != (pass.epoch, pass.index)
                    || state.batches != batches
                    || state.order != order
                {
                    return Err(Error::input(format!(
                        "the checkpoint stopped at {} ({}), but this run's {} has {batches} steps ({}): a mid-epoch resume needs the same data, global --batch_size and --seed",
                        state.describe(),
                        state.order,
                        pass.what,
                        order
                    )));
                }
                state
            }
            None => PassState::start(pass.epoch, pass.index, batches, order),
        };
        let first = state.steps;
        let what = if first > 0 { format!("{} (from step {})", pass.what, first + 1) } else { pass.what.clone() };
        progress.pass_started(&what, batches - first);
        let started = Instant::now();
        let mut stats = EpochStats { lr: self.schedule.epoch_lr(pass.epoch), ..EpochStats::default() };
        // As the official code: a fresh GradScaler (scale 65536) at the start of every epoch; a
        // pass resumed mid-way continues with the scale it had.
        let mut scaler = self.new_scaler().map(|s| match state.scaler {
            Some(saved) => GradScaler::from_state(self.device, saved),
            None => s,
        });
        // Asked to stop between passes (during an evaluation): save here and stop. A distributed
        // run needs the ranks' agreement, which its first step brings.
        let stop_now = match distributed::current() {
            None => progress.stop_requested(),
            Some(_) => None,
        };
        if let Some(signal) = stop_now {
            return Err(self.interrupted(signal, optimizer, &state, scaler.as_ref(), save));
        }
        let mut images_this_run = 0;
        // Losses stay on the device until read: every `print_freq` steps (the step record and
        // the plain progress line need the value then), before any checkpoint, at the end.
        let read_every = match self.print_freq {
            0 => super::loss_window::DEFAULT_READ_EVERY,
            n => n.min(super::loss_window::MAX_READ_EVERY),
        };
        let mut window = super::loss_window::LossWindow::default();
        let mut last_loss = f64::NAN;
        let mut loaded = pass.loader.epoch_from(pass.order, first);
        // One batch ahead: each step is queued first, then the next batch is awaited and its copy
        // started, so that on an accelerator the wait and the copy overlap the step. While a
        // batch is awaited every step so far is complete: a stop then saves at once.
        let mut next = match self.next_batch(&mut loaded, progress) {
            Ok(next) => next,
            Err(signal) => return Err(self.interrupted(signal, optimizer, &state, scaler.as_ref(), save)),
        };
        for step in first.. {
            let Some(current) = next.take() else { break };
            let (batch, images, labels) = current?;
            stats.lr = self.schedule.lr(pass.epoch, step, batches);
            let images = self.arrived_images(&batch, images)?;
            let labels = labels.ready()?;
            let (output, mut stop) = self.step_voting(
                &images,
                &labels,
                optimizer,
                scaler.as_mut(),
                stats.lr,
                &mut forward,
                &mut objective,
                &mut || progress.stop_requested(),
            )?;
            // Every rank runs equal batches: the global batch is world size × this one.
            let n = batch.indices.len() * distributed::current().map_or(1, |d| d.world_size);
            window.push(step, n, &output.loss, output.skipped.as_ref());
            state.steps = step + 1;
            images_this_run += n;
            if stop.is_none() {
                match self.next_batch(&mut loaded, progress) {
                    Ok(batch) => next = batch,
                    Err(signal) => stop = Some(signal),
                }
            }
            let pass_done = state.steps == batches;
            let save_due = !pass_done && self.save_every_steps > 0 && state.steps % self.save_every_steps == 0;
            let log_due = self.print_freq > 0 && (step + 1) % self.print_freq == 0;
            if (step + 1) % read_every == 0 || log_due || pass_done || save_due || stop.is_some() {
                let read = window.read(distributed::current())?;
                if let Some((bad_step, value)) = read.non_finite() {
                    return Err(self.non_finite(value, pass.epoch, bad_step));
                }
                read.add_to(&mut state);
                last_loss = read.last();
            }
            let rate = images_this_run as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress.step(pass.epoch, step, last_loss, stats.lr, rate);
            if log_due {
                let global_step = (pass.epoch.max(1) - 1) * batches + step + 1;
                log.record(json!({"kind": "step", "stage": self.stage, "epoch": pass.epoch, "step": step + 1,
                    "global_step": global_step, "pass": pass.index, "loss": last_loss, "lr": stats.lr, "images_per_s": rate}))?;
            }
            match stop {
                // Also after the last step: the position then says the pass is done and a resumed
                // run goes straight on to what follows it (evaluation, the epoch's checkpoint).
                Some(signal) => return Err(self.interrupted(signal, optimizer, &state, scaler.as_ref(), save)),
                None if save_due => {
                    save(optimizer, &with_scaler(&state, scaler.as_ref()))?;
                }
                None => {}
            }
        }
        progress.pass_finished();
        if let Some(d) = distributed::current() {
            if !self.buffers.is_empty() {
                d.broadcast(&self.buffers.iter().collect::<Vec<_>>(), "broadcasting rank 0's BatchNorm statistics")?;
            }
        }
        stats.seconds = started.elapsed().as_secs_f64();
        if let Device::Cuda(i) = self.device {
            stats.peak_memory_bytes = torch_shim::device_memory_stats(i).ok().map(|m| m.peak_allocated);
        }
        // Speed counts this process's images; the mean loss covers the whole pass.
        stats.images = images_this_run;
        stats.skipped_steps = state.skipped_steps;
        stats.loss = state.loss_sum / state.images.max(1) as f64;
        Ok(stats)
    }

    /// The next batch with its copy to the device started. A single process waiting for it
    /// watches for a stop (`Err(signal)`): data that never arrives (a hung file system) must not
    /// make the run unstoppable. The ranks of a distributed run agree on stopping through their
    /// steps' all-reduce, so they wait for data as before.
    #[allow(clippy::type_complexity)]
    fn next_batch(
        &self,
        loaded: &mut EpochBatches,
        progress: &mut dyn Progress,
    ) -> std::result::Result<Option<Result<(Batch, PendingCopy, PendingCopy)>>, i32> {
        let next = match distributed::current() {
            Some(_) => loaded.next(),
            None => match loaded.next_or_stop(&mut || progress.stop_requested()) {
                Waited::Ready(next) => next,
                Waited::Stopped(signal) => return Err(signal),
            },
        };
        Ok(next.map(|b| b.and_then(|b| self.copy_ahead(b))))
    }

    /// Saves the pass where it stands and returns the error that stops the run, naming the
    /// checkpoint that continues it; when saving fails, that error (nothing continues the run).
    fn interrupted(
        &self,
        signal: i32,
        optimizer: &Sgd,
        state: &PassState,
        scaler: Option<&GradScaler>,
        save: &mut SaveMidPass<'_>,
    ) -> Error {
        let path = match save(optimizer, &with_scaler(state, scaler)) {
            Ok(path) => path,
            Err(e) => return e,
        };
        Error::Interrupted {
            signal,
            message: format!(
                "{} stopped by {} at {}; saved {} (continue with --resume {})",
                self.stage,
                super::stop_signals::name(signal),
                state.describe(),
                path.display(),
                path.display()
            ),
            saved: Some(path),
        }
    }

    /// One SGD step on one batch: forward under autocast, objective in fp32, (scaled) backward,
    /// update. Nothing here waits for the device: a NaN/inf loss is found when the loss is read
    /// (the loop stops then, naming the step), fp16 overflow skips the update on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn step<T>(
        &self,
        images: &Tensor,
        labels: &Tensor,
        optimizer: &mut Sgd,
        scaler: Option<&mut GradScaler>,
        lr: f64,
        forward: &mut impl FnMut(&Tensor) -> Result<T>,
        objective: &mut impl FnMut(T, &Tensor) -> Result<Tensor>,
    ) -> Result<StepOutput> {
        Ok(self.step_voting(images, labels, optimizer, scaler, lr, forward, objective, &mut || None)?.0)
    }

    /// [`TrainLoop::step`] that also says whether the run stops after it: `vote` asks this
    /// process (a signal number) once the step's work is queued. In a distributed run every
    /// rank's answer is exchanged then, on the host (beside NCCL: a host-side Gloo group), so that
    /// a request on any rank stops every rank after the same step (SIGTERM over SIGINT) and the
    /// host never waits for the device; the loss is averaged over the ranks when the loss window
    /// is read.
    #[allow(clippy::too_many_arguments)]
    pub fn step_voting<T>(
        &self,
        images: &Tensor,
        labels: &Tensor,
        optimizer: &mut Sgd,
        scaler: Option<&mut GradScaler>,
        lr: f64,
        forward: &mut impl FnMut(&Tensor) -> Result<T>,
        objective: &mut impl FnMut(T, &Tensor) -> Result<Tensor>,
        vote: &mut dyn FnMut() -> Option<i32>,
    ) -> Result<(StepOutput, Option<i32>)> {
        let outputs = {
            let _autocast = self.precision.autocast(self.device)?;
            forward(images)?
        };
        let dist = distributed::current();
        let loss = objective(outputs, labels)?;
        optimizer.zero_grad();
        let backward = |loss: &Tensor| -> Result<()> {
            loss.f_backward().map_err(|e| match dist {
                // A SyncBatchNorm all-reduce in the backward pass failed.
                Some(d) => d.failure("the backward pass", &e.to_string()),
                None => Error::Torch(e),
            })?;
            if let Some(sync) = optimizer.gradient_sync() {
                sync.finish()?;
            }
            Ok(())
        };
        let skipped = match scaler {
            Some(scaler) => {
                backward(&scaler.scale(&loss))?;
                scaler.unscale(&optimizer.grads())?;
                optimizer.step_unless(lr, scaler.found_inf())?;
                let skipped = scaler.found_inf().copy();
                scaler.update();
                Some(skipped)
            }
            None => {
                backward(&loss)?;
                optimizer.step(lr)?;
                None
            }
        };
        let vote = vote();
        let stop = match dist {
            None => vote,
            Some(d) => {
                let votes = [vote == Some(libc::SIGTERM), vote.is_some_and(|s| s != libc::SIGTERM)].map(f64::from);
                let sums = d.sum_votes(&votes, "exchanging the ranks' stop requests")?;
                if sums[0] > 0.0 {
                    Some(libc::SIGTERM)
                } else if sums[1] > 0.0 {
                    Some(vote.unwrap_or(libc::SIGINT))
                } else {
                    None
                }
            }
        };
        Ok((StepOutput { loss: loss.detach(), skipped }, stop))
    }

    /// Starts moving a loader batch's images and labels to the device (see
    /// [`crate::engine::copy_ahead`]).
    pub fn copy_ahead(&self, batch: Batch) -> Result<(Batch, PendingCopy, PendingCopy)> {
        let images = crate::engine::copy_ahead(&batch.images, self.device)?;
        let labels = crate::engine::copy_ahead(&batch.labels, self.device)?;
        Ok((batch, images, labels))
    }

    /// The images of a batch started by [`TrainLoop::copy_ahead`], as model input.
    pub fn arrived_images(&self, batch: &Batch, images: PendingCopy) -> Result<Tensor> {
        self.model_input(batch.model_pixels(images.ready()?))
    }

    /// A loader batch's images on the device (normalised there when the loader sent u8
    /// pixels), in the layout and dtype the model expects: training and evaluation alike.
    pub fn batch_images(&self, batch: &Batch) -> Result<Tensor> {
        self.model_input(batch.images_on(self.device)?)
    }

    /// Normalised images (on any device) on the device, in the model's layout and dtype.
    pub fn images_to_device(&self, images: &Tensor) -> Result<Tensor> {
        self.model_input(crate::engine::to_device(images, self.device)?)
    }

    fn model_input(&self, mut images: Tensor) -> Result<Tensor> {
        if self.precision == Precision::Fp64 {
            images = images.to_kind(tch::Kind::Double);
        }
        if self.channels_last {
            crate::model::channels_last(&images)
        } else {
            // A channels-last batch (u8 from the loader) for an NCHW model: the layout it was
            // built for, so that kernels and their numbers are those of an NCHW run.
            Ok(images.contiguous())
        }
    }

    pub fn labels_to_device(&self, labels: &Tensor) -> Result<Tensor> {
        crate::engine::to_device(labels, self.device)
    }

    /// Autocast for evaluation passes: the precision training uses (no-op for fp32/fp64).
    pub fn autocast(&self) -> Result<Option<torch_shim::AutocastGuard>> {
        self.precision.autocast(self.device)
    }

    /// A loss scaler for one epoch when the precision needs one (fp16).
    pub fn new_scaler(&self) -> Option<GradScaler> {
        self.precision.needs_loss_scaling(self.device).then(|| GradScaler::new(self.device))
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

/// `state` with the loss scaler's current scale (what a resumed pass continues with).
fn with_scaler(state: &PassState, scaler: Option<&GradScaler>) -> PassState {
    PassState { scaler: scaler.map(GradScaler::state), ..state.clone() }
}
