//! Projection heads (SPEC §2.3): `Linear(d,d) → ReLU → Linear(d,feat_dim)`, named `0` and `2`
//! as the official `nn.Sequential`.

use tch::{nn, Tensor};

use super::config::{Architecture, Family};
use super::layers::Linear;

#[derive(Debug)]
pub struct ProjectionHead {
    hidden: Linear,
    out: Linear,
}

impl ProjectionHead {
    pub fn new(p: &nn::Path, d: i64, feat_dim: i64) -> Self {
        ProjectionHead { hidden: Linear::new(&(p / "0"), d, d), out: Linear::new(&(p / "2"), d, feat_dim) }
    }

    /// Raw (unnormalised) projection.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.out.forward(&self.hidden.forward(x).relu())
    }
}

/// The linear-evaluation classifier: `Linear(d, n_cls)` (PyTorch default init), or for VGG the
/// official MLP `Linear(d, 512)-ReLU-Dropout(0.5)-Linear(512, n_cls)` (named `0` and `3`).
#[derive(Debug)]
pub enum LinearClassifier {
    Linear(Linear),
    Mlp(Linear, Linear),
}

impl LinearClassifier {
    pub fn new(p: &nn::Path, d: i64, n_classes: i64) -> Self {
        LinearClassifier::Linear(Linear::new(p, d, n_classes))
    }

    /// The classifier the official linear evaluation puts on `arch`'s features.
    pub fn for_architecture(p: &nn::Path, arch: Architecture, d: i64, n_classes: i64) -> Self {
        match arch.family() {
            Family::Vgg => {
                LinearClassifier::Mlp(Linear::new(&(p / "0"), d, 512), Linear::new(&(p / "3"), 512, n_classes))
            }
            _ => LinearClassifier::new(p, d, n_classes),
        }
    }

    /// Parameters of [`LinearClassifier::for_architecture`].
    pub fn param_count(arch: Architecture, d: i64, n_classes: i64) -> i64 {
        match arch.family() {
            Family::Vgg => d * 512 + 512 + 512 * n_classes + n_classes,
            _ => d * n_classes + n_classes,
        }
    }

    /// Logits (dropout active only when `train`).
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Tensor {
        match self {
            LinearClassifier::Linear(linear) => linear.forward(features),
            LinearClassifier::Mlp(hidden, out) => out.forward(&hidden.forward(features).relu().dropout(0.5, train)),
        }
    }

    pub fn forward(&self, features: &Tensor) -> Tensor {
        self.forward_t(features, false)
    }
}
