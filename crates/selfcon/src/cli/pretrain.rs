//! `selfcon pretrain`: `main_represent.py` with the same flags and defaults.

use std::path::PathBuf;

use clap::{ArgMatches, Args};

use selfcon::train::{pretrain, PretrainConfig, Start};
use selfcon::Error;

use super::data_args::{DataArgs, DecodeArgs};
use super::model_args::ModelArgs;
use super::official_options::{self, count, flag, float, some_text, OfficialOptions};
use super::optim_args::OptimArgs;
use super::progress::TerminalProgress;

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Con (SimCLR, needs --multiview), SupCon, or SelfCon (needs an exit in --selfcon_pos).
    /// Optional with --resume of an official checkpoint (taken from its options).
    #[arg(long, value_name = "METHOD", required_unless_present = "resume")]
    pub method: Option<String>,

    /// cifar10, cifar100, tinyimagenet, imagenet, imagenet100, mnist or fashionmnist.
    #[arg(long, default_value = "cifar10")]
    pub dataset: String,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub decode: DecodeArgs,

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

    /// Online kNN monitor: every N epochs (and after the last), the weighted k-nearest-neighbour
    /// accuracy of the backbone's and each exit's features (test images against the training
    /// set, no augmentation), logged and shown in the epoch line. 0: off.
    #[arg(long = "knn_every", visible_alias = "knn-every", default_value_t = 0, value_name = "N")]
    pub knn_every: usize,

    /// kNN monitor: neighbours that vote.
    #[arg(long = "knn_k", visible_alias = "knn-k", default_value_t = 200, value_name = "K")]
    pub knn_k: usize,

    /// kNN monitor: temperature of the vote weights exp(cosine similarity / T).
    #[arg(long = "knn_t", visible_alias = "knn-t", default_value_t = 0.1, value_name = "T")]
    pub knn_t: f64,

    /// kNN monitor: hold this fraction of the training set out of pre-training and use it as the
    /// queries instead of the test split (0: the test split).
    #[arg(long = "val_split", visible_alias = "val-split", default_value_t = 0.0, value_name = "FRACTION")]
    pub val_split: f64,

    /// Checkpoint to continue from (training resumes at its epoch + 1): ours (last.safetensors)
    /// or the official code's (last.pth: weights, SGD momentum, epoch; every flag not given is
    /// taken from its options — model, dataset, method, batch size, learning rate, schedule, ...).
    /// `auto`: continue this run's own last.safetensors when it exists, else start (for requeued
    /// jobs). Without --resume a run whose folder already holds a checkpoint is refused.
    #[arg(long, value_name = "PATH|auto")]
    pub resume: Option<PathBuf>,

    #[command(flatten)]
    pub optim: OptimArgs,
}

pub fn run(mut a: PretrainArgs, given: &ArgMatches) -> anyhow::Result<()> {
    let start = Start::from_flag(a.resume.as_deref());
    if let Some(opt) = official_options::of_resume(start.path(), "main_represent.py")? {
        let mut official = OfficialOptions::new(&opt, given);
        a.take_official_options(&mut official)?;
        if !official.taken.is_empty() && selfcon::distributed::is_primary() {
            let resume = a.resume.as_deref().unwrap_or_else(|| std::path::Path::new("")).display();
            eprintln!("pretrain: from the official options of {resume}: {}", official.taken.join(" "));
        }
    }
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
    let result = pretrain(&config, &data, device, &start, &mut progress)?;
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
            method: a
                .method
                .as_deref()
                .ok_or_else(|| Error::option("method", "is required (Con, SupCon or SelfCon)"))?
                .parse()?,
            multiview: a.multiview,
            label: !a.label,
            alpha: a.alpha,
            temp: a.temp,
            optim: a.optim.to_config()?,
            weakaug: a.weakaug,
            randaug: a.randaug,
            full_decode: a.decode.full_decode,
            min_crop_scale: a.min_crop_scale,
            print_freq: a.optim.print_freq,
            save_freq: a.save_freq,
            dataset_name: a.dataset.clone(),
            image_size,
            knn: selfcon::train::knn::KnnMonitor {
                every: a.knn_every,
                k: a.knn_k,
                temperature: a.knn_t,
                val_split: a.val_split,
                eval: if a.knn_every > 0 { Some(a.data.eval_transform(&a.dataset)?) } else { None },
            },
        };
        config.validate()?;
        Ok(config)
    }
}

impl PretrainArgs {
    /// Every flag the user did not give takes the value of the official `main_represent.py` run.
    fn take_official_options(&mut self, o: &mut OfficialOptions) -> selfcon::Result<()> {
        o.take("method", &mut self.method, some_text)?;
        o.take_common(&mut self.dataset, &mut self.model, &mut self.optim)?;
        o.take("multiview", &mut self.multiview, flag)?;
        // Official `label` is store_false (True = labels used); ours turns them off.
        o.take("label", &mut self.label, |v| v.as_bool().map(|used| !used))?;
        o.take("alpha", &mut self.alpha, float)?;
        o.take("temp", &mut self.temp, float)?;
        o.take("weakaug", &mut self.weakaug, flag)?;
        o.take("randaug", &mut self.randaug, flag)?;
        o.take("save_freq", &mut self.save_freq, count)?;
        // Official `precision` is a flag: CUDA AMP (fp16 with loss scaling) = our `auto`.
        o.take("precision", &mut self.optim.precision, |v| {
            v.as_bool().map(|on| (if on { "auto" } else { "fp32" }).to_string())
        })
    }
}
