//! Crops, flips and resizes with torchvision's PIL semantics.

use rand::Rng;

use super::resample::{resize_bilinear, resize_crop_bilinear};
use crate::data::image::Image;

/// A crop box: rows `top..top+height`, columns `left..left+width`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// `RandomResizedCrop.get_params`: up to 10 tries of a random area fraction in `scale` and a
/// log-uniform aspect ratio in `ratio`, then the centred fallback. Python's `round` (half to even)
/// turns the side lengths into integers.
pub fn random_resized_crop_box(
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut impl Rng,
) -> CropBox {
    let area = (width * height) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        // torch's uniform_ accepts an empty range (a fixed scale); `gen_range` would panic on it.
        let fraction = if scale.0 < scale.1 { rng.gen_range(scale.0..scale.1) } else { scale.0 };
        let target_area = area * fraction;
        let aspect = if log_lo < log_hi { rng.gen_range(log_lo..log_hi) } else { log_lo }.exp();
        let w = (target_area * aspect).sqrt().round_ties_even() as usize;
        let h = (target_area / aspect).sqrt().round_ties_even() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return CropBox { top, left, height: h, width: w };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (width, ((width as f64 / ratio.0).round_ties_even() as usize).min(height))
    } else if in_ratio > ratio.1 {
        (((height as f64 * ratio.1).round_ties_even() as usize).min(width), height)
    } else {
        (width, height)
    };
    CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

/// `F.resized_crop`: crop, then bilinear resize to `size × size`.
pub fn resized_crop(img: &Image, b: CropBox, size: usize) -> Image {
    resize_crop_bilinear(img, b, size, size)
}

/// Mirror left–right.
pub fn hflip(img: &mut Image) {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
}

/// `F.resize(img, size)` with an int: the shorter side becomes `size`, the longer one keeps the
/// aspect ratio (truncated, as torchvision computes it).
pub fn resize_shorter_side(img: &Image, size: usize) -> Image {
    let (w, h) = (img.width as f64, img.height as f64);
    let (new_w, new_h) =
        if w <= h { (size, (size as f64 * h / w) as usize) } else { ((size as f64 * w / h) as usize, size) };
    resize_bilinear(img, new_w, new_h)
}

/// `F.center_crop` to `height × width`, zero-padding first when the image is smaller.
pub fn center_crop(img: &Image, height: usize, width: usize) -> Image {
    let mut src = std::borrow::Cow::Borrowed(img);
    if width > img.width || height > img.height {
        let pad_left = width.saturating_sub(img.width) / 2;
        let pad_top = height.saturating_sub(img.height) / 2;
        let (pw, ph) = (img.width.max(width), img.height.max(height));
        let mut padded = Image::filled(pw, ph, 0);
        for y in 0..img.height {
            let dst = ((y + pad_top) * pw + pad_left) * 3;
            padded.data[dst..dst + img.width * 3].copy_from_slice(img.row(y));
        }
        src = std::borrow::Cow::Owned(padded);
    }
    let top = ((src.height - height) as f64 / 2.0).round_ties_even() as usize;
    let left = ((src.width - width) as f64 / 2.0).round_ties_even() as usize;
    src.crop(left, top, width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_scale_and_ratio_give_the_whole_square_image() {
        let mut rng = crate::data::augment::sample_rng(0, 0, 0, 0);
        let b = random_resized_crop_box(32, 32, (1.0, 1.0), (1.0, 1.0), &mut rng);
        assert_eq!(b, CropBox { top: 0, left: 0, height: 32, width: 32 });
    }
}
