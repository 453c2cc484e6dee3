//! WRN-16-8 (SPEC §2.4): stem conv3×3 3→16, three stages of 2 pre-activation wide blocks (widths
//! 128, 256, 512; strides 1, 2, 2), final BN + ReLU + average pooling (d = 512); exits after
//! stage 1 and stage 2. Convolutions have biases and Xavier-uniform (gain √2) weights.

use tch::{nn, Tensor};

use super::config::{ModelConfig, SubNetworkSize};
use super::encoder::EncoderOutput;
use super::layers::{global_avg_pool, BatchNorm2d, BatchNormKind, Conv2d, ConvShape, Linear};
use super::subnetwork::build_exits;
use crate::error::Result;

const WIDTHS: [i64; 3] = [128, 256, 512];
const STRIDES: [i64; 3] = [1, 2, 2];
const BLOCKS: usize = 2;
const DROPOUT: f64 = 0.3;
/// The final BatchNorm is built with `momentum=0.9` (PyTorch semantics: 0.9 weight on each batch).
const FINAL_BN_MOMENTUM: f64 = 0.9;

/// `BN-ReLU-conv3×3-dropout-BN-ReLU-conv3×3(stride)` plus the shortcut (1×1 conv when the shape
/// changes).
#[derive(Debug)]
struct WideBlock {
    bn1: BatchNorm2d,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl WideBlock {
    fn new(p: &nn::Path, c_in: i64, width: i64, stride: i64, norm: BatchNormKind) -> Self {
        let shortcut = (stride != 1 || c_in != width)
            .then(|| Conv2d::xavier_biased(&(p / "shortcut" / 0), ConvShape::new(c_in, width, 1, stride, 0)));
        WideBlock {
            bn1: BatchNorm2d::new(&(p / "bn1"), c_in, norm),
            conv1: Conv2d::xavier_biased(&(p / "conv1"), ConvShape::new(c_in, width, 3, 1, 1)),
            bn2: BatchNorm2d::new(&(p / "bn2"), width, norm),
            conv2: Conv2d::xavier_biased(&(p / "conv2"), ConvShape::new(width, width, 3, stride, 1)),
            shortcut,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let out = self.conv1.forward(&self.bn1.forward_t(x, train)?.relu()).dropout(DROPOUT, train);
        let out = self.conv2.forward(&self.bn2.forward_t(&out, train)?.relu());
        Ok(match &self.shortcut {
            Some(conv) => out + conv.forward(x),
            None => out + x,
        })
    }
}

/// Blocks of one stage (`layer{i}` in the backbone), the first with the stage's stride.
fn stage(p: &nn::Path, c_in: i64, i: usize, blocks: usize, norm: BatchNormKind) -> Vec<WideBlock> {
    (0..blocks)
        .map(|b| {
            let (c, s) = if b == 0 { (c_in, STRIDES[i]) } else { (WIDTHS[i], 1) };
            WideBlock::new(&(p / b), c, WIDTHS[i], s, norm)
        })
        .collect()
}

fn run(blocks: &[WideBlock], x: &Tensor, train: bool) -> Result<Tensor> {
    blocks.iter().try_fold(x.shallow_clone(), |h, b| b.forward_t(&h, train))
}

/// `fc` = pool + Linear; `same`/`small` = the later stages with 2 or 1 blocks, pooled WITHOUT the
/// backbone's final BN-ReLU (official).
#[derive(Debug)]
enum WrnSubNetwork {
    Fc(Linear),
    Stages(Vec<Vec<WideBlock>>),
}

/// Blocks per replicated stage of a sub-network: the official WRN rounds `small` up
/// (`int((n + 1) / 2)`), where ResNet rounds down; both give 1 for WRN-16-8's two blocks.
fn replicated_blocks(size: SubNetworkSize) -> usize {
    match size {
        SubNetworkSize::Small => BLOCKS.div_ceil(2),
        size => size.replicated_blocks(BLOCKS),
    }
}

#[derive(Debug)]
pub struct WrnEncoder {
    conv1: Conv2d,
    stages: Vec<Vec<WideBlock>>,
    bn1: BatchNorm2d,
    sub_networks: Vec<(usize, WrnSubNetwork)>,
}

impl WrnEncoder {
    pub fn new(p: &nn::Path, config: &ModelConfig, norm: BatchNormKind) -> Self {
        let conv1 = Conv2d::xavier_biased(&(p / "conv1"), ConvShape::new(3, 16, 3, 1, 1));
        let stages = (0..3)
            .map(|i| stage(&(p / format!("layer{}", i + 1)), if i == 0 { 16 } else { WIDTHS[i - 1] }, i, BLOCKS, norm))
            .collect();
        let bn1 = BatchNorm2d::with(&(p / "bn1"), WIDTHS[2], FINAL_BN_MOMENTUM, 1e-5, norm);
        let sub_networks = build_exits(p, config, |q, k| match config.sub_size {
            SubNetworkSize::Fc => WrnSubNetwork::Fc(Linear::new(q, WIDTHS[k], config.architecture.feature_dim())),
            size => WrnSubNetwork::Stages(
                (k + 1..3)
                    .enumerate()
                    .map(|(j, i)| stage(&(q / j), WIDTHS[i - 1], i, replicated_blocks(size), norm))
                    .collect(),
            ),
        });
        WrnEncoder { conv1, stages, bn1, sub_networks }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<EncoderOutput> {
        let mut h = self.conv1.forward(x);
        let mut exits = Vec::with_capacity(self.sub_networks.len());
        for (i, blocks) in self.stages.iter().enumerate() {
            h = run(blocks, &h, train)?;
            for (_, sub) in self.sub_networks.iter().filter(|(k, _)| *k == i) {
                exits.push(match sub {
                    WrnSubNetwork::Fc(linear) => linear.forward(&global_avg_pool(&h)),
                    WrnSubNetwork::Stages(stages) => {
                        global_avg_pool(&stages.iter().try_fold(h.shallow_clone(), |t, s| run(s, &t, train))?)
                    }
                });
            }
        }
        let h = self.bn1.forward_t(&h, train)?.relu();
        Ok(EncoderOutput { exits, backbone: global_avg_pool(&h) })
    }
}
