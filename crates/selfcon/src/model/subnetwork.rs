//! Sub-networks ("exits", SPEC §2.2): attached after backbone stage k+1, they turn that stage's
//! feature map into a vector as wide as the backbone output. Parameters live under
//! `encoder.selfcon_layer.{k}` (indexed by exit candidate, as the official ModuleList with
//! `None` holes).

use tch::{nn, Tensor};

use super::config::{Architecture, ModelConfig, SubNetworkSize};
use super::layers::{global_avg_pool, global_avg_pool_onnx, BatchNormKind, Linear};
use super::resnet::{Stage, STAGE_PLANES};
use crate::error::Result;
use crate::onnx::OnnxGraph;

/// The sub-network of every enabled exit of `config`, each built by `build(path, k)` under
/// `{p}/selfcon_layer/{k}` (the official ModuleList index) and paired with its exit index `k`.
pub(super) fn build_exits<T>(
    p: &nn::Path,
    config: &ModelConfig,
    build: impl Fn(&nn::Path, usize) -> T,
) -> Vec<(usize, T)> {
    let sp = p / "selfcon_layer";
    config.exits.enabled().into_iter().map(|k| (k, build(&(&sp / k), k))).collect()
}

#[derive(Debug)]
pub enum SubNetwork {
    /// `fc`: global-average-pool, then one Linear (no BN or activation after it).
    Fc(Linear),
    /// `small`/`same`/`large`: fresh copies of the remaining stages, then global-average-pool.
    Stages(Vec<Stage>),
}

impl SubNetwork {
    /// The sub-network for the exit after backbone stage `k + 1` (k = 0, 1, 2).
    pub fn new(p: &nn::Path, arch: Architecture, k: usize, size: SubNetworkSize, norm: BatchNormKind) -> Self {
        let block = arch.block();
        let in_channels = STAGE_PLANES[k] * block.expansion();
        match size {
            SubNetworkSize::Fc => SubNetwork::Fc(Linear::new(p, in_channels, arch.feature_dim())),
            _ => {
                let blocks = arch.blocks_per_stage();
                let mut c_in = in_channels;
                let stages = (k + 1..4)
                    .enumerate()
                    .map(|(j, stage)| {
                        let n = size.replicated_blocks(blocks[stage]);
                        let s = Stage::new(&(p / j), block, c_in, STAGE_PLANES[stage], n, 2, norm);
                        c_in = s.out_channels();
                        s
                    })
                    .collect();
                SubNetwork::Stages(stages)
            }
        }
    }

    pub(crate) fn onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        match self {
            SubNetwork::Fc(linear) => {
                let pooled = global_avg_pool_onnx(g, x);
                linear.onnx(g, &pooled)
            }
            SubNetwork::Stages(stages) => {
                let h = stages.iter().try_fold(x.to_string(), |h, s| s.onnx(g, &h))?;
                Ok(global_avg_pool_onnx(g, &h))
            }
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(match self {
            SubNetwork::Fc(linear) => linear.forward(&global_avg_pool(x)),
            SubNetwork::Stages(stages) => {
                global_avg_pool(&stages.iter().try_fold(x.shallow_clone(), |h, s| s.forward_t(&h, train))?)
            }
        })
    }
}
