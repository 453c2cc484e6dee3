//! `selfcon linear`: `main_linear.py` with the same flags and defaults, plus `--val_split`.

use std::path::PathBuf;

use clap::Args;

use selfcon::data::augment::EvalTransform;
use selfcon::data::DatasetKind;
use selfcon::engine::{select_device, DeviceRequest};
use selfcon::train::{linear_eval, LinearConfig};
use selfcon::Error;

use super::data_args::DataArgs;
use super::model_args::ModelArgs;
use super::pretrain::milestones;

#[derive(Args, Debug)]
pub struct LinearArgs {
    /// The pre-training checkpoint (last.safetensors); the flags below must describe its model.
    #[arg(long, value_name = "PATH")]
    pub ckpt: PathBuf,

    /// Also train a classifier on the last sub-network exit and report sub-network and ensemble.
    #[arg(long)]
    pub subnet: bool,

    /// cifar10, cifar100, tinyimagenet, imagenet, imagenet100, mnist or fashionmnist (official default imagenet).
    #[arg(long, default_value = "imagenet")]
    pub dataset: String,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub data: DataArgs,

    #[arg(long = "batch_size", visible_alias = "batch-size", default_value_t = 256, value_name = "N")]
    pub batch_size: usize,

    #[arg(long = "num_workers", visible_alias = "num-workers", default_value_t = 16, value_name = "N")]
    pub num_workers: usize,

    #[arg(long, default_value_t = 100)]
    pub epochs: usize,

    #[arg(long = "learning_rate", visible_alias = "learning-rate", default_value_t = 0.1, value_name = "LR")]
    pub learning_rate: f64,

    #[arg(
        long = "lr_decay_epochs",
        visible_alias = "lr-decay-epochs",
        default_value = "60,75,90",
        value_name = "LIST"
    )]
    pub lr_decay_epochs: String,

    #[arg(long = "lr_decay_rate", visible_alias = "lr-decay-rate", default_value_t = 0.2, value_name = "RATE")]
    pub lr_decay_rate: f64,

    #[arg(long = "weight_decay", visible_alias = "weight-decay", default_value_t = 0.0, value_name = "WD")]
    pub weight_decay: f64,

    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,

    #[arg(long)]
    pub cosine: bool,

    /// Warm-up (only when given, as official for linear evaluation).
    #[arg(long)]
    pub warm: bool,

    /// Hold out this fraction of the training set and report the test accuracy of the epoch with
    /// the best validation accuracy (the official script picks the best test epoch).
    #[arg(long = "val_split", visible_alias = "val-split", default_value_t = 0.0, value_name = "F")]
    pub val_split: f64,

    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    #[arg(long = "print_freq", visible_alias = "print-freq", default_value_t = 10, value_name = "N")]
    pub print_freq: usize,

    /// results.json is written at {save_dir}/results.json.
    #[arg(long = "save_dir", visible_alias = "save-dir", default_value = "./save/representation", value_name = "DIR")]
    pub save_dir: PathBuf,

    /// Suffix of the key in results.json.
    #[arg(long = "exp_name", visible_alias = "exp-name", default_value = "", value_name = "TEXT")]
    pub exp_name: String,

    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

pub fn run(a: LinearArgs) -> anyhow::Result<()> {
    if !a.ckpt.is_file() {
        return Err(Error::option("ckpt", format!("{} does not exist", a.ckpt.display())).into());
    }
    let kind: DatasetKind = a.dataset.parse()?;
    let model = a.model.to_config(&a.dataset)?;
    let device = select_device(a.device.parse::<DeviceRequest>()?)?;
    let (data, image_size) = a.data.open(&a.dataset)?;
    let config = LinearConfig {
        model,
        ckpt: a.ckpt.clone(),
        subnet: a.subnet,
        epochs: a.epochs,
        batch_size: a.batch_size,
        learning_rate: a.learning_rate,
        lr_decay_epochs: milestones(&a.lr_decay_epochs)?,
        lr_decay_rate: a.lr_decay_rate,
        weight_decay: a.weight_decay,
        momentum: a.momentum,
        cosine: a.cosine,
        warm: a.warm,
        seed: a.seed,
        num_workers: a.num_workers,
        save_dir: a.save_dir.clone(),
        exp_name: a.exp_name.clone(),
        image_size,
        eval: EvalTransform::for_dataset(kind),
        val_split: a.val_split,
    };
    let result = linear_eval(&config, &data, device)?;
    println!("{}", serde_json::to_string(&result.entry)?);
    eprintln!("results written to {}", result.results_path.display());
    Ok(())
}
