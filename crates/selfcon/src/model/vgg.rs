//! VGG-13/16 encoders with and without BatchNorm (SPEC §2.4): torchvision's configurations B and D
//! cut after each max-pool into `block1..block5` (64, 128, 256, 512, 512 channels), global average
//! pooling of block5 (d = 512), exits after block1..block4.

use tch::{nn, Tensor};

use super::config::{Architecture, ModelConfig, SubNetworkSize};
use super::encoder::EncoderOutput;
use super::layers::{global_avg_pool, BatchNorm2d, BatchNormKind, Conv2d, ConvShape, Linear};
use super::subnetwork::build_exits;
use crate::error::Result;

const BLOCK_WIDTHS: [i64; 5] = [64, 128, 256, 512, 512];

/// Convolutions per block: configuration B (VGG-13) has 2 everywhere, D (VGG-16) 2, 2, 3, 3, 3.
fn convs_per_block(arch: Architecture) -> [usize; 5] {
    match arch {
        Architecture::Vgg16 | Architecture::Vgg16Bn => [2, 2, 3, 3, 3],
        _ => [2, 2, 2, 2, 2],
    }
}

/// Convolutions per replicated block of a `small`/`same` sub-network (official `_make_sub_layer`;
/// `large` is refused by `ModelConfig::validate`, the official code raises for it).
fn sub_network_convs(arch: Architecture, size: SubNetworkSize) -> usize {
    match (size, arch) {
        (SubNetworkSize::Small, _) => 1,
        (_, Architecture::Vgg16 | Architecture::Vgg16Bn) => 3,
        _ => 2,
    }
}

fn has_bn(arch: Architecture) -> bool {
    matches!(arch, Architecture::Vgg13Bn | Architecture::Vgg16Bn)
}

/// `[conv (+BN) + ReLU] × n, max-pool 2×2`: a run of modules in an `nn.Sequential`, whose indices
/// name the layers. A backbone block is a Sequential of its own (first index 0); the blocks of a
/// sub-network follow each other in one flat Sequential, as the official `_make_sub_layer` builds it.
#[derive(Debug)]
struct VggBlock {
    layers: Vec<(Conv2d, Option<BatchNorm2d>)>,
}

impl VggBlock {
    /// The block's modules start at index `first` of the Sequential at `p`.
    fn new(p: &nn::Path, first: usize, c_in: i64, width: i64, convs: usize, bn: Option<BatchNormKind>) -> Self {
        let step = if bn.is_some() { 3 } else { 2 };
        let layers = (0..convs)
            .map(|i| {
                let c = if i == 0 { c_in } else { width };
                let at = first + i * step;
                let conv = Conv2d::kaiming_fan_out_biased(&(p / at), ConvShape::new(c, width, 3, 1, 1));
                let norm = bn.map(|kind| BatchNorm2d::new(&(p / (at + 1)), width, kind));
                (conv, norm)
            })
            .collect();
        VggBlock { layers }
    }

    /// Sequential entries of a block: conv (+BN) + ReLU per convolution, then the max-pool.
    fn modules(convs: usize, bn: Option<BatchNormKind>) -> usize {
        convs * if bn.is_some() { 3 } else { 2 } + 1
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for (conv, bn) in &self.layers {
            h = conv.forward(&h);
            if let Some(bn) = bn {
                h = bn.forward_t(&h, train)?;
            }
            h = h.relu();
        }
        Ok(h.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false))
    }
}

/// Sub-network after block k+1: `fc` = pool + Linear(ch → 512); otherwise fresh copies of every
/// later block, each with 3 (`same`, configuration D) or 2 (`same`, B) convolutions or 1 (`small`),
/// then pool. `same` follows the official rule even where it differs from the backbone: VGG-16's
/// copies of block2 get 3 convolutions although the backbone's block2 has 2.
#[derive(Debug)]
enum VggSubNetwork {
    Fc(Linear),
    Blocks(Vec<VggBlock>),
}

#[derive(Debug)]
pub struct VggEncoder {
    blocks: Vec<VggBlock>,
    sub_networks: Vec<(usize, VggSubNetwork)>,
}

impl VggEncoder {
    pub fn new(p: &nn::Path, config: &ModelConfig, norm: BatchNormKind) -> Self {
        let arch = config.architecture;
        let (convs, bn) = (convs_per_block(arch), has_bn(arch).then_some(norm));
        let blocks = (0..5)
            .map(|b| {
                let c_in = if b == 0 { 3 } else { BLOCK_WIDTHS[b - 1] };
                VggBlock::new(&(p / format!("block{}", b + 1)), 0, c_in, BLOCK_WIDTHS[b], convs[b], bn)
            })
            .collect();
        let sub_networks = build_exits(p, config, |q, k| match config.sub_size {
            SubNetworkSize::Fc => VggSubNetwork::Fc(Linear::normal(q, BLOCK_WIDTHS[k], 512, 0.01)),
            size => {
                let n = sub_network_convs(arch, size);
                let mut first = 0;
                let blocks = (k + 1..5)
                    .map(|b| {
                        let block = VggBlock::new(q, first, BLOCK_WIDTHS[b - 1], BLOCK_WIDTHS[b], n, bn);
                        first += VggBlock::modules(n, bn);
                        block
                    })
                    .collect();
                VggSubNetwork::Blocks(blocks)
            }
        });
        VggEncoder { blocks, sub_networks }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<EncoderOutput> {
        let mut h = x.shallow_clone();
        let mut exits = Vec::with_capacity(self.sub_networks.len());
        for (b, block) in self.blocks.iter().enumerate() {
            h = block.forward_t(&h, train)?;
            for (_, sub) in self.sub_networks.iter().filter(|(k, _)| *k == b) {
                exits.push(match sub {
                    VggSubNetwork::Fc(linear) => linear.forward(&global_avg_pool(&h)),
                    VggSubNetwork::Blocks(blocks) => {
                        global_avg_pool(&blocks.iter().try_fold(h.shallow_clone(), |t, blk| blk.forward_t(&t, train))?)
                    }
                });
            }
        }
        Ok(EncoderOutput { exits, backbone: global_avg_pool(&h) })
    }
}
