//! `selfcon ce`: `main_ce.py` (1-stage training) with the same flags and defaults.

use std::path::PathBuf;

use clap::{ArgMatches, Args};

use selfcon::train::{train_ce, CeConfig, CeMethod, Start};

use super::data_args::{DataArgs, DecodeArgs};
use super::model_args::ModelArgs;
use super::official_options::{self, float, some_text, OfficialOptions};
use super::optim_args::OptimArgs;
use super::progress::TerminalProgress;

#[derive(Args, Debug)]
pub struct CeArgs {
    /// ce, subnet_ce, kd or selfcon; each sets (alpha, beta, gamma) = (0,0,0), (1,0,0), (0.5,0.5,0), (1,0,0.8).
    /// Optional with --resume of an official checkpoint (taken from its options).
    #[arg(long, value_name = "METHOD", required_unless_present = "resume")]
    pub method: Option<String>,

    #[arg(long, default_value = "cifar10")]
    pub dataset: String,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub decode: DecodeArgs,

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

    /// Checkpoint to continue from (training resumes at its epoch + 1): ours (last.safetensors of
    /// a run folder) or the official main_ce.py's (last.pth: weights, SGD momentum, epoch; every
    /// flag not given is taken from its options — method, model, dataset, schedule, ...).
    /// `auto`: continue this run's own last.safetensors when it exists, else start (for requeued
    /// jobs). Without --resume a run whose folder already holds a checkpoint is refused.
    #[arg(long, value_name = "PATH|auto")]
    pub resume: Option<PathBuf>,

    #[command(flatten)]
    pub optim: OptimArgs,
}

pub fn run(mut a: CeArgs, given: &ArgMatches) -> anyhow::Result<()> {
    let start = Start::from_flag(a.resume.as_deref());
    if let Some(opt) = official_options::of_resume(start.path(), "main_ce.py")? {
        let mut official = OfficialOptions::new(&opt, given);
        official.take("method", &mut a.method, some_text)?;
        official.take_common(&mut a.dataset, &mut a.model, &mut a.optim)?;
        official.take("dim_out", &mut a.dim_out, |v| v.as_i64())?;
        official.take("temperature", &mut a.temperature, float)?;
        if !official.taken.is_empty() && selfcon::distributed::is_primary() {
            let resume = a.resume.as_deref().unwrap_or_else(|| std::path::Path::new("")).display();
            eprintln!("ce: from the official options of {resume}: {}", official.taken.join(" "));
        }
    }
    let method: CeMethod = a
        .method
        .as_deref()
        .ok_or_else(|| selfcon::Error::option("method", "is required (ce, subnet_ce, kd or selfcon)"))?
        .parse()?;
    let (alpha, beta, gamma) = method.weights();
    if (a.alpha, a.beta, a.gamma) != (0.0, 0.0, 0.0) && (a.alpha, a.beta, a.gamma) != (alpha, beta, gamma) {
        eprintln!("warning: --method {method} sets alpha, beta, gamma = {alpha}, {beta}, {gamma}; the values given are ignored (as in main_ce.py)");
    }
    let model = a.model.to_config(&a.dataset, a.data.image_size(&a.dataset)?)?;
    let (data, image_size) = a.data.open(&a.dataset)?;
    let config = CeConfig {
        model,
        method,
        temperature: a.temperature,
        dim_out: a.dim_out,
        optim: a.optim.to_config()?,
        dataset_name: a.dataset.clone(),
        image_size,
        full_decode: a.decode.full_decode,
        eval: a.data.eval_transform(&a.dataset)?,
        print_freq: a.optim.print_freq,
    };
    let device = a.optim.join_run(&config.optim)?;
    let mut progress = TerminalProgress::new(a.optim.print_freq);
    let result = train_ce(&config, &data, device, &start, &mut progress)?;
    if selfcon::distributed::is_primary() {
        println!("{}", result.run_dir.display());
    }
    Ok(())
}
