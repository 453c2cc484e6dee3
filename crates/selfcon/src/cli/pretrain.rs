//! `selfcon pretrain`: `main_represent.py` with the same flags and defaults.

use std::path::PathBuf;

use clap::Args;

use selfcon::train::{pretrain, PretrainConfig};

use super::data_args::DataArgs;
use super::model_args::ModelArgs;
use super::optim_args::OptimArgs;
use super::progress::TerminalProgress;

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Con (SimCLR, needs --multiview), SupCon, or SelfCon (needs an exit in --selfcon_pos).
    #[arg(long, value_name = "METHOD")]
    pub method: String,

    /// cifar10, cifar100, tinyimagenet, imagenet, imagenet100, mnist or fashionmnist.
    #[arg(long, default_value = "cifar10")]
    pub dataset: String,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub data: DataArgs,

    /// Two augmented views of each image, concatenated along the batch ([view 1; view 2]).
    #[arg(long)]
    pub multiview: bool,

    /// Turns labels OFF (the official flag is store_false: labels are used by default), giving
    /// SimCLR-style SupCon, SelfCon-SU and SelfCon-MU.
    #[arg(long, visible_alias = "no_label")]
    pub label: bool,

    /// Non-zero selects the SelfCon-S*/M* objective: backbone term + alpha × sub-network-anchored term.
    #[arg(long, default_value_t = 0.0)]
    pub alpha: f64,

    /// Contrastive temperature (base temperature stays 0.07, as official).
    #[arg(long, default_value_t = 0.07)]
    pub temp: f64,

    /// Drop colour jitter and grayscale from the augmentation.
    #[arg(long)]
    pub weakaug: bool,

    /// Prepend RandAugment(2, 9).
    #[arg(long)]
    pub randaug: bool,

    /// Smallest area fraction of the image a RandomResizedCrop keeps (the official 0.2).
    #[arg(long = "min_crop_scale", visible_alias = "min-crop-scale", default_value_t = 0.2)]
    pub min_crop_scale: f64,

    /// Also keep ckpt_epoch_{E}.safetensors every N epochs (last.safetensors is written every epoch).
    #[arg(long = "save_freq", visible_alias = "save-freq", default_value_t = 0, value_name = "N")]
    pub save_freq: usize,

    /// Checkpoint to continue from (training resumes at its epoch + 1).
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,

    #[command(flatten)]
    pub optim: OptimArgs,
}

pub fn run(a: PretrainArgs) -> anyhow::Result<()> {
    let config = a.to_config()?;
    let device = a.optim.join_run(&config.optim)?;
    let (data, _) = a.data.open(&a.dataset)?;
    let mut progress = TerminalProgress::new(a.optim.print_freq);
    progress.banner = format!(
        "pretrain {} on {} from {} · {} · device {:?}",
        config.method,
        config.dataset_name,
        data.source.display(),
        config.model.architecture,
        device
    );
    let result = pretrain(&config, &data, device, a.resume.as_deref(), &mut progress)?;
    if selfcon::distributed::is_primary() {
        println!("{}", result.last_checkpoint.display());
    }
    Ok(())
}

impl PretrainArgs {
    /// The validated run configuration (no file is read).
    pub fn to_config(&self) -> selfcon::Result<PretrainConfig> {
        let a = self;
        let image_size = a.data.image_size(&a.dataset)?;
        selfcon::train::check_min_crop_scale(a.min_crop_scale)?;
        let config = PretrainConfig {
            model: a.model.to_config(&a.dataset, image_size)?,
            method: a.method.parse()?,
            multiview: a.multiview,
            label: !a.label,
            alpha: a.alpha,
            temp: a.temp,
            optim: a.optim.to_config()?,
            weakaug: a.weakaug,
            randaug: a.randaug,
            min_crop_scale: a.min_crop_scale,
            print_freq: a.optim.print_freq,
            save_freq: a.save_freq,
            dataset_name: a.dataset.clone(),
            image_size,
        };
        config.validate()?;
        Ok(config)
    }
}
