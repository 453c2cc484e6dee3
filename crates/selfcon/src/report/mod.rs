//! `selfcon report RUN_DIR... --out DIR`: pictures of one or several runs and an `index.html`
//! that shows them — training loss and learning rate per step, images/s, the kNN monitor per
//! epoch, linear-evaluation accuracies (backbone, sub-network, ensemble), and 2-D maps of the
//! learned features next to those of the random initialisation. Several runs share each plot
//! (one line per run), the way SelfCon is compared with SupCon.

pub mod feature_map;
pub mod html;
pub mod plot;
pub mod runs;

use std::path::{Path, PathBuf};

use tch::Device;

use crate::data::augment::EvalTransform;
use crate::data::OpenedDataset;
use crate::error::{Error, Result};
use feature_map::{FeatureMap, MapMethod};
use plot::Series;
use runs::RunLog;

/// What the report draws besides the curves.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Test images per feature map (0: no maps).
    pub map_images: usize,
    pub map: MapMethod,
    pub device: Device,
    /// The demo's probe results to show (default: `demo_results.json` in a run folder).
    pub demo_results: Option<PathBuf>,
}

/// A chart of the report: its heading and file.
pub struct Figure {
    pub title: String,
    pub path: PathBuf,
}

/// Everything written, for the caller's message.
pub struct Report {
    pub index: PathBuf,
    pub figures: Vec<Figure>,
    pub maps: Vec<FeatureMap>,
}

/// Data for the feature maps of pre-training runs: opened once by the caller (who knows the
/// data flags) for the dataset a run names.
pub type DataFor<'a> = dyn FnMut(&str) -> Result<(OpenedDataset, EvalTransform)> + 'a;

/// Writes the report of `dirs` into `out` (created if needed).
pub fn report(dirs: &[PathBuf], out: &Path, options: &ReportOptions, data_for: &mut DataFor) -> Result<Report> {
    if dirs.is_empty() {
        return Err(Error::option("RUN_DIR", "give at least one run folder"));
    }
    let mut runs = dirs.iter().map(|d| RunLog::open(d)).collect::<Result<Vec<_>>>()?;
    link_linear_runs(&mut runs);
    runs::distinct_labels(&mut runs);
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, format!("cannot create: {e}")))?;
    let mut figures = Vec::new();
    let mut chart = |name: &str, title: &str, x: &str, y: &str, series: Vec<Series>, log_y: bool| -> Result<()> {
        let path = out.join(name);
        if plot::line_chart(&path, title, x, y, &series, log_y)? {
            figures.push(Figure { title: title.to_string(), path });
        }
        Ok(())
    };
    let trained: Vec<&RunLog> = runs.iter().filter(|r| r.stage != "linear").collect();
    let per_step = |key: &str| -> Vec<Series> {
        trained.iter().map(|r| Series { name: r.label.clone(), points: r.per_step(key) }).collect()
    };
    let loss = per_step("loss");
    if loss.iter().any(|s| !s.points.is_empty()) {
        chart("loss.png", "Training loss", "step", "loss", loss, false)?;
        chart("lr.png", "Learning rate", "step", "learning rate", per_step("lr"), true)?;
        chart("throughput.png", "Training throughput", "step", "images/s", per_step("images_per_s"), false)?;
    } else {
        // Runs logged without step records (--print_freq 0): the epoch means.
        let per_epoch = |key: &str| -> Vec<Series> {
            trained.iter().map(|r| Series { name: r.label.clone(), points: r.per_epoch(key) }).collect()
        };
        chart("loss.png", "Training loss (epoch mean)", "epoch", "loss", per_epoch("loss"), false)?;
        chart("lr.png", "Learning rate", "epoch", "learning rate", per_epoch("lr"), true)?;
        chart("throughput.png", "Training throughput", "epoch", "images/s", per_epoch("images_per_s"), false)?;
    }
    let mut knn = Vec::new();
    for run in runs.iter().filter(|r| r.stage == "pretrain") {
        knn.push(Series { name: format!("{} backbone", run.label), points: run.per_epoch("knn_top1") });
        for exit in 1..=run.exit_count() {
            knn.push(Series {
                name: format!("{} exit {exit}", run.label),
                points: run.per_epoch(&format!("knn_exit{exit}_top1")),
            });
        }
    }
    chart("knn.png", "kNN monitor: top-1 accuracy (%)", "epoch", "top-1 (%)", knn, false)?;
    let mut linear = Vec::new();
    for run in runs.iter().filter(|r| r.stage == "linear" || r.stage == "ce") {
        for (key, output) in
            [("backbone_top1", "backbone"), ("sub_top1", "sub-network"), ("ensemble_top1", "ensemble"), ("top1", "")]
        {
            let points = run.per_epoch(key);
            if !points.is_empty() {
                let name = if output.is_empty() { run.label.clone() } else { format!("{} {output}", run.label) };
                linear.push(Series { name, points });
            }
        }
    }
    chart("accuracy.png", "Test accuracy: linear evaluation / CE (top-1, %)", "epoch", "top-1 (%)", linear, false)?;

    let mut maps = Vec::new();
    if options.map_images > 0 {
        for (i, run) in runs.iter().enumerate().filter(|(_, r)| r.stage == "pretrain") {
            let config: crate::train::PretrainConfig = serde_json::from_value(run.config.clone()).map_err(|e| {
                Error::file(run.dir.join("config.json"), format!("is not a pre-training configuration: {e}"))
            })?;
            let (data, eval) = data_for(&config.dataset_name)?;
            let stem = format!("map{}", i + 1);
            maps.extend(feature_map::run_maps(
                &run.dir,
                &config,
                &data,
                eval,
                options.map_images,
                options.map,
                out,
                &stem,
                options.device,
            )?);
        }
    }
    let index = out.join("index.html");
    html::write_index(&index, &runs, &figures, &maps, options.demo_results.as_deref())?;
    Ok(Report { index, figures, maps })
}

/// A linear run whose `--ckpt` lies in a given pre-training run's folder is labelled after it.
fn link_linear_runs(runs: &mut [RunLog]) {
    let pretrained: Vec<(PathBuf, String)> = runs
        .iter()
        .filter(|r| r.stage == "pretrain")
        .map(|r| (std::fs::canonicalize(&r.dir).unwrap_or_else(|_| r.dir.clone()), r.label.clone()))
        .collect();
    for run in runs.iter_mut().filter(|r| r.stage == "linear") {
        let Some(ckpt) = run.config["ckpt"].as_str() else { continue };
        let ckpt = std::fs::canonicalize(ckpt).unwrap_or_else(|_| PathBuf::from(ckpt));
        if let Some((_, label)) = pretrained.iter().find(|(dir, _)| ckpt.starts_with(dir)) {
            run.label = format!("linear of {label}");
        }
    }
}
