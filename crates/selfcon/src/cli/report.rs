//! `selfcon report RUN_DIR... --out DIR`: plots, feature maps and an index.html for runs of
//! pretrain, linear and ce (see `selfcon::report`).

use std::path::PathBuf;

use clap::Args;
use selfcon::engine::{select_device, DeviceRequest};
use selfcon::report::{feature_map::MapMethod, report, ReportOptions};

use super::data_args::DataArgs;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run folders (each with config.json and metrics.jsonl): pre-training, linear evaluation or
    /// CE runs; several runs share each plot. A linear run of a pre-training run given here is
    /// labelled after it.
    #[arg(value_name = "RUN_DIR", required = true)]
    pub runs: Vec<PathBuf>,

    /// Folder for the pictures and index.html (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Test images in each feature map of a pre-training run (0: no maps, then no data is read).
    #[arg(long = "map_images", visible_alias = "map-images", default_value_t = 2000, value_name = "N")]
    pub map_images: usize,

    /// How the maps place the features: tsne (Barnes-Hut t-SNE) or pca.
    #[arg(long, default_value = "tsne", value_name = "METHOD")]
    pub map: String,

    /// auto (CUDA when available), cpu, cuda or cuda:N (for the maps' features).
    #[arg(long, default_value = "auto")]
    pub device: String,

    #[command(flatten)]
    pub data: DataArgs,
}

pub fn run(a: ReportArgs) -> anyhow::Result<()> {
    let options = ReportOptions {
        map_images: a.map_images,
        map: a.map.parse::<MapMethod>()?,
        device: if a.map_images > 0 { select_device(a.device.parse::<DeviceRequest>()?)? } else { tch::Device::Cpu },
        demo_results: None,
    };
    let data = &a.data;
    let mut data_for = |dataset: &str| -> selfcon::Result<_> {
        let (opened, _) = data.open(dataset)?;
        Ok((opened, data.eval_transform(dataset)?))
    };
    let written = report(&a.runs, &a.out, &options, &mut data_for)?;
    eprintln!(
        "report: {} plots and {} feature maps of {} run(s) in {}",
        written.figures.len(),
        written.maps.len(),
        a.runs.len(),
        a.out.display()
    );
    println!("{}", written.index.display());
    Ok(())
}
