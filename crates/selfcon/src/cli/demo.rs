//! `selfcon demo`: the README's main job. On Fashion-MNIST (the full set when installed, else the
//! bundled subset) it pre-trains SelfCon (ResNet-18, fc exit after layer2), then linear-probes the
//! backbone, the sub-network and their ensemble, next to the same probe on the encoder's random
//! initialisation (the very weights pre-training started from), so the gain is visible.

use selfcon::names::Named;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde_json::json;
use tch::Device;

use selfcon::checkpoint;
use selfcon::data::augment::EvalTransform;
use selfcon::data::{open_dataset, Dataset, DatasetKind, Subset};
use selfcon::loss::Method;
use selfcon::model::{ConModel, ModelConfig};
use selfcon::report::{feature_map::MapMethod, report, ReportOptions};
use selfcon::train::{
    extract_features, measure_pretrain_steps, pretrain, select_and_probe, Accuracy, BatchSource, FeatureExtraction,
    OptimConfig, PretrainConfig, PretrainPlan, ProbeSettings, SelectedProbe, Start,
};

use super::progress::TerminalProgress;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Fashion-MNIST IDX folder; default: /usr/share/datasets/fashion-mnist, else the bundled subset.
    #[arg(long = "data_folder", visible_alias = "data-folder", value_name = "DIR")]
    pub data_folder: Option<PathBuf>,

    /// Output folder (pre-training run, checkpoints, logs, demo_results.json).
    #[arg(long = "save_dir", visible_alias = "save-dir", default_value = "./save/demo", value_name = "DIR")]
    pub save_dir: PathBuf,

    /// Training images used for pre-training (a seeded sample); default: all of them.
    #[arg(long = "pretrain_images", visible_alias = "pretrain-images")]
    pub pretrain_images: Option<usize>,

    /// Passes over the pre-training images (3 × 10,000 images at batch 32: 936 steps). A
    /// `--pretrain_seconds` budget that cannot fit them shrinks each pass, not their number.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,

    /// Time budget of pre-training in seconds: a few steps are timed first, and when the budget
    /// cannot fit every step of `--epochs` passes, each pass takes fewer images (a seeded sample;
    /// counts ×0.8 apart, so timing jitter seldom changes the plan) so that the steps fit (0: no
    /// budget). The demo then ends in about this time plus the probes,
    /// on any CPU.
    #[arg(
        long = "pretrain_seconds",
        visible_alias = "pretrain-seconds",
        default_value_t = DEFAULT_PRETRAIN_SECONDS,
        allow_negative_numbers = true
    )]
    pub pretrain_seconds: f64,

    /// Images per step. In the same time, 32 learned more than 64 (twice the steps at half the
    /// cost each; bench/results/2026-12-07-demo-by-cpu.md).
    #[arg(long = "batch_size", visible_alias = "batch-size", default_value_t = 32)]
    pub batch_size: usize,

    /// With LARS (the default) a weight moves by learning_rate × lars_eta of its norm per step:
    /// 0.1 × 0.02 = 0.2%. Smaller moves learned more at every budget measured (96, 150 and 468
    /// steps; 0.3 and 0.6 fell under the random init at 150 steps, 0.05 learned less:
    /// bench/results/2026-12-07-demo-by-cpu.md).
    #[arg(long = "learning_rate", visible_alias = "learning-rate", default_value_t = 0.1)]
    pub learning_rate: f64,

    #[arg(long, default_value_t = 0.1)]
    pub temp: f64,

    #[arg(long = "weight_decay", visible_alias = "weight-decay", default_value_t = 1e-4)]
    pub weight_decay: f64,

    /// Training images the linear probes are fitted on.
    #[arg(long = "probe_images", visible_alias = "probe-images", default_value_t = 3000)]
    pub probe_images: usize,

    /// Test images the probes are scored on.
    #[arg(long = "test_images", visible_alias = "test-images", default_value_t = 2000)]
    pub test_images: usize,

    #[arg(long = "probe_epochs", visible_alias = "probe-epochs", default_value_t = 60)]
    pub probe_epochs: usize,

    /// Loader threads. On 2 cores one is enough for 32×32 crops and leaves the cores to libtorch
    /// (62 vs 53 images/s end to end with 2, `selfcon bench train --end_to_end`); results do not
    /// depend on it.
    #[arg(long = "num_workers", visible_alias = "num-workers", default_value_t = 1)]
    pub num_workers: usize,

    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Forward-pass precision: `auto` is bf16 autocast where the CPU runs bf16 natively (AVX-512
    /// BF16, AMX: about twice fp32's speed) and fp32 elsewhere (emulated bf16 is 15–21× slower).
    #[arg(long, default_value = "auto")]
    pub precision: String,

    /// Per-iteration cosine decay to zero over the whole budget (`--cosine false`: constant rate).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub cosine: bool,

    /// Linear learning-rate warm-up over the first N steps (implies the per-step cosine).
    #[arg(long = "warmup_steps", visible_alias = "warmup-steps", default_value_t = 0)]
    pub warmup_steps: usize,

    /// LARS trust coefficient for pre-training: each weight moves by learning_rate × η × its norm per
    /// step, whatever its gradient's scale (0: the official plain SGD). Keeps the two projection
    /// heads from collapsing onto one huge common direction in the first steps (see the README).
    #[arg(long = "lars_eta", visible_alias = "lars-eta", default_value_t = 0.02, allow_negative_numbers = true)]
    pub lars_eta: f64,

    /// Pre-training augmentation without colour jitter and grayscale (the official `--weakaug`):
    /// on grey images jitter only shifts brightness and contrast, and at this budget the weaker
    /// augmentation learned more (`--weakaug false`: the official default augmentation).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub weakaug: bool,

    /// Smallest area fraction of an image a pre-training crop keeps (RandomResizedCrop's scale;
    /// the official 0.2). In a few hundred steps crops of 20% of a 28-pixel garment teach invariances the
    /// probe's whole, centred images never ask for; 0.8 learned more than 0.2 and 0.5 (bench/results).
    #[arg(long = "min_crop_scale", visible_alias = "min-crop-scale", default_value_t = 0.8)]
    pub min_crop_scale: f64,

    /// Side of the pre-training crops (RandomResizedCrop's output) in pixels; the probes always see
    /// the whole 32×32 padded images, for the trained and the random encoder alike.
    #[arg(long = "pretrain_size", visible_alias = "pretrain-size", default_value_t = 32)]
    pub pretrain_size: usize,

    /// Probe this demo checkpoint (a previous run's `last.safetensors`) instead of pre-training;
    /// results go to `--save_dir`.
    #[arg(long, value_name = "FILE")]
    pub ckpt: Option<PathBuf>,
}

/// Share of the probe's training images held out to choose the probe's settings.
const VALIDATION_FRACTION: f64 = 0.2;

/// Pre-training's default time budget: on the slowest CPU measured (AVX2, fp32) it leaves the
/// probes and the report room within 10 minutes (docs/training.md).
const DEFAULT_PRETRAIN_SECONDS: f64 = 300.0;

/// Steps timed (after one untimed) to size pre-training to `--pretrain_seconds`.
const CALIBRATION_STEPS: usize = 3;

/// Fewer pre-training images seen (steps × batch) than this were not measured to reach the demo's
/// gains (bench/results/2026-12-07-demo-by-cpu.md).
const FEW_IMAGES_SEEN: usize = 6000;

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let kind = DatasetKind::FashionMnist;
    if let Some(ckpt) = a.ckpt.as_ref().filter(|c| !c.is_file()) {
        return Err(selfcon::Error::file(ckpt, "no such checkpoint file (--ckpt)").into());
    }
    let data = open_dataset(kind, a.data_folder.as_deref())?;
    let test_full = data.test.clone().expect("Fashion-MNIST has a test split");
    let pretrain_images = a.pretrain_images.unwrap_or(data.train.len());
    if a.lars_eta.is_nan() || a.lars_eta < 0.0 || a.lars_eta.is_infinite() {
        return Err(
            selfcon::Error::option("lars_eta", format!("must be a finite number ≥ 0, got {}", a.lars_eta)).into()
        );
    }
    if !(a.pretrain_seconds.is_finite() && a.pretrain_seconds >= 0.0) {
        return Err(selfcon::Error::option(
            "pretrain_seconds",
            format!("must be a finite number of seconds ≥ 0 (0: no budget), got {}", a.pretrain_seconds),
        )
        .into());
    }
    selfcon::train::check_min_crop_scale(a.min_crop_scale)?;
    for (flag, want, have, split) in [
        ("pretrain_images", pretrain_images, data.train.len(), "training"),
        ("probe_images", a.probe_images, data.train.len(), "training"),
        ("test_images", a.test_images, test_full.len(), "test"),
    ] {
        if want == 0 || want > have {
            return Err(selfcon::Error::option(
                flag,
                format!("asks for {want} images; {} has {have} {split} images", data.source.display()),
            )
            .into());
        }
    }
    eprintln!(
        "demo: Fashion-MNIST from {} ({} training, {} test images)",
        data.source.display(),
        data.train.len(),
        test_full.len()
    );
    let pre_set: Arc<dyn Dataset> = Arc::new(Subset::sample(&data.train, pretrain_images, a.seed));
    let probe_set: Arc<dyn Dataset> = Arc::new(Subset::sample(&data.train, a.probe_images, a.seed + 1));
    let test_set: Arc<dyn Dataset> = Arc::new(Subset::sample(&test_full, a.test_images, a.seed + 2));

    let model = ModelConfig::readme(kind);
    let config = PretrainConfig {
        model: model.clone(),
        method: Method::SelfCon,
        multiview: false,
        label: true,
        alpha: 0.0,
        temp: a.temp,
        optim: OptimConfig {
            epochs: a.epochs,
            batch_size: a.batch_size,
            learning_rate: a.learning_rate,
            lr_decay_epochs: vec![],
            lr_decay_rate: 0.1,
            weight_decay: a.weight_decay,
            momentum: 0.9,
            // The official cosine moves once per epoch and would spend the last of a handful at its
            // floor; the demo's schedule is set per step instead (`step_cosine_warmup` below).
            cosine: false,
            warm: false,
            seed: a.seed,
            num_workers: a.num_workers,
            save_dir: a.save_dir.clone(),
            exp_name: "demo".into(),
            precision: a.precision.parse()?,
            distributed: Default::default(),
            step_cosine_warmup: (a.warmup_steps > 0 || a.cosine).then_some(a.warmup_steps),
            lars_eta: (a.lars_eta > 0.0).then_some(a.lars_eta),
            save_every_steps: 0,
            tensorboard: false,
            // oneDNN's convolutions are ~20% faster in NHWC on CPU (bench/results/).
            channels_last: true,
            // Subnormals appear as training goes on; flushing them keeps the steps fast (~10%).
            flush_denormal: true,
        },
        weakaug: a.weakaug,
        randaug: false,
        full_decode: false,
        min_crop_scale: a.min_crop_scale,
        print_freq: 10,
        save_freq: 0,
        dataset_name: kind.name().into(),
        image_size: a.pretrain_size,
        knn: Default::default(),
    };
    let mut pre_data = selfcon::data::OpenedDataset {
        train: pre_set,
        test: None,
        mean: data.mean,
        std: data.std,
        source: data.source.clone(),
    };
    let cpu = selfcon::hardware::CpuInfo::detect();
    let precision = config.optim.precision.resolve(Device::Cpu);
    let mut plan = PretrainPlan::all(pretrain_images, a.epochs, a.batch_size);
    if a.ckpt.is_none() && a.pretrain_seconds > 0.0 {
        let timed = measure_pretrain_steps(&config, Device::Cpu, BatchSource::Loader(&pre_data), 1, CALIBRATION_STEPS)?;
        let step_seconds = timed.seconds / timed.steps as f64;
        plan = plan.within(a.pretrain_seconds, step_seconds);
        eprintln!(
            "demo: {CALIBRATION_STEPS} timed steps took {step_seconds:.2} s each on {} ({precision}, channels-last): {} steps fit --pretrain_seconds {:.0} ({})",
            cpu.describe(),
            plan.affordable.unwrap_or(plan.steps()),
            a.pretrain_seconds,
            if plan.images < pretrain_images {
                format!("{} epochs of {} images instead of {pretrain_images}", plan.epochs, plan.images)
            } else {
                format!("all {} steps of {} epochs of {pretrain_images} images", plan.steps(), plan.epochs)
            }
        );
        if plan.steps() * a.batch_size < FEW_IMAGES_SEEN {
            eprintln!(
                "selfcon: warning: {} pre-training steps of {} images are too few for the gains the README shows ({FEW_IMAGES_SEEN}+ images seen); raise --pretrain_seconds",
                plan.steps(),
                a.batch_size
            );
        }
        if plan.images < pretrain_images {
            pre_data.train = Arc::new(Subset::sample(&data.train, plan.images, a.seed));
        }
    }
    let pretrain_images = plan.images;
    let mut progress = TerminalProgress::new(10);
    // The demo has no --resume: Ctrl-C ends it at once.
    progress.graceful_stop = false;
    progress.banner = format!(
        "pre-training SelfCon (ResNet-18, fc exit after layer2) on {} images, {} epochs ({} steps)",
        pretrain_images,
        a.epochs,
        plan.steps()
    );
    let (last_checkpoint, run_dir, epoch_losses) = match &a.ckpt {
        Some(ckpt) => {
            eprintln!("demo: probing {} (no pre-training)", ckpt.display());
            std::fs::create_dir_all(&a.save_dir)
                .map_err(|e| selfcon::Error::file(&a.save_dir, format!("cannot create the folder: {e}")))?;
            (ckpt.clone(), a.save_dir.clone(), Vec::new())
        }
        None => {
            let config = free_run_name(config.clone());
            let trained = pretrain(&config, &pre_data, Device::Cpu, &Start::Fresh, &mut progress)?;
            (trained.last_checkpoint, trained.run_dir, trained.epoch_losses)
        }
    };
    let pretrain_seconds = started.elapsed().as_secs_f64();

    // The random initialisation pre-training started from: same seed, same construction.
    let (random_vs, random) =
        selfcon::engine::seeded(a.seed, || ConModel::build(&model, Device::Cpu, selfcon::model::BatchNormKind::Local))?;
    let (vs, pretrained) = ConModel::build(&model, Device::Cpu, selfcon::model::BatchNormKind::Local)?;
    checkpoint::ModelCheckpoint::open(&last_checkpoint)?.load_into(&vs)?;
    // Features in the pre-training's precision and layout: the same numbers up to rounding, in half the time.
    config.optim.prepare_model(&vs)?;
    config.optim.prepare_model(&random_vs)?;
    let extraction = FeatureExtraction {
        mean: data.mean,
        std: data.std,
        threads: a.num_workers,
        device: Device::Cpu,
        precision: config.optim.precision,
        channels_last: config.optim.channels_last,
        shard: None,
    };
    let grid = ProbeSettings::demo_grid(a.probe_epochs);
    let probe = |encoder: &ConModel, name: &str| -> anyhow::Result<SelectedProbe> {
        eprintln!(
            "linear probe of the {name} encoder: features of {} training and {} test images; settings chosen on {:.0}% of the training images held out",
            a.probe_images,
            a.test_images,
            100.0 * VALIDATION_FRACTION
        );
        let train = extract_features(encoder, &probe_set, extraction)?;
        let test = extract_features(encoder, &test_set, extraction)?;
        Ok(select_and_probe(&train, &test, 10, &grid, VALIDATION_FRACTION, a.seed)?)
    };
    let ours_selected = probe(&pretrained, "pre-trained")?;
    let baseline_selected = probe(&random, "randomly initialised")?;
    let (ours, baseline) = (ours_selected.test, baseline_selected.test);
    let seconds = started.elapsed().as_secs_f64();

    let row = |name: &str, acc: Option<Accuracy>, base: Option<Accuracy>| {
        if let (Some(acc), Some(base)) = (acc, base) {
            println!("  {name:<14}{:>10.2}{:>12.2}{:>+10.2}", acc.top1, base.top1, acc.top1 - base.top1);
        }
    };
    let which = match selfcon::data::bundled_fashion_mnist() {
        Some(bundled) if bundled.canonicalize().ok() == data.source.canonicalize().ok() => "the bundled subset",
        _ => "full set",
    };
    println!();
    let encoder = match &a.ckpt {
        Some(ckpt) => format!("checkpoint {}", ckpt.display()),
        None => format!(
            "pre-trained for {} steps ({} epoch(s) of {pretrain_images} images) on {}, {precision}",
            plan.steps(),
            a.epochs,
            cpu.describe()
        ),
    };
    println!(
        "Fashion-MNIST ({which} at {}): {encoder}; probes fitted on {} training images, scored on {} test images",
        data.source.display(),
        a.probe_images,
        a.test_images
    );
    println!("Fashion-MNIST test top-1 (%), linear probe on frozen features");
    println!("  {:<14}{:>10}{:>12}{:>10}", "", "SelfCon", "random init", "gain");
    row("backbone", Some(ours.backbone), Some(baseline.backbone));
    row("sub-network", ours.sub, baseline.sub);
    row("ensemble", ours.ensemble, baseline.ensemble);
    let chosen = |p: &SelectedProbe| {
        let f = |s: &ProbeSettings| format!("lr {} wd {}", s.lr, s.weight_decay);
        format!("backbone {}, sub-network {}", f(&p.backbone), p.sub.as_ref().map_or("-".into(), f))
    };
    println!(
        "probe settings chosen on held-out training images: SelfCon {}; random init {}",
        chosen(&ours_selected),
        chosen(&baseline_selected)
    );
    println!();
    let results = json!({
        "dataset": data.source, "pretrain_images": pretrain_images, "epochs": a.epochs, "batch_size": a.batch_size,
        "pretrain_steps": plan.steps(), "pretrain_seconds_budget": a.pretrain_seconds, "precision": precision.to_string(),
        "machine": selfcon::hardware::machine_record(),
        "learning_rate": a.learning_rate, "temp": a.temp, "probe_images": a.probe_images, "test_images": a.test_images,
        "probe_epochs": a.probe_epochs, "probe_grid": grid, "probe_validation_fraction": VALIDATION_FRACTION,
        "checkpoint": last_checkpoint,
        "selfcon": ours_selected, "random_init": baseline_selected, "epoch_losses": epoch_losses,
        "pretrain_seconds": pretrain_seconds, "total_seconds": seconds,
    });
    let path = run_dir.join("demo_results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    println!("done in {:.0} s; everything is in {}", seconds, run_dir.display());
    // The report: curves, t-SNE maps of the test images' features (trained and at
    // initialisation) and the probes' numbers, in one page.
    eprintln!("report: curves and t-SNE maps of {} test images", a.test_images.min(2000));
    let options = ReportOptions {
        map_images: a.test_images.min(2000),
        map: MapMethod::Tsne,
        device: Device::Cpu,
        demo_results: Some(path.clone()),
    };
    let mut data_for = |_: &str| -> selfcon::Result<_> {
        let opened = selfcon::data::OpenedDataset {
            train: data.train.clone(),
            test: data.test.clone(),
            mean: data.mean,
            std: data.std,
            source: data.source.clone(),
        };
        Ok((opened, EvalTransform::Identity))
    };
    // With --ckpt the pre-training's logs are beside the checkpoint (when it is a demo run).
    let logs = [run_dir.clone(), last_checkpoint.parent().map(PathBuf::from).unwrap_or_default()]
        .into_iter()
        .find(|dir| dir.join("metrics.jsonl").is_file() && dir.join("config.json").is_file());
    let Some(logs) = logs else {
        eprintln!("report: skipped ({} has no pre-training logs beside it)", last_checkpoint.display());
        return Ok(());
    };
    let written = report(&[logs], &run_dir.join("report"), &options, &mut data_for)?;
    println!("report: open {} in a browser", written.index.display());
    Ok(())
}

/// An earlier demo's run is kept, never replaced: this one takes the first free run name of
/// `demo`, `demo_2`, `demo_3`, ... in the same `--save_dir`.
fn free_run_name(mut config: PretrainConfig) -> PretrainConfig {
    let taken = |c: &PretrainConfig| c.run_dir().join("last.safetensors").symlink_metadata().is_ok();
    let first = config.run_dir();
    let mut n = 1;
    while taken(&config) {
        n += 1;
        config.optim.exp_name = format!("demo_{n}");
    }
    if n > 1 {
        eprintln!(
            "demo: {} holds an earlier demo run (kept); this one writes {}",
            first.display(),
            config.run_dir().display()
        );
    }
    config
}
