//! JPEG decoding at 1/2, 1/4 or 1/8 of the size in the DCT domain (the reduced inverse DCTs of
//! libjpeg's `scale_denom`): for a random crop that is downscaled to the training size anyway, the
//! decoder then produces a quarter (or less) of the pixels and the resize reads a quarter of them.
//! The result is not torchvision-exact — it is the same crop, filtered differently — so the
//! transform uses it only where the final resize still shrinks (see
//! [`crate::data::augment::TrainTransform::reduction_for`]) and `--full_decode` turns it off.

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

/// Decodes `bytes` (a JPEG of `width × height`) at 1/`denominator` of its size, rounded up, as
/// libjpeg does. `None` when this decoder cannot (CMYK, 16-bit, a header it refuses, an internal
/// panic): the caller then decodes the whole image the usual way, which reports real errors.
pub fn decode_reduced(bytes: &[u8], width: usize, height: usize, denominator: usize) -> Option<Image> {
    if !matches!(denominator, 2 | 4 | 8) {
        return None;
    }
    let (w, h) = (width.div_ceil(denominator), height.div_ceil(denominator));
    let decode = || {
        let mut decoder = jpeg_decoder::Decoder::new(bytes);
        // The reduced image's own bytes and some: a header claiming more is refused.
        decoder.set_max_decoding_buffer_size(w * h * 4 + (1 << 20));
        let (got_w, got_h) = decoder.scale(u16::try_from(w).ok()?, u16::try_from(h).ok()?).ok()?;
        if (got_w as usize, got_h as usize) != (w, h) {
            return None;
        }
        let pixels = decoder.decode().ok()?;
        let format = decoder.info()?.pixel_format;
        let data = match format {
            jpeg_decoder::PixelFormat::RGB24 if pixels.len() == w * h * 3 => pixels,
            jpeg_decoder::PixelFormat::L8 if pixels.len() == w * h => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
            _ => return None,
        };
        Some(Image::new(w, h, data))
    };
    // The decoder panics on a few malformed headers; a worker thread must not.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).ok().flatten()
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
        for d in [2, 4, 8] {
            let img = decode_reduced(&bytes, 101, 67, d).unwrap();
            assert_eq!((img.width, img.height), (101usize.div_ceil(d), 67usize.div_ceil(d)));
        }
        assert!(decode_reduced(&bytes, 101, 67, 3).is_none());
    }
}
