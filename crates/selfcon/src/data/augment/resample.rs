//! Bilinear resizing exactly as Pillow's `Image.resize(..., BILINEAR)` (libImaging/Resample.c):
//! a triangle filter widened by the scale when shrinking (antialiasing), coefficients normalised
//! and rounded to 22-bit fixed point, a horizontal pass rounded to 8 bits, then a vertical pass.

use crate::data::image::Image;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input index, number of taps, and `ksize` fixed-point weights.
struct Taps {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the bilinear filter's support is 1
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) cast truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut total = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            *kx = triangle((x as f64 + xmin as f64 - center + 0.5) / filterscale);
            total += *kx;
        }
        for (x, kx) in k.iter().enumerate().take(xmax) {
            let w = if total != 0.0 { kx / total } else { *kx };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    Taps { ksize, bounds, weights }
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes to `width × height` with Pillow's bilinear filter.
pub fn resize_bilinear(img: &Image, width: usize, height: usize) -> Image {
    let mut current = std::borrow::Cow::Borrowed(img);
    if width != img.width {
        current = std::borrow::Cow::Owned(horizontal(&current, width));
    }
    if height != img.height {
        current = std::borrow::Cow::Owned(vertical(&current, height));
    }
    current.into_owned()
}

fn horizontal(img: &Image, width: usize) -> Image {
    let t = taps(img.width, width);
    let mut data = vec![0u8; width * img.height * 3];
    for y in 0..img.height {
        let row = img.row(y);
        let out = &mut data[y * width * 3..(y + 1) * width * 3];
        for (xx, &(xmin, n)) in t.bounds.iter().enumerate() {
            let k = &t.weights[xx * t.ksize..xx * t.ksize + n];
            let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
            for (i, &w) in k.iter().enumerate() {
                let p = &row[(xmin + i) * 3..(xmin + i) * 3 + 3];
                for c in 0..3 {
                    acc[c] += p[c] as i32 * w;
                }
            }
            for c in 0..3 {
                out[xx * 3 + c] = clip8(acc[c]);
            }
        }
    }
    Image::new(width, img.height, data)
}

fn vertical(img: &Image, height: usize) -> Image {
    let t = taps(img.height, height);
    let stride = img.width * 3;
    let mut data = vec![0u8; stride * height];
    let mut acc = vec![0i32; stride];
    for (yy, &(ymin, n)) in t.bounds.iter().enumerate() {
        acc.fill(1 << (PRECISION_BITS - 1));
        for (i, &w) in t.weights[yy * t.ksize..yy * t.ksize + n].iter().enumerate() {
            for (a, &p) in acc.iter_mut().zip(img.row(ymin + i)) {
                *a += p as i32 * w;
            }
        }
        for (o, &a) in data[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    Image::new(img.width, height, data)
}
