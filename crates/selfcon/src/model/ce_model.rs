//! The 1-stage model of `main_ce.py`: the encoder with its exits, a classifier on the backbone
//! (`fc`) and one per exit (`sub_fc.{j}`), plus the auxiliary projections of `--method selfcon`:
//! a trainable one per exit (`sub_proj.{j}`) and a frozen, randomly initialised one on the backbone
//! (`proj`). (The official module names of this model are not part of the reference; these are
//! ours.)

use tch::{nn, Tensor};

use super::config::ModelConfig;
use super::encoder::Encoder;
use super::layers::{l2_normalize, Linear};
use crate::error::{Error, Result};

#[derive(Debug)]
pub struct CeOutput {
    pub logits: Tensor,
    pub exit_logits: Vec<Tensor>,
    /// Normalised auxiliary features: frozen projection of the backbone, trainable ones of the exits.
    pub projection: Tensor,
    pub exit_projections: Vec<Tensor>,
}

#[derive(Debug)]
pub struct CeModel {
    encoder: Encoder,
    fc: Linear,
    sub_fc: Vec<Linear>,
    sub_proj: Vec<Linear>,
    proj: Linear,
}

impl CeModel {
    pub fn new(p: &nn::Path, config: &ModelConfig, num_classes: i64, dim_out: i64) -> Result<Self> {
        config.validate()?;
        if dim_out < 1 {
            return Err(Error::option("dim_out", "must be positive"));
        }
        let d = config.feature_dim();
        let k = config.exits.count();
        let encoder = Encoder::new(&(p / "encoder"), config);
        let fc = Linear::new(&(p / "fc"), d, num_classes);
        let sub_fc = (0..k).map(|j| Linear::new(&(p / "sub_fc" / j), d, num_classes)).collect();
        let sub_proj = (0..k).map(|j| Linear::new(&(p / "sub_proj" / j), d, dim_out)).collect();
        let proj = Linear::new(&(p / "proj"), d, dim_out);
        // Frozen: the official code sets requires_grad False on the backbone's projection.
        let _ = proj.weight.shallow_clone().set_requires_grad(false);
        let _ = proj.bias.shallow_clone().set_requires_grad(false);
        Ok(CeModel { encoder, fc, sub_fc, sub_proj, proj })
    }

    pub fn forward_t(&self, images: &Tensor, train: bool) -> CeOutput {
        let e = self.encoder.forward_t(images, train);
        CeOutput {
            logits: self.fc.forward(&e.backbone),
            exit_logits: e.exits.iter().zip(&self.sub_fc).map(|(h, fc)| fc.forward(h)).collect(),
            projection: l2_normalize(&self.proj.forward(&e.backbone)),
            exit_projections: e.exits.iter().zip(&self.sub_proj).map(|(h, p)| l2_normalize(&p.forward(h))).collect(),
        }
    }
}
