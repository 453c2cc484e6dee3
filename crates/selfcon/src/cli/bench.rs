//! `selfcon bench`: throughput measurements (see also `cargo bench`).

use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use selfcon::data::augment::TrainTransform;
use selfcon::data::{BatchFormat, DataLoader, LoaderConfig, Transform};

use super::data_args::{DataArgs, DecodeArgs};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchKind,
}

#[derive(Subcommand, Debug)]
pub enum BenchKind {
    /// Images per second of the pre-training input pipeline (decode, augment, normalise, batch).
    Loader(LoaderBenchArgs),
    /// JPEG decoding on one core: whole (the loader's decoder) and reduced 1/2, 1/4, 1/8 in the
    /// DCT domain, on the same files.
    Decode(super::bench_decode::DecodeBenchArgs),
    /// Pre-training step throughput and peak memory: compute only (synthetic batch on the device)
    /// or --end_to_end (real loader). Takes every `pretrain` flag; --epochs/--resume/--save_freq
    /// are ignored and the learning rate stays at --learning_rate.
    Train(Box<super::bench_train::TrainBenchArgs>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BatchForm {
    F32,
    U8,
}

impl BatchForm {
    fn name(self) -> &'static str {
        match self {
            BatchForm::F32 => "f32",
            BatchForm::U8 => "u8",
        }
    }
}

#[derive(Args, Debug)]
pub struct LoaderBenchArgs {
    /// cifar10, cifar100, tinyimagenet, imagenet, imagenet100, mnist, fashionmnist, or folder (any
    /// class-per-folder tree; needs --data_folder, --mean, --std, --size).
    #[arg(long, default_value = "fashionmnist")]
    pub dataset: String,

    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub decode: DecodeArgs,

    #[arg(long = "batch_size", visible_alias = "batch-size", default_value_t = 256, value_name = "N")]
    pub batch_size: usize,

    /// Worker threads.
    #[arg(long = "num_workers", visible_alias = "num-workers", default_value_t = 2, value_name = "N")]
    pub num_workers: usize,

    /// Batches to time (after one warm-up batch); 0 = one whole epoch.
    #[arg(long, default_value_t = 0)]
    pub batches: usize,

    /// The batches' form: f32 = normalised floats, what the loader of a CPU run hands over (and
    /// what torchvision's ToTensor + Normalize make); u8 = pixels, what the loader of a GPU run
    /// hands over (the GPU normalises them): less host work. Page-locked where a CUDA GPU is
    /// usable.
    #[arg(long = "batch_format", visible_alias = "batch-format", value_enum, default_value_t = BatchForm::F32)]
    pub batch_format: BatchForm,

    /// Two views per image (`--multiview`).
    #[arg(long)]
    pub multiview: bool,

    /// Crop and flip only (`--weakaug`).
    #[arg(long)]
    pub weakaug: bool,

    /// Prepend RandAugment(2, 9) (`--randaug`).
    #[arg(long)]
    pub randaug: bool,

    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchKind::Loader(a) => loader(a),
        BenchKind::Decode(a) => super::bench_decode::run(a),
        BenchKind::Train(a) => super::bench_train::run(*a),
    }
}

fn loader(a: LoaderBenchArgs) -> anyhow::Result<()> {
    let (data, size) = a.data.open(&a.dataset)?;
    let name = a.dataset.as_str();
    let mut train = TrainTransform::pretrain(size, a.weakaug);
    train.reduced_decode = !a.decode.full_decode;
    if a.randaug {
        train = train.with_randaugment();
    }
    let transform = Transform::Train { transform: train, views: if a.multiview { 2 } else { 1 } };
    let config = LoaderConfig {
        batch_size: a.batch_size,
        threads: a.num_workers,
        prefetch: 2,
        shuffle: true,
        seed: a.seed,
        drop_last: false,
        background: false,
        shard: None,
        format: match a.batch_format {
            BatchForm::F32 => BatchFormat::default(),
            // Page-locked as a GPU run's, where libtorch's CUDA backend loads and sees a GPU.
            BatchForm::U8 => BatchFormat {
                raw_u8: true,
                channels_last: true,
                pinned: selfcon::engine::cuda_backend().is_ok() && tch::Cuda::is_available(),
            },
        },
        mean: data.mean,
        std: data.std,
    };
    let pinned = config.format.pinned;
    // Like a training run's loader, whose epochs follow one another.
    let loader = DataLoader::new(data.train.clone(), transform, config)?.keeping_buffers();
    let per_epoch = loader.len();
    let timed = if a.batches == 0 { per_epoch.saturating_sub(1) } else { a.batches };
    let mut images = 0usize;
    let mut epoch = 0u64;
    let mut warmed = false;
    let mut start = Instant::now();
    let mut cpu_start = selfcon::hardware::process_cpu_seconds();
    let mut done = 0usize;
    while done < timed {
        for batch in loader.epoch(epoch) {
            let batch = batch.context("loading a batch")?;
            if !warmed {
                // The first batch includes thread start-up; time from its arrival.
                warmed = true;
                start = Instant::now();
                cpu_start = selfcon::hardware::process_cpu_seconds();
                continue;
            }
            images += batch.indices.len();
            done += 1;
            if done == timed {
                break;
            }
        }
        epoch += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let rate = images as f64 / seconds;
    // What each image costs the host, whatever the workers' count: size hosts by it (cores per
    // GPU = images/s the GPU takes × this / 1000).
    let cpu_seconds = selfcon::hardware::process_cpu_seconds() - cpu_start;
    let cpu_ms_per_image = 1000.0 * cpu_seconds / images.max(1) as f64;
    if a.json {
        let mut record = json!({
            "bench": "loader", "dataset": name, "source": data.source, "batch_size": a.batch_size,
            "num_workers": a.num_workers, "multiview": a.multiview, "weakaug": a.weakaug, "randaug": a.randaug,
            "full_decode": a.decode.full_decode,
            "batch_format": a.batch_format.name(),
            "pinned": pinned,
            "thp_mem_alloc_enable": std::env::var("THP_MEM_ALLOC_ENABLE").ok(),
            "batches": done, "images": images, "seconds": seconds, "images_per_s": rate,
            "cpu_seconds": cpu_seconds, "cpu_ms_per_image": cpu_ms_per_image, "cores_busy": cpu_seconds / seconds
        });
        add_machine(&mut record);
        println!("{record}");
    } else {
        println!(
            "loader {name} ({}): {done} {} batches of {} with {} worker(s): {images} images in {seconds:.2} s = {rate:.0} images/s, {cpu_ms_per_image:.2} ms of CPU per image ({:.1} cores busy) · {}",
            data.source.display(),
            a.batch_format.name(),
            a.batch_size,
            a.num_workers,
            cpu_seconds / seconds,
            machine_line()
        );
    }
    Ok(())
}

/// Adds where a benchmark ran (CPU model, ISA class, threads) to its JSON record.
pub(super) fn add_machine(record: &mut serde_json::Value) {
    if let (Some(record), serde_json::Value::Object(machine)) =
        (record.as_object_mut(), selfcon::hardware::machine_record())
    {
        record.extend(machine);
    }
}

/// "AMD EPYC, avx512_bf16, 2 threads": where a benchmark ran, for its text line.
pub(super) fn machine_line() -> String {
    let cpu = selfcon::hardware::CpuInfo::detect();
    format!("{}, {} thread(s)", cpu.describe(), tch::get_num_threads())
}
