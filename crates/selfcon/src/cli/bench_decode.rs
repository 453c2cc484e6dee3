//! `selfcon bench decode`: what decoding a folder's JPEGs costs on one core — the decoder the
//! loader uses for whole images (zune-jpeg, through `image`), and libjpeg's DCT-domain reduced
//! decodes at 1/2, 1/4 and 1/8, of the whole picture and of one RandomResizedCrop region per file
//! (scale 0.2–1, seeded) — on the same files, held in memory, timed back to back.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use rand::SeedableRng;
use selfcon::data::augment::{random_resized_crop_box, CropBox};
use selfcon::data::jpeg_reduced::{decode_region, jpeg_size};
use selfcon::Error;

#[derive(Args, Debug)]
pub struct DecodeBenchArgs {
    /// A folder of images (searched recursively; JPEGs only are timed).
    #[arg(long = "data_folder", visible_alias = "data-folder", value_name = "DIR")]
    pub data_folder: PathBuf,

    /// At most this many files.
    #[arg(long, default_value_t = 1000)]
    pub images: usize,

    /// Passes over the files per decoder (the best pass counts).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,

    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One JPEG held in memory, its size, and the crop the transform would draw on it.
struct Sample {
    bytes: Vec<u8>,
    full: (usize, usize),
    crop: CropBox,
}

impl Sample {
    fn everything(&self) -> CropBox {
        CropBox { left: 0, top: 0, width: self.full.0, height: self.full.1 }
    }
}

pub fn run(a: DecodeBenchArgs) -> anyhow::Result<()> {
    let mut files = Vec::new();
    collect(&a.data_folder, &mut files)?;
    files.sort();
    let mut jpegs = Vec::new();
    for path in files {
        if jpegs.len() == a.images {
            break;
        }
        let bytes = selfcon::data::read_image_file(&path)?;
        if let Some((w, h)) = jpeg_size(&bytes) {
            // One crop per file, as the pre-training transform draws them.
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(jpegs.len() as u64);
            let crop = random_resized_crop_box(w, h, (0.2, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            jpegs.push(Sample { bytes, full: (w, h), crop });
        }
    }
    if jpegs.is_empty() {
        return Err(Error::file(&a.data_folder, "no JPEG files below it").into());
    }
    let pixels: f64 = jpegs.iter().map(|j| (j.full.0 * j.full.1) as f64).sum::<f64>() / jpegs.len() as f64;
    let best = |decode: &dyn Fn(&Sample) -> bool| -> f64 {
        let mut best = f64::INFINITY;
        for _ in 0..a.repeats.max(1) {
            let start = Instant::now();
            for sample in &jpegs {
                std::hint::black_box(decode(sample));
            }
            best = best.min(start.elapsed().as_secs_f64() * 1000.0 / jpegs.len() as f64);
        }
        best
    };
    let whole_decode = |j: &Sample| selfcon::data::decode_image_bytes(&j.bytes).is_ok();
    let reduced_decode = |j: &Sample, d: usize, region: CropBox| decode_region(&j.bytes, j.full, d, region).is_some();
    // Files a decoder cannot take (CMYK JPEGs, corrupt data) are counted, not fatal: the loader
    // falls back to the whole decode for them, or reports them.
    let whole_failures = jpegs.iter().filter(|j| !whole_decode(j)).count();
    let reduced_failures = jpegs.iter().filter(|j| !reduced_decode(j, 2, j.everything())).count();
    let whole = best(&whole_decode);
    let mut reduced = Vec::new();
    for d in [2usize, 4, 8] {
        let all = best(&|j| reduced_decode(j, d, j.everything()));
        let crop = best(&|j| reduced_decode(j, d, j.crop));
        reduced.push((d, all, crop));
    }
    if a.json {
        let mut record = json!({
            "bench": "decode", "source": a.data_folder, "images": jpegs.len(), "mean_pixels": pixels,
            "whole_ms_per_image": whole, "whole_failures": whole_failures,
            "reduced_failures": reduced_failures,
        });
        for (d, all, crop) in &reduced {
            record[format!("reduced_1_{d}_ms_per_image")] = json!(all);
            record[format!("reduced_1_{d}_crop_ms_per_image")] = json!(crop);
        }
        super::bench::add_machine(&mut record);
        println!("{record}");
    } else {
        let parts: Vec<String> =
            reduced.iter().map(|(d, all, crop)| format!("1/{d} {all:.2} ms (its crop region {crop:.2} ms)")).collect();
        println!(
            "decode {} JPEGs ({:.2} MP on average), one thread: whole {whole:.2} ms/image; reduced {} · {}",
            jpegs.len(),
            pixels / 1e6,
            parts.join(", "),
            super::bench::machine_line()
        );
        if whole_failures + reduced_failures > 0 {
            println!("({whole_failures} files failed the whole decode, {reduced_failures} the reduced one, which falls back to it)");
        }
    }
    Ok(())
}

fn collect(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("unreadable folder: {e}")))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::file(&path, format!("unreadable: {e}")))?;
        if kind.is_dir() {
            collect(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}
