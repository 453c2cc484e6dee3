//! `RandAugment(n=2, m=9)` as the official code uses it (the `RandAugment` package of
//! ildoonet/pytorch-randaugment, prepended to the pre-training pipeline with `--randaug`): `n` of
//! 16 operations chosen with replacement, each at magnitude `m/30` of its range, with Pillow's
//! pixel semantics (nearest-neighbour affine warps filled with black, `ImageOps` look-up tables,
//! `ImageEnhance` blends).
//!
//! Quirks kept on purpose: the ranges are absolute pixels (TranslateXabs/YAbs move 30 px at
//! m = 9, which empties most of a 32×32 image), Posterize keeps `int(1.2) = 1` bit at m = 9.

use rand::Rng;

use super::color::{adjust_brightness, adjust_contrast, adjust_saturation, blend};
use crate::data::image::Image;

/// One RandAugment operation at a given value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RandOp {
    AutoContrast,
    Equalize,
    Invert,
    /// Degrees, counter-clockwise.
    Rotate(f64),
    Posterize(u32),
    Solarize(f64),
    SolarizeAdd(i32),
    Color(f64),
    Contrast(f64),
    Brightness(f64),
    Sharpness(f64),
    ShearX(f64),
    ShearY(f64),
    /// Side of the grey square and its centre.
    Cutout {
        size: f64,
        cx: f64,
        cy: f64,
    },
    TranslateX(f64),
    TranslateY(f64),
}

/// The 16 operations in the package's order, with their (min, max) ranges.
const OPS: [(&str, f64, f64); 16] = [
    ("AutoContrast", 0.0, 1.0),
    ("Equalize", 0.0, 1.0),
    ("Invert", 0.0, 1.0),
    ("Rotate", 0.0, 30.0),
    ("Posterize", 0.0, 4.0),
    ("Solarize", 0.0, 256.0),
    ("SolarizeAdd", 0.0, 110.0),
    ("Color", 0.1, 1.9),
    ("Contrast", 0.1, 1.9),
    ("Brightness", 0.1, 1.9),
    ("Sharpness", 0.1, 1.9),
    ("ShearX", 0.0, 0.3),
    ("ShearY", 0.0, 0.3),
    ("CutoutAbs", 0.0, 40.0),
    ("TranslateXabs", 0.0, 100.0),
    ("TranslateYabs", 0.0, 100.0),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RandAugment {
    pub n: usize,
    pub m: u32,
}

impl RandAugment {
    pub const OFFICIAL: RandAugment = RandAugment { n: 2, m: 9 };

    /// Draws the operations for one image of `width × height`.
    pub fn sample(&self, width: usize, height: usize, rng: &mut impl Rng) -> Vec<RandOp> {
        (0..self.n)
            .map(|_| {
                let (name, lo, hi) = OPS[rng.gen_range(0..OPS.len())];
                let mut v = self.m as f64 / 30.0 * (hi - lo) + lo;
                // The geometric operations flip their sign with probability ½.
                if matches!(name, "Rotate" | "ShearX" | "ShearY" | "TranslateXabs" | "TranslateYabs")
                    && rng.gen::<f64>() > 0.5
                {
                    v = -v;
                }
                let centre = if name == "CutoutAbs" {
                    (rng.gen_range(0.0..width as f64), rng.gen_range(0.0..height as f64))
                } else {
                    (0.0, 0.0)
                };
                RandOp::named(name, v, centre).expect("OPS lists only known operations")
            })
            .collect()
    }

    pub fn apply(&self, img: &Image, rng: &mut impl Rng) -> Image {
        let mut out = img.clone();
        for op in self.sample(img.width, img.height, rng) {
            out = op.apply(&out);
        }
        out
    }
}

impl RandOp {
    /// The operation the package calls `name`, at value `v` (already signed); `centre` is the
    /// Cutout square's centre.
    pub fn named(name: &str, v: f64, centre: (f64, f64)) -> Option<RandOp> {
        Some(match name {
            "AutoContrast" => RandOp::AutoContrast,
            "Equalize" => RandOp::Equalize,
            "Invert" => RandOp::Invert,
            "Rotate" => RandOp::Rotate(v),
            "Posterize" => RandOp::Posterize(v as u32),
            "Solarize" => RandOp::Solarize(v),
            "SolarizeAdd" => RandOp::SolarizeAdd(v as i32),
            "Color" => RandOp::Color(v),
            "Contrast" => RandOp::Contrast(v),
            "Brightness" => RandOp::Brightness(v),
            "Sharpness" => RandOp::Sharpness(v),
            "ShearX" => RandOp::ShearX(v),
            "ShearY" => RandOp::ShearY(v),
            "CutoutAbs" => RandOp::Cutout { size: v, cx: centre.0, cy: centre.1 },
            "TranslateXabs" => RandOp::TranslateX(v),
            "TranslateYabs" => RandOp::TranslateY(v),
            _ => return None,
        })
    }

    pub fn apply(self, img: &Image) -> Image {
        let mut out = img.clone();
        match self {
            RandOp::AutoContrast => per_channel_lut(&mut out, autocontrast_lut),
            RandOp::Equalize => per_channel_lut(&mut out, equalize_lut),
            RandOp::Invert => out.data.iter_mut().for_each(|v| *v = 255 - *v),
            RandOp::Posterize(bits) => {
                let mask = !((1u32 << (8 - bits.clamp(1, 8))) - 1) as u8;
                out.data.iter_mut().for_each(|v| *v &= mask);
            }
            RandOp::Solarize(threshold) => solarize(&mut out, threshold),
            RandOp::SolarizeAdd(addition) => {
                out.data.iter_mut().for_each(|v| *v = (*v as i32 + addition).clamp(0, 255) as u8);
                solarize(&mut out, 128.0);
            }
            RandOp::Color(f) => adjust_saturation(&mut out, f),
            RandOp::Contrast(f) => adjust_contrast(&mut out, f),
            RandOp::Brightness(f) => adjust_brightness(&mut out, f),
            RandOp::Sharpness(f) => {
                let smooth = smooth3x3(img);
                out = blend(&smooth, img, f);
            }
            RandOp::Rotate(degrees) => return rotate(img, degrees),
            RandOp::ShearX(v) => return affine(img, [1.0, v, 0.0, 0.0, 1.0, 0.0]),
            RandOp::ShearY(v) => return affine(img, [1.0, 0.0, 0.0, v, 1.0, 0.0]),
            RandOp::TranslateX(v) => return affine(img, [1.0, 0.0, v, 0.0, 1.0, 0.0]),
            RandOp::TranslateY(v) => return affine(img, [1.0, 0.0, 0.0, 0.0, 1.0, v]),
            RandOp::Cutout { size, cx, cy } => cutout(&mut out, size, cx, cy),
        }
        out
    }
}

fn per_channel_lut(img: &mut Image, make: fn(&[u64; 256]) -> [u8; 256]) {
    for c in 0..3 {
        let mut hist = [0u64; 256];
        for px in img.data.chunks_exact(3) {
            hist[px[c] as usize] += 1;
        }
        let lut = make(&hist);
        for px in img.data.chunks_exact_mut(3) {
            px[c] = lut[px[c] as usize];
        }
    }
}

fn identity_lut() -> [u8; 256] {
    std::array::from_fn(|i| i as u8)
}

/// `ImageOps.autocontrast(cutoff=0)`: stretch [lo, hi] to [0, 255], truncating.
fn autocontrast_lut(h: &[u64; 256]) -> [u8; 256] {
    let lo = h.iter().position(|&n| n > 0);
    let hi = h.iter().rposition(|&n| n > 0);
    match (lo, hi) {
        (Some(lo), Some(hi)) if hi > lo => {
            let scale = 255.0 / (hi - lo) as f64;
            let offset = -(lo as f64) * scale;
            std::array::from_fn(|i| ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8)
        }
        _ => identity_lut(),
    }
}

/// `ImageOps.equalize`.
fn equalize_lut(h: &[u64; 256]) -> [u8; 256] {
    let used: Vec<u64> = h.iter().copied().filter(|&n| n > 0).collect();
    if used.len() <= 1 {
        return identity_lut();
    }
    let step = (used.iter().sum::<u64>() - used[used.len() - 1]) / 255;
    if step == 0 {
        return identity_lut();
    }
    let mut n = step / 2;
    std::array::from_fn(|i| {
        let v = (n / step).min(255) as u8;
        n += h[i];
        v
    })
}

fn solarize(img: &mut Image, threshold: f64) {
    img.data.iter_mut().for_each(|v| {
        if *v as f64 >= threshold {
            *v = 255 - *v
        }
    });
}

/// `ImageFilter.SMOOTH` (3×3 kernel 1 1 1 / 1 5 1 / 1 1 1, ÷13); border pixels are copied.
fn smooth3x3(img: &Image) -> Image {
    let (w, h) = (img.width, img.height);
    let mut out = img.clone();
    if w < 3 || h < 3 {
        return out;
    }
    let k = [1.0f32 / 13.0, 5.0 / 13.0];
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for c in 0..3 {
                let at = |dx: usize, dy: usize| img.data[((y + dy - 1) * w + x + dx - 1) * 3 + c] as f32;
                let mut ss = 0.0f32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        ss += at(dx, dy) * if dx == 1 && dy == 1 { k[1] } else { k[0] };
                    }
                }
                out.data[(y * w + x) * 3 + c] = if ss <= 0.0 {
                    0
                } else if ss >= 255.0 {
                    255
                } else {
                    (ss + 0.5) as u8
                };
            }
        }
    }
    out
}

/// Pillow's nearest-neighbour affine transform: output pixel (x, y) samples input
/// (a·x' + b·y' + c, d·x' + e·y' + f) at pixel centres x' = x + ½, filling with black.
fn affine(img: &Image, m: [f64; 6]) -> Image {
    let (w, h) = (img.width, img.height);
    let mut out = Image::filled(w, h, 0);
    // Same accumulation order as libImaging, so boundary pixels round alike.
    let mut xo = m[2] + m[1] * 0.5 + m[0] * 0.5;
    let mut yo = m[5] + m[4] * 0.5 + m[3] * 0.5;
    let coord = |v: f64| if v < 0.0 { -1 } else { v as i64 };
    for y in 0..h {
        let (mut xx, mut yy) = (xo, yo);
        for x in 0..w {
            let (xi, yi) = (coord(xx), coord(yy));
            if xi >= 0 && (xi as usize) < w && yi >= 0 && (yi as usize) < h {
                let src = (yi as usize * w + xi as usize) * 3;
                out.data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&img.data[src..src + 3]);
            }
            xx += m[0];
            yy += m[3];
        }
        xo += m[1];
        yo += m[4];
    }
    out
}

/// `Image.rotate(degrees)` about the centre, nearest neighbour, same size, black fill.
fn rotate(img: &Image, degrees: f64) -> Image {
    let angle = degrees.rem_euclid(360.0);
    if angle == 0.0 {
        return img.clone();
    }
    let (cx, cy) = (img.width as f64 / 2.0, img.height as f64 / 2.0);
    let a = -angle.to_radians();
    let round15 = |v: f64| (v * 1e15).round() / 1e15;
    let (cos, sin) = (round15(a.cos()), round15(a.sin()));
    let mut m = [cos, sin, 0.0, -sin, cos, 0.0];
    m[2] = m[0] * -cx + m[1] * -cy + cx;
    m[5] = m[3] * -cx + m[4] * -cy + cy;
    affine(img, m)
}

/// `CutoutAbs`: a (125, 123, 114) square of side `size` near (cx, cy); Pillow's rectangle
/// includes its far edge.
fn cutout(img: &mut Image, size: f64, cx: f64, cy: f64) {
    let (w, h) = (img.width as f64, img.height as f64);
    let x0 = (cx - size / 2.0).max(0.0) as i64 as f64;
    let y0 = (cy - size / 2.0).max(0.0) as i64 as f64;
    let x1 = w.min(x0 + size);
    let y1 = h.min(y0 + size);
    let (xa, ya) = (x0 as usize, y0 as usize);
    let xb = (x1.floor() as usize).min(img.width - 1);
    let yb = (y1.floor() as usize).min(img.height - 1);
    for y in ya..=yb {
        for x in xa..=xb {
            img.data[(y * img.width + x) * 3..(y * img.width + x) * 3 + 3].copy_from_slice(&[125, 123, 114]);
        }
    }
}
