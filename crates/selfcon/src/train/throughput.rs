//! Training-step throughput of a pre-training configuration, as `selfcon bench train` reports it:
//! compute only (a fixed synthetic batch already on the device) or end to end (the real loader,
//! augmentation and host → device copies included). The steps are the ones [`TrainLoop`] takes in
//! training: autocast forward, fp32 loss, loss scaling, SGD.

use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::epoch_loop::{TrainLoop, TrainLoopConfig};
use super::pretrain::PretrainConfig;
use crate::data::{DataLoader, OpenedDataset};
use crate::error::{Error, Result};

/// Where the batches come from.
pub enum BatchSource<'a> {
    /// One random batch, made once on the device.
    Synthetic,
    /// The training split through the pre-training loader.
    Loader(&'a OpenedDataset),
}

#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub steps: usize,
    /// Images per step (each seen twice with `--multiview`, counted once, as the official logs do).
    pub batch_size: usize,
    pub seconds: f64,
    pub ms_per_step: f64,
    pub images_per_s: f64,
    /// Peak bytes held by the accelerator's caching allocator during the run (CUDA), or the
    /// process's peak resident memory (CPU, whole process life).
    pub peak_memory_bytes: Option<i64>,
    pub peak_memory_kind: &'static str,
    pub last_loss: f64,
    /// Distributed runs: processes taking part (`batch_size` is each one's).
    pub world_size: usize,
    /// Distributed runs: host time per step in the gradient all-reduce after backward (with NCCL
    /// only its start: the reduction runs on the GPU and shows in `ms_per_step`).
    pub gradient_sync_ms_per_step: Option<f64>,
    /// Distributed runs: the c10d backend (`gloo` or `nccl`).
    pub dist_backend: Option<String>,
    /// Host time per step spent queuing it (forward, backward, optimiser). On a GPU the kernels
    /// run asynchronously: well below `ms_per_step` while the GPU is the bottleneck; close to it
    /// when the host is. On the CPU it is the step.
    pub host_enqueue_ms_per_step: f64,
    /// End to end: host time per step waiting for the loader's next batch and starting its copy
    /// (after the step is queued, so on a GPU it overlaps the step).
    pub data_wait_ms_per_step: Option<f64>,
}

/// Runs `warmup` untimed and then `steps` timed training steps of `config`'s model and objective.
pub fn measure_pretrain_steps(
    config: &PretrainConfig,
    device: Device,
    source: BatchSource<'_>,
    warmup: usize,
    steps: usize,
) -> Result<Throughput> {
    crate::engine::use_device(device)?;
    config.validate()?;
    if steps == 0 {
        return Err(Error::option("steps", "must be at least 1"));
    }
    let (vs, model) = config.initial_model(device, config.optim.batch_norm())?;
    config.optim.prepare_model(&vs)?;
    let objective = config.step_objective();
    let mut optimizer = config.optim.optimizer(&vs, objective.reduction())?;
    let train = TrainLoop::new(TrainLoopConfig {
        model: Some(&vs),
        ..TrainLoopConfig::new("bench", device, &config.optim, config.schedule())
    })?;
    let bsz = config.optim.batch_size;
    let views = if config.multiview { 2 } else { 1 };
    let size = config.image_size as i64;

    let synthetic = match source {
        BatchSource::Synthetic => {
            let images = Tensor::randn([(bsz * views) as i64, 3, size, size], (Kind::Float, device));
            let labels = Tensor::randint(config.model.num_classes(), [bsz as i64], (Kind::Int64, device));
            Some((train.images_to_device(&images)?, labels))
        }
        BatchSource::Loader(_) => None,
    };
    let loader = match source {
        BatchSource::Loader(data) => {
            let mut loader_config = config.optim.loader(data, bsz, true, device);
            loader_config.drop_last = true;
            Some(DataLoader::new(data.train.clone(), config.input_transform(), loader_config)?.keeping_buffers())
        }
        BatchSource::Synthetic => None,
    };
    if loader.as_ref().is_some_and(|l| l.is_empty()) {
        return Err(Error::option("batch_size", format!("{bsz} is larger than the training set")));
    }

    let mut forward = |images: &Tensor| model.forward_t(images, true);
    let mut loss_of = |out: crate::model::ModelOutput, labels: &Tensor| objective.compute(&out, labels);
    let dist = crate::distributed::current();
    let mut sync_before = 0.0;
    let mut scaler = train.new_scaler();
    let mut epoch = 0u64;
    let mut batches = loader.as_ref().map(|l| l.epoch(epoch));
    let mut last_loss = Tensor::from(f64::NAN);
    let mut started = Instant::now();
    let cuda_index = match device {
        Device::Cuda(i) => Some(i),
        _ => None,
    };
    // The next loader batch, wrapping round to a new epoch.
    let mut next_batch = || -> Result<Option<crate::data::Batch>> {
        let Some(l) = &loader else { return Ok(None) };
        let batch = match batches.as_mut().and_then(Iterator::next) {
            Some(b) => b?,
            None => {
                epoch += 1;
                batches = Some(l.epoch(epoch));
                batches.as_mut().and_then(Iterator::next).ok_or_else(|| Error::input("empty loader"))??
            }
        };
        Ok(Some(batch))
    };
    // As training moves batches: each step is queued first, then the next batch is awaited and
    // its copy started, so that the copy (and the wait) overlap the step on an accelerator.
    let mut ahead = next_batch()?.map(|b| train.copy_ahead(b)).transpose()?;
    let (mut enqueue_seconds, mut wait_seconds) = (0.0, 0.0);
    for step in 0..warmup + steps {
        if step == warmup {
            synchronize(cuda_index)?;
            if let Some(i) = cuda_index {
                torch_shim::reset_peak_memory(i).map_err(|e| Error::input(e.to_string()))?;
            }
            sync_before = dist.map_or(0.0, |d| d.gradient_sync_seconds());
            (enqueue_seconds, wait_seconds) = (0.0, 0.0);
            started = Instant::now();
        }
        let (images, labels) = match (&synthetic, &loader) {
            (Some((x, y)), _) => (x.shallow_clone(), y.shallow_clone()),
            (None, Some(_)) => {
                let (batch, images, labels) = ahead.take().expect("a batch is always copied ahead");
                (train.arrived_images(&batch, images)?, labels.ready()?)
            }
            (None, None) => unreachable!("one source is set"),
        };
        let lr = config.optim.learning_rate;
        let queued = Instant::now();
        // Kept on the device: reading it every step would wait for the GPU (as training does not).
        last_loss = train.step(&images, &labels, &mut optimizer, scaler.as_mut(), lr, &mut forward, &mut loss_of)?.loss;
        enqueue_seconds += queued.elapsed().as_secs_f64();
        if loader.is_some() && step + 1 < warmup + steps {
            let waiting = Instant::now();
            ahead = next_batch()?.map(|b| train.copy_ahead(b)).transpose()?;
            wait_seconds += waiting.elapsed().as_secs_f64();
        }
    }
    synchronize(cuda_index)?;
    let seconds = started.elapsed().as_secs_f64();
    // The mean over the ranks (what training logs), so that every rank agrees on a NaN.
    let last_loss = match dist.filter(|d| d.world_size > 1) {
        Some(d) => {
            d.sum_in_rank_order(&last_loss.to_kind(Kind::Double).reshape([1]), "averaging the bench loss")?
                .double_value(&[0])
                / d.world_size as f64
        }
        None => last_loss.double_value(&[]),
    };
    if !last_loss.is_finite() {
        return Err(Error::input(format!("bench loss is {last_loss} after {} steps", warmup + steps)));
    }
    let gradient_sync_ms_per_step = dist.map(|d| 1000.0 * (d.gradient_sync_seconds() - sync_before) / steps as f64);
    let (peak_memory_bytes, peak_memory_kind) = match cuda_index {
        Some(i) => (
            torch_shim::device_memory_stats(i).ok().map(|s| s.peak_allocated),
            "cuda caching allocator, peak allocated",
        ),
        None => (peak_rss_bytes(), "process peak resident set (VmHWM)"),
    };
    Ok(Throughput {
        steps,
        batch_size: bsz,
        seconds,
        ms_per_step: 1000.0 * seconds / steps as f64,
        images_per_s: (bsz * steps) as f64 / seconds,
        peak_memory_bytes,
        peak_memory_kind,
        last_loss,
        world_size: dist.map_or(1, |d| d.world_size),
        gradient_sync_ms_per_step,
        dist_backend: dist.map(|d| d.backend.to_string()),
        host_enqueue_ms_per_step: 1000.0 * enqueue_seconds / steps as f64,
        data_wait_ms_per_step: loader.is_some().then(|| 1000.0 * wait_seconds / steps as f64),
    })
}

fn synchronize(cuda_index: Option<usize>) -> Result<()> {
    match cuda_index {
        Some(i) => torch_shim::synchronize(i).map_err(|e| Error::input(e.to_string())),
        None => Ok(()),
    }
}

/// VmHWM of /proc/self/status, in bytes.
fn peak_rss_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
