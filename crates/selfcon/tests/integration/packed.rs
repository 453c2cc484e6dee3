//! `selfcon prepare` and packed files: round trips (exact for raw and for JPEGs kept as they
//! are), resuming an interrupted pack to the same bytes, refusals; and the bounds of the
//! DCT-domain reduced JPEG decode against the whole decode.

use crate::common;

use std::path::Path;

use rand::SeedableRng;
use selfcon::data::augment::TrainTransform;
use selfcon::data::packed::{partial_path, write_pack, Pack, PackInfo, PackOptions, PackSource, Storage};
use selfcon::data::{decode_for_crops, decode_image, image_folder, Dataset, FileDataset};

/// A photograph-like picture: smooth shading, edges and some fine texture (what JPEG and the
/// reduced IDCTs see in real photographs; flat colour would hide every difference).
fn photo_like(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let disc = ((fx - 0.4).powi(2) + (fy - 0.5).powi(2)).sqrt() < 0.25;
        let grain = ((x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503) ^ seed).wrapping_mul(2246822519) >> 29) as f32;
        let base = if disc { [200.0, 80.0, 60.0] } else { [60.0 + 120.0 * fx, 90.0 + 100.0 * fy, 160.0 - 80.0 * fx] };
        let wave = 20.0 * ((x as f32 * 0.15).sin() * (y as f32 * 0.11).cos());
        image::Rgb(base.map(|b: f32| (b + wave + grain).clamp(0.0, 255.0) as u8))
    })
}

fn write_tree(root: &Path) {
    for (k, class) in ["cat", "dog", "eel"].iter().enumerate() {
        for i in 0..6u32 {
            let dir = root.join(class);
            std::fs::create_dir_all(&dir).unwrap();
            let img = photo_like(40 + 7 * i, 30 + 5 * k as u32, i * 31 + k as u32);
            if i % 3 == 2 {
                img.save(dir.join(format!("{i}.png"))).unwrap();
            } else {
                img.save_with_format(dir.join(format!("{i}.jpg")), image::ImageFormat::Jpeg).unwrap();
            }
        }
    }
}

fn info(set: &FileDataset, storage: Storage, max_side: Option<usize>) -> PackInfo {
    PackInfo {
        dataset: "folder".into(),
        classes: set.classes.clone(),
        mean: [0.5; 3],
        std: [0.25; 3],
        train: set.len(),
        test: 0,
        storage,
        max_side,
        quality: 90,
        source: "tree".into(),
    }
}

fn pack(set: &FileDataset, out: &Path, options: &PackOptions, stop: &dyn Fn() -> bool) -> bool {
    let source = PackSource { train: set, test: None, info: info(set, options.storage, options.max_side) };
    write_pack(&source, out, options, &mut |_, _| {}, stop).unwrap().is_some()
}

fn options(storage: Storage, max_side: Option<usize>, threads: usize) -> PackOptions {
    PackOptions { storage, max_side, quality: 90, threads }
}

#[test]
fn raw_and_kept_jpeg_records_read_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    write_tree(&tmp.path().join("tree"));
    let set = image_folder(&tmp.path().join("tree")).unwrap();
    for storage in [Storage::Raw, Storage::Jpeg] {
        let out = tmp.path().join(format!("{storage:?}.pack"));
        assert!(pack(&set, &out, &options(storage, None, 2), &|| false));
        assert!(!partial_path(&out).exists());
        let pack = Pack::open(&out).unwrap();
        let (train, test) = pack.splits();
        assert!(test.is_none());
        assert_eq!(train.len(), set.len());
        assert_eq!(train.class_names(), set.classes);
        for i in 0..set.len() {
            assert_eq!(train.label(i), set.label(i));
            let original = decode_image(&set.files[i]).unwrap();
            let read = train.image(i).unwrap();
            let is_png = set.files[i].extension().unwrap() == "png";
            if storage == Storage::Raw || !is_png {
                // Raw pixels, or the JPEG's own bytes: the same image.
                assert_eq!(read, original, "{storage:?} {}", set.files[i].display());
            } else {
                // A PNG re-encoded as JPEG (quality 90): close, not equal.
                let diff: f64 =
                    read.data.iter().zip(&original.data).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>()
                        / read.data.len() as f64;
                assert!(read != original && diff < 6.0, "mean difference {diff}");
            }
        }
    }
}

#[test]
fn max_side_shrinks_only_larger_images_and_keeps_the_aspect() {
    let tmp = tempfile::tempdir().unwrap();
    write_tree(&tmp.path().join("tree"));
    let set = image_folder(&tmp.path().join("tree")).unwrap();
    let out = tmp.path().join("small.pack");
    assert!(pack(&set, &out, &options(Storage::Jpeg, Some(45), 1), &|| false));
    let (train, _) = Pack::open(&out).unwrap().splits();
    for i in 0..set.len() {
        let original = decode_image(&set.files[i]).unwrap();
        let read = train.image(i).unwrap();
        let longer = original.width.max(original.height);
        if longer <= 45 {
            assert_eq!((read.width, read.height), (original.width, original.height));
        } else {
            assert_eq!(read.width.max(read.height), 45);
            let (a, b) = (read.width as f64 / read.height as f64, original.width as f64 / original.height as f64);
            assert!((a - b).abs() < 0.05, "{a} vs {b}");
        }
    }
}

#[test]
fn an_interrupted_pack_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    write_tree(&tmp.path().join("tree"));
    let set = image_folder(&tmp.path().join("tree")).unwrap();
    // In one go.
    let whole = tmp.path().join("whole.pack");
    assert!(pack(&set, &whole, &options(Storage::Jpeg, None, 1), &|| false));
    // Stopped before its second chunk of 16 records, then the last record cut short (a kill
    // in the middle of a write), then run again.
    let out = tmp.path().join("resumed.pack");
    let calls = std::cell::Cell::new(0);
    let stop_second = || {
        calls.set(calls.get() + 1);
        calls.get() > 1
    };
    assert!(!pack(&set, &out, &options(Storage::Jpeg, None, 1), &stop_second));
    assert!(!out.exists(), "no pack before it is finished");
    let partial = partial_path(&out);
    let len = std::fs::metadata(&partial).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&partial).unwrap().set_len(len - 7).unwrap();
    let source = PackSource { train: &set, test: None, info: info(&set, Storage::Jpeg, None) };
    let report =
        write_pack(&source, &out, &options(Storage::Jpeg, None, 1), &mut |_, _| {}, &|| false).unwrap().unwrap();
    assert_eq!((report.records, report.resumed), (set.len(), 15));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&whole).unwrap());
    // A finished pack is never replaced.
    let again = write_pack(&source, &out, &options(Storage::Jpeg, None, 1), &mut |_, _| {}, &|| false);
    assert!(common::user_error(again.map(|_| ())).contains("already exists"));
}

#[test]
fn damaged_packs_and_wrong_datasets_are_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    write_tree(&tree);
    let out = tmp.path().join("p.pack");
    let out_s = out.to_str().unwrap();
    let tree_s = tree.to_str().unwrap();
    let prepare = [
        "prepare",
        "--dataset",
        "folder",
        "--data_folder",
        tree_s,
        "--mean",
        "(0.5,0.5,0.5)",
        "--std",
        "(0.2,0.2,0.2)",
        "--size",
        "16",
        "--out",
        out_s,
    ];
    let run = common::selfcon(&prepare);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // Read through --data_folder FILE: the loader runs on it.
    let bench = common::selfcon(&[
        "bench",
        "loader",
        "--dataset",
        "folder",
        "--data_folder",
        out_s,
        "--size",
        "16",
        "--batch_size",
        "4",
        "--batches",
        "2",
        "--json",
    ]);
    assert!(bench.status.success(), "{}", String::from_utf8_lossy(&bench.stderr));
    // The pack holds its statistics: flags that would not be used are refused.
    common::assert_usage_error(
        &["bench", "loader", "--dataset", "folder", "--data_folder", out_s, "--size", "16", "--mean", "(0.5,0.5,0.5)"],
        "--mean: not used with a packed file",
    );
    // Packing again over it is refused; so is reading it as another dataset.
    common::assert_usage_error(&prepare, "already exists");
    common::assert_usage_error(
        &["bench", "loader", "--dataset", "imagenet", "--data_folder", out_s],
        "was packed from --dataset folder",
    );
    let missing = tmp.path().join("no/such/folder/p.pack");
    common::assert_usage_error(
        &["prepare", "--dataset", "imagenet", "--data_folder", tree_s, "--out", missing.to_str().unwrap()],
        "--out: its folder",
    );
    common::assert_usage_error(
        &["prepare", "--dataset", "imagenet", "--data_folder", tree_s, "--out", "x.pack", "--max_side", "0"],
        "--max_side",
    );
    // Truncated: no trailer.
    let bytes = std::fs::read(&out).unwrap();
    let cut = tmp.path().join("cut.pack");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = common::user_error(Pack::open(&cut).map(|_| ()));
    assert!(err.contains("cut.pack") && err.contains("not a usable packed dataset"), "{err}");
    // A trailer whose numbers overflow when added, an index entry pointing past the records:
    // one line each, no panic.
    let t = bytes.len() - 48;
    let mut forged = bytes.clone();
    forged[t + 24..t + 32].copy_from_slice(&u64::MAX.to_le_bytes());
    let forged_path = tmp.path().join("forged.pack");
    std::fs::write(&forged_path, &forged).unwrap();
    assert!(common::user_error(Pack::open(&forged_path).map(|_| ())).contains("trailer does not describe"));
    let index_at = u64::from_le_bytes(bytes[t..t + 8].try_into().unwrap()) as usize;
    let mut forged = bytes.clone();
    forged[index_at..index_at + 8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    std::fs::write(&forged_path, &forged).unwrap();
    assert!(common::user_error(Pack::open(&forged_path).map(|_| ())).contains("index entry 0 is out of range"));
    // A record's bytes damaged: that read fails naming the record; the others still read.
    let mut bad = bytes.clone();
    let first_payload = 16 + 8 + 24;
    bad[first_payload..first_payload + 64].fill(0);
    let damaged = tmp.path().join("damaged.pack");
    std::fs::write(&damaged, &bad).unwrap();
    let (train, _) = Pack::open(&damaged).unwrap().splits();
    assert!(common::user_error(train.image(0).map(|_| ())).contains("record 0"));
    assert!(train.image(1).is_ok());
}

#[test]
fn reduced_jpeg_decodes_stay_close_to_the_whole_decode() {
    // The transform's crops drawn on a 512 × 384 photograph-like JPEG at output sizes 16 to
    // 128: every crop at least four times the output on both sides is decoded at 1/2, 1/4 or 1/8. Its
    // output against the same crop of the whole decode: the filters differ, the picture does not.
    let picture = photo_like(512, 384, 7);
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode(picture.as_raw(), 512, 384, image::ExtendedColorType::Rgb8)
        .unwrap();
    let full = selfcon::data::decode_image_bytes(&bytes).unwrap();
    let (mut reduced_count, mut worst_mean, mut worst_max) = ([0usize; 4], 0f64, 0u8);
    for seed in 0..400u64 {
        let transform = TrainTransform::crop_flip(16 << (seed % 4));
        let mut rng_full = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let whole = transform.apply(&full, &mut rng_full);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut crop = None;
        let source = decode_for_crops(&bytes, &mut |w, h| {
            let b = transform.crop_box(w, h, &mut rng);
            crop = Some(b);
            transform.decode_request(&[b])
        })
        .unwrap();
        let reduction = 512 / source.scaled.0;
        reduced_count[reduction.trailing_zeros() as usize] += 1;
        // Only the crop's region is decoded: it lies inside the reduced picture.
        assert!(source.origin.0 + source.image.width <= source.scaled.0);
        assert!(source.origin.1 + source.image.height <= source.scaled.1);
        let out = transform.finish_from(&source, crop.unwrap(), &mut rng);
        let diffs: Vec<u8> = out.data.iter().zip(&whole.data).map(|(&a, &b)| a.abs_diff(b)).collect();
        let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
        if reduction == 1 {
            assert_eq!(out, whole, "a crop decoded whole is torchvision-exact");
        } else {
            worst_mean = worst_mean.max(mean);
            worst_max = worst_max.max(*diffs.iter().max().unwrap());
        }
    }
    eprintln!("reductions 1/2/4/8: {reduced_count:?}; worst mean difference {worst_mean:.2}, max {worst_max}");
    // Every reduction was exercised, and stayed within a few grey levels on average.
    assert!(reduced_count.iter().all(|&n| n > 0), "{reduced_count:?}");
    assert!(worst_mean < 4.0, "worst mean difference {worst_mean:.2} (max {worst_max})");
}

#[test]
fn a_raw_pack_gives_the_folder_loaders_batches_exactly() {
    use selfcon::data::{DataLoader, Transform};
    let tmp = tempfile::tempdir().unwrap();
    write_tree(&tmp.path().join("tree"));
    let set = image_folder(&tmp.path().join("tree")).unwrap();
    let out = tmp.path().join("raw.pack");
    assert!(pack(&set, &out, &options(Storage::Raw, None, 2), &|| false));
    let (packed, _) = Pack::open(&out).unwrap().splits();
    let config = crate::loader::config(5, 2);
    // Two views, full jitter: the raw records hand out only the crops' region, which must map
    // back to the same pixels the whole decode gives.
    let transform = Transform::Train { transform: TrainTransform::pretrain(12, false).with_full_decode(), views: 2 };
    let from_folder = DataLoader::new(std::sync::Arc::new(set), transform.clone(), config.clone()).unwrap();
    let from_pack = DataLoader::new(std::sync::Arc::new(packed), transform, config).unwrap();
    for epoch in 0..2 {
        for (a, b) in from_folder.epoch(epoch).zip(from_pack.epoch(epoch)) {
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a.indices, b.indices);
            assert!(a.images.equal(&b.images), "epoch {epoch}: batch {:?} differs", a.indices);
        }
    }
}

#[test]
fn two_views_decoded_reduced_over_their_union_stay_close_to_whole_decodes() {
    use selfcon::data::{DataLoader, Transform};
    // Large photograph-like JPEGs, 16-px views: most images are decoded at 1/2–1/8 over the
    // region holding both crops; each view must still be its crop (not the other's, not shifted).
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..6u32 {
        let dir = tmp.path().join(format!("c{}", i % 2));
        std::fs::create_dir_all(&dir).unwrap();
        photo_like(400 + 24 * i, 300 + 16 * i, i)
            .save_with_format(dir.join(format!("{i}.jpg")), image::ImageFormat::Jpeg)
            .unwrap();
    }
    let set = std::sync::Arc::new(image_folder(tmp.path()).unwrap());
    let config = crate::loader::config(6, 2);
    let weak = TrainTransform::pretrain(16, true);
    let reduced =
        DataLoader::new(set.clone(), Transform::Train { transform: weak.clone(), views: 2 }, config.clone()).unwrap();
    let whole =
        DataLoader::new(set, Transform::Train { transform: weak.with_full_decode(), views: 2 }, config).unwrap();
    for epoch in 0..3 {
        let a = reduced.epoch(epoch).next().unwrap().unwrap().images;
        let b = whole.epoch(epoch).next().unwrap().unwrap().images;
        // Normalised by std 0.25: one grey level is 1/(255·0.25).
        let grey_levels = (&a - &b).abs().mean(tch::Kind::Float).double_value(&[]) * 255.0 * 0.25;
        assert!(grey_levels < 4.0, "epoch {epoch}: mean difference {grey_levels:.2} grey levels");
    }
}
