//! Colour operations as torchvision applies them to PIL images: `ImageEnhance` blends
//! (brightness, contrast, saturation), the HSV hue shift, and ITU-R 601-2 greyscale, each with
//! Pillow's integer and single-precision arithmetic.
//!
//! The whole-image loops work on blocks of [`LANES`] pixels split into one array per channel, with
//! straight-line per-pixel code the compiler turns into vector instructions; [`avx2_dispatch`]
//! builds each of them a second time for AVX2.

use crate::data::image::Image;

/// Defines `$name`, which runs `$body` compiled for AVX2 when the CPU has it (every CPU the
/// project supports; the check keeps others working) and the portable build otherwise. The bodies
/// are `#[inline(always)]` so that each build vectorises them for its own instruction set (a
/// closure would not inherit the target feature).
macro_rules! avx2_dispatch {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                // SAFETY: the CPU has AVX2 (checked on the line above).
                return unsafe { avx2($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}
pub(super) use avx2_dispatch;

/// Pixels per block: enough that the loops over a block stay loops, which LLVM's loop vectoriser
/// turns into byte shuffles ([`split`], [`merge`]) and vector arithmetic (short blocks are
/// unrolled first, and the unrolled code moves bytes one by one).
pub(super) const LANES: usize = 256;

/// One block of RGB triplets as three channel arrays.
#[inline(always)]
pub(super) fn split(block: &[u8]) -> [[u8; LANES]; 3] {
    let block: &[u8; 3 * LANES] = block.try_into().unwrap();
    let mut rgb = [[0u8; LANES]; 3];
    for k in 0..LANES {
        for c in 0..3 {
            rgb[c][k] = block[3 * k + c];
        }
    }
    rgb
}

/// Writes three channel arrays back as one block of RGB triplets.
#[inline(always)]
fn merge(block: &mut [u8], rgb: &[[u8; LANES]; 3]) {
    let block: &mut [u8; 3 * LANES] = block.try_into().unwrap();
    for k in 0..LANES {
        for c in 0..3 {
            block[3 * k + c] = rgb[c][k];
        }
    }
}

/// Replaces every RGB triplet of `$data` by `$pixel` (an expression of the three bytes `$r`, `$g`,
/// `$b`): by blocks of [`LANES`] (vectorised), then the remainder one by one. A macro rather than
/// a function taking a closure: the closure's body would be compiled apart, without AVX2, and
/// called per pixel.
macro_rules! map_pixels {
    ($data:expr, |$r:ident, $g:ident, $b:ident| $pixel:expr) => {{
        let mut blocks = $data.chunks_exact_mut(3 * LANES);
        for block in &mut blocks {
            let [r, g, b] = split(block);
            let mut out = [[0u8; LANES]; 3];
            for k in 0..LANES {
                let ($r, $g, $b) = (r[k], g[k], b[k]);
                let px: [u8; 3] = $pixel;
                for c in 0..3 {
                    out[c][k] = px[c];
                }
            }
            merge(block, &out);
        }
        for px in blocks.into_remainder().chunks_exact_mut(3) {
            let ($r, $g, $b) = (px[0], px[1], px[2]);
            px.copy_from_slice(&$pixel);
        }
    }};
}

/// Pillow's RGB → L: (R·19595 + G·38470 + B·7471 + 0x8000) >> 16.
#[inline(always)]
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `Image.blend(degenerate, img, alpha)`: alpha is a C float; inside [0, 1] Pillow truncates the
/// result, outside it clips to [0, 255] first — which is what Rust's saturating float → u8 cast
/// does in both cases (inside [0, 1] the blend cannot leave [0, 255]).
#[inline(always)]
fn blend_pixel(degenerate: u8, value: u8, alpha: f32) -> u8 {
    let d = degenerate as i32;
    saturating_byte(d as f32 + alpha * (value as i32 - d) as f32)
}

/// `x as u8` (clip to [0, 255], NaN to 0, truncate) in operations that vectorise (`clamp` would
/// keep a NaN).
#[allow(clippy::manual_clamp)]
#[inline(always)]
fn saturating_byte(x: f32) -> u8 {
    truncated_byte(x.max(0.0).min(255.0))
}

/// `x as u8` for x ∈ [0, 256): adding 1.5·2^23 to the truncated value leaves it in the low
/// mantissa bits. LLVM leaves the saturating cast scalar; this vectorises.
#[inline(always)]
fn truncated_byte(x: f32) -> u8 {
    (x.trunc() + 12_582_912.0).to_bits() as u8
}

/// Blends every channel with one constant grey (brightness: black; contrast: the mean grey).
fn blend_with_constant(img: &mut Image, factor: f64, grey: u8) {
    let alpha = factor as f32;
    if alpha != 1.0 {
        blend_bytes(&mut img.data, grey, alpha);
    }
}

avx2_dispatch! {
    /// The blend of each byte with `grey`, computed per byte (vectorised, cheaper than a 256-entry
    /// table's byte-by-byte lookups).
    fn blend_bytes(data: &mut [u8], grey: u8, alpha: f32) = blend_bytes_body
}

#[inline(always)]
fn blend_bytes_body(data: &mut [u8], grey: u8, alpha: f32) {
    for v in data.iter_mut() {
        *v = blend_pixel(grey, *v, alpha);
    }
}

/// `Image.blend(degenerate, img, factor)` of two whole images.
pub(super) fn blend(degenerate: &Image, img: &Image, factor: f64) -> Image {
    let alpha = factor as f32;
    let data = degenerate
        .data
        .iter()
        .zip(&img.data)
        .map(|(&d, &v)| {
            if alpha == 1.0 {
                v
            } else if alpha == 0.0 {
                d
            } else {
                blend_pixel(d, v, alpha)
            }
        })
        .collect();
    Image::new(img.width, img.height, data)
}

/// `ImageEnhance.Brightness`: blend with black.
pub fn adjust_brightness(img: &mut Image, factor: f64) {
    blend_with_constant(img, factor, 0);
}

/// `ImageEnhance.Contrast`: blend with the grey of the rounded mean luma.
pub fn adjust_contrast(img: &mut Image, factor: f64) {
    let mean = luma_sum(&img.data) as f64 / (img.width * img.height) as f64;
    let grey = (mean + 0.5) as u8;
    blend_with_constant(img, factor, grey);
}

avx2_dispatch! {
    /// The sum of every pixel's luma.
    fn luma_sum(data: &[u8]) -> u64 = luma_sum_body
}

#[inline(always)]
fn luma_sum_body(data: &[u8]) -> u64 {
    let blocks = data.chunks_exact(3 * LANES);
    let rest: u64 = blocks.remainder().chunks_exact(3).map(|p| luma(p[0], p[1], p[2]) as u64).sum();
    // A block's sum (at most 255·LANES) fits a u32 lane.
    let blocks: u64 = blocks
        .map(|block| {
            let [r, g, b] = split(block);
            (0..LANES).map(|k| luma(r[k], g[k], b[k]) as u32).sum::<u32>() as u64
        })
        .sum();
    blocks + rest
}

/// `ImageEnhance.Color`: blend with the image's own greyscale.
pub fn adjust_saturation(img: &mut Image, factor: f64) {
    let alpha = factor as f32;
    if alpha != 1.0 {
        saturate(&mut img.data, alpha);
    }
}

avx2_dispatch! {
    /// Each pixel's channels blended with its luma.
    fn saturate(data: &mut [u8], alpha: f32) = saturate_body
}

#[inline(always)]
fn saturate_body(data: &mut [u8], alpha: f32) {
    map_pixels!(data, |r, g, b| saturate_pixel(r, g, b, alpha));
}

#[inline(always)]
fn saturate_pixel(r: u8, g: u8, b: u8, alpha: f32) -> [u8; 3] {
    let grey = luma(r, g, b);
    [blend_pixel(grey, r, alpha), blend_pixel(grey, g, alpha), blend_pixel(grey, b, alpha)]
}

/// `to_grayscale(img, 3)`: the luma repeated in the three channels.
pub fn to_grayscale(img: &mut Image) {
    grey(&mut img.data);
}

avx2_dispatch! {
    /// Each pixel replaced by its luma.
    fn grey(data: &mut [u8]) = grey_body
}

#[inline(always)]
fn grey_body(data: &mut [u8]) {
    map_pixels!(data, |r, g, b| [luma(r, g, b); 3]);
}

/// torchvision's PIL `adjust_hue`: to HSV (8-bit channels), add `int(factor·255)` to H with
/// uint8 wrap-around, back to RGB. `factor` ∈ [−0.5, 0.5].
pub fn adjust_hue(img: &mut Image, factor: f64) {
    hue_shift(&mut img.data, (factor * 255.0) as i32 as u8);
}

avx2_dispatch! {
    /// RGB → HSV, H + `shift`, HSV → RGB for each pixel.
    fn hue_shift(data: &mut [u8], shift: u8) = hue_shift_body
}

#[inline(always)]
fn hue_shift_body(data: &mut [u8], shift: u8) {
    map_pixels!(data, |r, g, b| hue_shift_pixel(r, g, b, shift));
}

#[inline(always)]
fn hue_shift_pixel(r: u8, g: u8, b: u8, shift: u8) -> [u8; 3] {
    let [h, s, v] = rgb_to_hsv(r, g, b);
    hsv_to_rgb(h.wrapping_add(shift), s, v)
}

/// An integer-valued f64 in [−2^31, 2^31) as i32, exactly: adding 1.5·2^52 leaves the integer in
/// the low mantissa bits. Unlike the saturating `as i32`, which LLVM leaves scalar, this
/// vectorises.
#[inline(always)]
fn whole(x: f64) -> i32 {
    (x + 6_755_399_441_055_744.0).to_bits() as i32
}

/// Pillow's rgb2hsv (single precision where Pillow uses `float`), written without branches,
/// libm calls or doubles, with the same results (the tests compare every colour):
/// - (max − x)/cr is 0 for the largest channel, exactly 1 for the smallest and m for the middle
///   one, so one division serves all three;
/// - Pillow's h is an integer k plus, minus or without m, exact in double and then rounded to
///   float: one float addition k ± m rounds the same;
/// - Pillow's `fmod(h/6.0 + 1.0, 1.0)` rounded to float is h/6 (+ 1 when negative) in floats:
///   h/6 is a multiple of ulp(h) over 3, so it, and 1 + h/6, is exact on the float grid or at
///   least a third of that grid's step from a rounding boundary — farther than double's or the
///   first float rounding's error reaches;
/// - Pillow truncates h·255 and s·255 in double (exact products); the float products truncate the
///   same: they differ only where 255·x lies just below a whole number n, i.e. for the float
///   just below n/255, which no h or s is;
/// - a grey pixel (cr = 0) gets h = 0 and s = 0, Pillow's grey case.
#[inline(always)]
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let cr = maxc - minc;
    let mid = r + g + b - maxc - minc;
    let m = (maxc - mid) as f32 / cr.max(1) as f32;
    let s = cr as f32 / maxc.max(1) as f32;
    let (base, plus, minus) = if r == maxc {
        (0, b, g)
    } else if g == maxc {
        (2, r, b)
    } else {
        (4, g, r)
    };
    let smallest = |x: i32| (x != maxc && x == minc) as i32;
    let middle = |x: i32| if x != maxc && x != minc { m } else { 0.0 };
    let h = (base + smallest(plus) - smallest(minus)) as f32 + (middle(plus) - middle(minus));
    let h = h / 6.0;
    let h = if h < 0.0 { h + 1.0 } else { h };
    [truncated_byte(h * 255.0), truncated_byte(s * 255.0), maxc as u8]
}

/// Pillow's hsv2rgb, branch-free. Each sextant takes v, p = ⌊v·(1 − s/255)⌉ and one of q
/// (odd sextants) and t (even ones), each C's `round` of v·(1 − x) with a double x: the one that
/// is used is computed, from its own x.
/// - h·6/255 ≥ 0, so C's `floor` is an integer division; f = (6h mod 255)/255 as one float
///   division rounds like Pillow's double quotient minus its integer part rounded to float (the
///   double error is far below the distance of k/255 from a float rounding boundary), and so does
///   s/255 (double rounding of a quotient is harmless when double has ≥ 2·24 + 2 bits);
/// - p: v·s/255 is never a half-integer (2vs is even, 255 odd) and the float error of s/255 is
///   below the 1/510 it stays away from one, so p = v − ⌊v·s/255⌉ in integers;
/// - q (x = fs·f in float) and t (x = fs·(1 − f) in double): Pillow's double expression as it
///   stands, rounded half away from zero with `trunc` (z − trunc(z) is exact, z ≥ 0);
/// - s = 0 makes p, q and t all v, which is Pillow's grey case.
#[inline(always)]
fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    let h6 = h as u32 * 6;
    let i = h6 / 255;
    // Pillow's switch on i % 6 (i is 6 only for h = 255).
    let i = if i >= 6 { 0 } else { i };
    let f = (h6 % 255) as f32 / 255.0;
    let fs = s as f32 / 255.0;
    let v = v as i32;
    let p = v - ((v as u32 * s as u32 + 127) / 255) as i32;
    let x = if i % 2 == 1 { (fs * f) as f64 } else { fs as f64 * (1.0 - f as f64) };
    let z = v as f64 * (1.0 - x);
    let w = whole(z.trunc()) + (z - z.trunc() >= 0.5) as i32;
    // Sextants 0–5: (v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q).
    let r = if i == 0 || i == 5 {
        v
    } else if i == 2 || i == 3 {
        p
    } else {
        w
    };
    let g = if i == 1 || i == 2 {
        v
    } else if i == 4 || i == 5 {
        p
    } else {
        w
    };
    let b = if i == 3 || i == 4 {
        v
    } else if i == 0 || i == 1 {
        p
    } else {
        w
    };
    [r as u8, g as u8, b as u8]
}

#[cfg(test)]
mod tests {
    //! The fast forms above against the straightforward transcription of Pillow's C they replaced
    //! (kept here), over every input: bit-identical, not merely within a grey level.
    use super::*;

    fn blend_pixel_pillow(degenerate: u8, value: u8, alpha: f32) -> u8 {
        let d = degenerate as i32;
        let t = d as f32 + alpha * (value as i32 - d) as f32;
        if (0.0..=1.0).contains(&alpha) {
            t as u8
        } else if t <= 0.0 {
            0
        } else if t >= 255.0 {
            255
        } else {
            t as u8
        }
    }

    fn rgb_to_hsv_pillow(r: u8, g: u8, b: u8) -> [u8; 3] {
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        if maxc == minc {
            return [0, 0, maxc];
        }
        let cr = (maxc - minc) as f32;
        let s = cr / maxc as f32;
        let rc = (maxc - r) as f32 / cr;
        let gc = (maxc - g) as f32 / cr;
        let bc = (maxc - b) as f32 / cr;
        let h: f32 = if r == maxc {
            bc - gc
        } else if g == maxc {
            (2.0 + rc as f64 - bc as f64) as f32
        } else {
            (4.0 + gc as f64 - rc as f64) as f32
        };
        let h = ((h as f64 / 6.0 + 1.0) % 1.0) as f32;
        let clip = |x: f64| (x as i32).clamp(0, 255) as u8;
        [clip(h as f64 * 255.0), clip(s as f64 * 255.0), maxc]
    }

    fn hsv_to_rgb_pillow(h: u8, s: u8, v: u8) -> [u8; 3] {
        if s == 0 {
            return [v, v, v];
        }
        let hf = h as f32 as f64 * 6.0 / 255.0;
        let i = hf.floor() as i32;
        let f = (h as f32 as f64 * 6.0 / 255.0 - i as f32 as f64) as f32;
        let fs = (s as f32 as f64 / 255.0) as f32;
        let vf = v as f32 as f64;
        let round = |x: f64| (x.round() as i32).clamp(0, 255) as u8;
        let p = round(vf * (1.0 - fs as f64));
        let q = round(vf * (1.0 - (fs * f) as f64));
        let t = round(vf * (1.0 - fs as f64 * (1.0 - f as f64)));
        match i % 6 {
            0 => [v, t, p],
            1 => [q, v, p],
            2 => [p, v, t],
            3 => [p, q, v],
            4 => [t, p, v],
            _ => [v, p, q],
        }
    }

    #[test]
    fn hsv_conversions_equal_pillows_on_every_colour() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for c in 0..=255u8 {
                    assert_eq!(rgb_to_hsv(a, b, c), rgb_to_hsv_pillow(a, b, c), "rgb {a} {b} {c}");
                    assert_eq!(hsv_to_rgb(a, b, c), hsv_to_rgb_pillow(a, b, c), "hsv {a} {b} {c}");
                }
            }
        }
    }

    #[test]
    fn blends_equal_pillows_for_every_pair_and_the_jitter_range() {
        // ColorJitter's factors lie in [0.6, 1.4]; RandAugment's in [0.1, 1.9]; the ends and 0.
        let alphas = [0.0f32, 1e-7, 0.1, 0.37, 0.6, 0.999_999, 1.0, 1.000_001, 1.23, 1.4, 1.9, 2.5, -0.5];
        for alpha in alphas {
            for d in 0..=255u8 {
                for v in 0..=255u8 {
                    assert_eq!(blend_pixel(d, v, alpha), blend_pixel_pillow(d, v, alpha), "{d} {v} {alpha}");
                }
            }
        }
    }

    #[test]
    fn whole_image_operations_equal_the_per_pixel_forms() {
        // 67 × 49 pixels: whole blocks of LANES and a remainder.
        let mut rng = 0x1234_5678u32;
        let data: Vec<u8> = (0..67 * 49 * 3)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                rng as u8
            })
            .collect();
        let img = Image::new(67, 49, data);
        assert!(!img.data.len().is_multiple_of(3 * LANES) && img.data.len() > 3 * LANES);
        let total: u64 = img.data.chunks_exact(3).map(|p| luma(p[0], p[1], p[2]) as u64).sum();
        let mean_grey = (total as f64 / (67 * 49) as f64 + 0.5) as u8;
        for factor in [0.6, 0.93, 1.0, 1.4] {
            let mut fast = img.clone();
            adjust_saturation(&mut fast, factor);
            let mut slow = img.clone();
            for px in slow.data.chunks_exact_mut(3) {
                let d = luma(px[0], px[1], px[2]);
                for v in px.iter_mut() {
                    *v = blend_pixel_pillow(d, *v, factor as f32);
                }
            }
            assert_eq!(fast, slow, "saturation {factor}");
            let mut fast = img.clone();
            adjust_brightness(&mut fast, factor);
            let slow: Vec<u8> = img.data.iter().map(|&v| blend_pixel_pillow(0, v, factor as f32)).collect();
            assert_eq!(fast.data, slow, "brightness {factor}");
            let mut fast = img.clone();
            adjust_contrast(&mut fast, factor);
            let slow: Vec<u8> = img.data.iter().map(|&v| blend_pixel_pillow(mean_grey, v, factor as f32)).collect();
            assert_eq!(fast.data, slow, "contrast {factor}");
        }
        let mut fast = img.clone();
        to_grayscale(&mut fast);
        let slow: Vec<u8> = img.data.chunks_exact(3).flat_map(|p| [luma(p[0], p[1], p[2]); 3]).collect();
        assert_eq!(fast.data, slow, "greyscale");
        let mut fast = img.clone();
        adjust_hue(&mut fast, -0.07);
        let shift = (-0.07f64 * 255.0) as i32 as u8;
        let slow: Vec<u8> = img
            .data
            .chunks_exact(3)
            .flat_map(|p| {
                let [h, s, v] = rgb_to_hsv_pillow(p[0], p[1], p[2]);
                hsv_to_rgb_pillow(h.wrapping_add(shift), s, v)
            })
            .collect();
        assert_eq!(fast.data, slow, "hue");
    }

    #[test]
    fn hue_shift_of_every_colour_equals_pillows() {
        // The whole-image path (the AVX2 build where the CPU has it) on all 2^24 colours.
        let data: Vec<u8> = (0..1u32 << 24).flat_map(|c| [(c >> 16) as u8, (c >> 8) as u8, c as u8]).collect();
        let mut img = Image::new(4096, 4096, data);
        adjust_hue(&mut img, 0.1);
        let shift = (0.1f64 * 255.0) as i32 as u8;
        for (c, px) in img.data.chunks_exact(3).enumerate() {
            let [h, s, v] = rgb_to_hsv_pillow((c >> 16) as u8, (c >> 8) as u8, c as u8);
            assert_eq!(px, hsv_to_rgb_pillow(h.wrapping_add(shift), s, v), "rgb {:06x}", c);
        }
    }
}
