//! Colour operations as torchvision applies them to PIL images: `ImageEnhance` blends
//! (brightness, contrast, saturation), the HSV hue shift, and ITU-R 601-2 greyscale, each with
//! Pillow's integer and single-precision arithmetic.

use crate::data::image::Image;

/// Pillow's RGB → L: (R·19595 + G·38470 + B·7471 + 0x8000) >> 16.
fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `Image.blend(degenerate, img, alpha)`: alpha is a C float; inside [0, 1] the result is
/// truncated, outside it is clipped.
fn blend_pixel(degenerate: u8, value: u8, alpha: f32) -> u8 {
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

fn blend_with(img: &mut Image, factor: f64, degenerate: impl Fn(&[u8], usize) -> u8) {
    let alpha = factor as f32;
    if alpha == 1.0 {
        return;
    }
    for px in img.data.chunks_exact_mut(3) {
        let d: [u8; 3] = [degenerate(px, 0), degenerate(px, 1), degenerate(px, 2)];
        if alpha == 0.0 {
            px.copy_from_slice(&d);
            continue;
        }
        for c in 0..3 {
            px[c] = blend_pixel(d[c], px[c], alpha);
        }
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
    blend_with(img, factor, |_, _| 0);
}

/// `ImageEnhance.Contrast`: blend with the grey of the rounded mean luma.
pub fn adjust_contrast(img: &mut Image, factor: f64) {
    let total: u64 = img.data.chunks_exact(3).map(|p| luma(p) as u64).sum();
    let mean = total as f64 / (img.width * img.height) as f64;
    let grey = (mean + 0.5) as u8;
    blend_with(img, factor, |_, _| grey);
}

/// `ImageEnhance.Color`: blend with the image's own greyscale.
pub fn adjust_saturation(img: &mut Image, factor: f64) {
    blend_with(img, factor, |px, _| luma(px));
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
    for px in img.data.chunks_exact_mut(3) {
        let [h, s, v] = rgb_to_hsv(px[0], px[1], px[2]);
        let rgb = hsv_to_rgb(h.wrapping_add(shift), s, v);
        px.copy_from_slice(&rgb);
    }
}

/// Pillow's rgb2hsv (single precision where Pillow uses `float`).
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
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
    // As in C: the literals are doubles, so these sums are evaluated in double, then stored as float.
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

/// Pillow's hsv2rgb.
fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
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
