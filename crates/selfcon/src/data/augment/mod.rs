//! Augmentation with torchvision's semantics on PIL images (SPEC §3.1–3.2): every deterministic
//! operation reproduces torchvision + Pillow on the same input (tests/integration/augment.rs compares them
//! with reference outputs); random parameters come from a per-sample seeded RNG, so a batch does
//! not depend on how many threads produced it.

mod color;
mod geometry;
mod randaugment;
mod resample;
mod tensor;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use color::{adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, to_grayscale};
pub use geometry::{center_crop, hflip, random_resized_crop_box, resize_shorter_side, resized_crop, CropBox};
pub use randaugment::{RandAugment, RandOp};
pub use resample::resize_bilinear;
pub use tensor::{to_normalized_chw, to_normalized_hwc};

use crate::data::crop_source::{CropSource, DecodeRequest};
use crate::data::image::Image;

/// The RNG of one view of one sample in one epoch: independent of worker scheduling.
pub fn sample_rng(seed: u64, epoch: u64, index: u64, view: u64) -> ChaCha8Rng {
    // SplitMix64 steps decorrelate neighbouring indices.
    let mut z = seed;
    for part in [epoch, index, view] {
        z = splitmix(z ^ splitmix(part));
    }
    ChaCha8Rng::seed_from_u64(z)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `ColorJitter(brightness, contrast, saturation, hue)` wrapped in `RandomApply(p)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorJitter {
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
    pub p: f64,
}

/// One colour operation with its factor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ColorOp {
    Brightness(f64),
    Contrast(f64),
    Saturation(f64),
    Hue(f64),
}

impl ColorOp {
    pub fn apply(self, img: &mut Image) {
        match self {
            ColorOp::Brightness(f) => adjust_brightness(img, f),
            ColorOp::Contrast(f) => adjust_contrast(img, f),
            ColorOp::Saturation(f) => adjust_saturation(img, f),
            ColorOp::Hue(f) => adjust_hue(img, f),
        }
    }
}

impl ColorJitter {
    /// The official pre-training jitter: (0.4, 0.4, 0.4, 0.1) with probability 0.8.
    pub const OFFICIAL: ColorJitter = ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 };

    /// `get_params`: a random order of the four operations and their factors.
    pub fn sample(&self, rng: &mut impl Rng) -> [ColorOp; 4] {
        let mut order = [0usize, 1, 2, 3];
        order.shuffle(rng);
        let factor = |rng: &mut dyn rand::RngCore, x: f64| rng.gen_range((1.0 - x).max(0.0)..=1.0 + x);
        let b = factor(rng, self.brightness);
        let c = factor(rng, self.contrast);
        let s = factor(rng, self.saturation);
        let h = rng.gen_range(-self.hue..=self.hue);
        let ops = [ColorOp::Brightness(b), ColorOp::Contrast(c), ColorOp::Saturation(s), ColorOp::Hue(h)];
        order.map(|i| ops[i])
    }
}

/// The random training transform: [RandAugment →] RandomResizedCrop → flip → [colour jitter →
/// grayscale].
#[derive(Clone, Debug, PartialEq)]
pub struct TrainTransform {
    /// `--randaug`: RandAugment(2, 9) on the source image, before the crop.
    pub randaugment: Option<RandAugment>,
    pub size: usize,
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
    pub jitter: Option<ColorJitter>,
    pub grayscale_p: f64,
    /// Decode JPEGs at 1/2, 1/4 or 1/8 of their size where the crop is that many times larger than
    /// the output (see [`TrainTransform::reduction_for`]); `false` (`--full_decode`) keeps every
    /// pixel torchvision-exact.
    pub reduced_decode: bool,
}

impl TrainTransform {
    /// Pre-training (`main_represent.py`); `weakaug` drops jitter and grayscale.
    pub fn pretrain(size: usize, weakaug: bool) -> Self {
        TrainTransform {
            randaugment: None,
            size,
            scale: (0.2, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            jitter: (!weakaug).then_some(ColorJitter::OFFICIAL),
            grayscale_p: if weakaug { 0.0 } else { 0.2 },
            reduced_decode: true,
        }
    }

    /// Linear evaluation and CE training: crop and flip only.
    pub fn crop_flip(size: usize) -> Self {
        TrainTransform { jitter: None, grayscale_p: 0.0, ..TrainTransform::pretrain(size, true) }
    }

    /// Adds the official `--randaug` step.
    pub fn with_randaugment(self) -> Self {
        TrainTransform { randaugment: Some(RandAugment::OFFICIAL), ..self }
    }

    /// `--full_decode`: every image decoded whole.
    pub fn with_full_decode(self) -> Self {
        TrainTransform { reduced_decode: false, ..self }
    }

    pub fn apply(&self, img: &Image, rng: &mut impl Rng) -> Image {
        let augmented;
        let img = match &self.randaugment {
            Some(ra) => {
                augmented = ra.apply(img, rng);
                &augmented
            }
            None => img,
        };
        let b = self.crop_box(img.width, img.height, rng);
        self.finish(img, b, rng)
    }

    /// Whether the crop can be chosen before decoding (no RandAugment on the whole image first).
    pub fn crops_before_decoding(&self) -> bool {
        self.randaugment.is_none()
    }

    /// The random crop of a `width × height` image (the first draw of [`TrainTransform::apply`]).
    pub fn crop_box(&self, width: usize, height: usize, rng: &mut impl Rng) -> CropBox {
        random_resized_crop_box(width, height, self.scale, self.ratio, rng)
    }

    /// What the crops `boxes` (all views of one image) need decoded: the region holding all of
    /// them, and the largest reduction (1, 2, 4 or 8) that leaves both sides of every reduced crop
    /// at least twice the output size — so the final shrink is still the antialiased bilinear
    /// resize (a reduced IDCT alone is a box filter); 1 when reduced decoding is off.
    pub fn decode_request(&self, boxes: &[CropBox]) -> DecodeRequest {
        let Some(first) = boxes.first().copied() else { return DecodeRequest::WHOLE };
        let smallest = boxes.iter().map(|b| b.width.min(b.height)).min().unwrap_or(0);
        let fits = smallest / (2 * self.size.max(1));
        let reduction = if self.reduced_decode { [8, 4, 2].into_iter().find(|&d| d <= fits).unwrap_or(1) } else { 1 };
        let region = boxes.iter().skip(1).fold(first, |u, b| {
            let (left, top) = (u.left.min(b.left), u.top.min(b.top));
            let right = (u.left + u.width).max(b.left + b.width);
            let bottom = (u.top + u.height).max(b.top + b.height);
            CropBox { left, top, width: right - left, height: bottom - top }
        });
        DecodeRequest { reduction, region: Some(region) }
    }

    /// The rest of [`TrainTransform::apply`] after crop `b` was drawn on the full picture, from
    /// what the decoder made of it (whole, or reduced and limited to the crops' region).
    pub fn finish_from(&self, source: &CropSource, b: CropBox, rng: &mut impl Rng) -> Image {
        self.finish(&source.image, source.map(b), rng)
    }

    fn finish(&self, img: &Image, b: CropBox, rng: &mut impl Rng) -> Image {
        let mut out = resized_crop(img, b, self.size);
        if rng.gen::<f64>() < 0.5 {
            hflip(&mut out);
        }
        if let Some(jitter) = &self.jitter {
            if rng.gen::<f64>() < jitter.p {
                for op in jitter.sample(rng) {
                    op.apply(&mut out);
                }
            }
        }
        if self.grayscale_p > 0.0 && rng.gen::<f64>() < self.grayscale_p {
            to_grayscale(&mut out);
        }
        out
    }
}

/// The test transform: native resolution, or (ImageNet) Resize(256) + CenterCrop(224).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EvalTransform {
    Identity,
    ResizeCenterCrop { resize: usize, crop: usize },
}

impl EvalTransform {
    /// The official test transform of a dataset kind.
    pub fn for_dataset(kind: crate::data::DatasetKind) -> Self {
        match kind {
            crate::data::DatasetKind::ImageNet | crate::data::DatasetKind::ImageNet100 => {
                EvalTransform::ResizeCenterCrop { resize: 256, crop: 224 }
            }
            _ => EvalTransform::Identity,
        }
    }

    /// For `--dataset folder` at training size `size`: resize the shorter side to size/0.875,
    /// centre-crop `size` (the usual ImageNet ratio, 256 → 224).
    pub fn for_folder(size: usize) -> Self {
        EvalTransform::ResizeCenterCrop { resize: (size as f64 / 0.875).round() as usize, crop: size }
    }

    pub fn apply(&self, img: &Image) -> Image {
        match *self {
            EvalTransform::Identity => img.clone(),
            EvalTransform::ResizeCenterCrop { resize, crop } => {
                center_crop(&resize_shorter_side(img, resize), crop, crop)
            }
        }
    }
}
