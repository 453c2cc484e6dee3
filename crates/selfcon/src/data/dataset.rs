//! The dataset interface the loader reads: a length, labels, and one decoded image per index.

use super::crop_source::{CropSource, DecodeRequest};
use super::image::Image;
use super::images::InMemoryImages;
use crate::error::Result;

pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn num_classes(&self) -> i64;

    fn label(&self, index: usize) -> i64;

    /// The class names in label order (their numbers where the format has no names).
    fn class_names(&self) -> Vec<String> {
        (0..self.num_classes()).map(|c| c.to_string()).collect()
    }

    /// Decodes image `index` (RGB, 8-bit); streamed datasets read the file here.
    fn image(&self, index: usize) -> Result<Image>;

    /// The encoded file of image `index` as it is stored, where the dataset reads files and
    /// applies nothing before the transform (`None` otherwise): `prepare` packs such JPEGs as
    /// they are.
    fn file_bytes(&self, _index: usize) -> Option<Result<Vec<u8>>> {
        None
    }

    /// Decodes image `index` for crops: `plan` is given the full width and height (before any
    /// pixel is decoded, where the format allows) and answers what the crops need; the result
    /// may be smaller (JPEG's DCT-domain scaling) and only the region asked for, or the whole
    /// picture. `plan` is called exactly once.
    fn image_for_crops(&self, index: usize, plan: &mut dyn FnMut(usize, usize) -> DecodeRequest) -> Result<CropSource> {
        let image = self.image(index)?;
        plan(image.width, image.height);
        Ok(CropSource::whole(image))
    }
}

/// An in-memory dataset with its class count.
#[derive(Clone, Debug)]
pub struct MemoryDataset {
    pub images: InMemoryImages,
    pub num_classes: i64,
}

impl Dataset for MemoryDataset {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn num_classes(&self) -> i64 {
        self.num_classes
    }

    fn label(&self, index: usize) -> i64 {
        self.images.labels[index]
    }

    fn image(&self, index: usize) -> Result<Image> {
        let set = &self.images;
        let pixels = set.image(index);
        let data = match set.channels {
            3 => pixels.to_vec(),
            1 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
            c => return Err(crate::error::Error::input(format!("in-memory images with {c} channels are not RGB"))),
        };
        Ok(Image::new(set.width, set.height, data))
    }
}
