//! One decoded RGB image (8-bit, H × W × 3, rows top to bottom): what augmentation works on,
//! like a PIL image in mode "RGB".

use std::sync::Arc;

use super::decode_budget::DecodeTicket;

#[derive(Debug)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB triplets.
    pub data: Vec<u8>,
    /// A freshly decoded image's share of the loader workers' decode budget, given back when it
    /// is dropped (images made from it — crops, resizes, clones — hold none).
    pub(crate) hold: Option<Arc<DecodeTicket>>,
}

impl Clone for Image {
    fn clone(&self) -> Self {
        Image { width: self.width, height: self.height, data: self.data.clone(), hold: None }
    }
}

impl PartialEq for Image {
    fn eq(&self, other: &Self) -> bool {
        (self.width, self.height, &self.data) == (other.width, other.height, &other.data)
    }
}

impl Eq for Image {}

impl Image {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width * height * 3, "RGB image data must be width × height × 3 bytes");
        Image { width, height, data, hold: None }
    }

    pub fn filled(width: usize, height: usize, value: u8) -> Self {
        Image::new(width, height, vec![value; width * height * 3])
    }

    /// This freshly decoded image, holding its share of the decode budget until it is dropped.
    pub(crate) fn holding(mut self, ticket: DecodeTicket) -> Self {
        self.hold = Some(Arc::new(ticket));
        self
    }

    /// Bytes of the decode budget this image holds (0 unless freshly decoded).
    pub fn held_decode_bytes(&self) -> u64 {
        self.hold.as_ref().map_or(0, |t| t.bytes())
    }

    pub fn row(&self, y: usize) -> &[u8] {
        &self.data[y * self.width * 3..(y + 1) * self.width * 3]
    }

    /// The `width × height` region whose top-left corner is (`left`, `top`); must lie inside.
    pub fn crop(&self, left: usize, top: usize, width: usize, height: usize) -> Image {
        debug_assert!(left + width <= self.width && top + height <= self.height);
        let mut data = Vec::with_capacity(width * height * 3);
        for y in top..top + height {
            data.extend_from_slice(&self.row(y)[left * 3..(left + width) * 3]);
        }
        Image::new(width, height, data)
    }
}
