//! The optimisation and output settings every training command has (the official scripts'
//! common flags): SGD, schedule, batch, seed, where results go.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::precision::Precision;
use super::schedule::LrSchedule;
use crate::data::{LoaderConfig, OpenedDataset};
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
}

impl OptimConfig {
    /// The schedule, with warm-up when asked for or, if `auto_warm`, for batch sizes ≥ 1024.
    pub fn schedule(&self, auto_warm: bool) -> LrSchedule {
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
    /// The shared training loop for `stage` with this run's precision and memory format, after
    /// converting the model variables in `vs` to channels-last when asked.
    pub fn train_loop(
        &self,
        stage: &'static str,
        device: tch::Device,
        schedule: LrSchedule,
        vs: &tch::nn::VarStore,
    ) -> Result<super::epoch_loop::TrainLoop> {
        if self.channels_last {
            crate::model::to_channels_last(vs)?;
        }
        if self.flush_denormal {
            torch_shim::set_flush_denormal(true);
        }
        if let tch::Device::Cuda(_) = device {
            // Fixed input shapes: let cuDNN pick the fastest convolution algorithms once.
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let mut train = super::epoch_loop::TrainLoop::new(stage, device, self.precision, schedule);
        train.channels_last = self.channels_last;
        Ok(train)
    }

    /// Loader settings for `data` with this run's seed and workers; on CPU the workers run in the
    /// background (lowest priority) so they do not stall libtorch's compute threads.
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
        }
    }
}

/// Creates the run folder and writes `config.json` there; returns that JSON (checkpoints embed it).
pub fn prepare_run_dir(run_dir: &std::path::Path, config: &impl Serialize) -> Result<String> {
    std::fs::create_dir_all(run_dir).map_err(|e| Error::file(run_dir, format!("cannot create the run folder: {e}")))?;
    let json = serde_json::to_string_pretty(config).expect("configs serialise");
    let path = run_dir.join("config.json");
    std::fs::write(&path, &json).map_err(|e| Error::file(&path, e.to_string()))?;
    Ok(json)
}
