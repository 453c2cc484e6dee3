//! Stage 1, contrastive pre-training (`main_represent.py`): SupCon, SimCLR ("Con") and SelfCon with
//! every variant, the official optimiser and schedule, checkpoints every epoch and exact resume.

use crate::names::Named;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{Device, Tensor};

use super::epoch_loop::{EpochStats, Pass, TrainLoop, TrainLoopConfig};
use super::features::FeatureExtraction;
use super::knn::{self, KnnMonitor, KnnReport};
use super::optim_config::{prepare_run_dir, OptimConfig};
use super::optimizer::Sgd;
use super::pass_state::PassState;
use super::progress::Progress;
use super::run_folder::{RunFolder, Start};
use super::run_name::{python_bool, python_float};
use super::schedule::LrSchedule;
use super::train_checkpoint::{Resumed, TrainingState};
use crate::data::augment::TrainTransform;
use crate::data::{DataLoader, Dataset, OpenedDataset, Subset, Transform};
use crate::distributed::gradients::Reduction;
use crate::distributed::Distributed;
use crate::error::{Error, Result};
use crate::loss::{ConLoss, Method, MethodLoss};
use crate::metrics::MetricsLog;
use crate::model::{ConModel, ModelConfig, ModelOutput};

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
    /// Decode every image whole (`--full_decode`): no DCT-domain reduced JPEG decoding for crops
    /// that are shrunk anyway, so every training input is torchvision-exact. Configs written
    /// before the option existed read as `true` (they decoded whole): a mid-epoch resume of one
    /// then asks for `--full_decode` instead of changing the inputs silently.
    #[serde(default = "crate::train::decoded_whole_before_the_option")]
    pub full_decode: bool,
    /// Smallest area fraction RandomResizedCrop keeps (the official 0.2; configs written before
    /// this field existed read as 0.2).
    #[serde(default = "official_min_crop_scale")]
    pub min_crop_scale: f64,
    pub print_freq: usize,
    pub save_freq: usize,
    /// Dataset name as given (`--dataset`), for the run name.
    pub dataset_name: String,
    pub image_size: usize,
    /// The online kNN monitor (off unless `--knn_every`; configs written before it read as off).
    #[serde(default)]
    pub knn: KnnMonitor,
}

fn official_min_crop_scale() -> f64 {
    TrainTransform::pretrain(32, false).scale.0
}

/// `--min_crop_scale` must be an area fraction in (0, 1].
pub fn check_min_crop_scale(scale: f64) -> Result<()> {
    if scale > 0.0 && scale <= 1.0 {
        Ok(())
    } else {
        Err(Error::option("min_crop_scale", format!("must be an area fraction in (0, 1], got {scale}")))
    }
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

    /// The pre-training augmentation (`--weakaug`, `--randaug`) with one or two views per image.
    pub fn input_transform(&self) -> Transform {
        let mut transform = TrainTransform::pretrain(self.image_size, self.weakaug);
        transform.scale.0 = self.min_crop_scale;
        transform.reduced_decode = !self.full_decode;
        if self.randaug {
            transform = transform.with_randaugment();
        }
        Transform::Train { transform, views: if self.multiview { 2 } else { 1 } }
    }

    /// The model this run starts from: built on `device` with the run's seeded initialisation
    /// and BatchNorm layers of kind `norm`.
    pub fn initial_model(
        &self,
        device: tch::Device,
        norm: crate::model::BatchNormKind,
    ) -> Result<(tch::nn::VarStore, ConModel)> {
        crate::engine::seeded(self.optim.seed, || ConModel::build(&self.model, device, norm))
    }

    /// The objective as a training step computes it (in a distributed run with global negatives,
    /// over the gathered global batch).
    pub fn step_objective(&self) -> StepObjective {
        StepObjective {
            loss: self.objective(),
            global: crate::distributed::current()
                .filter(|d| d.world_size > 1 && self.optim.distributed.global_negatives),
            views: if self.multiview { 2 } else { 1 },
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
        self.knn.validate()
    }
}

/// The pre-training loss of one step, from the model's outputs and the batch labels.
pub struct StepObjective {
    loss: MethodLoss,
    /// Set in a distributed run with global negatives: every anchor contrasts against the whole
    /// global batch (see `distributed::global_batch`).
    global: Option<&'static Distributed>,
    views: i64,
}

impl StepObjective {
    /// This objective over `group`'s gathered global batch, as [`PretrainConfig::step_objective`]
    /// chooses with `--global_negatives` and more than one rank (forced here at any world size:
    /// the device tests run the gathering path at world size 1).
    pub fn over_global_batch(self, group: &'static Distributed) -> Self {
        StepObjective { global: Some(group), ..self }
    }

    /// How the ranks' gradients combine: with global negatives every rank computed the same
    /// global loss, so the sum of their gradients is its gradient.
    pub fn reduction(&self) -> Reduction {
        if self.global.is_some() {
            Reduction::Sum
        } else {
            Reduction::Mean
        }
    }

    pub fn compute(&self, out: &ModelOutput, labels: &Tensor) -> Result<Tensor> {
        match self.global {
            None => self.loss.compute(&out.exit_projections, &out.backbone_projection, labels).map(|t| t.total),
            Some(d) => {
                let exits =
                    out.exit_projections.iter().map(|e| d.gather_batch(e, self.views)).collect::<Result<Vec<_>>>()?;
                let backbone = d.gather_batch(&out.backbone_projection, self.views)?;
                let labels = d.gather_batch(labels, 1)?;
                self.loss.compute(&exits, &backbone, &labels).map(|t| t.total)
            }
        }
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

/// Runs (or resumes) pre-training in its run folder, which it holds for the whole run.
pub fn pretrain(
    config: &PretrainConfig,
    data: &OpenedDataset,
    device: Device,
    start: &Start,
    progress: &mut dyn Progress,
) -> Result<PretrainResult> {
    crate::engine::use_device(device)?;
    config.validate()?;
    let folder = RunFolder::claim(&config.run_dir())?;
    let resume = start.checkpoint(&folder.last())?;
    let (vs, model) = config.initial_model(device, config.optim.batch_norm())?;
    config.optim.prepare_model(&vs)?;
    let objective = config.step_objective();
    let mut optimizer = config.optim.optimizer(&vs, objective.reduction())?;
    let mut start_epoch = 1;
    // A checkpoint written mid-epoch: the pass to continue.
    let mut position = None;
    if let Some(path) = &resume {
        let (finished, at) = restore(path, config, &vs, &mut optimizer)?;
        start_epoch = finished.saturating_add(1);
        position = at;
        if start_epoch > config.optim.epochs {
            if !start.finished_is_done() {
                return Err(Error::option(
                    "resume",
                    format!(
                        "the checkpoint already covers all {} epochs (give a larger --epochs)",
                        config.optim.epochs
                    ),
                ));
            }
            progress.epoch_finished(&format!("{}: all {} epochs done already", path.display(), config.optim.epochs));
            return Ok(PretrainResult {
                run_dir: folder.path.clone(),
                last_checkpoint: folder.last(),
                epochs_run: 0,
                epoch_losses: Vec::new(),
            });
        }
    }
    let (train_set, knn_sets) = knn_split(config, data)?;
    let run_dir = folder.path.clone();
    let config_json = prepare_run_dir(&run_dir, config)?;
    let mut columns: Vec<String> =
        ["kind", "stage", "epoch", "step", "loss", "lr", "images_per_s"].map(String::from).into();
    if config.knn.every > 0 {
        columns.extend(knn::record_columns(config.model.exits.count()));
    }
    let mut log = MetricsLog::open_on_primary(&run_dir, &columns.iter().map(String::as_str).collect::<Vec<_>>())?
        .with_tensorboard(config.optim.tensorboard)?;

    let loader = DataLoader::new(
        train_set.clone(),
        config.input_transform(),
        config.optim.loader(data, config.optim.batch_size, true, device),
    )?
    .keeping_buffers();
    progress.run_started("pretrain", &run_dir, start_epoch, train_set.len());
    let last = run_dir.join("last.safetensors");
    let mut train = TrainLoop::new(TrainLoopConfig {
        print_freq: config.print_freq,
        last_checkpoint: Some(last.clone()),
        nan_hint: "without labels, or with --label, an anchor with no positive makes the official loss NaN (SupCon-S: when every label in a batch is unique); check --method/--multiview/--batch_size",
        model: Some(&vs),
        ..TrainLoopConfig::new("pretrain", device, &config.optim, config.schedule())
    })?;
    let mut epoch_losses = Vec::new();

    let save = |optimizer: &Sgd, epoch: usize, position: Option<PassState>, path: &Path| {
        TrainingState {
            stage: "pretrain",
            epoch,
            position,
            config_json: &config_json,
            history: None,
            weights: vs.variables().into_iter().collect(),
            optimizers: vec![("", optimizer)],
        }
        .save_on_primary(path)
    };
    for epoch in start_epoch..=config.optim.epochs {
        let pass = Pass::epoch(&loader, epoch, position.take());
        let stats = train.run_pass(
            pass,
            &mut optimizer,
            progress,
            &mut log,
            |images| model.forward_t(images, true),
            |out, labels| objective.compute(&out, labels),
            &mut |optimizer, at| {
                save(optimizer, epoch - 1, Some(at.clone()), &last)?;
                Ok(last.clone())
            },
        )?;
        epoch_losses.push(stats.loss);
        save(&optimizer, epoch, None, &last)?;
        if config.save_freq > 0 && epoch % config.save_freq == 0 && crate::distributed::is_primary() {
            // The same state as `last`, just written: kept under the epoch's name without a second write.
            let kept = run_dir.join(format!("ckpt_epoch_{epoch}.safetensors"));
            crate::checkpoint::snapshot(&last, &kept, "checkpoint")?;
        }
        // After the checkpoint: a failing evaluation never costs the epoch's weights.
        let knn = match &knn_sets {
            Some((bank, queries)) if config.knn.due(epoch, config.optim.epochs) => {
                Some(knn_monitor(config, &model, data, bank, queries, device)?)
            }
            _ => None,
        };
        log.record(epoch_record(epoch, &stats, knn.as_ref()))?;
        progress.epoch_finished(&format!(
            "epoch {epoch}: loss {:.4} · lr {:.5} · {:.0} images/s · {:.1} s{}{}{}",
            stats.loss,
            stats.lr,
            stats.images_per_s(),
            stats.seconds,
            stats.memory_note(),
            stats.skipped_note(),
            knn.map(|r| format!(" · {}", r.summary())).unwrap_or_default()
        ));
    }
    Ok(PretrainResult { run_dir, last_checkpoint: last, epochs_run: epoch_losses.len(), epoch_losses })
}

fn epoch_record(epoch: usize, stats: &EpochStats, knn: Option<&KnnReport>) -> serde_json::Value {
    let mut record = json!({"kind": "epoch", "stage": "pretrain", "epoch": epoch, "loss": stats.loss,
        "lr": stats.lr, "images_per_s": stats.images_per_s(), "seconds": stats.seconds, "skipped_steps": stats.skipped_steps,
        "peak_memory_bytes": stats.peak_memory_bytes});
    if let (Some(report), Some(fields)) = (knn, record.as_object_mut()) {
        report.record_fields(fields);
    }
    record
}

/// The images pre-training learns from and, with the kNN monitor on, its bank and queries: the
/// training set and the test split, or — with `--val_split` — the training set without a held-out
/// part, which becomes the queries (and is never trained on).
type KnnSets = (Arc<dyn Dataset>, Arc<dyn Dataset>);

fn knn_split(config: &PretrainConfig, data: &OpenedDataset) -> Result<(Arc<dyn Dataset>, Option<KnnSets>)> {
    if config.knn.every == 0 {
        return Ok((data.train.clone(), None));
    }
    if config.knn.val_split > 0.0 {
        let (train, held_out) = Subset::split(&data.train, config.knn.val_split, config.optim.seed);
        let (train, held_out): (Arc<dyn Dataset>, Arc<dyn Dataset>) = (Arc::new(train), Arc::new(held_out));
        if held_out.is_empty() || train.is_empty() {
            return Err(Error::option("val_split", "leaves no image on one side of the split"));
        }
        let sets = (train.clone(), held_out);
        check_knn_sizes(&sets)?;
        return Ok((train, Some(sets)));
    }
    let test = data.test.clone().ok_or_else(|| {
        Error::option("knn_every", "needs a test split for its queries (this dataset has none): add --val_split")
    })?;
    let sets = (data.train.clone(), test);
    check_knn_sizes(&sets)?;
    Ok((data.train.clone(), Some(sets)))
}

/// Every rank needs an image of each kNN split (strided shards).
fn check_knn_sizes(sets: &KnnSets) -> Result<()> {
    let world = crate::distributed::current().map_or(1, |d| d.world_size);
    for (set, what) in [(&sets.0, "bank (training images)"), (&sets.1, "queries")] {
        if set.len() < world {
            return Err(Error::option(
                "knn_every",
                format!("the kNN {what} has {} image(s), fewer than the {world} ranks", set.len()),
            ));
        }
    }
    Ok(())
}

/// One evaluation of the kNN monitor with the run's precision and memory format.
fn knn_monitor(
    config: &PretrainConfig,
    model: &ConModel,
    data: &OpenedDataset,
    bank: &Arc<dyn Dataset>,
    queries: &Arc<dyn Dataset>,
    device: Device,
) -> Result<KnnReport> {
    let how = FeatureExtraction {
        mean: data.mean,
        std: data.std,
        threads: config.optim.num_workers.max(1),
        device,
        precision: config.optim.precision,
        channels_last: config.optim.channels_last,
        shard: None,
    };
    let transform = config.knn.eval.ok_or_else(|| Error::option("knn_every", "needs the dataset's test transform"))?;
    knn::evaluate(model, bank, queries, transform, how, &config.knn, crate::distributed::current())
}

/// Loads a checkpoint for resuming (ours or the official code's); returns the epoch it finished
/// and, when it was written mid-epoch, where the next epoch's pass stands.
fn restore(
    path: &Path,
    config: &PretrainConfig,
    vs: &tch::nn::VarStore,
    optimizer: &mut Sgd,
) -> Result<(usize, Option<PassState>)> {
    if path.is_file() && crate::checkpoint::is_torch_file(path)? {
        let official = crate::checkpoint::OfficialCheckpoint::open(path)?;
        return Ok((super::train_checkpoint::resume_official(official, &config.model, vs, optimizer)?, None));
    }
    let refuse = |saved: &PretrainConfig| {
        if saved.model != config.model {
            let m = &saved.model;
            return Some(format!(
                "was trained with another model ({} {} exits {} size {}); give the same --model/--selfcon_pos/--selfcon_size",
                m.architecture, m.dataset, m.exits, m.sub_size
            ));
        }
        (saved.knn.val_split != config.knn.val_split).then(|| {
            format!(
                "was trained with --val_split {} (images held out of pre-training); resume with the same value",
                saved.knn.val_split
            )
        })
    };
    let resumed = Resumed::continue_run(path, "pretrain", config, refuse, vec![("", vs, optimizer)])?;
    Ok((resumed.epoch, resumed.position))
}
