//! Decoded images held in memory as u8 (CIFAR-size datasets): N × H × W × C, channels last, the
//! layout PIL and the augmentations use.

/// A set of same-sized u8 images with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct InMemoryImages {
    pub pixels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub labels: Vec<i64>,
}

impl InMemoryImages {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Pixels of image `i`, H × W × C.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Appends another set of the same geometry.
    pub fn extend(&mut self, other: InMemoryImages) {
        debug_assert_eq!((self.height, self.width, self.channels), (other.height, other.width, other.channels));
        self.pixels.extend_from_slice(&other.pixels);
        self.labels.extend(other.labels);
    }

    /// Per-channel mean and standard deviation of the pixels scaled to [0, 1] (population std).
    pub fn channel_stats(&self) -> (Vec<f64>, Vec<f64>) {
        let c = self.channels;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for px in self.pixels.chunks_exact(c) {
            for (k, &v) in px.iter().enumerate() {
                let x = v as f64 / 255.0;
                sum[k] += x;
                sq[k] += x * x;
            }
        }
        let n = (self.pixels.len() / c) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq.iter().zip(&mean).map(|(q, m)| (q / n - m * m).max(0.0).sqrt()).collect();
        (mean, std)
    }
}

/// CHW rows (as the CIFAR files store them) to HWC.
pub fn chw_to_hwc(chw: &[u8], channels: usize, height: usize, width: usize) -> Vec<u8> {
    let plane = height * width;
    let mut out = vec![0u8; chw.len()];
    for (p, px) in out.chunks_exact_mut(channels).enumerate() {
        for (k, v) in px.iter_mut().enumerate() {
            *v = chw[k * plane + p];
        }
    }
    out
}
