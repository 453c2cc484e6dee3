//! The CIFAR-adapted EfficientNet-B0 of the official code (SPEC §2.4), in the module layout of
//! the EfficientNet-PyTorch package it follows (`_conv_stem`, `_bn0`, `_blocks.{i}`, `_conv_head`,
//! `_bn1`): stem conv3×3 stride 1, MBConv blocks with squeeze-and-excitation and Swish, TF "same"
//! padding computed statically for 32×32 inputs, BN momentum 0.01 / eps 1e-3, drop-connect
//! 0.2·i/16, head conv1×1 320→512 + BN + Swish, average pooling and dropout 0.2 (d = 512). One
//! exit candidate, after the 4th stage (80 channels).

use tch::{nn, Tensor};

use super::config::ModelConfig;
use super::encoder::EncoderOutput;
use super::layers::{global_avg_pool, swish, BatchNorm2d, BatchNormKind, Conv2d, ConvShape, Linear};
use crate::error::Result;

const BN_MOMENTUM: f64 = 0.01;
const BN_EPS: f64 = 1e-3;
const SE_RATIO: f64 = 0.25;
const DROP_CONNECT: f64 = 0.2;
const DROPOUT: f64 = 0.2;
const IMAGE_SIZE: i64 = 32;
const HEAD_WIDTH: i64 = 512;

/// (repeats, kernel, stride, expand ratio, in, out) per stage; strides 1 in the stem and stage 2
/// adapt B0 to 32×32 images.
const STAGES: [(usize, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 1, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];
/// The exit follows the last block of the 4th stage.
const EXIT_STAGE: usize = 3;

fn bn(p: &nn::Path, c: i64, norm: BatchNormKind) -> BatchNorm2d {
    BatchNorm2d::with(p, c, BN_MOMENTUM, BN_EPS, norm)
}

/// A convolution with TensorFlow's "same" padding for an input of side `size`, fixed at
/// construction (possibly asymmetric: one more row/column at the bottom/right).
#[derive(Debug)]
struct SameConv {
    conv: Conv2d,
    /// (left, right, top, bottom)
    pad: [i64; 4],
}

impl SameConv {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, groups: i64, bias: bool, size: i64) -> Self {
        let total = (((size + stride - 1) / stride - 1) * stride + kernel - size).max(0);
        let (a, b) = (total / 2, total - total / 2);
        let shape = ConvShape { c_in, c_out, kernel, stride, padding: 0, groups };
        SameConv { conv: Conv2d::pytorch_default(p, shape, bias), pad: [a, b, a, b] }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        if self.pad == [0; 4] {
            self.conv.forward(x)
        } else {
            self.conv.forward(&x.constant_pad_nd(self.pad))
        }
    }
}

/// Channels, kernel, stride and expansion ratio of an [`MbConv`].
#[derive(Clone, Copy, Debug)]
struct MbShape {
    c_in: i64,
    c_out: i64,
    kernel: i64,
    stride: i64,
    expand: i64,
}

/// Mobile inverted bottleneck: [expand 1×1 + BN + Swish], depthwise k×k + BN + Swish,
/// squeeze-and-excitation, project 1×1 + BN, and the identity skip (with drop-connect) when the
/// block keeps its shape.
#[derive(Debug)]
struct MbConv {
    expand: Option<(SameConv, BatchNorm2d)>,
    depthwise: SameConv,
    bn1: BatchNorm2d,
    se_reduce: SameConv,
    se_expand: SameConv,
    project: SameConv,
    bn2: BatchNorm2d,
    skip: bool,
    drop_connect: f64,
}

impl MbConv {
    #[allow(clippy::too_many_arguments)]
    fn new(p: &nn::Path, shape: MbShape, size: i64, drop: f64, norm: BatchNormKind) -> Self {
        let MbShape { c_in, c_out, kernel, stride, expand } = shape;
        let mid = c_in * expand;
        let squeezed = ((c_in as f64 * SE_RATIO) as i64).max(1);
        MbConv {
            expand: (expand != 1).then(|| {
                (SameConv::new(&(p / "_expand_conv"), c_in, mid, 1, 1, 1, false, size), bn(&(p / "_bn0"), mid, norm))
            }),
            depthwise: SameConv::new(&(p / "_depthwise_conv"), mid, mid, kernel, stride, mid, false, size),
            bn1: bn(&(p / "_bn1"), mid, norm),
            se_reduce: SameConv::new(&(p / "_se_reduce"), mid, squeezed, 1, 1, 1, true, 1),
            se_expand: SameConv::new(&(p / "_se_expand"), squeezed, mid, 1, 1, 1, true, 1),
            project: SameConv::new(&(p / "_project_conv"), mid, c_out, 1, 1, 1, false, size),
            bn2: bn(&(p / "_bn2"), c_out, norm),
            // Official quirk: a stage's first block keeps its stride as a list, so its
            // `stride == 1` test fails; every first block changes the width anyway.
            skip: stride == 1 && c_in == c_out,
            drop_connect: drop,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        if let Some((conv, norm)) = &self.expand {
            h = swish(&norm.forward_t(&conv.forward(&h), train)?);
        }
        h = swish(&self.bn1.forward_t(&self.depthwise.forward(&h), train)?);
        let squeezed = self.se_expand.forward(&swish(&self.se_reduce.forward(&h.adaptive_avg_pool2d([1, 1]))));
        h = squeezed.sigmoid() * h;
        h = self.bn2.forward_t(&self.project.forward(&h), train)?;
        if !self.skip {
            return Ok(h);
        }
        if train && self.drop_connect > 0.0 {
            // Drop the whole residual branch per sample, rescaling the kept ones.
            let keep = 1.0 - self.drop_connect;
            let mask = (Tensor::rand([h.size()[0], 1, 1, 1], (h.kind(), h.device())) + keep).floor();
            h = h / keep * mask;
        }
        Ok(h + x)
    }
}

/// conv1×1 80→512 + BN + Swish, pool, dropout 0.2, Linear(512, 512).
#[derive(Debug)]
struct ExitHead {
    conv: SameConv,
    bn: BatchNorm2d,
    fc: Linear,
}

#[derive(Debug)]
pub struct EfficientNetEncoder {
    stem: SameConv,
    bn0: BatchNorm2d,
    blocks: Vec<MbConv>,
    conv_head: SameConv,
    bn1: BatchNorm2d,
    /// Index of the block after which the exit sits, with the exit.
    exit: Option<(usize, ExitHead)>,
}

impl EfficientNetEncoder {
    pub fn new(p: &nn::Path, config: &ModelConfig, norm: BatchNormKind) -> Self {
        let stem = SameConv::new(&(p / "_conv_stem"), 3, 32, 3, 1, 1, false, IMAGE_SIZE);
        let bn0 = bn(&(p / "_bn0"), 32, norm);
        let total: usize = STAGES.iter().map(|s| s.0).sum();
        let bp = p / "_blocks";
        let (mut blocks, mut size, mut exit_after) = (Vec::with_capacity(total), IMAGE_SIZE, 0);
        for (stage, &(repeats, kernel, stride, expand, c_in, c_out)) in STAGES.iter().enumerate() {
            for r in 0..repeats {
                let (c, s) = if r == 0 { (c_in, stride) } else { (c_out, 1) };
                let i = blocks.len();
                let drop = DROP_CONNECT * i as f64 / total as f64;
                let shape = MbShape { c_in: c, c_out, kernel, stride: s, expand };
                blocks.push(MbConv::new(&(&bp / i), shape, size, drop, norm));
                size = (size + s - 1) / s;
            }
            if stage == EXIT_STAGE {
                exit_after = blocks.len() - 1;
            }
        }
        let conv_head = SameConv::new(&(p / "_conv_head"), 320, HEAD_WIDTH, 1, 1, 1, false, size);
        let bn1 = bn(&(p / "_bn1"), HEAD_WIDTH, norm);
        let exit = config.exits.flags().first().copied().unwrap_or(false).then(|| {
            let q = p / "selfcon_layer" / 0;
            let c = STAGES[EXIT_STAGE].5;
            let exit = ExitHead {
                conv: SameConv::new(&(&q / "_conv_head"), c, HEAD_WIDTH, 1, 1, 1, false, 1),
                bn: bn(&(&q / "_bn1"), HEAD_WIDTH, norm),
                fc: Linear::new(&(&q / "_fc"), HEAD_WIDTH, config.architecture.feature_dim()),
            };
            (exit_after, exit)
        });
        EfficientNetEncoder { stem, bn0, blocks, conv_head, bn1, exit }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<EncoderOutput> {
        let mut h = swish(&self.bn0.forward_t(&self.stem.forward(x), train)?);
        let mut exits = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward_t(&h, train)?;
            if let Some((after, head)) = &self.exit {
                if *after == i {
                    let e = swish(&head.bn.forward_t(&head.conv.forward(&h), train)?);
                    exits.push(head.fc.forward(&global_avg_pool(&e).dropout(DROPOUT, train)));
                }
            }
        }
        let h = swish(&self.bn1.forward_t(&self.conv_head.forward(&h), train)?);
        Ok(EncoderOutput { exits, backbone: global_avg_pool(&h).dropout(DROPOUT, train) })
    }
}
