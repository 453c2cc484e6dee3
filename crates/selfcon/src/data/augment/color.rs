//! Colour operations as torchvision applies them to PIL images: `ImageEnhance` blends
//! (brightness, contrast, saturation), the HSV hue shift, and ITU-R 601-2 greyscale, each with
//! Pillow's integer and single-precision arithmetic.

use crate::data::image::Image;

/// Pillow's RGB → L: (R·19595 + G·38470 + B·7471 + 0x8000) >> 16.
fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `Image.blend(degenerate, img, alpha)`: alpha is a C float; inside [0, 1] Pillow truncates the
/// result, outside it clips to [0, 255] first — which is what Rust's saturating float → u8 cast
/// does in both cases (inside [0, 1] the blend cannot leave [0, 255]).
#[inline(always)]
fn blend_pixel(degenerate: u8, value: u8, alpha: f32) -> u8 {
    let d = degenerate as i32;
    (d as f32 + alpha * (value as i32 - d) as f32) as u8
}

/// Blends every channel with one constant grey (brightness: black; contrast: the mean grey): the
/// result depends on the channel value alone, so 256 blends make a table for the whole image.
fn blend_with_constant(img: &mut Image, factor: f64, grey: u8) {
    let alpha = factor as f32;
    if alpha == 1.0 {
        return;
    }
    let table: [u8; 256] = std::array::from_fn(|v| blend_pixel(grey, v as u8, alpha));
    for v in img.data.iter_mut() {
        *v = table[*v as usize];
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
    let total: u64 = img.data.chunks_exact(3).map(|p| luma(p) as u64).sum();
    let mean = total as f64 / (img.width * img.height) as f64;
    let grey = (mean + 0.5) as u8;
    blend_with_constant(img, factor, grey);
}

/// `ImageEnhance.Color`: blend with the image's own greyscale.
pub fn adjust_saturation(img: &mut Image, factor: f64) {
    let alpha = factor as f32;
    if alpha == 1.0 {
        return;
    }
    // Straight-line per pixel (no table, no branch): the compiler vectorises it.
    for px in img.data.chunks_exact_mut(3) {
        let grey = luma(px);
        for v in px.iter_mut() {
            *v = blend_pixel(grey, *v, alpha);
        }
    }
}

/// `to_grayscale(img, 3)`: the luma repeated in the three channels.
pub fn to_grayscale(img: &mut Image) {
    for px in img.data.chunks_exact_mut(3) {
        px.fill(luma(px));
    }
}

/// torchvision's PIL `adjust_hue`: to HSV (8-bit channels), add `int(factor·255)` to H with
/// uint8 wrap-around, back to RGB. `factor` ∈ [−0.5, 0.5].
pub fn adjust_hue(img: &mut Image, factor: f64) {
    let shift = (factor * 255.0) as i32 as u8;
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked on the line above).
        return unsafe { hue_shift_avx2(&mut img.data, shift) };
    }
    hue_shift(&mut img.data, shift)
}

/// The same loop compiled for AVX2 (every CPU the project supports has it; the check keeps others
/// working): the branch-free per-pixel code below vectorises.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn hue_shift_avx2(data: &mut [u8], shift: u8) {
    hue_shift(data, shift)
}

/// Pixels per block: the per-pixel code runs lane by lane over arrays of this length, which the
/// compiler turns into vector instructions.
const LANES: usize = 16;

#[inline(always)]
fn hue_shift(data: &mut [u8], shift: u8) {
    let mut blocks = data.chunks_exact_mut(3 * LANES);
    for block in &mut blocks {
        let mut rgb = [[0u8; LANES]; 3];
        for (k, px) in block.chunks_exact(3).enumerate() {
            for c in 0..3 {
                rgb[c][k] = px[c];
            }
        }
        let [h, s, v] = rgb_to_hsv_lanes(&rgb);
        let out = hsv_to_rgb_lanes(&std::array::from_fn(|k| h[k].wrapping_add(shift)), &s, &v);
        for (k, px) in block.chunks_exact_mut(3).enumerate() {
            for c in 0..3 {
                px[c] = out[c][k];
            }
        }
    }
    for px in blocks.into_remainder().chunks_exact_mut(3) {
        let [h, s, v] = rgb_to_hsv(px[0], px[1], px[2]);
        px.copy_from_slice(&hsv_to_rgb(h.wrapping_add(shift), s, v));
    }
}

#[inline(always)]
fn rgb_to_hsv_lanes(rgb: &[[u8; LANES]; 3]) -> [[u8; LANES]; 3] {
    let mut out = [[0u8; LANES]; 3];
    for k in 0..LANES {
        let [h, s, v] = rgb_to_hsv(rgb[0][k], rgb[1][k], rgb[2][k]);
        out[0][k] = h;
        out[1][k] = s;
        out[2][k] = v;
    }
    out
}

#[inline(always)]
fn hsv_to_rgb_lanes(h: &[u8; LANES], s: &[u8; LANES], v: &[u8; LANES]) -> [[u8; LANES]; 3] {
    let mut out = [[0u8; LANES]; 3];
    for k in 0..LANES {
        let [r, g, b] = hsv_to_rgb(h[k], s[k], v[k]);
        out[0][k] = r;
        out[1][k] = g;
        out[2][k] = b;
    }
    out
}

/// Pillow's rgb2hsv (single precision where Pillow uses `float`), written without branches or
/// libm calls, with the same results (the tests compare every colour):
/// - (max − x)/cr is 0 for the largest channel and exactly 1 for the smallest, so one division
///   (the middle channel's) serves all three;
/// - Pillow's float difference `bc − gc` equals the double difference rounded to float (both
///   operands are floats ≥ 1/255, so the double difference is exact), which lets all three hue
///   cases share one double expression, evaluated in C's order;
/// - h/6 + 1 lies in [5/6, 2), where `fmod(x, 1.0)` is x − 1 above 1 (exact), and every
///   truncation is of a value ≥ 0.
#[inline(always)]
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let cr = maxc - minc;
    let mid = r + g + b - maxc - minc;
    let m = (maxc - mid) as f32 / cr.max(1) as f32;
    let s = cr as f32 / maxc.max(1) as f32;
    let dist = |x: i32| (if x == maxc { 0.0f32 } else if x == minc { 1.0 } else { m }) as f64;
    let (rc, gc, bc) = (dist(r), dist(g), dist(b));
    let (base, plus, minus) = if r == maxc {
        (0.0, bc, gc)
    } else if g == maxc {
        (2.0, rc, bc)
    } else {
        (4.0, gc, rc)
    };
    let h = (base + plus - minus) as f32;
    let turn = h as f64 / 6.0 + 1.0;
    let h = (if turn >= 1.0 { turn - 1.0 } else { turn }) as f32;
    let clip = |x: f64| (x as i32).clamp(0, 255) as u8;
    let grey = cr == 0;
    [if grey { 0 } else { clip(h as f64 * 255.0) }, if grey { 0 } else { clip(s as f64 * 255.0) }, maxc as u8]
}

/// C's `round` (half away from zero) of a value ≥ 0, clipped to a byte, without the libm call:
/// x − trunc(x) is exact.
#[inline(always)]
fn round_to_byte(x: f64) -> u8 {
    let whole = x as i32;
    (whole + (x - whole as f64 >= 0.5) as i32).clamp(0, 255) as u8
}

/// Pillow's hsv2rgb, branch-free: h·6/255 ≥ 0, so C's `floor` is a truncation; s = 0 makes p, q and
/// t all round to v, which is Pillow's grey case.
#[inline(always)]
fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    let hf = h as f64 * 6.0 / 255.0;
    let i = hf as i32;
    let f = (hf - i as f64) as f32;
    let fs = (s as f64 / 255.0) as f32;
    let vf = v as f64;
    let p = round_to_byte(vf * (1.0 - fs as f64));
    let q = round_to_byte(vf * (1.0 - (fs * f) as f64));
    let t = round_to_byte(vf * (1.0 - fs as f64 * (1.0 - f as f64)));
    // Pillow's switch on i % 6 (i is 6 only for h = 255), as selects.
    let i = if i >= 6 { 0 } else { i };
    let r = if i == 0 || i == 5 { v } else if i == 1 { q } else if i == 4 { t } else { p };
    let g = if i == 0 { t } else if i == 1 || i == 2 { v } else if i == 3 { q } else { p };
    let b = if i == 0 || i == 1 { p } else if i == 2 { t } else if i == 5 { q } else { v };
    [r, g, b]
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
        let mut rng = 0x1234_5678u32;
        let data: Vec<u8> = (0..64 * 48 * 3)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                rng as u8
            })
            .collect();
        let img = Image::new(64, 48, data);
        for factor in [0.6, 0.93, 1.0, 1.4] {
            let mut fast = img.clone();
            adjust_saturation(&mut fast, factor);
            let mut slow = img.clone();
            for px in slow.data.chunks_exact_mut(3) {
                let d = luma(px);
                for v in px.iter_mut() {
                    *v = blend_pixel_pillow(d, *v, factor as f32);
                }
            }
            assert_eq!(fast, slow, "saturation {factor}");
            let mut fast = img.clone();
            adjust_brightness(&mut fast, factor);
            let slow: Vec<u8> = img.data.iter().map(|&v| blend_pixel_pillow(0, v, factor as f32)).collect();
            assert_eq!(fast.data, slow, "brightness {factor}");
        }
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
        assert_eq!(fast.data, slow);
    }
}
