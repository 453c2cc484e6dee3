//! Projection heads (SPEC §2.3): `Linear(d,d) → ReLU → Linear(d,feat_dim)`, named `0` and `2`
//! as the official `nn.Sequential`.

use tch::{nn, Tensor};

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

/// The linear-evaluation classifier `Linear(d, n_cls)` (PyTorch default init).
#[derive(Debug)]
pub struct LinearClassifier {
    linear: Linear,
}

impl LinearClassifier {
    pub fn new(p: &nn::Path, d: i64, n_classes: i64) -> Self {
        LinearClassifier { linear: Linear::new(p, d, n_classes) }
    }

    pub fn forward(&self, features: &Tensor) -> Tensor {
        self.linear.forward(features)
    }
}
