//! 1-stage training (`main_ce.py`): cross-entropy on the backbone classifier plus, per exit,
//! `α·CE + β·KD_T(exit ‖ backbone) + γ·ConLoss_T([u_G, u_F], y)` (SPEC §1.3, §4.5).

use crate::names::Named;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;
use strum::{Display, EnumIter, EnumMessage, IntoStaticStr};
use tch::{nn, Device, Kind, Tensor};

use super::epoch_loop::{Pass, TrainLoop, TrainLoopConfig};
use super::evaluation::Accuracy;
use super::optim_config::{prepare_run_dir, OptimConfig};
use super::optimizer::Sgd;
use super::pass_state::PassState;
use super::progress::Progress;
use super::run_folder::{RunFolder, Start};
use super::run_name::python_float;
use super::train_checkpoint::{Resumed, TrainingState};
use crate::data::augment::{EvalTransform, TrainTransform};
use crate::data::{DataLoader, OpenedDataset, Transform};
use crate::distributed::gradients::Reduction;
use crate::error::{Error, Result};
use crate::loss::{ConLoss, ConLossFlags, Positives};
use crate::metrics::MetricsLog;
use crate::model::{CeModel, ModelConfig};

/// `--method` of `main_ce.py`; each fixes (α, β, γ), overwriting the flags as the official code does.
/// (`config.json` has always stored the variant's Rust name, "SubnetCe"; the CLI name is "subnet_ce".)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Display, IntoStaticStr, EnumIter, EnumMessage)]
#[strum(serialize_all = "snake_case")]
pub enum CeMethod {
    Ce,
    SubnetCe,
    Kd,
    Selfcon,
}

crate::named_enum!(CeMethod, "method", "method", parse_only);

impl CeMethod {
    /// (α, β, γ).
    pub fn weights(self) -> (f64, f64, f64) {
        match self {
            CeMethod::Ce => (0.0, 0.0, 0.0),
            CeMethod::SubnetCe => (1.0, 0.0, 0.0),
            CeMethod::Kd => (0.5, 0.5, 0.0),
            CeMethod::Selfcon => (1.0, 0.0, 0.8),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CeConfig {
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub method: CeMethod,
    /// KD temperature, also the contrastive temperature of `--method selfcon` (official quirk).
    pub temperature: f64,
    pub dim_out: i64,
    pub dataset_name: String,
    pub image_size: usize,
    pub eval: EvalTransform,
    /// Decode every image whole (`--full_decode`): no DCT-domain reduced JPEG decoding for crops
    /// that are shrunk anyway, so every training input is torchvision-exact. Configs written
    /// before the option existed read as `true` (they decoded whole): a mid-epoch resume of one
    /// then asks for `--full_decode` instead of changing the inputs silently.
    #[serde(default = "crate::train::decoded_whole_before_the_option")]
    pub full_decode: bool,
    /// Step records every N steps in metrics.jsonl (0: none).
    #[serde(default)]
    pub print_freq: usize,
}

impl CeConfig {
    /// `{method}_{dataset}_{model}_lr_{lr}_decay_{wd}_bsz_{bsz}_seed_{seed}[_cosine][_{exp_name}]`
    /// (the official `_warm` suffix is added after the folder is made, so it never shows).
    pub fn run_dir(&self) -> PathBuf {
        let mut name = format!(
            "{}_{}_{}_lr_{}_decay_{}_bsz_{}_seed_{}",
            self.method,
            self.dataset_name,
            self.model.architecture,
            python_float(self.optim.learning_rate),
            python_float(self.optim.weight_decay),
            self.optim.batch_size,
            self.optim.seed
        );
        if self.optim.cosine {
            name.push_str("_cosine");
        }
        if !self.optim.exp_name.is_empty() {
            name = format!("{name}_{}", self.optim.exp_name);
        }
        self.optim.save_dir.join(self.method.name()).join(format!("{}_models", self.dataset_name)).join(name)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CeResult {
    pub run_dir: PathBuf,
    /// Per epoch of this run (resumed runs: since the official checkpoint it continued), from
    /// `first_epoch` on: test accuracy of the backbone classifier and of each exit's classifier.
    pub epochs: Vec<(Accuracy, Vec<Accuracy>)>,
    pub first_epoch: usize,
    pub best_epoch: usize,
}

/// `KD_T(s ‖ t) = −T² · mean_batch Σ_c softmax(t/T)_c · log_softmax(s/T)_c`, teacher detached.
pub fn kd_loss(student: &Tensor, teacher: &Tensor, t: f64) -> Tensor {
    let target = (teacher.detach() / t).softmax(1, Kind::Float);
    let log_p = (student / t).log_softmax(1, Kind::Float);
    (target * log_p).sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float) * (-t * t)
}

pub fn train_ce(
    config: &CeConfig,
    data: &OpenedDataset,
    device: Device,
    start: &Start,
    progress: &mut dyn Progress,
) -> Result<CeResult> {
    crate::engine::use_device(device)?;
    let test_set = data.test.clone().ok_or_else(|| Error::option("dataset", "1-stage training needs a test split"))?;
    if config.optim.epochs == 0 {
        return Err(Error::option("epochs", "must be at least 1"));
    }
    let (alpha, beta, gamma) = config.method.weights();
    let exits = config.model.exits.count();
    if config.method != CeMethod::Ce && exits == 0 {
        return Err(Error::option("selfcon_pos", format!("--method {} needs a sub-network exit", config.method)));
    }
    if config.method == CeMethod::Selfcon {
        eprintln!(
            "warning: --method selfcon uses --temperature {} as the contrastive temperature with base 0.07 (an official quirk, kept): the loss is scaled by {:.1}",
            config.temperature,
            config.temperature / 0.07
        );
    }
    let n_cls = data.train.num_classes();
    let vs = nn::VarStore::new(device);
    let model = crate::engine::seeded(config.optim.seed, || {
        let norm = config.optim.batch_norm();
        CeModel::new(&vs.root(), &config.model, n_cls, config.dim_out, config.method == CeMethod::Selfcon, norm)
    })?;
    config.optim.prepare_model(&vs)?;
    let mut optimizer = config.optim.optimizer(&vs, Reduction::Mean)?;
    // The accuracies of this run's epochs so far, the first of them being `first_epoch`.
    let folder = RunFolder::claim(&config.run_dir())?;
    let (mut epochs, first_epoch, mut position) = match start.checkpoint(&folder.last())? {
        Some(path) => restore(&path, config, &vs, &mut optimizer)?,
        None => (Vec::new(), 1, None),
    };
    let start_epoch = first_epoch + epochs.len();
    // With --resume auto a finished run is done: no epoch runs, the results are written again.
    let done = start.finished_is_done() && !epochs.is_empty();
    if start_epoch > config.optim.epochs && !done {
        return Err(Error::option(
            "resume",
            format!("the checkpoint already covers all {} epochs (give a larger --epochs)", config.optim.epochs),
        ));
    }
    // Only now, once the checkpoint is accepted: a refused resume writes nothing in the run
    // folder (its lock aside).
    let run_dir = folder.path.clone();
    let config_json = prepare_run_dir(&run_dir, config)?;
    let mut log =
        MetricsLog::open_on_primary(&run_dir, &["kind", "stage", "epoch", "step", "loss", "lr", "top1", "sub_top1"])?
            .with_tensorboard(config.optim.tensorboard)?;
    let loader_config = |batch_size: usize, shuffle: bool| config.optim.loader(data, batch_size, shuffle, device);
    let train_loader = DataLoader::new(
        data.train.clone(),
        Transform::Train {
            transform: TrainTransform {
                reduced_decode: !config.full_decode,
                ..TrainTransform::crop_flip(config.image_size)
            },
            views: 1,
        },
        loader_config(config.optim.batch_size, true),
    )?
    .keeping_buffers();
    let test = DataLoader::new(test_set, Transform::Eval(config.eval), loader_config(512, false))?;
    let con = ConLoss::new(config.temperature);
    let last = run_dir.join("last.safetensors");
    let mut train = TrainLoop::new(TrainLoopConfig {
        print_freq: config.print_freq,
        last_checkpoint: Some(last.clone()),
        model: Some(&vs),
        ..TrainLoopConfig::new("ce", device, &config.optim, config.optim.schedule(true))
    })?;
    let save = |optimizer: &Sgd, epochs: &[(Accuracy, Vec<Accuracy>)], finished: usize, position| {
        TrainingState {
            stage: "ce",
            epoch: finished,
            position,
            config_json: &config_json,
            history: Some(serde_json::to_string(epochs).expect("accuracies serialise")),
            weights: vs.variables().into_iter().collect(),
            optimizers: vec![("", optimizer)],
        }
        .save_on_primary(&last)
    };
    progress.run_started("ce", &run_dir, start_epoch, data.train.len());
    for epoch in start_epoch..=config.optim.epochs {
        let pass = Pass::epoch(&train_loader, epoch, position.take());
        let history = &epochs;
        let stats = train.run_pass(
            pass,
            &mut optimizer,
            progress,
            &mut log,
            |images| model.forward_t(images, true),
            |out, y| {
                let float = |t: &Tensor| t.to_kind(Kind::Float);
                let logits = float(&out.logits);
                let mut loss = logits.cross_entropy_for_logits(y);
                for (j, exit_logits) in out.exit_logits.iter().map(float).enumerate() {
                    if alpha != 0.0 {
                        loss += exit_logits.cross_entropy_for_logits(y) * alpha;
                    }
                    if beta != 0.0 {
                        loss += kd_loss(&exit_logits, &logits, config.temperature) * beta;
                    }
                    if let (true, Some((backbone, exits))) = (gamma != 0.0, &out.projections) {
                        let pair = Tensor::stack(&[float(&exits[j]), float(backbone)], 1);
                        loss += con.forward(&pair, Positives::Labels(y), ConLossFlags::default())? * gamma;
                    }
                }
                Ok(loss)
            },
            &mut |optimizer, at| {
                save(optimizer, history, epoch - 1, Some(at.clone()))?;
                Ok(last.clone())
            },
        )?;
        let (top, sub) = evaluate(&model, &test, exits, &train)?;
        progress.epoch_finished(&format!(
            "ce epoch {epoch}: loss {:.4} · lr {:.5} · test top-1 {:.2}{} · {:.0} images/s · {:.1} s{}{}",
            stats.loss,
            stats.lr,
            top.top1,
            sub.iter().map(|s| format!(" · exit {:.2}", s.top1)).collect::<String>(),
            stats.images_per_s(),
            stats.seconds,
            stats.memory_note(),
            stats.skipped_note()
        ));
        log.record(json!({"kind": "epoch", "stage": "ce", "epoch": epoch, "loss": stats.loss, "lr": stats.lr,
            "top1": top.top1, "sub_top1": sub.last().map(|s| s.top1)}))?;
        epochs.push((top, sub));
        save(&optimizer, &epochs, epoch, None)?;
    }
    let best_epoch = epochs
        .iter()
        .enumerate()
        .max_by(|a, b| a.1 .0.top1.partial_cmp(&b.1 .0.top1).unwrap_or(std::cmp::Ordering::Equal).then(b.0.cmp(&a.0)))
        .map(|(i, _)| first_epoch + i)
        .expect("at least one epoch ran");
    // Official: best backbone top-1 and the sub-network accuracy of that epoch.
    let (best, best_sub) = &epochs[best_epoch - first_epoch];
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let entry =
        json!({"backbone": round2(best.top1), "sub": best_sub.last().map(|s| round2(s.top1)), "epoch": best_epoch});
    let key = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    super::linear::write_results_on_primary(&config.optim.save_dir.join("results.json"), &key, &entry)?;
    Ok(CeResult { run_dir, epochs, first_epoch, best_epoch })
}

/// Restores model, optimiser and accuracy history from a `ce` checkpoint (ours or the official
/// code's); returns the history, the epoch its first entry belongs to, and, for a checkpoint
/// written mid-epoch, where the next epoch's pass stands.
fn restore(
    path: &std::path::Path,
    config: &CeConfig,
    vs: &nn::VarStore,
    optimizer: &mut Sgd,
) -> Result<(Vec<(Accuracy, Vec<Accuracy>)>, usize, Option<PassState>)> {
    if path.is_file() && crate::checkpoint::is_torch_file(path)? {
        let epoch = restore_official(path, config, vs, optimizer)?;
        return Ok((Vec::new(), epoch.saturating_add(1), None));
    }
    let refuse = |saved: &CeConfig| {
        (saved.model != config.model || saved.method != config.method || saved.dim_out != config.dim_out)
            .then(|| "was made for another model, --method or --dim_out".to_string())
    };
    let resumed = Resumed::continue_run(path, "ce", config, refuse, vec![("", vs, optimizer)])?;
    let history: Vec<(Accuracy, Vec<Accuracy>)> = resumed.history()?;
    let first_epoch =
        resumed.epoch.saturating_add(1).checked_sub(history.len()).filter(|e| *e >= 1).ok_or_else(|| {
            Error::file(
                path,
                format!("holds {} epochs of accuracies but finished epoch {}", history.len(), resumed.epoch),
            )
        })?;
    Ok((history, first_epoch, resumed.position))
}

/// Continues an official `main_ce.py` run (`CEResNet` and siblings); its `--method` decides
/// which modules the model has, so it must agree.
fn restore_official(
    path: &std::path::Path,
    config: &CeConfig,
    vs: &nn::VarStore,
    optimizer: &mut Sgd,
) -> Result<usize> {
    let official = crate::checkpoint::OfficialCheckpoint::open(path)?;
    let method = official.options.as_ref().and_then(|opt| opt.get("method")).and_then(|m| m.as_str());
    if let Some(method) = method.filter(|m| *m != config.method.name()) {
        return Err(Error::file(
            path,
            format!("was trained with --method {method}, not {}; leave --method out or give the same", config.method),
        ));
    }
    super::train_checkpoint::resume_official(official, &config.model, vs, optimizer)
}

/// Test accuracies of the classifier and of each exit's, with the batches placed as in training
/// (memory format, autocast); hits are counted on the device and read once.
fn evaluate(
    model: &CeModel,
    loader: &DataLoader,
    exits: usize,
    train: &TrainLoop,
) -> Result<(Accuracy, Vec<Accuracy>)> {
    let acc = super::evaluation::classifier_accuracies(loader, train, exits + 1, |images| {
        let out = model.forward_t(images, false)?;
        Ok(std::iter::once(out.logits).chain(out.exit_logits).collect())
    })?;
    Ok((acc[0], acc[1..].to_vec()))
}
