//! `selfcon prepare`: packs a dataset into one memory-mapped file (see `selfcon::data::packed`)
//! that `--data_folder FILE` then reads in place of the image tree.

use std::path::PathBuf;

use clap::Args;
use selfcon::data::packed::{partial_path, write_pack, PackInfo, PackOptions, PackSource, Storage};
use selfcon::Error;

use super::data_args::DataArgs;

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// The dataset to pack: imagenet, imagenet100, tinyimagenet, folder (with --mean, --std,
    /// --size), or cifar10/cifar100/mnist/fashionmnist. The pack is read with the same --dataset.
    #[arg(long)]
    pub dataset: String,

    #[command(flatten)]
    pub data: DataArgs,

    /// The packed file to write (refused if it exists; an interrupted run resumes from
    /// OUT.partial when run again with the same options).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// How images are stored: jpeg (compact; a JPEG that needs no resizing is kept byte for byte)
    /// or raw (8-bit RGB: no decoding when read, ~10× the size).
    #[arg(long, value_enum, default_value_t = Storage::Jpeg)]
    pub format: Storage,

    /// Resize training images whose longer side exceeds this many pixels down to it (Pillow's
    /// bilinear, antialiased) before storing; test images keep their size. Smaller is faster to
    /// read, but training crops then come from a smaller picture: e.g. 320 for ImageNet at 224
    /// (FFCV's usual range is 256–512).
    #[arg(long = "max_side", visible_alias = "max-side", value_name = "PIXELS")]
    pub max_side: Option<usize>,

    /// JPEG quality of re-encoded images.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,

    /// Threads decoding and encoding (default: the CPUs available).
    #[arg(long = "num_workers", visible_alias = "num-workers", value_name = "N")]
    pub num_workers: Option<usize>,
}

pub fn run(a: PrepareArgs) -> anyhow::Result<()> {
    if a.max_side == Some(0) {
        return Err(Error::option("max_side", "must be positive").into());
    }
    if a.data.data_folder.as_deref().is_some_and(selfcon::data::packed::is_pack) {
        return Err(Error::option("data_folder", "is already a packed file").into());
    }
    let folder = a.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !folder.is_dir() {
        return Err(Error::option("out", format!("its folder {} does not exist", folder.display())).into());
    }
    if a.out.exists() {
        return Err(Error::file(
            &a.out,
            "already exists (a finished pack is never replaced: remove it or choose another --out)",
        )
        .into());
    }
    let (data, _) = a.data.open(&a.dataset)?;
    let info = PackInfo {
        dataset: a.dataset.clone(),
        classes: data.train.class_names(),
        mean: data.mean,
        std: data.std,
        train: data.train.len(),
        test: data.test.as_ref().map_or(0, |t| t.len()),
        storage: a.format,
        max_side: a.max_side,
        quality: a.quality,
        source: data.source.clone(),
    };
    let options = PackOptions {
        storage: a.format,
        max_side: a.max_side,
        quality: a.quality,
        threads: a.num_workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1),
    };
    let source = PackSource { train: data.train.as_ref(), test: data.test.as_deref(), info };
    selfcon::train::stop_signals::install()?;
    let started = std::time::Instant::now();
    let mut last_print = std::time::Instant::now();
    let mut progress = |done: usize, total: usize| {
        if done == total || last_print.elapsed().as_secs_f64() >= 10.0 {
            last_print = std::time::Instant::now();
            eprintln!("selfcon: prepare: {done}/{total} images ({:.0} s)", started.elapsed().as_secs_f64());
        }
    };
    let stop = || selfcon::train::stop_signals::requested().is_some();
    match write_pack(&source, &a.out, &options, &mut progress, &stop)? {
        Some(report) => {
            println!(
                "selfcon: packed {} images ({} kept from an interrupted run) into {}: {:.1} MiB",
                report.records,
                report.resumed,
                a.out.display(),
                report.bytes as f64 / (1 << 20) as f64
            );
            Ok(())
        }
        None => Err(Error::Interrupted {
            signal: selfcon::train::stop_signals::requested().unwrap_or(libc::SIGINT),
            message: format!(
                "prepare stopped; the images packed so far are in {}: run the same command again to go on",
                partial_path(&a.out).display()
            ),
            saved: None,
        }
        .into()),
    }
}
