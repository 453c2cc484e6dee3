//! The checkpoint every training command writes each epoch and `--resume` reads: weights under
//! their state-dict names, each optimiser's momentum buffers, and metadata
//! (stage, finished epoch, the run's full config, the accuracy history) and, written mid-epoch,
//! where the pass stands ([`PassState`]). Data order and augmentation are derived from (seed,
//! epoch, sample), so no RNG state is needed to continue exactly; the fp16 loss scaler starts
//! afresh every epoch (official behaviour) and mid-epoch continues from its saved scale.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use tch::Tensor;

use super::optimizer::Sgd;
use super::pass_state::PassState;
use crate::checkpoint::{self, Metadata, OPTIMIZER_PREFIX};
use crate::error::{Error, Result};

pub const FORMAT: &str = "selfcon-checkpoint-1";

/// What goes into one training checkpoint.
pub struct TrainingState<'a> {
    pub stage: &'static str,
    /// The last epoch finished.
    pub epoch: usize,
    /// Written mid-epoch: where the pass in progress stands (its epoch is `epoch + 1`).
    pub position: Option<PassState>,
    pub config_json: &'a str,
    /// JSON of the per-epoch results so far (linear, ce).
    pub history: Option<String>,
    /// Weights, already under their final names.
    pub weights: Vec<(String, Tensor)>,
    /// Optimisers with the prefix their parameter names get ("" or "backbone.").
    pub optimizers: Vec<(&'a str, &'a Sgd)>,
}

impl TrainingState<'_> {
    /// Writes the checkpoint atomically on the primary process (rank 0, or a process outside a
    /// distributed run); the other ranks hold the same state and write nothing.
    pub fn save_on_primary(self, path: &Path) -> Result<()> {
        if crate::distributed::is_primary() {
            self.save(path)?;
        }
        Ok(())
    }

    /// Writes the checkpoint atomically, whichever rank this is.
    pub fn save(self, path: &Path) -> Result<()> {
        debug_assert!(self.position.as_ref().is_none_or(|p| p.epoch == self.epoch + 1));
        let mut tensors = self.weights;
        for (prefix, optimizer) in &self.optimizers {
            tensors.extend(optimizer.state().into_iter().map(|(k, t)| (format!("{OPTIMIZER_PREFIX}{prefix}{k}"), t)));
        }
        let mut meta = Metadata::new();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("stage".into(), self.stage.into());
        meta.insert("epoch".into(), self.epoch.to_string());
        meta.insert("config".into(), self.config_json.to_string());
        if let Some(history) = self.history {
            meta.insert("history".into(), history);
        }
        if let Some(position) = &self.position {
            meta.insert("position".into(), serde_json::to_string(position).expect("a pass state serialises"));
        }
        checkpoint::save(path, &tensors, &meta)
    }
}

/// A training checkpoint opened for `--resume`.
pub struct Resumed {
    pub path: std::path::PathBuf,
    /// The last epoch finished.
    pub epoch: usize,
    /// Set when the checkpoint was written mid-epoch: the pass to continue.
    pub position: Option<PassState>,
    tensors: BTreeMap<String, Tensor>,
    metadata: Metadata,
}

impl Resumed {
    /// Opens `path`, which must be a checkpoint of `stage`.
    pub fn open(path: &Path, stage: &str) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::option("resume", format!("{} does not exist", path.display())));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read checkpoint: {e}")))?;
        Self::from_bytes(path, &bytes, stage)
    }

    /// A checkpoint held in memory (`path` names it in errors), which must be of `stage`.
    pub fn from_bytes(path: &Path, bytes: &[u8], stage: &str) -> Result<Self> {
        let loaded = checkpoint::load_bytes(path, bytes)?;
        let found = loaded.metadata.get("stage").map(String::as_str).unwrap_or("unknown");
        if found != stage {
            return Err(Error::file(path, format!("is a {found} checkpoint, not a selfcon {stage} checkpoint")));
        }
        let epoch: usize = loaded
            .metadata
            .get("epoch")
            .and_then(|e| e.parse().ok())
            .ok_or_else(|| Error::file(path, "has no epoch"))?;
        let position: Option<PassState> = match loaded.metadata.get("position") {
            None => None,
            Some(text) => Some(
                serde_json::from_str(text)
                    .map_err(|e| Error::file(path, format!("has an unreadable position: {e}")))?,
            ),
        };
        if let Some(p) = &position {
            if p.epoch != epoch.saturating_add(1) || p.steps > p.batches {
                return Err(Error::file(
                    path,
                    format!("says it finished epoch {epoch} but stopped at {}", p.describe()),
                ));
            }
        }
        Ok(Resumed { path: path.to_path_buf(), epoch, position, tensors: loaded.tensors, metadata: loaded.metadata })
    }

    /// Continues a `stage` run configured as `config` from its checkpoint at `path`, the one way
    /// pretrain, ce and linear resume: `refuse(saved)` says why the saved configuration cannot
    /// continue this one (a different model, say; `None` when it can), a mid-epoch checkpoint must
    /// be of the same run ([`Resumed::check_same_run`]), and every `(prefix, weights, optimizer)`
    /// of `parts` is restored. The caller reads the epoch, position and history from the result.
    pub fn continue_run<C: serde::Serialize + DeserializeOwned>(
        path: &Path,
        stage: &str,
        config: &C,
        refuse: impl FnOnce(&C) -> Option<String>,
        parts: Vec<(&str, &tch::nn::VarStore, &mut Sgd)>,
    ) -> Result<Resumed> {
        let resumed = Resumed::open(path, stage)?;
        let saved: C = resumed.config()?;
        if let Some(why) = refuse(&saved) {
            return Err(Error::file(path, why));
        }
        resumed.check_same_run(&saved, config)?;
        for (prefix, vs, optimizer) in parts {
            resumed.restore_weights(prefix, vs)?;
            resumed.restore_optimizer(prefix, optimizer)?;
        }
        Ok(resumed)
    }

    /// A checkpoint written mid-epoch continues one run: `current` (this run's configuration)
    /// must equal `saved` (the checkpoint's, read through the config type so that settings added
    /// since it was written take their defaults, as the run that wrote it had them), except for
    /// the settings that do not change the training (output paths, logging, workers, how long to
    /// train). Lists what differs.
    fn check_same_run<C: serde::Serialize>(&self, saved: &C, current: &C) -> Result<()> {
        let Some(position) = &self.position else { return Ok(()) };
        let saved = serde_json::to_value(saved).expect("configs serialise");
        let current = serde_json::to_value(current).expect("configs serialise");
        let mut differences = Vec::new();
        json_differences("", &saved, &current, &mut differences);
        if differences.is_empty() {
            return Ok(());
        }
        Err(Error::file(
            &self.path,
            format!(
                "stopped at {} of a run with other settings ({}); a mid-epoch resume continues the same run: give the same flags",
                position.describe(),
                differences.join(", ")
            ),
        ))
    }

    /// The run configuration the checkpoint was written with.
    pub fn config<C: DeserializeOwned>(&self) -> Result<C> {
        self.json("config")
    }

    pub fn history<H: DeserializeOwned>(&self) -> Result<H> {
        self.json("history")
    }

    fn json<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let text = self.metadata.get(key).ok_or_else(|| Error::file(&self.path, format!("has no {key}")))?;
        serde_json::from_str(text).map_err(|e| Error::file(&self.path, format!("has an unreadable {key}: {e}")))
    }

    /// Weights whose names start with `prefix`, with the prefix removed (training state excluded).
    pub fn weights(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        self.tensors
            .iter()
            .filter(|(k, _)| !k.starts_with(OPTIMIZER_PREFIX))
            .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t.shallow_clone())))
            .collect()
    }

    /// Copies the weights under `prefix` strictly into `vs`.
    pub fn restore_weights(&self, prefix: &str, vs: &tch::nn::VarStore) -> Result<()> {
        checkpoint::load_into_var_store(&self.path, vs, &self.weights(prefix))
    }

    /// Restores the momentum buffers saved under `prefix`.
    pub fn restore_optimizer(&self, prefix: &str, optimizer: &mut Sgd) -> Result<()> {
        let full = format!("{OPTIMIZER_PREFIX}{prefix}");
        optimizer
            .load_state(
                self.tensors
                    .iter()
                    .filter_map(|(k, t)| k.strip_prefix(&full).map(|k| (k.to_string(), t.shallow_clone())))
                    .collect(),
            )
            .map_err(|e| Error::file(&self.path, e.to_string()))
    }
}

/// Continues an official run (`main_represent.py`, `main_ce.py`) from its checkpoint: the model
/// its options describe must be `model`; weights (checked strictly), SGD momentum buffers (mapped
/// through the official parameter order, see `checkpoint::official`); returns its finished epoch.
pub fn resume_official(
    official: checkpoint::OfficialCheckpoint,
    model: &crate::model::ModelConfig,
    vs: &tch::nn::VarStore,
    optimizer: &mut Sgd,
) -> Result<usize> {
    let path = official.path.clone();
    let epoch = official.epoch.ok_or_else(|| {
        Error::file(
            &path,
            "has no 'epoch': a bare state dict holds weights only and cannot be resumed (use it with linear)",
        )
    })?;
    official.check_same_model(model)?;
    let weights = official.weights.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    checkpoint::load_into_var_store(&path, vs, &weights)?;
    if official.momentum.is_empty() {
        return Err(Error::file(&path, "has no SGD momentum buffers in 'optimizer' to continue from"));
    }
    optimizer.load_state(official.momentum).map_err(|e| Error::file(&path, format!("'optimizer': {e}")))?;
    Ok(epoch)
}

/// Settings a mid-epoch resume may change: where results go, logging (TensorBoard, the kNN
/// monitor except the images it holds out), loader threads, the distributed timeouts and overlap,
/// the number of epochs, the encoder file's path.
const FREE_SETTINGS: [&str; 15] = [
    "optim.epochs",
    "optim.num_workers",
    "optim.save_dir",
    "optim.exp_name",
    "optim.save_every_steps",
    "optim.tensorboard",
    "optim.distributed.timeout_s",
    "optim.distributed.overlap",
    "print_freq",
    "save_freq",
    "ckpt",
    "knn.every",
    "knn.k",
    "knn.temperature",
    "knn.eval",
];

/// "path: saved vs current" for every leaf that differs, outside [`FREE_SETTINGS`].
fn json_differences(path: &str, saved: &serde_json::Value, current: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    if FREE_SETTINGS.contains(&path) {
        return;
    }
    match (saved, current) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let sub = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                let null = Value::Null;
                json_differences(&sub, a.get(key).unwrap_or(&null), b.get(key).unwrap_or(&null), out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}
