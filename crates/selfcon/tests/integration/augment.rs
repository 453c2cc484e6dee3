//! Augmentation against torchvision + Pillow reference outputs
//! (tests/data/augment/torchvision_reference.json, made by scripts/make_augment_references.py),
//! and the random parameters' contracts.

use std::collections::HashMap;

use base64::Engine;
use serde_json::Value;

use selfcon::data::augment::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, center_crop, hflip, random_resized_crop_box,
    resize_shorter_side, resized_crop, sample_rng, to_grayscale, to_normalized_chw, ColorJitter, ColorOp, CropBox,
    RandOp, TrainTransform,
};
use selfcon::data::Image;

fn reference() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/augment/torchvision_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn decode(v: &Value) -> Image {
    let bytes = base64::engine::general_purpose::STANDARD.decode(v["pixels"].as_str().unwrap()).unwrap();
    Image::new(v["w"].as_u64().unwrap() as usize, v["h"].as_u64().unwrap() as usize, bytes)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn u(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn apply_case(op: &str, input: &Image, p: &Value) -> Image {
    let mut img = input.clone();
    match op {
        "resized_crop" => {
            let b = CropBox { top: u(&p["top"]), left: u(&p["left"]), height: u(&p["height"]), width: u(&p["width"]) };
            img = resized_crop(input, b, u(&p["size"]));
        }
        "hflip" => hflip(&mut img),
        "grayscale" => to_grayscale(&mut img),
        "brightness" => adjust_brightness(&mut img, f(&p["factor"])),
        "contrast" => adjust_contrast(&mut img, f(&p["factor"])),
        "saturation" => adjust_saturation(&mut img, f(&p["factor"])),
        "hue" => adjust_hue(&mut img, f(&p["factor"])),
        "resize_center_crop" => {
            let crop = u(&p["crop"]);
            img = center_crop(&resize_shorter_side(input, u(&p["resize"])), crop, crop);
        }
        "chain" => {
            let c: Vec<usize> = p["crop"].as_array().unwrap().iter().map(u).collect();
            img = resized_crop(input, CropBox { top: c[0], left: c[1], height: c[2], width: c[3] }, c[4]);
            if p["flip"].as_bool().unwrap() {
                hflip(&mut img);
            }
            for step in p["jitter"].as_array().unwrap() {
                let factor = f(&step[1]);
                let op = match step[0].as_str().unwrap() {
                    "brightness" => ColorOp::Brightness(factor),
                    "contrast" => ColorOp::Contrast(factor),
                    "saturation" => ColorOp::Saturation(factor),
                    _ => ColorOp::Hue(factor),
                };
                op.apply(&mut img);
            }
            if p["grayscale"].as_bool().unwrap() {
                to_grayscale(&mut img);
            }
        }
        "randaug" => {
            let v = f(&p["value"]);
            // The reference names the translations and the cutout without the package's "abs".
            let name = match p["name"].as_str().unwrap() {
                "TranslateX" => "TranslateXabs",
                "TranslateY" => "TranslateYabs",
                "Cutout" => "CutoutAbs",
                other => other,
            };
            let centre = (p["cx"].as_f64().unwrap_or(0.0), p["cy"].as_f64().unwrap_or(0.0));
            let op = RandOp::named(name, v, centre).unwrap_or_else(|| panic!("unknown RandAugment op {name}"));
            img = op.apply(input);
        }
        other => panic!("unknown op {other}"),
    }
    img
}

#[test]
fn every_deterministic_operation_matches_torchvision_within_one_grey_level() {
    let doc = reference();
    let inputs: HashMap<String, Image> =
        doc["inputs"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), decode(v))).collect();
    let mut failures = Vec::new();
    let mut exact = 0;
    let cases = doc["cases"].as_array().unwrap();
    for case in cases {
        let op = case["op"].as_str().unwrap();
        let name = case["input"].as_str().unwrap();
        let want = decode(&case["output"]);
        let got = apply_case(op, &inputs[name], &case["params"]);
        if (got.width, got.height) != (want.width, want.height) {
            failures.push(format!(
                "{op} {name} {}: size {}x{} vs {}x{}",
                case["params"], got.width, got.height, want.width, want.height
            ));
            continue;
        }
        let max_diff = got.data.iter().zip(&want.data).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap_or(0);
        if max_diff > 1 {
            failures.push(format!("{op} {name} {}: max diff {max_diff}", case["params"]));
        } else if max_diff == 0 {
            exact += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ by more than 1:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{exact} of {} reference cases bit-exact, the rest within 1", cases.len());
}

#[test]
fn normalize_matches_torchvision() {
    let doc = reference();
    let n = &doc["normalize"];
    let img = decode(&doc["inputs"][n["input"].as_str().unwrap()]);
    let triple = |v: &Value| -> [f32; 3] { [0, 1, 2].map(|i| v[i].as_f64().unwrap() as f32) };
    let mut out = vec![0f32; 3 * img.width * img.height];
    to_normalized_chw(&img, triple(&n["mean"]), triple(&n["std"]), &mut out);
    let want: Vec<f64> = n["output"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let max = out.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(max < 1e-6, "max diff {max}");
}

#[test]
fn crop_boxes_stay_inside_and_cover_the_scale_range() {
    let mut rng = sample_rng(0, 0, 0, 0);
    let mut areas = Vec::new();
    for _ in 0..2000 {
        let b = random_resized_crop_box(32, 32, (0.2, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert!(b.top + b.height <= 32 && b.left + b.width <= 32 && b.width > 0 && b.height > 0, "{b:?}");
        areas.push((b.width * b.height) as f64 / 1024.0);
    }
    let (lo, hi) = areas.iter().fold((1.0f64, 0.0f64), |(lo, hi), a| (lo.min(*a), hi.max(*a)));
    assert!(lo < 0.25 && hi > 0.95, "areas span {lo}..{hi}");
    // Impossible ratios fall back to the centred crop of the clamped ratio.
    let b = random_resized_crop_box(100, 10, (0.99, 1.0), (1.0, 1.0 + 1e-9), &mut rng);
    assert_eq!(b, CropBox { top: 0, left: 45, height: 10, width: 10 });
}

#[test]
fn same_seed_same_views_and_views_differ() {
    let img = Image::new(8, 8, (0..192).map(|v| (v * 5 % 256) as u8).collect());
    let t = TrainTransform::pretrain(8, false);
    let a = t.apply(&img, &mut sample_rng(7, 1, 42, 0));
    let b = t.apply(&img, &mut sample_rng(7, 1, 42, 0));
    assert_eq!(a, b);
    let others = [(8, 1, 42, 0), (7, 2, 42, 0), (7, 1, 43, 0), (7, 1, 42, 1)];
    let differing = others.iter().filter(|(s, e, i, v)| t.apply(&img, &mut sample_rng(*s, *e, *i, *v)) != a).count();
    assert!(differing >= 3, "seed, epoch, index and view must each change the view");
}

#[test]
fn jitter_factors_and_probabilities() {
    let mut rng = sample_rng(1, 0, 0, 0);
    let mut hue_signs = (0, 0);
    for _ in 0..500 {
        let ops = ColorJitter::OFFICIAL.sample(&mut rng);
        let mut kinds = [false; 4];
        for op in ops {
            match op {
                ColorOp::Brightness(f) | ColorOp::Contrast(f) | ColorOp::Saturation(f) => {
                    assert!((0.6..=1.4).contains(&f), "{f}");
                    kinds[match op {
                        ColorOp::Brightness(_) => 0,
                        ColorOp::Contrast(_) => 1,
                        _ => 2,
                    }] = true;
                }
                ColorOp::Hue(h) => {
                    assert!((-0.1..=0.1).contains(&h));
                    kinds[3] = true;
                    if h < 0.0 {
                        hue_signs.0 += 1
                    } else {
                        hue_signs.1 += 1
                    }
                }
            }
        }
        assert_eq!(kinds, [true; 4], "each operation once");
    }
    assert!(hue_signs.0 > 150 && hue_signs.1 > 150);

    // Grayscale with p = 0.2: about a fifth of colourful views come out grey.
    let img = Image::new(4, 4, (0..48).map(|v| (v * 37 % 256) as u8).collect());
    let t = TrainTransform { jitter: None, ..TrainTransform::pretrain(4, false) };
    let grey = (0..1000)
        .filter(|i| t.apply(&img, &mut sample_rng(3, 0, *i, 0)).data.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]))
        .count();
    assert!((140..260).contains(&grey), "{grey} of 1000 grey");
    let weak = TrainTransform::pretrain(4, true);
    assert!(weak.jitter.is_none() && weak.grayscale_p == 0.0);
}

#[test]
fn randaugment_draws_two_official_operations() {
    use selfcon::data::augment::RandAugment;
    let mut rng = sample_rng(11, 0, 0, 0);
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let ops = RandAugment::OFFICIAL.sample(32, 32, &mut rng);
        assert_eq!(ops.len(), 2);
        for op in ops {
            match op {
                RandOp::Rotate(d) => assert!((d.abs() - 9.0).abs() < 1e-12),
                RandOp::Posterize(b) => assert_eq!(b, 1, "int(9/30·4) = 1 bit"),
                RandOp::Solarize(t) => assert!((t - 76.8).abs() < 1e-9),
                RandOp::SolarizeAdd(a) => assert_eq!(a, 33),
                RandOp::Color(f) | RandOp::Contrast(f) | RandOp::Brightness(f) | RandOp::Sharpness(f) => {
                    assert!((f - 0.64).abs() < 1e-12)
                }
                RandOp::ShearX(v) | RandOp::ShearY(v) => assert!((v.abs() - 0.09).abs() < 1e-12),
                RandOp::TranslateX(v) | RandOp::TranslateY(v) => assert!((v.abs() - 30.0).abs() < 1e-12),
                RandOp::Cutout { size, cx, cy } => {
                    assert!((size - 12.0).abs() < 1e-12 && (0.0..32.0).contains(&cx) && (0.0..32.0).contains(&cy))
                }
                _ => {}
            }
            kinds.insert(format!("{op:?}").split(['(', ' ']).next().unwrap().to_string());
        }
    }
    assert_eq!(kinds.len(), 16, "every operation is drawn: {kinds:?}");
    let img = Image::new(32, 32, (0..3072).map(|v| (v * 13 % 256) as u8).collect());
    let t = TrainTransform::pretrain(32, false).with_randaugment();
    let a = t.apply(&img, &mut sample_rng(2, 0, 5, 0));
    assert_eq!(a, t.apply(&img, &mut sample_rng(2, 0, 5, 0)));
    assert_eq!((a.width, a.height), (32, 32));
}
