//! JPEG decoding at 1/2, 1/4 or 1/8 of the size in the DCT domain (libjpeg's `scale_denom`),
//! limited to the rows and columns a crop needs (libjpeg-turbo's `jpeg_skip_scanlines` and
//! `jpeg_crop_scanline`, stopping after the region's last row): for a random crop that is
//! shrunk to the training size anyway, the decoder produces a fraction of the pixels and the
//! resize reads a fraction of them. Not torchvision-exact — the same crop, filtered differently —
//! so the transform asks for it only where the final resize still shrinks by 2× or more (see
//! [`crate::data::augment::TrainTransform::decode_request`]), and `--full_decode` turns it off.
//! Whole images are decoded by zune-jpeg (through `image`): faster than this libjpeg built
//! without SIMD, which only wins once it decodes at a reduced scale (`bench decode`).

use std::os::raw::c_int;

use mozjpeg_sys::*;

use super::augment::CropBox;
use super::crop_source::CropSource;
use super::image::Image;

/// Width and height from a baseline or progressive JPEG's frame header, or `None` when `bytes` is
/// not a JPEG (or its header cannot be read): a few hundred bytes are parsed, nothing decoded.
pub fn jpeg_size(bytes: &[u8]) -> Option<(usize, usize)> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut at = 2;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return None;
        }
        let marker = bytes[at + 1];
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        let length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): precision, height, width.
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            let sof = bytes.get(at + 4..at + 9)?;
            let height = u16::from_be_bytes([sof[1], sof[2]]) as usize;
            let width = u16::from_be_bytes([sof[3], sof[4]]) as usize;
            return (width > 0 && height > 0).then_some((width, height));
        }
        if marker == 0xDA || length < 2 {
            return None;
        }
        at += 2 + length;
    }
    None
}

/// libjpeg's fatal error: unwinds to [`decode_region`]'s `catch_unwind` (the `unwinding` build).
unsafe extern "C-unwind" fn error_exit(_: &mut jpeg_common_struct) {
    std::panic::panic_any(JpegFailed);
}

/// A warning (corrupt data libjpeg would paper over with grey): treated as a failure, so the whole
/// decoder, which reports such files properly, gets them.
unsafe extern "C-unwind" fn emit_message(_: &mut jpeg_common_struct, level: c_int) {
    if level < 0 {
        std::panic::panic_any(JpegFailed);
    }
}

struct JpegFailed;

/// The decompressor, destroyed however the decode ends (also while unwinding from an error).
struct Decompress {
    info: jpeg_decompress_struct,
    /// Boxed: `info` points at it.
    errors: Box<jpeg_error_mgr>,
}

impl Drop for Decompress {
    fn drop(&mut self) {
        // SAFETY: created by jpeg_CreateDecompress in `decode_region`; destroyed once, here.
        unsafe { jpeg_destroy_decompress(&mut self.info) };
    }
}

/// Decodes `region` (full-size pixels) of `bytes`, a JPEG of size `full`, at 1/`reduction`.
/// `None` when libjpeg cannot (CMYK, a damaged file, a reduction other than 2, 4, 8): the caller
/// then decodes the whole image the usual way, which reports real errors.
pub fn decode_region(bytes: &[u8], full: (usize, usize), reduction: usize, region: CropBox) -> Option<CropSource> {
    if !matches!(reduction, 2 | 4 | 8) || region.width == 0 || region.height == 0 {
        return None;
    }
    quiet_jpeg_failures();
    let decode = std::panic::AssertUnwindSafe(|| decode_region_unguarded(bytes, full, reduction, region));
    match std::panic::catch_unwind(decode) {
        Ok(source) => source,
        Err(payload) if payload.is::<JpegFailed>() => None,
        // Not libjpeg's: a bug, which must not pass for a file the whole decoder gets instead.
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// A libjpeg failure unwinds as a `JpegFailed` panic that is caught and handled: the panic hook,
/// installed once around whatever hook there was, does not print those.
fn quiet_jpeg_failures() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |panic| {
            if panic.payload().downcast_ref::<JpegFailed>().is_none() {
                previous(panic)
            }
        }));
    });
}

fn decode_region_unguarded(
    bytes: &[u8],
    full: (usize, usize),
    reduction: usize,
    region: CropBox,
) -> Option<CropSource> {
    // SAFETY: the libjpeg calls follow its documented order on one decompressor that lives in
    // `Decompress` (destroyed on every exit); the source buffer outlives it; every row pointer
    // handed to jpeg_read_scanlines points at `stride` writable bytes of `pixels`.
    unsafe {
        let mut d = Decompress { info: std::mem::zeroed(), errors: Box::new(std::mem::zeroed()) };
        d.info.common.err = jpeg_std_error(&mut d.errors);
        d.errors.error_exit = Some(error_exit);
        d.errors.emit_message = Some(emit_message);
        jpeg_CreateDecompress(&mut d.info, JPEG_LIB_VERSION, std::mem::size_of::<jpeg_decompress_struct>());
        jpeg_mem_src(&mut d.info, bytes.as_ptr(), bytes.len() as _);
        jpeg_read_header(&mut d.info, 1);
        if (d.info.image_width as usize, d.info.image_height as usize) != full
            || !matches!(d.info.jpeg_color_space, J_COLOR_SPACE::JCS_YCbCr | J_COLOR_SPACE::JCS_GRAYSCALE)
        {
            return None;
        }
        d.info.scale_num = 1;
        d.info.scale_denom = reduction as _;
        d.info.out_color_space = J_COLOR_SPACE::JCS_RGB;
        jpeg_start_decompress(&mut d.info);
        let scaled = (d.info.output_width as usize, d.info.output_height as usize);
        if d.info.output_components != 3 || scaled.0 == 0 || scaled.1 == 0 {
            return None;
        }
        // The region at the decoded scale (reduced pixel i covers full pixels i·d to (i+1)·d),
        // widened to whole pixels.
        let left = (region.left / reduction).min(scaled.0 - 1);
        let right = (region.left + region.width).div_ceil(reduction).clamp(left + 1, scaled.0);
        let top = (region.top / reduction).min(scaled.1 - 1);
        let bottom = (region.top + region.height).div_ceil(reduction).clamp(top + 1, scaled.1);
        // libjpeg widens the columns to its block boundaries and says where they start.
        let (mut x, mut width) = (left as JDIMENSION, (right - left) as JDIMENSION);
        jpeg_crop_scanline(&mut d.info, &mut x, &mut width);
        if top > 0 && jpeg_skip_scanlines(&mut d.info, top as JDIMENSION) != top as JDIMENSION {
            return None;
        }
        let (width, rows) = (width as usize, bottom - top);
        let stride = width * 3;
        let mut pixels = vec![0u8; stride * rows];
        let mut row = 0;
        while row < rows {
            let mut pointer = pixels[row * stride..].as_mut_ptr();
            if jpeg_read_scanlines(&mut d.info, &mut pointer, 1) != 1 {
                return None;
            }
            row += 1;
        }
        // The rows below the region are never decoded.
        jpeg_abort_decompress(&mut d.info);
        Some(CropSource { image: Image::new(width, rows, pixels), full, scaled, reduction, origin: (x as usize, top) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(width: u32, height: u32, quality: u8) -> Vec<u8> {
        let pixels: Vec<u8> = (0..width * height)
            .flat_map(|i| {
                let (x, y) = (i % width, i / width);
                [(x * 255 / width) as u8, (y * 255 / height) as u8, ((x + y) % 256) as u8]
            })
            .collect();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .encode(&pixels, width, height, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    #[test]
    fn the_header_gives_the_size_and_reduced_sizes_round_up() {
        let bytes = jpeg(101, 67, 90);
        assert_eq!(jpeg_size(&bytes), Some((101, 67)));
        assert_eq!(jpeg_size(b"\x89PNG\r\n"), None);
        assert_eq!(jpeg_size(&bytes[..20]), None);
        let all = CropBox { left: 0, top: 0, width: 101, height: 67 };
        for d in [2, 4, 8] {
            let src = decode_region(&bytes, (101, 67), d, all).unwrap();
            assert_eq!(src.scaled, (101usize.div_ceil(d), 67usize.div_ceil(d)));
            assert_eq!((src.image.width, src.image.height), src.scaled);
            assert_eq!(src.origin, (0, 0));
        }
        assert!(decode_region(&bytes, (101, 67), 3, all).is_none());
        assert!(decode_region(&bytes, (100, 67), 2, all).is_none(), "a size that disagrees with the header");
    }

    #[test]
    fn a_region_is_the_same_pixels_as_the_whole_reduced_picture() {
        let bytes = jpeg(320, 240, 90);
        let all = decode_region(&bytes, (320, 240), 2, CropBox { left: 0, top: 0, width: 320, height: 240 }).unwrap();
        let part =
            decode_region(&bytes, (320, 240), 2, CropBox { left: 100, top: 50, width: 120, height: 90 }).unwrap();
        let (x0, y0) = part.origin;
        assert!(x0 <= 50 && y0 == 25, "{:?}", part.origin);
        assert!(x0 + part.image.width >= 110 && y0 + part.image.height == 70);
        let whole = &all.image;
        let mut differing = 0;
        for y in 0..part.image.height {
            for x in 0..part.image.width {
                let a = &part.image.data[(y * part.image.width + x) * 3..][..3];
                let b = &whole.data[((y0 + y) * whole.width + x0 + x) * 3..][..3];
                differing += (a.iter().zip(b).map(|(p, q)| p.abs_diff(*q)).max().unwrap() > 2) as usize;
            }
        }
        assert_eq!(differing, 0, "the region differs from the same pixels of the whole decode");
    }

    #[test]
    fn damaged_and_foreign_data_give_none() {
        let bytes = jpeg(64, 48, 90);
        let all = CropBox { left: 0, top: 0, width: 64, height: 48 };
        assert!(decode_region(&bytes[..bytes.len() / 2], (64, 48), 2, all).is_none());
        assert!(decode_region(b"\xFF\xD8\xFF\xC0 not really", (64, 48), 2, all).is_none());
        assert!(decode_region(&[], (64, 48), 2, all).is_none());
    }
}
