//! A view of some indices of another dataset (the `--val_split` hold-out).

use std::sync::Arc;

use rand::seq::SliceRandom;

use super::augment::sample_rng;
use super::dataset::Dataset;
use super::image::Image;
use crate::error::Result;

pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Self {
        Subset { inner, indices }
    }

    /// `n` samples of `set` drawn by a seeded permutation (kept in index order).
    pub fn sample(set: &Arc<dyn Dataset>, n: usize, seed: u64) -> Subset {
        let mut order: Vec<usize> = (0..set.len()).collect();
        order.shuffle(&mut sample_rng(seed, u64::MAX - 2, 0, 0));
        order.truncate(n.min(set.len()));
        order.sort_unstable();
        Subset::new(set.clone(), order)
    }

    /// Splits `set` into (train, held-out) with `fraction` held out, by a seeded permutation.
    pub fn split(set: &Arc<dyn Dataset>, fraction: f64, seed: u64) -> (Subset, Subset) {
        let mut order: Vec<usize> = (0..set.len()).collect();
        order.shuffle(&mut sample_rng(seed, u64::MAX - 1, 0, 0));
        let held = ((set.len() as f64) * fraction).round() as usize;
        let (val, train) = order.split_at(held.min(set.len()));
        let (mut train, mut val) = (train.to_vec(), val.to_vec());
        train.sort_unstable();
        val.sort_unstable();
        (Subset::new(set.clone(), train), Subset::new(set.clone(), val))
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn num_classes(&self) -> i64 {
        self.inner.num_classes()
    }

    fn label(&self, index: usize) -> i64 {
        self.inner.label(self.indices[index])
    }

    fn image(&self, index: usize) -> Result<Image> {
        self.inner.image(self.indices[index])
    }

    fn class_names(&self) -> Vec<String> {
        self.inner.class_names()
    }

    fn file_bytes(&self, index: usize) -> Option<Result<Vec<u8>>> {
        self.inner.file_bytes(self.indices[index])
    }

    fn image_for_crops(
        &self,
        index: usize,
        plan: &mut dyn FnMut(usize, usize) -> crate::data::DecodeRequest,
    ) -> Result<crate::data::CropSource> {
        self.inner.image_for_crops(self.indices[index], plan)
    }
}
