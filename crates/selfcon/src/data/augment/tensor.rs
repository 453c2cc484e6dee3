//! `ToTensor` + `Normalize`: u8 H × W × 3 to normalised f32 C × H × W, in single precision as
//! torchvision computes it.

use crate::data::image::Image;

/// Writes `(v / 255 − mean) / std` per channel into `out` (length 3·H·W, HWC order: the
/// channels-last layout, which is the image's own, so no transposition).
pub fn to_normalized_hwc(img: &Image, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    assert_eq!(out.len(), img.data.len(), "output buffer must hold 3 × H × W floats");
    for (o, px) in out.chunks_exact_mut(3).zip(img.data.chunks_exact(3)) {
        for c in 0..3 {
            o[c] = (px[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
}

/// Writes `(v / 255 − mean) / std` per channel into `out` (length 3·H·W, CHW order).
pub fn to_normalized_chw(img: &Image, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    let plane = img.width * img.height;
    assert_eq!(out.len(), 3 * plane, "output buffer must hold 3 × H × W floats");
    for (p, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + p] = (px[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
}
