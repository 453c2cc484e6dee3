//! Stage 1, contrastive pre-training (`main_represent.py`): SupCon, SimCLR ("Con") and SelfCon with
//! every variant, the official optimiser and schedule, checkpoints every epoch and exact resume.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::Device;

use super::optim_config::{prepare_run_dir, OptimConfig};
use super::optimizer::Sgd;
use super::run_name::{python_bool, python_float};
use super::schedule::LrSchedule;
use crate::checkpoint::{self, Metadata, OPTIMIZER_PREFIX};
use crate::data::augment::TrainTransform;
use crate::data::{DataLoader, OpenedDataset, Transform};
use crate::error::{Error, Result};
use crate::loss::{ConLoss, Method, MethodLoss};
use crate::metrics::MetricsLog;
use crate::model::{ConModel, ModelConfig};

/// Everything a pre-training run is made of; saved as `config.json` and in every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub method: Method,
    pub multiview: bool,
    /// Labels used (the official `opt.label`; `--label` turns it off).
    pub label: bool,
    pub alpha: f64,
    pub temp: f64,
    pub weakaug: bool,
    pub randaug: bool,
    pub print_freq: usize,
    pub save_freq: usize,
    /// Dataset name as given (`--dataset`), for the run name.
    pub dataset_name: String,
    pub image_size: usize,
}

impl PretrainConfig {
    /// Warm-up when asked for, and automatically for batch sizes ≥ 1024 (official).
    pub fn warmup_on(&self) -> bool {
        self.optim.warmup_on(true)
    }

    pub fn objective(&self) -> MethodLoss {
        MethodLoss {
            method: self.method,
            multiview: self.multiview,
            use_labels: self.label,
            alpha: self.alpha,
            con_loss: ConLoss::new(self.temp),
        }
    }

    pub fn schedule(&self) -> LrSchedule {
        self.optim.schedule(true)
    }

    /// `{method}_{dataset}_{model}_lr_{lr}_multiview_{mv}_label_{label}_decay_{wd}_bsz_{bsz}_temp_{temp}_seed_{seed}[_cosine][_warm][_{exp_name}]`
    pub fn run_name(&self) -> String {
        let mut name = format!(
            "{}_{}_{}_lr_{}_multiview_{}_label_{}_decay_{}_bsz_{}_temp_{}_seed_{}",
            self.method,
            self.dataset_name,
            self.model.architecture,
            python_float(self.optim.learning_rate),
            python_bool(self.multiview),
            python_bool(self.label),
            python_float(self.optim.weight_decay),
            self.optim.batch_size,
            python_float(self.temp),
            self.optim.seed
        );
        if self.optim.cosine {
            name.push_str("_cosine");
        }
        if self.warmup_on() {
            name.push_str("_warm");
        }
        if !self.optim.exp_name.is_empty() {
            name.push('_');
            name.push_str(&self.optim.exp_name);
        }
        name
    }

    /// `{save_dir}/{method}/{dataset}_models/{run_name}/`
    pub fn run_dir(&self) -> PathBuf {
        self.optim.save_dir.join(self.method.name()).join(format!("{}_models", self.dataset_name)).join(self.run_name())
    }

    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.objective().validate(self.model.exits.count())?;
        if self.optim.epochs == 0 {
            return Err(Error::option("epochs", "must be at least 1"));
        }
        if !(self.temp > 0.0) {
            return Err(Error::option("temp", format!("must be positive, got {}", self.temp)));
        }
        if !(self.optim.learning_rate > 0.0) {
            return Err(Error::option("learning_rate", format!("must be positive, got {}", self.optim.learning_rate)));
        }
        Ok(())
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainResult {
    pub run_dir: PathBuf,
    pub last_checkpoint: PathBuf,
    pub epochs_run: usize,
    /// Mean loss of each epoch run, in order.
    pub epoch_losses: Vec<f64>,
}

/// Progress reporting of the loop (the CLI prints; tests stay quiet).
pub trait Progress {
    /// Set-up is done (checkpoint restored, run folder created); training starts at `first_epoch`.
    fn run_started(&mut self, _run_dir: &Path, _first_epoch: usize, _train_images: usize) {}
    fn epoch_started(&mut self, _epoch: usize, _batches: usize) {}
    fn step(&mut self, _epoch: usize, _step: usize, _loss: f64, _lr: f64, _images_per_s: f64) {}
    fn epoch_finished(&mut self, _epoch: usize, _loss: f64, _lr: f64, _images_per_s: f64, _seconds: f64) {}
}

pub struct Quiet;
impl Progress for Quiet {}

/// Runs (or resumes) pre-training.
pub fn pretrain(
    config: &PretrainConfig,
    data: &OpenedDataset,
    device: Device,
    resume: Option<&Path>,
    progress: &mut dyn Progress,
) -> Result<PretrainResult> {
    config.validate()?;
    tch::manual_seed(config.optim.seed as i64);
    let (vs, model) = ConModel::build(&config.model, device)?;
    let mut optimizer = Sgd::new(&vs, config.optim.momentum, config.optim.weight_decay);
    let mut start_epoch = 1;
    if let Some(path) = resume {
        start_epoch = restore(path, config, &vs, &mut optimizer)? + 1;
    }
    let run_dir = config.run_dir();
    let config_json = prepare_run_dir(&run_dir, config)?;
    let mut log = MetricsLog::open(&run_dir, &["kind", "epoch", "step", "loss", "lr", "images_per_s"])?;

    let mut transform = TrainTransform::pretrain(config.image_size, config.weakaug);
    if config.randaug {
        transform = transform.with_randaugment();
    }
    let views = if config.multiview { 2 } else { 1 };
    let loader = DataLoader::new(
        data.train.clone(),
        Transform::Train { transform, views },
        config.optim.loader(data, config.optim.batch_size, true),
    )?;
    progress.run_started(&run_dir, start_epoch, data.train.len());
    let schedule = config.schedule();
    let objective = config.objective();
    let batches = loader.len();
    let last = run_dir.join("last.safetensors");
    let mut epoch_losses = Vec::new();

    for epoch in start_epoch..=config.optim.epochs {
        progress.epoch_started(epoch, batches);
        let started = Instant::now();
        let (mut loss_sum, mut images) = (0.0, 0usize);
        let mut lr = schedule.epoch_lr(epoch);
        for (step, batch) in loader.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            lr = schedule.lr(epoch, step, batches);
            let out = model.forward_t(&batch.images.to_device(device), true)?;
            let terms =
                objective.compute(&out.exit_projections, &out.backbone_projection, &batch.labels.to_device(device))?;
            let loss = terms.total.double_value(&[]);
            if !loss.is_finite() {
                return Err(Error::input(format!(
                    "loss is {loss} at epoch {epoch}, step {step}: training stopped, {} kept. (Without labels, or with --label off, an anchor with no positive makes the official loss NaN; check --method/--multiview/--batch_size.)",
                    if last.exists() { format!("last good checkpoint {}", last.display()) } else { "no checkpoint was written yet".to_string() }
                )));
            }
            optimizer.zero_grad();
            terms.total.backward();
            optimizer.step(lr);
            let n = batch.indices.len();
            loss_sum += loss * n as f64;
            images += n;
            let rate = images as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress.step(epoch, step, loss, lr, rate);
            if config.print_freq > 0 && (step + 1) % config.print_freq == 0 {
                log.record(record("step", epoch, Some(step), loss, lr, rate))?;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let mean_loss = loss_sum / images.max(1) as f64;
        let rate = images as f64 / seconds.max(1e-9);
        epoch_losses.push(mean_loss);
        log.record(record("epoch", epoch, None, mean_loss, lr, rate))?;
        save_checkpoint(&last, &vs, &optimizer, epoch, &config_json)?;
        if config.save_freq > 0 && epoch % config.save_freq == 0 {
            save_checkpoint(
                &run_dir.join(format!("ckpt_epoch_{epoch}.safetensors")),
                &vs,
                &optimizer,
                epoch,
                &config_json,
            )?;
        }
        progress.epoch_finished(epoch, mean_loss, lr, rate, seconds);
    }
    Ok(PretrainResult { run_dir, last_checkpoint: last, epochs_run: epoch_losses.len(), epoch_losses })
}

fn record(
    kind: &str,
    epoch: usize,
    step: Option<usize>,
    loss: f64,
    lr: f64,
    rate: f64,
) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(m) =
        json!({"kind": kind, "epoch": epoch, "step": step, "loss": loss, "lr": lr, "images_per_s": rate})
    else {
        unreachable!("json! of an object literal")
    };
    m
}

fn save_checkpoint(
    path: &Path,
    vs: &tch::nn::VarStore,
    optimizer: &Sgd,
    epoch: usize,
    config_json: &str,
) -> Result<()> {
    let mut tensors: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    tensors.extend(optimizer.state().into_iter().map(|(k, t)| (format!("{OPTIMIZER_PREFIX}{k}"), t)));
    let mut meta = Metadata::new();
    meta.insert("format".into(), "selfcon-checkpoint-1".into());
    meta.insert("stage".into(), "pretrain".into());
    meta.insert("epoch".into(), epoch.to_string());
    meta.insert("config".into(), config_json.to_string());
    checkpoint::save(path, &tensors, &meta)
}

/// Loads a checkpoint for resuming; returns the epoch it finished.
fn restore(path: &Path, config: &PretrainConfig, vs: &tch::nn::VarStore, optimizer: &mut Sgd) -> Result<usize> {
    if !path.is_file() {
        return Err(Error::option("resume", format!("{} does not exist", path.display())));
    }
    let loaded = checkpoint::load(path)?;
    let saved: PretrainConfig = loaded
        .metadata
        .get("config")
        .and_then(|c| serde_json::from_str(c).ok())
        .ok_or_else(|| Error::file(path, "is not a selfcon pre-training checkpoint (no config)"))?;
    if saved.model != config.model {
        return Err(Error::file(
            path,
            format!(
                "was trained with another model ({} {} exits {} size {}); give the same --model/--selfcon_pos/--selfcon_size",
                saved.model.architecture, saved.model.dataset, saved.model.exits, saved.model.sub_size
            ),
        ));
    }
    let epoch: usize =
        loaded.metadata.get("epoch").and_then(|e| e.parse().ok()).ok_or_else(|| Error::file(path, "has no epoch"))?;
    let (model_tensors, optim): (Vec<_>, Vec<_>) =
        loaded.tensors.into_iter().partition(|(k, _)| !k.starts_with(OPTIMIZER_PREFIX));
    checkpoint::load_into_var_store(path, vs, &model_tensors.into_iter().collect())?;
    optimizer.load_state(optim.into_iter().map(|(k, t)| (k[OPTIMIZER_PREFIX.len()..].to_string(), t)).collect())?;
    Ok(epoch)
}
