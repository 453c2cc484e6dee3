//! `ToTensor` + `Normalize`: u8 H × W × 3 to normalised f32 C × H × W, in single precision as
//! torchvision computes it.

use super::color::{avx2_dispatch, split, LANES};
use crate::data::image::Image;

/// torchvision's `(v / 255 − mean) / std`, in the same float operations.
#[inline(always)]
fn normalize(v: u8, mean: f32, std: f32) -> f32 {
    (v as f32 / 255.0 - mean) / std
}

/// Writes `(v / 255 − mean) / std` per channel into `out` (length 3·H·W, HWC order: the
/// channels-last layout, which is the image's own, so no transposition).
pub fn to_normalized_hwc(img: &Image, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    assert_eq!(out.len(), img.data.len(), "output buffer must hold 3 × H × W floats");
    normalize_hwc(&img.data, mean, std, out);
}

avx2_dispatch! {
    /// Every byte normalised with its channel's mean and std, in place in the HWC layout.
    fn normalize_hwc(data: &[u8], mean: [f32; 3], std: [f32; 3], out: &mut [f32]) = normalize_hwc_body
}

#[inline(always)]
fn normalize_hwc_body(data: &[u8], mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    // Per-position means and stds for a block of LANES pixels, so the loop has no `% 3` and
    // vectorises.
    let means: [f32; 3 * LANES] = std::array::from_fn(|i| mean[i % 3]);
    let stds: [f32; 3 * LANES] = std::array::from_fn(|i| std[i % 3]);
    let mut src = data.chunks_exact(3 * LANES);
    let mut dst = out.chunks_exact_mut(3 * LANES);
    for (s, o) in (&mut src).zip(&mut dst) {
        for i in 0..3 * LANES {
            o[i] = normalize(s[i], means[i], stds[i]);
        }
    }
    for (i, (&v, o)) in src.remainder().iter().zip(dst.into_remainder()).enumerate() {
        *o = normalize(v, means[i], stds[i]);
    }
}

/// Writes `(v / 255 − mean) / std` per channel into `out` (length 3·H·W, CHW order).
pub fn to_normalized_chw(img: &Image, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    assert_eq!(out.len(), img.data.len(), "output buffer must hold 3 × H × W floats");
    normalize_chw(&img.data, mean, std, out);
}

avx2_dispatch! {
    /// Every byte normalised with its channel's mean and std, into the channel's plane.
    fn normalize_chw(data: &[u8], mean: [f32; 3], std: [f32; 3], out: &mut [f32]) = normalize_chw_body
}

#[inline(always)]
fn normalize_chw_body(data: &[u8], mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    let plane = data.len() / 3;
    let (r, gb) = out.split_at_mut(plane);
    let (g, b) = gb.split_at_mut(plane);
    let planes = [r, g, b];
    // Blocks of LANES pixels split into channels (vectorised), then the remaining pixels.
    let blocks = data.chunks_exact(3 * LANES);
    let done = data.len() / 3 - blocks.remainder().len() / 3;
    for (n, block) in blocks.enumerate() {
        let rgb = split(block);
        for c in 0..3 {
            let dst: &mut [f32; LANES] = (&mut planes[c][n * LANES..(n + 1) * LANES]).try_into().unwrap();
            for k in 0..LANES {
                dst[k] = normalize(rgb[c][k], mean[c], std[c]);
            }
        }
    }
    for (p, px) in data[3 * done..].chunks_exact(3).enumerate() {
        for c in 0..3 {
            planes[c][done + p] = normalize(px[c], mean[c], std[c]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_equals_the_per_value_formula() {
        // 67 × 49 pixels: whole blocks of LANES and a remainder.
        let data: Vec<u8> = (0..67 * 49 * 3).map(|i| (i * 7 + i / 5) as u8).collect();
        let img = Image::new(67, 49, data);
        let (mean, std) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        let plane = 67 * 49;
        let expected = |c: usize, v: u8| (v as f32 / 255.0 - mean[c]) / std[c];
        let mut chw = vec![0.0; 3 * plane];
        to_normalized_chw(&img, mean, std, &mut chw);
        let mut hwc = vec![0.0; 3 * plane];
        to_normalized_hwc(&img, mean, std, &mut hwc);
        for (p, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                assert_eq!(chw[c * plane + p].to_bits(), expected(c, px[c]).to_bits(), "chw {p} {c}");
                assert_eq!(hwc[3 * p + c].to_bits(), expected(c, px[c]).to_bits(), "hwc {p} {c}");
            }
        }
    }
}
