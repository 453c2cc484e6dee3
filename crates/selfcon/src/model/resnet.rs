//! ResNet building blocks (`networks/resnet_big.py`): BasicBlock, Bottleneck and the stages made
//! of them. Sub-networks reuse [`Stage`] to replicate the later part of the backbone.

use tch::{nn, Tensor};

use super::layers::{BatchNorm2d, BatchNormKind, Conv2d};
use crate::error::Result;
use crate::onnx::OnnxGraph;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// conv3×3-BN-ReLU-conv3×3-BN + shortcut, ReLU (ResNet-18/34).
    Basic,
    /// conv1×1-BN-ReLU-conv3×3(stride)-BN-ReLU-conv1×1-BN + shortcut, ReLU (ResNet-50/101).
    Bottleneck,
}

impl BlockKind {
    pub fn expansion(self) -> i64 {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// One residual block; the projection shortcut (`shortcut.0` conv1×1, `shortcut.1` BN) exists
/// whenever the block changes resolution or width.
#[derive(Debug)]
pub struct ResidualBlock {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    shortcut: Option<(Conv2d, BatchNorm2d)>,
}

impl ResidualBlock {
    pub fn new(p: &nn::Path, kind: BlockKind, in_planes: i64, planes: i64, stride: i64, norm: BatchNormKind) -> Self {
        let out_planes = planes * kind.expansion();
        let layer = |i: usize, c_in: i64, c_out: i64, k: i64, s: i64| {
            let conv = Conv2d::kaiming_fan_out(&(p / format!("conv{i}")), c_in, c_out, k, s, k / 2);
            (conv, BatchNorm2d::new(&(p / format!("bn{i}")), c_out, norm))
        };
        let convs = match kind {
            BlockKind::Basic => vec![layer(1, in_planes, planes, 3, stride), layer(2, planes, planes, 3, 1)],
            BlockKind::Bottleneck => vec![
                layer(1, in_planes, planes, 1, 1),
                layer(2, planes, planes, 3, stride),
                layer(3, planes, out_planes, 1, 1),
            ],
        };
        let shortcut = (stride != 1 || in_planes != out_planes).then(|| {
            let sp = p / "shortcut";
            (
                Conv2d::kaiming_fan_out(&(&sp / "0"), in_planes, out_planes, 1, stride, 0),
                BatchNorm2d::new(&(&sp / "1"), out_planes, norm),
            )
        });
        ResidualBlock { convs, shortcut }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut out = x.shallow_clone();
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            out = bn.forward_t(&conv.forward(&out), train)?;
            if i < last {
                out = out.relu();
            }
        }
        let identity = match &self.shortcut {
            Some((conv, bn)) => bn.forward_t(&conv.forward(x), train)?,
            None => x.shallow_clone(),
        };
        Ok((out + identity).relu())
    }

    pub(crate) fn onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let last = self.convs.len() - 1;
        let mut out = x.to_string();
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            let c = conv.onnx(g, &out)?;
            out = bn.onnx(g, &c)?;
            if i < last {
                out = g.node("Relu", &[&out], &[]);
            }
        }
        let identity = match &self.shortcut {
            Some((conv, bn)) => {
                let c = conv.onnx(g, x)?;
                bn.onnx(g, &c)?
            }
            None => x.to_string(),
        };
        let sum = g.node("Add", &[&out, &identity], &[]);
        Ok(g.node("Relu", &[&sum], &[]))
    }
}

/// A stage (`layerN`): `n_blocks` blocks, the first one carrying the stride.
#[derive(Debug)]
pub struct Stage {
    blocks: Vec<ResidualBlock>,
    out_channels: i64,
}

impl Stage {
    pub fn new(
        p: &nn::Path,
        kind: BlockKind,
        in_planes: i64,
        planes: i64,
        n_blocks: usize,
        stride: i64,
        norm: BatchNormKind,
    ) -> Self {
        let mut blocks = Vec::with_capacity(n_blocks);
        let mut c_in = in_planes;
        for i in 0..n_blocks {
            blocks.push(ResidualBlock::new(&(p / i), kind, c_in, planes, if i == 0 { stride } else { 1 }, norm));
            c_in = planes * kind.expansion();
        }
        Stage { blocks, out_channels: planes * kind.expansion() }
    }

    pub fn out_channels(&self) -> i64 {
        self.out_channels
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.blocks.iter().try_fold(x.shallow_clone(), |h, b| b.forward_t(&h, train))
    }

    pub(crate) fn onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        self.blocks.iter().try_fold(x.to_string(), |h, b| b.onnx(g, &h))
    }
}

/// Widths of the four stages before expansion and their strides.
pub const STAGE_PLANES: [i64; 4] = [64, 128, 256, 512];
pub const STAGE_STRIDES: [i64; 4] = [1, 2, 2, 2];
