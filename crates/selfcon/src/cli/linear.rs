//! `selfcon linear`: `main_linear.py` with the same flags and defaults, plus `--val_split`.

use selfcon::names::Named;
use std::path::PathBuf;

use clap::Args;

use selfcon::checkpoint::ModelCheckpoint;
use selfcon::train::{linear_eval, LinearConfig, Start};
use selfcon::Error;

use super::data_args::{DataArgs, DecodeArgs};
use super::model_args::ModelArgs;
use super::optim_args::OptimArgs;
use super::progress::TerminalProgress;

#[derive(Args, Debug)]
pub struct LinearArgs {
    /// The pre-training checkpoint: ours (last.safetensors), the official code's (last.pth,
    /// ckpt_epoch_*.pth: read without running anything), or a bare torch state dict. The model
    /// comes from the checkpoint (a bare state dict needs the model flags).
    #[arg(long, value_name = "PATH")]
    pub ckpt: PathBuf,

    /// Also train a classifier on the last sub-network exit and report sub-network and ensemble.
    #[arg(long)]
    pub subnet: bool,

    /// A linear-evaluation checkpoint ({save_dir}/linear/<run>/last.safetensors) to continue from.
    /// `auto`: continue this run's own last.safetensors when it exists, else start (for requeued
    /// jobs). Without --resume a run whose folder already holds a checkpoint is refused.
    #[arg(long, value_name = "PATH|auto")]
    pub resume: Option<PathBuf>,

    /// cifar10, cifar100, tinyimagenet, imagenet, imagenet100, mnist, fashionmnist or folder
    /// [default: the checkpoint's pre-training dataset, else imagenet (the official default)].
    #[arg(long)]
    pub dataset: Option<String>,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub decode: DecodeArgs,

    /// Hold out this fraction of the training set and report the test accuracy of the epoch with
    /// the best validation accuracy (the official script picks the best test epoch).
    #[arg(long = "val_split", visible_alias = "val-split", default_value_t = 0.0, value_name = "F")]
    pub val_split: f64,

    #[command(flatten)]
    pub optim: OptimArgs,
}

pub fn run(a: LinearArgs) -> anyhow::Result<()> {
    if !a.ckpt.is_file() {
        return Err(Error::option("ckpt", format!("{} does not exist", a.ckpt.display())).into());
    }
    let ckpt = ModelCheckpoint::open(&a.ckpt)?;
    let dataset = a.dataset.clone().unwrap_or_else(|| default_dataset(&ckpt));
    let model = a.model.for_checkpoint(&ckpt, &dataset, a.data.image_size(&dataset)?)?;
    drop(ckpt);
    let (data, image_size) = a.data.open(&dataset)?;
    let config = LinearConfig {
        model,
        ckpt: a.ckpt.clone(),
        subnet: a.subnet,
        optim: a.optim.to_config()?,
        image_size,
        full_decode: a.decode.full_decode,
        eval: a.data.eval_transform(&dataset)?,
        val_split: a.val_split,
        print_freq: a.optim.print_freq,
    };
    let device = a.optim.join_run(&config.optim)?;
    let mut progress = TerminalProgress::new(a.optim.print_freq);
    let result = linear_eval(&config, &data, device, &Start::from_flag(a.resume.as_deref()), &mut progress)?;
    if !selfcon::distributed::is_primary() {
        return Ok(());
    }
    println!("{}", serde_json::to_string(&result.entry)?);
    eprintln!("results written to {}; classifiers in {}", result.results_path.display(), result.run_dir.display());
    Ok(())
}

/// The dataset a checkpoint was pre-trained on (official default imagenet when it does not say).
pub fn default_dataset(ckpt: &ModelCheckpoint) -> String {
    ckpt.model.as_ref().map_or_else(|| "imagenet".to_string(), |m| m.dataset.name().to_string())
}
