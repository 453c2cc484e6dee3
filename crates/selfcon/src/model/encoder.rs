//! Encoders with their sub-networks (`encoder.*`): one pass gives the pooled backbone vector and
//! one pooled vector per enabled exit. The ResNet family is here; VGG, WRN and EfficientNet have
//! their own files.

use tch::{nn, Tensor};

use super::config::{Family, ModelConfig, Stem};
use super::efficientnet::EfficientNetEncoder;
use super::layers::{global_avg_pool, global_avg_pool_onnx, BatchNorm2d, BatchNormKind, Conv2d};
use super::resnet::{Stage, STAGE_PLANES, STAGE_STRIDES};
use super::subnetwork::{build_exits, SubNetwork};
use super::vgg::VggEncoder;
use super::wrn::WrnEncoder;
use crate::error::Result;
use crate::onnx::{Attr, OnnxGraph};

/// Pooled encoder outputs: what linear evaluation classifies.
#[derive(Debug)]
pub struct EncoderOutput {
    /// One `[N, d]` matrix per enabled exit, in stage order.
    pub exits: Vec<Tensor>,
    /// `[N, d]`, the backbone's pooled last stage.
    pub backbone: Tensor,
}

/// The encoder of any family.
#[derive(Debug)]
pub enum Encoder {
    ResNet(ResNetEncoder),
    Vgg(VggEncoder),
    Wrn(WrnEncoder),
    EfficientNet(EfficientNetEncoder),
}

impl Encoder {
    /// The encoder of `config` under `p`, its BatchNorm layers of kind `norm`.
    pub fn new(p: &nn::Path, config: &ModelConfig, norm: BatchNormKind) -> Self {
        match config.architecture.family() {
            Family::ResNet => Encoder::ResNet(ResNetEncoder::new(p, config, norm)),
            Family::Vgg => Encoder::Vgg(VggEncoder::new(p, config, norm)),
            Family::Wrn => Encoder::Wrn(WrnEncoder::new(p, config, norm)),
            Family::EfficientNet => Encoder::EfficientNet(EfficientNetEncoder::new(p, config, norm)),
        }
    }

    /// The eval-mode encoder as ONNX nodes from input `x`: (backbone output, exit outputs).
    pub(crate) fn onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<(String, Vec<String>)> {
        match self {
            Encoder::ResNet(e) => e.onnx(g, x),
            Encoder::Vgg(_) => Err(crate::onnx::unsupported("VGG encoders")),
            Encoder::Wrn(_) => Err(crate::onnx::unsupported("WRN encoders")),
            Encoder::EfficientNet(_) => Err(crate::onnx::unsupported("EfficientNet encoders")),
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<EncoderOutput> {
        match self {
            Encoder::ResNet(e) => e.forward_t(x, train),
            Encoder::Vgg(e) => e.forward_t(x, train),
            Encoder::Wrn(e) => e.forward_t(x, train),
            Encoder::EfficientNet(e) => e.forward_t(x, train),
        }
    }
}

#[derive(Debug)]
pub struct ResNetEncoder {
    stem: Stem,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    stages: Vec<Stage>,
    /// `(k, sub-network)` for each enabled exit after stage k+1.
    sub_networks: Vec<(usize, SubNetwork)>,
}

impl ResNetEncoder {
    pub fn new(p: &nn::Path, config: &ModelConfig, norm: BatchNormKind) -> Self {
        let arch = config.architecture;
        let stem = config.stem();
        let conv1 = match stem {
            Stem::Cifar => Conv2d::kaiming_fan_out(&(p / "conv1"), 3, 64, 3, 1, 1),
            Stem::ImageNet => Conv2d::kaiming_fan_out(&(p / "conv1"), 3, 64, 7, 2, 3),
        };
        let bn1 = BatchNorm2d::new(&(p / "bn1"), 64, norm);
        let blocks = arch.blocks_per_stage();
        let mut c_in = 64;
        let stages = (0..4)
            .map(|i| {
                let s = Stage::new(
                    &(p / format!("layer{}", i + 1)),
                    arch.block(),
                    c_in,
                    STAGE_PLANES[i],
                    blocks[i],
                    STAGE_STRIDES[i],
                    norm,
                );
                c_in = s.out_channels();
                s
            })
            .collect();
        let sub_networks = build_exits(p, config, |q, k| SubNetwork::new(q, arch, k, config.sub_size, norm));
        ResNetEncoder { stem, conv1, bn1, stages, sub_networks }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<EncoderOutput> {
        let mut h = self.bn1.forward_t(&self.conv1.forward(x), train)?.relu();
        if self.stem == Stem::ImageNet {
            h = h.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        let mut exits = Vec::with_capacity(self.sub_networks.len());
        let mut next_exit = self.sub_networks.iter().peekable();
        for (i, stage) in self.stages.iter().enumerate() {
            h = stage.forward_t(&h, train)?;
            while let Some((_, sub)) = next_exit.next_if(|(k, _)| *k == i) {
                exits.push(sub.forward_t(&h, train)?);
            }
        }
        Ok(EncoderOutput { exits, backbone: global_avg_pool(&h) })
    }

    fn onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<(String, Vec<String>)> {
        let c = self.conv1.onnx(g, x)?;
        let b = self.bn1.onnx(g, &c)?;
        let mut h = g.node("Relu", &[&b], &[]);
        if self.stem == Stem::ImageNet {
            h = g.node(
                "MaxPool",
                &[&h],
                &[
                    ("kernel_shape", Attr::Ints(vec![3, 3])),
                    ("strides", Attr::Ints(vec![2, 2])),
                    ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                ],
            );
        }
        let mut exits = Vec::with_capacity(self.sub_networks.len());
        let mut next_exit = self.sub_networks.iter().peekable();
        for (i, stage) in self.stages.iter().enumerate() {
            h = stage.onnx(g, &h)?;
            while let Some((_, sub)) = next_exit.next_if(|(k, _)| *k == i) {
                exits.push(sub.onnx(g, &h)?);
            }
        }
        Ok((global_avg_pool_onnx(g, &h), exits))
    }
}
