//! `selfcon ce`: `main_ce.py` (1-stage training) with the same flags and defaults.

use std::path::PathBuf;

use clap::Args;

use selfcon::data::augment::EvalTransform;
use selfcon::data::DatasetKind;
use selfcon::engine::{select_device, DeviceRequest};
use selfcon::train::{train_ce, CeConfig, CeMethod};
use selfcon::Error;

use super::data_args::DataArgs;
use super::model_args::ModelArgs;
use super::pretrain::milestones;

#[derive(Args, Debug)]
pub struct CeArgs {
    /// ce, subnet_ce, kd or selfcon; each sets (alpha, beta, gamma) = (0,0,0), (1,0,0), (0.5,0.5,0), (1,0,0.8).
    #[arg(long, value_name = "METHOD")]
    pub method: String,

    #[arg(long, default_value = "cifar10")]
    pub dataset: String,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub data: DataArgs,

    /// Size of the auxiliary feature projections.
    #[arg(long = "dim_out", visible_alias = "dim-out", default_value_t = 128)]
    pub dim_out: i64,

    /// Accepted for compatibility; overwritten by --method, as in the official script.
    #[arg(long, default_value_t = 0.0)]
    pub alpha: f64,
    /// Accepted for compatibility; overwritten by --method.
    #[arg(long, default_value_t = 0.0)]
    pub beta: f64,
    /// Accepted for compatibility; overwritten by --method.
    #[arg(long, default_value_t = 0.0)]
    pub gamma: f64,

    /// KD temperature; also the contrastive temperature of --method selfcon (official quirk).
    #[arg(long, default_value_t = 3.0)]
    pub temperature: f64,

    #[arg(long = "batch_size", visible_alias = "batch-size", default_value_t = 256, value_name = "N")]
    pub batch_size: usize,

    #[arg(long = "num_workers", visible_alias = "num-workers", default_value_t = 16, value_name = "N")]
    pub num_workers: usize,

    #[arg(long, default_value_t = 500)]
    pub epochs: usize,

    #[arg(long = "learning_rate", visible_alias = "learning-rate", default_value_t = 0.2, value_name = "LR")]
    pub learning_rate: f64,

    #[arg(
        long = "lr_decay_epochs",
        visible_alias = "lr-decay-epochs",
        default_value = "350,400,450",
        value_name = "LIST"
    )]
    pub lr_decay_epochs: String,

    #[arg(long = "lr_decay_rate", visible_alias = "lr-decay-rate", default_value_t = 0.1, value_name = "RATE")]
    pub lr_decay_rate: f64,

    #[arg(long = "weight_decay", visible_alias = "weight-decay", default_value_t = 1e-4, value_name = "WD")]
    pub weight_decay: f64,

    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,

    #[arg(long)]
    pub cosine: bool,

    /// Warm-up (also automatic for batch sizes ≥ 1024).
    #[arg(long)]
    pub warm: bool,

    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    #[arg(long = "print_freq", visible_alias = "print-freq", default_value_t = 10, value_name = "N")]
    pub print_freq: usize,

    /// Root of the output tree: {save_dir}/{method}/{dataset}_models/{run name}/, and results.json.
    #[arg(long = "save_dir", visible_alias = "save-dir", default_value = "./save/distill", value_name = "DIR")]
    pub save_dir: PathBuf,

    /// Not supported for 1-stage training yet.
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,

    #[arg(long = "exp_name", visible_alias = "exp-name", default_value = "", value_name = "TEXT")]
    pub exp_name: String,

    #[arg(long, default_value = "auto")]
    pub device: String,
}

pub fn run(a: CeArgs) -> anyhow::Result<()> {
    let method: CeMethod = a.method.parse()?;
    if a.resume.is_some() {
        return Err(Error::NotImplemented("--resume for selfcon ce".into()).into());
    }
    let (alpha, beta, gamma) = method.weights();
    if (a.alpha, a.beta, a.gamma) != (0.0, 0.0, 0.0) && (a.alpha, a.beta, a.gamma) != (alpha, beta, gamma) {
        eprintln!("warning: --method {method} sets alpha, beta, gamma = {alpha}, {beta}, {gamma}; the values given are ignored (as in main_ce.py)");
    }
    let kind: DatasetKind = a.dataset.parse()?;
    let model = a.model.to_config(&a.dataset)?;
    let device = select_device(a.device.parse::<DeviceRequest>()?)?;
    let (data, image_size) = a.data.open(&a.dataset)?;
    let config = CeConfig {
        model,
        method,
        temperature: a.temperature,
        dim_out: a.dim_out,
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
        dataset_name: a.dataset.clone(),
        image_size,
        eval: EvalTransform::for_dataset(kind),
    };
    let result = train_ce(&config, &data, device)?;
    println!("{}", result.run_dir.display());
    Ok(())
}
