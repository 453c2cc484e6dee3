//! `selfcon linear`: `main_linear.py` with the same flags and defaults, plus `--val_split`.

use std::path::PathBuf;

use clap::Args;

use selfcon::train::{linear_eval, LinearConfig};
use selfcon::Error;

use super::data_args::DataArgs;
use super::model_args::ModelArgs;
use super::optim_args::OptimArgs;
use super::progress::TerminalProgress;

#[derive(Args, Debug)]
pub struct LinearArgs {
    /// The pre-training checkpoint (last.safetensors); the flags below must describe its model.
    #[arg(long, value_name = "PATH")]
    pub ckpt: PathBuf,

    /// Also train a classifier on the last sub-network exit and report sub-network and ensemble.
    #[arg(long)]
    pub subnet: bool,

    /// A linear-evaluation checkpoint ({save_dir}/linear/<run>/last.safetensors) to continue from.
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,

    /// cifar10, cifar100, tinyimagenet, imagenet, imagenet100, mnist or fashionmnist (official default imagenet).
    #[arg(long, default_value = "imagenet")]
    pub dataset: String,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub data: DataArgs,

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
    let model = a.model.to_config(&a.dataset, a.data.image_size(&a.dataset)?)?;
    let (data, image_size) = a.data.open(&a.dataset)?;
    let config = LinearConfig {
        model,
        ckpt: a.ckpt.clone(),
        subnet: a.subnet,
        optim: a.optim.to_config()?,
        image_size,
        eval: a.data.eval_transform(&a.dataset)?,
        val_split: a.val_split,
        print_freq: a.optim.print_freq,
    };
    let device = a.optim.join_run(&config.optim)?;
    let mut progress = TerminalProgress::new(a.optim.print_freq);
    let result = linear_eval(&config, &data, device, a.resume.as_deref(), &mut progress)?;
    if !selfcon::distributed::is_primary() {
        return Ok(());
    }
    println!("{}", serde_json::to_string(&result.entry)?);
    eprintln!("results written to {}; classifiers in {}", result.results_path.display(), result.run_dir.display());
    Ok(())
}
