//! Stage 2, linear evaluation (`main_linear.py`): the pre-trained encoder frozen in eval mode, a
//! `Linear(d, n_cls)` on the pooled backbone features and, with `--subnet`, a second one on the
//! last exit's features; each epoch reports top-1/top-5 of backbone, sub-network and ensemble
//! (mean of the two classifiers' logits).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tch::{nn, Device, Kind, Tensor};

use super::epoch_loop::{Pass, TrainLoop, TrainLoopConfig};
use super::evaluation::classifier_accuracies;
pub use super::evaluation::Accuracy;
use super::optim_config::OptimConfig;
use super::optimizer::Sgd;
use super::pass_state::PassState;
use super::progress::Progress;
use super::run_folder::{RunFolder, Start};
use super::train_checkpoint::{Resumed, TrainingState};
use crate::checkpoint;
use crate::data::augment::{EvalTransform, TrainTransform};
use crate::data::{DataLoader, Dataset, OpenedDataset, Subset, Transform};
use crate::distributed::gradients::Reduction;
use crate::error::{Error, Result};
use crate::metrics::MetricsLog;
use crate::model::{BatchNormKind, ConModel, ModelConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearConfig {
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub ckpt: PathBuf,
    pub subnet: bool,
    pub image_size: usize,
    pub eval: EvalTransform,
    /// Decode every image whole (`--full_decode`): no DCT-domain reduced JPEG decoding for crops
    /// that are shrunk anyway, so every training input is torchvision-exact. Configs written
    /// before the option existed read as `true` (they decoded whole): a mid-epoch resume of one
    /// then asks for `--full_decode` instead of changing the inputs silently.
    #[serde(default = "crate::train::decoded_whole_before_the_option")]
    pub full_decode: bool,
    /// Fraction of the training set held out to pick the best epoch (0 = official protocol:
    /// best test accuracy).
    pub val_split: f64,
    /// Step records every N steps in metrics.jsonl (0: none).
    #[serde(default)]
    pub print_freq: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EpochAccuracy {
    pub epoch: usize,
    pub backbone: Accuracy,
    pub sub: Option<Accuracy>,
    pub ensemble: Option<Accuracy>,
    /// Training top-1 of the backbone (and sub-network) classifier during the epoch.
    pub train_backbone: f64,
    pub train_sub: Option<f64>,
    /// On the held-out split with `val_split`.
    pub val_backbone: Option<Accuracy>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LinearResult {
    pub epochs: Vec<EpochAccuracy>,
    /// Folder of the classifiers' checkpoint (`last.safetensors`, resumable with `--resume`).
    pub run_dir: PathBuf,
    /// The official `results.json` entry (best epoch per head).
    pub entry: Value,
    pub results_path: PathBuf,
}

/// One linear classifier with its own optimiser (the backbone's, and with `--subnet` the exit's).
struct Head {
    linear: crate::model::LinearClassifier,
    optimizer: Sgd,
    vs: nn::VarStore,
    /// Its name in checkpoints: `backbone.weight`, `optimizer.momentum_buffer.sub.bias`, ...
    name: &'static str,
}

impl Head {
    fn new(name: &'static str, d: i64, n_cls: i64, device: Device, c: &LinearConfig) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let linear = crate::model::LinearClassifier::for_architecture(&vs.root(), c.model.architecture, d, n_cls);
        let optimizer = c.optim.optimizer(&vs, Reduction::Mean)?;
        Ok(Head { linear, optimizer, vs, name })
    }

    fn prefix(&self) -> &'static str {
        checkpoint_prefix(self.name)
    }
}

pub fn linear_eval(
    config: &LinearConfig,
    data: &OpenedDataset,
    device: Device,
    start: &Start,
    progress: &mut dyn Progress,
) -> Result<LinearResult> {
    crate::engine::use_device(device)?;
    let test_set =
        data.test.clone().ok_or_else(|| Error::option("dataset", "linear evaluation needs a test split (val/)"))?;
    if config.subnet && config.model.exits.count() == 0 {
        return Err(Error::option("subnet", "needs a sub-network exit in --selfcon_pos"));
    }
    if !(0.0..1.0).contains(&config.val_split) {
        return Err(Error::option("val_split", format!("must be in [0, 1), got {}", config.val_split)));
    }
    if config.optim.precision == super::precision::Precision::Fp64 {
        return Err(Error::option("precision", "fp64 is for pretrain and ce (the frozen encoder runs in fp32 here)"));
    }
    // Every weight is overwritten by the checkpoint: no seeding needed here.
    let (vs, model) = ConModel::build(&config.model, device, BatchNormKind::Local)?;
    checkpoint::ModelCheckpoint::open(&config.ckpt)?.load_into(&vs)?;
    if config.optim.channels_last {
        crate::model::to_channels_last(&vs)?;
    }
    linear_eval_model(config, data, &test_set, &model, device, start, progress)
}

impl LinearConfig {
    /// `{save_dir}/linear/{pre-training run}[_{exp_name}]/`: the classifiers' checkpoint and logs.
    pub fn run_dir(&self) -> PathBuf {
        let run = self
            .ckpt
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let stem = self.ckpt.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut name = format!("{run}_{stem}");
        if !self.optim.exp_name.is_empty() {
            name = format!("{name}_{}", self.optim.exp_name);
        }
        self.optim.save_dir.join("linear").join(name)
    }
}

/// Linear evaluation of an already-built encoder (also used for the random-init baseline).
pub fn linear_eval_model(
    config: &LinearConfig,
    data: &OpenedDataset,
    test_set: &Arc<dyn Dataset>,
    model: &ConModel,
    device: Device,
    start: &Start,
    progress: &mut dyn Progress,
) -> Result<LinearResult> {
    crate::engine::use_device(device)?;
    let n_cls = data.train.num_classes();
    let d = config.model.feature_dim();
    let (train_set, val_set): (Arc<dyn Dataset>, Option<Arc<dyn Dataset>>) = if config.val_split > 0.0 {
        let (t, v) = Subset::split(&data.train, config.val_split, config.optim.seed);
        (Arc::new(t), Some(Arc::new(v)))
    } else {
        (data.train.clone(), None)
    };
    let loader_config = |batch_size: usize, shuffle: bool| config.optim.loader(data, batch_size, shuffle, device);
    let train_loader = DataLoader::new(
        train_set,
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
    let eval =
        |set: &Arc<dyn Dataset>| DataLoader::new(set.clone(), Transform::Eval(config.eval), loader_config(512, false));
    let test_loader = eval(test_set)?;
    let val_loader = val_set.as_ref().map(eval).transpose()?;

    let (mut backbone, mut sub) = crate::engine::seeded(config.optim.seed, || -> Result<_> {
        Ok((
            Head::new("backbone", d, n_cls, device, config)?,
            config.subnet.then(|| Head::new("sub", d, n_cls, device, config)).transpose()?,
        ))
    })?;
    let mut epochs: Vec<EpochAccuracy> = Vec::new();
    let folder = RunFolder::claim(&config.run_dir())?;
    let resume = start.checkpoint(&folder.last())?;
    // A checkpoint written mid-epoch: the pass (classifier) to continue.
    let mut position = None;
    if let Some(path) = &resume {
        (epochs, position) = restore(path, config, &mut backbone, sub.as_mut())?;
    }
    // Only now, once the checkpoint is accepted: a refused resume writes nothing in the run
    // folder (its lock aside).
    let run_dir = folder.path.clone();
    let config_json = super::optim_config::prepare_run_dir(&run_dir, config)?;
    let mut log = MetricsLog::open_on_primary(
        &run_dir,
        &["kind", "stage", "epoch", "step", "loss", "lr", "backbone_top1", "sub_top1", "ensemble_top1", "train_top1"],
    )?
    .with_tensorboard(config.optim.tensorboard)?;
    let last = run_dir.join("last.safetensors");
    // Warm-up only when asked for (main_linear.py has no automatic switch).
    // The classifiers are built alike on every rank (seeded): no weights to take from rank 0.
    let mut train = TrainLoop::new(TrainLoopConfig {
        print_freq: config.print_freq,
        last_checkpoint: Some(last.clone()),
        ..TrainLoopConfig::new("linear", device, &config.optim, config.optim.schedule(false))
    })?;
    progress.run_started("linear", &run_dir, epochs.len() + 1, train_loader.dataset().len());
    let heads = if sub.is_some() { 2 } else { 1 };
    for epoch in epochs.len() + 1..=config.optim.epochs {
        let started = Instant::now();
        let mut train_top1 = Vec::new();
        let mut first_pass = 0;
        if let Some(p) = &position {
            if p.pass >= heads || p.earlier.len() != p.pass || p.counters.len() != 2 {
                return Err(Error::file(
                    resume.as_deref().unwrap_or(Path::new("")),
                    format!("stopped at {} with partial results this run cannot continue", p.describe()),
                ));
            }
            first_pass = p.pass;
            train_top1 = p.earlier.clone();
        }
        // Each classifier sees its own shuffle of the training set, as two official loops would.
        for k in first_pass..heads {
            let (head, other) = match (k, sub.as_mut()) {
                (0, sub) => (&mut backbone, sub.map(|s| &*s)),
                (_, Some(sub)) => (sub, Some(&backbone)),
                (_, None) => unreachable!("one head without a sub-network classifier"),
            };
            let use_exit = k == 1;
            let resume_pass = position.take();
            // Saved counters are the run's totals (all ranks): rank 0 carries them on.
            let counters = match &resume_pass {
                Some(p) if crate::distributed::is_primary() => p.counters.clone(),
                _ => vec![0, 0],
            };
            // Correct predictions counted on the device (read at a checkpoint and at the end).
            let correct = RefCell::new(crate::engine::to_device(&Tensor::from(counters[0]), device)?);
            let seen = Cell::new(counters[1]);
            let pass = Pass {
                loader: &train_loader,
                order: 2 * epoch as u64 + k as u64,
                epoch,
                index: k,
                what: format!("epoch {epoch} · {} classifier", head.name),
                resume: resume_pass,
            };
            let Head { linear, optimizer, vs, name } = head;
            train.run_pass(
                pass,
                optimizer,
                progress,
                &mut log,
                |images| Ok(linear.forward_t(&features(model, images, use_exit)?, true)),
                |logits, labels| {
                    let hits = logits.argmax(1, false).eq_tensor(labels).sum(Kind::Int64);
                    let _ = correct.borrow_mut().g_add_(&hits);
                    seen.set(seen.get() + labels.size()[0]);
                    Ok(logits.to_kind(Kind::Float).cross_entropy_for_logits(labels))
                },
                &mut |optimizer, at| {
                    let at = PassState {
                        counters: crate::distributed::total_counts(
                            vec![correct.borrow().int64_value(&[]), seen.get()],
                            "summing the training accuracy so far",
                        )?,
                        earlier: train_top1.clone(),
                        ..at.clone()
                    };
                    let mut state = HeadsState::new(&config_json, &epochs, epoch - 1, Some(at));
                    state.add(vs, name, optimizer);
                    if let Some(other) = other {
                        state.add(&other.vs, other.name, &other.optimizer);
                    }
                    state.0.save_on_primary(&last)?;
                    Ok(last.clone())
                },
            )?;
            let total = crate::distributed::total_counts(
                vec![correct.borrow().int64_value(&[]), seen.get()],
                "summing the training accuracy",
            )?;
            train_top1.push(100.0 * total[0] as f64 / total[1].max(1) as f64);
        }
        let (train_backbone, train_sub) = (train_top1[0], train_top1.get(1).copied());
        let (b, s, e) = evaluate(&test_loader, model, &backbone, sub.as_ref(), &train)?;
        let val_backbone = match &val_loader {
            Some(l) => Some(evaluate(l, model, &backbone, None, &train)?.0),
            None => None,
        };
        progress.epoch_finished(&format!(
            "linear epoch {epoch}: backbone {:.2}/{:.2}{}{} (train {:.2}) · lr {:.5} · {:.1} s",
            b.top1,
            b.top5,
            s.map(|s| format!(" · sub {:.2}/{:.2}", s.top1, s.top5)).unwrap_or_default(),
            e.map(|e| format!(" · ensemble {:.2}/{:.2}", e.top1, e.top5)).unwrap_or_default(),
            train_backbone,
            train.schedule().epoch_lr(epoch),
            started.elapsed().as_secs_f64()
        ));
        epochs.push(EpochAccuracy { epoch, backbone: b, sub: s, ensemble: e, train_backbone, train_sub, val_backbone });
        log.record(json!({"kind": "epoch", "stage": "linear", "epoch": epoch, "backbone_top1": b.top1,
            "sub_top1": s.map(|a| a.top1), "ensemble_top1": e.map(|a| a.top1), "train_top1": train_backbone}))?;
        let mut state = HeadsState::new(&config_json, &epochs, epoch, None);
        state.add(&backbone.vs, backbone.name, &backbone.optimizer);
        if let Some(head) = &sub {
            state.add(&head.vs, head.name, &head.optimizer);
        }
        state.0.save_on_primary(&last)?;
    }
    if epochs.is_empty() {
        return Err(Error::option(
            "resume",
            format!("the checkpoint already covers all {} epochs", config.optim.epochs),
        ));
    }
    let entry = results_entry(&epochs, config.val_split > 0.0);
    let results_path = config.optim.save_dir.join("results.json");
    let mut key = config.ckpt.display().to_string();
    if !config.optim.exp_name.is_empty() {
        key = format!("{key}_{}", config.optim.exp_name);
    }
    write_results_on_primary(&results_path, &key, &entry)?;
    Ok(LinearResult { epochs, run_dir, entry, results_path })
}

fn features(model: &ConModel, images: &Tensor, use_exit: bool) -> Result<Tensor> {
    let out = tch::no_grad(|| model.encode(images, false))?;
    Ok(if use_exit {
        out.exits.last().expect("validated: the model has an exit").detach()
    } else {
        out.backbone.detach()
    })
}

type Evaluation = (Accuracy, Option<Accuracy>, Option<Accuracy>);

/// Test (or validation) accuracies, with the batches placed as in training (memory format,
/// autocast); hits are counted on the device and read once.
fn evaluate(
    loader: &DataLoader,
    model: &ConModel,
    backbone: &Head,
    sub: Option<&Head>,
    train: &TrainLoop,
) -> Result<Evaluation> {
    let classifiers = if sub.is_some() { 3 } else { 1 };
    let acc = classifier_accuracies(loader, train, classifiers, |images| {
        let out = model.encode(images, false)?;
        let lb = backbone.linear.forward(&out.backbone);
        Ok(match sub {
            Some(sub) => {
                let ls = sub.linear.forward(out.exits.last().expect("validated: the model has an exit"));
                let ensemble = (&lb + &ls) / 2.0;
                vec![lb, ls, ensemble]
            }
            None => vec![lb],
        })
    })?;
    Ok((acc[0], sub.map(|_| acc[1]), sub.map(|_| acc[2])))
}

/// A linear-evaluation checkpoint: every classifier with its optimiser, the accuracy history.
struct HeadsState<'a>(TrainingState<'a>);

impl<'a> HeadsState<'a> {
    fn new(config_json: &'a str, epochs: &[EpochAccuracy], finished: usize, position: Option<PassState>) -> Self {
        HeadsState(TrainingState {
            stage: "linear",
            epoch: finished,
            position,
            config_json,
            history: Some(serde_json::to_string(epochs).expect("accuracies serialise")),
            weights: Vec::new(),
            optimizers: Vec::new(),
        })
    }

    /// Adds classifier `name` (its weights in `vs`) and its optimiser.
    fn add(&mut self, vs: &nn::VarStore, name: &'static str, optimizer: &'a Sgd) {
        self.0.weights.extend(vs.variables().into_iter().map(|(k, t)| (format!("{name}.{k}"), t)));
        self.0.optimizers.push((checkpoint_prefix(name), optimizer));
    }
}

/// A classifier's prefix in checkpoints ("backbone.", "sub.").
fn checkpoint_prefix(name: &str) -> &'static str {
    if name == "backbone" {
        "backbone."
    } else {
        "sub."
    }
}

/// Restores the classifiers and the accuracy history from a linear-evaluation checkpoint, and
/// where the epoch in progress stands when it was written mid-epoch.
fn restore(
    path: &Path,
    config: &LinearConfig,
    backbone: &mut Head,
    sub: Option<&mut Head>,
) -> Result<(Vec<EpochAccuracy>, Option<PassState>)> {
    let refuse = |saved: &LinearConfig| {
        (saved.model != config.model || saved.subnet != config.subnet)
            .then(|| "was made for another model or --subnet setting".to_string())
    };
    let parts = std::iter::once(backbone).chain(sub).map(|h| (h.prefix(), &h.vs, &mut h.optimizer)).collect();
    let resumed = Resumed::continue_run(path, "linear", config, refuse, parts)?;
    let history: Vec<EpochAccuracy> = resumed.history()?;
    if history.len() != resumed.epoch {
        return Err(Error::file(
            path,
            format!("holds {} epochs of accuracies but finished epoch {}", history.len(), resumed.epoch),
        ));
    }
    Ok((history, resumed.position))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The official entry: for each head its best epoch by test top-1 (or, with a validation split, by
/// validation top-1) as `[top1, top5, last train acc]` (`[top1, top5]` for the ensemble), plus
/// the final epoch's accuracies.
fn results_entry(epochs: &[EpochAccuracy], by_validation: bool) -> Value {
    let last = epochs.last().expect("at least one epoch");
    let best = |score: &dyn Fn(&EpochAccuracy) -> f64| {
        epochs
            .iter()
            .max_by(|a, b| {
                score(a).partial_cmp(&score(b)).unwrap_or(std::cmp::Ordering::Equal).then(b.epoch.cmp(&a.epoch))
            })
            .expect("epochs")
    };
    let select: &dyn Fn(&EpochAccuracy) -> f64 =
        if by_validation { &|e| e.val_backbone.map_or(0.0, |a| a.top1) } else { &|e| e.backbone.top1 };
    let b = best(select);
    let mut entry = json!({
        "backbone": [round2(b.backbone.top1), round2(b.backbone.top5), round2(last.train_backbone)],
        "final": {"backbone": [round2(last.backbone.top1), round2(last.backbone.top5)]},
    });
    if by_validation {
        entry["selection"] = json!({"by": "validation top-1", "epoch": b.epoch});
    }
    if last.sub.is_some() {
        let s = best(&|e| e.sub.map_or(0.0, |a| a.top1));
        let e = best(&|e| e.ensemble.map_or(0.0, |a| a.top1));
        let (sa, ea) = (s.sub.unwrap_or_default(), e.ensemble.unwrap_or_default());
        entry["sub"] = json!([round2(sa.top1), round2(sa.top5), round2(last.train_sub.unwrap_or(0.0))]);
        entry["ensemble"] = json!([round2(ea.top1), round2(ea.top5)]);
        let (ls, le) = (last.sub.unwrap_or_default(), last.ensemble.unwrap_or_default());
        entry["final"]["sub"] = json!([round2(ls.top1), round2(ls.top5)]);
        entry["final"]["ensemble"] = json!([round2(le.top1), round2(le.top5)]);
    }
    entry
}

/// Adds `key: entry` to the results file (created if absent), atomically, on the primary
/// process (the other ranks hold the same results and write nothing).
pub(super) fn write_results_on_primary(path: &Path, key: &str, entry: &Value) -> Result<()> {
    if !crate::distributed::is_primary() {
        return Ok(());
    }
    let mut all = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str::<Value>(&text).map_err(|e| Error::file(path, format!("not JSON: {e}")))?,
        Err(_) => json!({}),
    };
    let obj = all.as_object_mut().ok_or_else(|| Error::file(path, "is not a JSON object"))?;
    obj.insert(key.to_string(), entry.clone());
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    checkpoint::write_atomically(path, serde_json::to_string_pretty(&all).expect("json").as_bytes(), "results")
}
