//! The optimisation and output settings every training command has (the official scripts'
//! common flags): SGD, schedule, batch, seed, where results go.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::precision::Precision;
use super::schedule::LrSchedule;
use crate::data::{BatchFormat, LoaderConfig, OpenedDataset, Shard, ShardMode};
use crate::distributed::gradients::Reduction;
use crate::distributed::DistributedOptions;
use crate::error::{Error, Result};

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
    /// `--precision`: autocast for the forward pass (fp16 + loss scaling on CUDA, bf16 on CPU).
    #[serde(default)]
    pub precision: Precision,
    /// `--channels_last`: NHWC weights and batches (faster convolutions with mixed precision on GPUs).
    #[serde(default)]
    pub channels_last: bool,
    /// `--flush_denormal`: subnormal floats become zero in CPU kernels (torch.set_flush_denormal).
    #[serde(default)]
    pub flush_denormal: bool,
    /// `--global_negatives`, `--syncbn`, `--dist_backend`, `--dist_timeout` (used when the
    /// process is one rank of a distributed run).
    #[serde(default)]
    pub distributed: DistributedOptions,
    /// Warm-up steps of a per-iteration cosine schedule that replaces the official one (the
    /// demo's short budgets); `None` keeps the official schedule.
    #[serde(default)]
    pub step_cosine_warmup: Option<usize>,
    /// LARS trust coefficient (see [`super::Sgd::lars_eta`]); `None`: the official plain SGD.
    #[serde(default)]
    pub lars_eta: Option<f64>,
    /// `--save_every_steps`: `last` is also written every N steps mid-epoch (0: at epoch ends only).
    #[serde(default)]
    pub save_every_steps: usize,
    /// `--tensorboard`: the metrics also as TensorBoard event files in the run folder.
    #[serde(default)]
    pub tensorboard: bool,
}

impl OptimConfig {
    /// The BatchNorm of models trained with these settings: synchronised over this process's
    /// distributed group with `--syncbn` (when it has several ranks), else local.
    pub fn batch_norm(&self) -> crate::model::BatchNormKind {
        crate::model::BatchNormKind::for_run(self.distributed.syncbn, crate::distributed::current())
    }

    /// The optimiser these settings describe, over every trainable variable of `vs` (already
    /// through [`OptimConfig::prepare_model`]); in a distributed run it all-reduces the gradients
    /// as `reduction` says after every backward pass (with `--dist_overlap`, hooks registered now).
    pub fn optimizer(&self, vs: &tch::nn::VarStore, reduction: Reduction) -> Result<super::Sgd> {
        let mut sgd = super::Sgd::new(vs, self.momentum, self.weight_decay);
        sgd.lars_eta = self.lars_eta;
        match crate::distributed::current() {
            Some(d) => {
                let sync = d.gradient_sync(&sgd.parameters(), reduction)?;
                Ok(sgd.with_gradient_sync(sync))
            }
            None => Ok(sgd),
        }
    }

    /// The schedule, with warm-up when asked for or, if `auto_warm`, for batch sizes ≥ 1024.
    pub fn schedule(&self, auto_warm: bool) -> LrSchedule {
        if let Some(warmup_steps) = self.step_cosine_warmup {
            return LrSchedule::step_cosine(self.learning_rate, self.epochs, warmup_steps);
        }
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

impl OptimConfig {
    /// Puts freshly built model variables in this run's memory format and dtype (channels-last,
    /// float64 for `--precision fp64`). Call before restoring a checkpoint, so that restored
    /// values keep their precision.
    pub fn prepare_model(&self, vs: &tch::nn::VarStore) -> Result<()> {
        if self.channels_last {
            crate::model::to_channels_last(vs)?;
        }
        if self.precision == super::precision::Precision::Fp64 {
            tch::no_grad(|| {
                for (_, mut t) in vs.variables() {
                    if t.is_floating_point() {
                        t.set_data(&t.to_kind(tch::Kind::Double));
                    }
                }
            });
        }
        Ok(())
    }

    /// Loader settings for `data` with this run's seed and workers; on CPU the workers run in the
    /// background (lowest priority) so they do not stall libtorch's compute threads. In a
    /// distributed run each rank loads its shard: global batches for training (`shuffle`),
    /// every W-th sample for evaluation.
    pub fn loader(&self, data: &OpenedDataset, batch_size: usize, shuffle: bool, device: tch::Device) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            threads: self.num_workers.max(1),
            prefetch: 2,
            shuffle,
            seed: self.seed,
            drop_last: false,
            mean: data.mean,
            std: data.std,
            background: device == tch::Device::Cpu,
            shard: crate::distributed::current().map(|d| Shard {
                rank: d.rank,
                world_size: d.world_size,
                mode: if shuffle { ShardMode::GlobalBatches } else { ShardMode::Strided },
            }),
            format: BatchFormat::for_device(device, self.channels_last),
        }
    }
}

/// Creates the run folder and writes `config.json` there; returns that JSON (checkpoints embed it).
/// In a distributed run every rank first checks that all ranks have this configuration, and
/// only rank 0 writes.
pub fn prepare_run_dir(run_dir: &std::path::Path, config: &impl Serialize) -> Result<String> {
    if let Some(d) = crate::distributed::current() {
        let json = serde_json::to_string_pretty(config).expect("configs serialise");
        d.agree_on_config(&json)?;
        if d.rank != 0 {
            return Ok(json);
        }
    }
    std::fs::create_dir_all(run_dir).map_err(|e| Error::file(run_dir, format!("cannot create the run folder: {e}")))?;
    let json = serde_json::to_string_pretty(config).expect("configs serialise");
    let path = run_dir.join("config.json");
    crate::checkpoint::write_atomically(&path, json.as_bytes(), "the run configuration")?;
    Ok(json)
}
