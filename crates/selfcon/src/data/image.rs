//! One decoded RGB image (8-bit, H × W × 3, rows top to bottom): what augmentation works on,
//! like a PIL image in mode "RGB".

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB triplets.
    pub data: Vec<u8>,
}

impl Image {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width * height * 3, "RGB image data must be width × height × 3 bytes");
        Image { width, height, data }
    }

    pub fn filled(width: usize, height: usize, value: u8) -> Self {
        Image { width, height, data: vec![value; width * height * 3] }
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
        Image { width, height, data }
    }
}
