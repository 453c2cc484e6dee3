//! Decoding for crops: the loader draws each view's crop from the image's header size first, then
//! asks the dataset for only what the crops need — the picture decoded smaller in the DCT domain
//! and limited to the crops' region (see `jpeg_reduced`) — and maps each crop onto what came back.

use super::augment::CropBox;
use super::image::Image;

/// What the crops of one image need from its decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeRequest {
    /// Decode at 1/`reduction` of the size (1, 2, 4 or 8).
    pub reduction: usize,
    /// The part of the picture (in its full-size pixels) the crops lie in; `None`: all of it.
    /// Decoders that cannot limit themselves to it return the whole picture.
    pub region: Option<CropBox>,
}

impl DecodeRequest {
    pub const WHOLE: DecodeRequest = DecodeRequest { reduction: 1, region: None };
}

/// A decoded picture, or part of it, with where it lies in the whole.
#[derive(Debug)]
pub struct CropSource {
    pub image: Image,
    /// The picture's full width and height (what the crops were drawn on).
    pub full: (usize, usize),
    /// The whole picture's size at the decoded scale.
    pub scaled: (usize, usize),
    /// Decoded at 1/`reduction` (1: full size): full-size pixel v lies at v / reduction.
    pub reduction: usize,
    /// Where `image`'s top-left pixel lies in the picture at the decoded scale.
    pub origin: (usize, usize),
}

impl CropSource {
    /// A whole picture decoded at full size.
    pub fn whole(image: Image) -> CropSource {
        let size = (image.width, image.height);
        CropSource { image, full: size, scaled: size, reduction: 1, origin: (0, 0) }
    }

    /// Crop `b` (drawn on the full picture) in `image`'s pixels: its edges divided by the
    /// reduction and rounded (libjpeg's reduced pixel i covers full pixels i·d to (i+1)·d),
    /// shifted by the origin, kept inside and at least one pixel.
    pub fn map(&self, b: CropBox) -> CropBox {
        let d = self.reduction.max(1);
        let edge = |v: usize| (v + d / 2) / d;
        let (left, right) = (edge(b.left), edge(b.left + b.width));
        let (top, bottom) = (edge(b.top), edge(b.top + b.height));
        let left = left.saturating_sub(self.origin.0).min(self.image.width - 1);
        let top = top.saturating_sub(self.origin.1).min(self.image.height - 1);
        let right = right.saturating_sub(self.origin.0).min(self.image.width);
        let bottom = bottom.saturating_sub(self.origin.1).min(self.image.height);
        CropBox { left, top, width: right.saturating_sub(left).max(1), height: bottom.saturating_sub(top).max(1) }
    }
}
