//! The 1-stage model of `main_ce.py` (the official `CEResNet` and its VGG/WRN/EfficientNet
//! siblings), under the official state-dict keys: the encoder with its exits, a classifier on the
//! backbone (`l_fc`) and one per exit (`logit_fc.{j}`); with `--method selfcon` also the auxiliary
//! projections — a trainable one per exit (`feat_fc.{j}`) and a frozen, randomly initialised one
//! on the backbone (`f_fc`). The other methods have no projections (nor their parameters).

use tch::{nn, Tensor};

use super::config::ModelConfig;
use super::encoder::Encoder;
use super::layers::{l2_normalize, BatchNormKind, Linear};
use crate::error::{Error, Result};

#[derive(Debug)]
pub struct CeOutput {
    pub logits: Tensor,
    pub exit_logits: Vec<Tensor>,
    /// With projections: the normalised auxiliary features — the frozen projection of the
    /// backbone, then the trainable ones of the exits.
    pub projections: Option<(Tensor, Vec<Tensor>)>,
}

/// `feat_fc.{j}` per exit and the frozen `f_fc`.
#[derive(Debug)]
struct Projections {
    feat_fc: Vec<Linear>,
    f_fc: Linear,
}

#[derive(Debug)]
pub struct CeModel {
    encoder: Encoder,
    logit_fc: Vec<Linear>,
    l_fc: Linear,
    projections: Option<Projections>,
}

impl CeModel {
    /// `with_projections`: the auxiliary projections of `--method selfcon`; `norm`: the kind of
    /// every BatchNorm layer.
    pub fn new(
        p: &nn::Path,
        config: &ModelConfig,
        num_classes: i64,
        dim_out: i64,
        with_projections: bool,
        norm: BatchNormKind,
    ) -> Result<Self> {
        config.validate()?;
        if dim_out < 1 {
            return Err(Error::option("dim_out", "must be positive"));
        }
        let d = config.feature_dim();
        let k = config.exits.count();
        // Registration order of the official module (it fixes `model.parameters()` order, which
        // the official optimizer state refers to by index).
        let encoder = Encoder::new(&(p / "encoder"), config, norm);
        let logit_fc = (0..k).map(|j| Linear::new(&(p / "logit_fc" / j), d, num_classes)).collect();
        let l_fc = Linear::new(&(p / "l_fc"), d, num_classes);
        let projections = with_projections.then(|| {
            let feat_fc = (0..k).map(|j| Linear::new(&(p / "feat_fc" / j), d, dim_out)).collect();
            let f_fc = Linear::new(&(p / "f_fc"), d, dim_out);
            // Frozen: the official code sets requires_grad False on the backbone's projection.
            let _ = f_fc.weight.shallow_clone().set_requires_grad(false);
            let _ = f_fc.bias.shallow_clone().set_requires_grad(false);
            Projections { feat_fc, f_fc }
        });
        Ok(CeModel { encoder, logit_fc, l_fc, projections })
    }

    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<CeOutput> {
        let e = self.encoder.forward_t(images, train)?;
        Ok(CeOutput {
            logits: self.l_fc.forward(&e.backbone),
            exit_logits: e.exits.iter().zip(&self.logit_fc).map(|(h, fc)| fc.forward(h)).collect(),
            projections: self.projections.as_ref().map(|p| {
                (
                    l2_normalize(&p.f_fc.forward(&e.backbone)),
                    e.exits.iter().zip(&p.feat_fc).map(|(h, fc)| l2_normalize(&fc.forward(h))).collect(),
                )
            }),
        })
    }
}
