//! Bilinear resizing exactly as Pillow's `Image.resize(..., BILINEAR)` (libImaging/Resample.c):
//! a triangle filter widened by the scale when shrinking (antialiasing), coefficients normalised
//! and rounded to 22-bit fixed point, a horizontal pass rounded to 8 bits, then a vertical pass.

use super::color::avx2_dispatch;
use super::geometry::CropBox;
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

#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes to `width × height` with Pillow's bilinear filter.
pub fn resize_bilinear(img: &Image, width: usize, height: usize) -> Image {
    resize_region_bilinear(img, View::whole(img), width, height)
}

/// `img.crop(region)` resized to `width × height` (torchvision's crop, then Pillow's resize: the
/// filter never reads outside the region), without copying the region out first.
pub fn resize_crop_bilinear(img: &Image, region: CropBox, width: usize, height: usize) -> Image {
    let view = View { img, left: region.left, top: region.top, width: region.width, height: region.height };
    resize_region_bilinear(img, view, width, height)
}

fn resize_region_bilinear(img: &Image, view: View, width: usize, height: usize) -> Image {
    let resized_width = (width != view.width).then(|| horizontal(view, width));
    match resized_width {
        Some(narrow) if height != view.height => vertical(View::whole(&narrow), height),
        Some(narrow) => narrow,
        None if height != view.height => vertical(view, height),
        None if view.width == img.width && view.height == img.height => img.clone(),
        None => img.crop(view.left, view.top, view.width, view.height),
    }
}

/// A rectangle of an image that a pass reads.
#[derive(Clone, Copy)]
struct View<'a> {
    img: &'a Image,
    left: usize,
    top: usize,
    width: usize,
    height: usize,
}

impl<'a> View<'a> {
    fn whole(img: &'a Image) -> Self {
        View { img, left: 0, top: 0, width: img.width, height: img.height }
    }

    #[inline(always)]
    fn row(&self, y: usize) -> &'a [u8] {
        &self.img.row(self.top + y)[self.left * 3..(self.left + self.width) * 3]
    }
}

// Each pass runs compiled for AVX2 where the CPU has it: the integer multiply-adds vectorise 8
// lanes wide.
avx2_dispatch! {
    fn horizontal(img: View, width: usize) -> Image = horizontal_pass
}

avx2_dispatch! {
    fn vertical(img: View, height: usize) -> Image = vertical_pass
}

/// Rows filtered together by the horizontal pass.
const ROW_BLOCK: usize = 8;
/// One column of a block: each row's pixel as 4 bytes (RGB and one unused byte), so that a
/// column is 32 lanes: four full AVX2 vectors, no remainder for scalar code.
const LANES: usize = ROW_BLOCK * 4;

/// Pillow's horizontal pass, eight rows at a time: the block is first regrouped so that each
/// column's 8 pixels lie side by side (4 bytes each), which turns every tap into one 32-lane
/// multiply-add (vector instructions) instead of three scalar ones. Same integer sums in the same
/// order; the fourth byte of each pixel is filtered too and thrown away.
#[inline(always)]
fn horizontal_pass(img: View, width: usize) -> Image {
    let t = taps(img.width, width);
    let mut data = vec![0u8; width * img.height * 3];
    if img.width == 0 {
        return Image::new(width, img.height, data);
    }
    let mut columns = vec![0u8; img.width * LANES];
    let mut bytes = vec![0u8; width * LANES];
    for y0 in (0..img.height).step_by(ROW_BLOCK) {
        let rows = ROW_BLOCK.min(img.height - y0);
        // A short last block repeats its last row (filtered and thrown away).
        let block: [&[u8]; ROW_BLOCK] = std::array::from_fn(|r| img.row(y0 + r.min(rows - 1)));
        // Column by column (each column's 32 bytes written together, from 8 four-byte loads):
        // each pixel with the next pixel's first byte; the last column, with nothing after it,
        // gets its 3 bytes alone.
        let last = img.width - 1;
        for (x, column) in columns.chunks_exact_mut(LANES).enumerate().take(last) {
            let column: &mut [u8; LANES] = column.try_into().unwrap();
            for (r, row) in block.iter().enumerate() {
                column[r * 4..r * 4 + 4].copy_from_slice(&row[x * 3..x * 3 + 4]);
            }
        }
        for (r, row) in block.iter().enumerate() {
            columns[last * LANES + r * 4..last * LANES + r * 4 + 3].copy_from_slice(&row[last * 3..]);
        }
        for (xx, &(xmin, n)) in t.bounds.iter().enumerate() {
            let k = &t.weights[xx * t.ksize..xx * t.ksize + n];
            let mut acc = [1i32 << (PRECISION_BITS - 1); LANES];
            // The taps' columns, sliced once: no bounds check inside the multiply-adds.
            let window = &columns[xmin * LANES..(xmin + n) * LANES];
            for (&w, column) in k.iter().zip(window.chunks_exact(LANES)) {
                let column: &[u8; LANES] = column.try_into().unwrap();
                for (a, &p) in acc.iter_mut().zip(column) {
                    *a += p as i32 * w;
                }
            }
            // Clipped all at once (vectorised; `acc.map` would be an out-of-line call), kept per
            // column until the block is done.
            let out: &mut [u8; LANES] = (&mut bytes[xx * LANES..(xx + 1) * LANES]).try_into().unwrap();
            for (o, &a) in out.iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
        for r in 0..rows {
            let out_row = &mut data[(y0 + r) * width * 3..(y0 + r + 1) * width * 3];
            for (px, column) in out_row.chunks_exact_mut(3).zip(bytes.chunks_exact(LANES)) {
                px.copy_from_slice(&column[r * 4..r * 4 + 3]);
            }
        }
    }
    Image::new(width, img.height, data)
}

#[inline(always)]
fn vertical_pass(img: View, height: usize) -> Image {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pixel-at-a-time transcription of Pillow's horizontal pass.
    fn horizontal_pillow(img: &Image, width: usize) -> Image {
        let t = taps(img.width, width);
        let mut data = vec![0u8; width * img.height * 3];
        for y in 0..img.height {
            let row = img.row(y);
            for (xx, &(xmin, n)) in t.bounds.iter().enumerate() {
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                for (i, &w) in t.weights[xx * t.ksize..xx * t.ksize + n].iter().enumerate() {
                    for c in 0..3 {
                        acc[c] += row[(xmin + i) * 3 + c] as i32 * w;
                    }
                }
                for c in 0..3 {
                    data[(y * width + xx) * 3 + c] = clip8(acc[c]);
                }
            }
        }
        Image::new(width, img.height, data)
    }

    #[test]
    fn the_blocked_horizontal_pass_equals_pillows_pixel_by_pixel_pass() {
        let mut state = 0x9E37_79B9u32;
        for (w, h, out) in [(37, 19, 11), (300, 17, 224), (5, 8, 9), (224, 9, 224), (1, 3, 4), (513, 1, 7)] {
            let data: Vec<u8> = (0..w * h * 3)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            let img = Image::new(w, h, data);
            assert_eq!(horizontal(View::whole(&img), out), horizontal_pillow(&img, out), "{w}×{h} → {out}");
        }
    }

    #[test]
    fn resizing_a_region_equals_cropping_then_resizing() {
        let data: Vec<u8> = (0..61 * 47 * 3).map(|i| (i * 37 % 251) as u8).collect();
        let img = Image::new(61, 47, data);
        for (left, top, w, h, out_w, out_h) in [
            (0, 0, 61, 47, 20, 20),
            (5, 7, 30, 20, 12, 12),
            (13, 0, 48, 47, 48, 10),
            (2, 3, 9, 11, 9, 11),
            (40, 30, 21, 17, 30, 30),
        ] {
            let region = CropBox { left, top, width: w, height: h };
            let expected = resize_bilinear(&img.crop(left, top, w, h), out_w, out_h);
            assert_eq!(resize_crop_bilinear(&img, region, out_w, out_h), expected, "{region:?} → {out_w}×{out_h}");
        }
    }
}
