//! The whole pre-training model (`ConResNet`): encoder with exits, the backbone projection head
//! (`head`) and one head per exit (`sub_heads.{j}`), returning pooled features and L2-normalised
//! projections from a single forward pass.

use tch::{nn, Device, Kind, Tensor};

use super::config::ModelConfig;
use super::encoder::{Encoder, EncoderOutput};
use super::head::ProjectionHead;
use super::layers::{l2_normalize, BatchNormKind};
use crate::error::{Error, Result};

#[derive(Debug)]
pub struct ModelOutput {
    /// Pooled encoder outputs (before the heads).
    pub encoder: EncoderOutput,
    /// Normalised projection of each exit, `[N, feat_dim]`, in exit order.
    pub exit_projections: Vec<Tensor>,
    /// Normalised projection of the backbone, `[N, feat_dim]`.
    pub backbone_projection: Tensor,
}

#[derive(Debug)]
pub struct ConModel {
    config: ModelConfig,
    encoder: Encoder,
    head: ProjectionHead,
    sub_heads: Vec<ProjectionHead>,
}

impl ConModel {
    /// Builds the model under `p` (usually the var store's root), initialised as the official
    /// code, its BatchNorm layers of kind `norm`.
    pub fn new(p: &nn::Path, config: &ModelConfig, norm: BatchNormKind) -> Result<Self> {
        config.validate()?;
        let d = config.feature_dim();
        let encoder = Encoder::new(&(p / "encoder"), config, norm);
        let head = ProjectionHead::new(&(p / "head"), d, config.feat_dim);
        let sh = p / "sub_heads";
        let sub_heads =
            (0..config.exits.count()).map(|j| ProjectionHead::new(&(&sh / j), d, config.feat_dim)).collect();
        Ok(ConModel { config: config.clone(), encoder, head, sub_heads })
    }

    /// A fresh var store on `device` holding a new model (see [`ConModel::new`]). The initial
    /// weights are drawn holding the generator's lock (`engine::with_generator`): a build in
    /// another thread cannot shift the draws of a seeded one.
    pub fn build(config: &ModelConfig, device: Device, norm: BatchNormKind) -> Result<(nn::VarStore, Self)> {
        crate::engine::use_device(device)?;
        crate::engine::with_generator(|| {
            let vs = nn::VarStore::new(device);
            let model = ConModel::new(&vs.root(), config, norm)?;
            Ok((vs, model))
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Encoder only: what linear evaluation uses.
    /// The eval-mode encoder as an ONNX model: input `images` [batch, 3, S, S] (S = the dataset's
    /// image size), outputs `backbone` and `sub_network.{k}` per exit, each [batch, d] — the
    /// tensors [`ConModel::encode`] returns. `variables` name the weights (the var store's).
    pub fn to_onnx(&self, variables: &std::collections::HashMap<String, Tensor>) -> Result<Vec<u8>> {
        let mut g = crate::onnx::OnnxGraph::new(variables);
        let (backbone, exits) = self.encoder.onnx(&mut g, "images")?;
        let d = self.config.feature_dim();
        let mut outputs = vec![(backbone, "backbone".to_string(), d)];
        for (k, e) in exits.into_iter().enumerate() {
            outputs.push((e, format!("sub_network.{k}"), d));
        }
        Ok(g.finish("images", self.config.dataset.image_size(), &outputs))
    }

    pub fn encode(&self, images: &Tensor, train: bool) -> Result<EncoderOutput> {
        self.check_input(images)?;
        self.encoder.forward_t(images, train)
    }

    /// Encoder and heads; `train` switches BatchNorm between batch and running statistics.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<ModelOutput> {
        let encoder = self.encode(images, train)?;
        let exit_projections =
            encoder.exits.iter().zip(&self.sub_heads).map(|(h, head)| l2_normalize(&head.forward(h))).collect();
        let backbone_projection = l2_normalize(&self.head.forward(&encoder.backbone));
        Ok(ModelOutput { encoder, exit_projections, backbone_projection })
    }

    fn check_input(&self, images: &Tensor) -> Result<()> {
        let size = images.size();
        if size.len() != 4 || size[1] != 3 || size[0] < 1 {
            return Err(Error::input(format!("model input must be [N, 3, H, W] with N ≥ 1, got {size:?}")));
        }
        if !matches!(images.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
            return Err(Error::input(format!("model input must be floating point, got {:?}", images.kind())));
        }
        Ok(())
    }
}
