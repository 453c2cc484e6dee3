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
        if let Some(size) = jpeg_size(&bytes) {
            jpegs.push((bytes, size));
        }
    }
    if jpegs.is_empty() {
        return Err(Error::file(&a.data_folder, "no JPEG files below it").into());
    }
    let pixels: f64 = jpegs.iter().map(|(_, (w, h))| (w * h) as f64).sum::<f64>() / jpegs.len() as f64;
    let best = |decode: &dyn Fn(&[u8], usize, usize) -> bool| -> f64 {
        let mut best = f64::INFINITY;
        for _ in 0..a.repeats.max(1) {
            let start = Instant::now();
            for (bytes, (w, h)) in &jpegs {
                std::hint::black_box(decode(bytes, *w, *h));
            }
            best = best.min(start.elapsed().as_secs_f64() * 1000.0 / jpegs.len() as f64);
        }
        best
    };
    // Files a decoder cannot take (CMYK JPEGs, corrupt data) are counted, not fatal: the loader
    // falls back to the whole decode for them, or reports them.
    let whole_failures = jpegs.iter().filter(|(bytes, _)| selfcon::data::decode_image_bytes(bytes).is_err()).count();
    let whole = best(&|bytes, _, _| selfcon::data::decode_image_bytes(bytes).is_ok());
    // One crop per file, as the pre-training transform draws them.
    let crops: std::collections::HashMap<usize, CropBox> = jpegs
        .iter()
        .enumerate()
        .map(|(i, (bytes, (w, h)))| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
            (bytes.as_ptr() as usize, random_resized_crop_box(*w, *h, (0.2, 1.0), (0.75, 4.0 / 3.0), &mut rng))
        })
        .collect();
    let reduced_failures = jpegs
        .iter()
        .filter(|(bytes, (w, h))| {
            decode_region(bytes, (*w, *h), 2, CropBox { left: 0, top: 0, width: *w, height: *h }).is_none()
        })
        .count();
    let mut reduced = Vec::new();
    for d in [2usize, 4, 8] {
        let all = best(&|bytes, w, h| {
            decode_region(bytes, (w, h), d, CropBox { left: 0, top: 0, width: w, height: h }).is_some()
        });
        let crop = best(&|bytes, w, h| decode_region(bytes, (w, h), d, crops[&(bytes.as_ptr() as usize)]).is_some());
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
