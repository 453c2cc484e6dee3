//! `selfcon pretrain`: `main_represent.py` with the same flags and defaults.

use std::path::PathBuf;

use clap::{ArgMatches, Args};
use serde_json::{Map, Value};

use selfcon::train::{pretrain, PretrainConfig};
use selfcon::Error;

use super::data_args::DataArgs;
use super::model_args::ModelArgs;
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

    /// Checkpoint to continue from (training resumes at its epoch + 1): ours (last.safetensors)
    /// or the official code's (last.pth: weights, SGD momentum, epoch; every flag not given is
    /// taken from its options — model, dataset, method, batch size, learning rate, schedule, ...).
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,

    #[command(flatten)]
    pub optim: OptimArgs,
}

pub fn run(mut a: PretrainArgs, given: &ArgMatches) -> anyhow::Result<()> {
    if let Some(resume) = a.resume.clone().filter(|r| r.is_file()) {
        if selfcon::checkpoint::is_torch_file(&resume)? {
            let official = selfcon::checkpoint::OfficialCheckpoint::open(&resume)?;
            let opt = official.options.clone().ok_or_else(|| {
                Error::file(&resume, "holds no options ('opt'): only a checkpoint of main_represent.py can be resumed")
            })?;
            let taken = a.take_official_options(&opt, |id| {
                given.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
            })?;
            if !taken.is_empty() && selfcon::distributed::is_primary() {
                eprintln!("pretrain: from the official options of {}: {}", resume.display(), taken.join(" "));
            }
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

impl PretrainArgs {
    /// Every flag the user did not give takes the value of the official run's `opt` (paths,
    /// workers and devices of the other machine excepted); returns what was taken, as flags.
    fn take_official_options(
        &mut self,
        opt: &Map<String, Value>,
        given: impl Fn(&str) -> bool,
    ) -> selfcon::Result<Vec<String>> {
        let mut taken = Vec::new();
        let bad =
            |name: &str, v: &Value| Error::option("resume", format!("the official option {name} = {v} is not usable"));
        macro_rules! take {
            ($id:literal, $field:expr, $conv:expr) => {
                if !given($id) {
                    if let Some(v) = opt.get($id).filter(|v| !v.is_null()) {
                        let converted = ($conv)(v).ok_or_else(|| bad($id, v))?;
                        taken.push(format!("--{} {}", $id, v));
                        $field = converted;
                    }
                }
            };
        }
        let text = |v: &Value| v.as_str().map(str::to_string);
        let some_text = |v: &Value| v.as_str().map(|s| Some(s.to_string()));
        let float = |v: &Value| v.as_f64();
        let flag = |v: &Value| v.as_bool();
        let count = |v: &Value| v.as_u64().map(|n| n as usize);
        take!("method", self.method, some_text);
        take!("dataset", self.dataset, text);
        take!("model", self.model.model, some_text);
        take!("selfcon_pos", self.model.selfcon_pos, some_text);
        take!("selfcon_arch", self.model.selfcon_arch, some_text);
        take!("selfcon_size", self.model.selfcon_size, some_text);
        take!("multiview", self.multiview, flag);
        // Official `label` is store_false (True = labels used); ours turns them off.
        take!("label", self.label, |v: &Value| v.as_bool().map(|used| !used));
        take!("alpha", self.alpha, float);
        take!("temp", self.temp, float);
        take!("weakaug", self.weakaug, flag);
        take!("randaug", self.randaug, flag);
        take!("save_freq", self.save_freq, count);
        take!("batch_size", self.optim.batch_size, count);
        take!("epochs", self.optim.epochs, count);
        take!("learning_rate", self.optim.learning_rate, float);
        take!("lr_decay_epochs", self.optim.lr_decay_epochs, |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => {
                items.iter().map(|i| i.as_u64().map(|n| n.to_string())).collect::<Option<Vec<_>>>().map(|v| v.join(","))
            }
            _ => None,
        });
        take!("lr_decay_rate", self.optim.lr_decay_rate, float);
        take!("weight_decay", self.optim.weight_decay, float);
        take!("momentum", self.optim.momentum, float);
        take!("cosine", self.optim.cosine, flag);
        take!("warm", self.optim.warm, flag);
        take!("seed", self.optim.seed, |v: &Value| v.as_u64());
        take!("exp_name", self.optim.exp_name, text);
        // Official `precision` is a flag: CUDA AMP (fp16 with loss scaling) = our `auto`.
        take!("precision", self.optim.precision, |v: &Value| v
            .as_bool()
            .map(|on| (if on { "auto" } else { "fp32" }).to_string()));
        Ok(taken)
    }
}
