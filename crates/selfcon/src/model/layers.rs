//! The few layers the encoders are built from, with the official (PyTorch) initialisation and
//! parameter names: tch's own `nn::linear` uses a different default init and its batch norm has
//! no `num_batches_tracked`, both of which the state dict must match.

use crate::distributed::sync_bn::BatchNormState;
use crate::distributed::Distributed;
use crate::error::Result;
use crate::onnx::{Attr, OnnxGraph};
use tch::{nn, Kind, Tensor};

/// A 2-D convolution (square kernel, symmetric padding, optional bias and groups), with the
/// initialisations the official encoders use.
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    stride: i64,
    padding: i64,
    groups: i64,
}

/// Shape of a convolution: channels in/out, kernel side, stride, padding, groups.
#[derive(Clone, Copy, Debug)]
pub struct ConvShape {
    pub c_in: i64,
    pub c_out: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
    pub groups: i64,
}

impl ConvShape {
    pub fn new(c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64) -> Self {
        ConvShape { c_in, c_out, kernel, stride, padding, groups: 1 }
    }

    fn weight_shape(&self) -> [i64; 4] {
        [self.c_out, self.c_in / self.groups, self.kernel, self.kernel]
    }

    fn fan_in(&self) -> f64 {
        (self.c_in / self.groups * self.kernel * self.kernel) as f64
    }

    fn fan_out(&self) -> f64 {
        (self.c_out / self.groups * self.kernel * self.kernel) as f64
    }
}

impl Conv2d {
    /// Bias-free, Kaiming-normal (fan_out, ReLU gain) as `networks/resnet_big.py`.
    pub fn kaiming_fan_out(p: &nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64) -> Self {
        let shape = ConvShape::new(c_in, c_out, kernel, stride, padding);
        Self::build(p, shape, Self::kaiming(&shape), None)
    }

    /// Kaiming-normal (fan_out) weight and a zero bias (VGG).
    pub fn kaiming_fan_out_biased(p: &nn::Path, shape: ConvShape) -> Self {
        Self::build(p, shape, Self::kaiming(&shape), Some(nn::Init::Const(0.0)))
    }

    /// Xavier-uniform weight with gain √2 and a zero bias (WRN's `conv_init`).
    pub fn xavier_biased(p: &nn::Path, shape: ConvShape) -> Self {
        let bound = 2f64.sqrt() * (6.0 / (shape.fan_in() + shape.fan_out())).sqrt();
        Self::build(p, shape, nn::Init::Uniform { lo: -bound, up: bound }, Some(nn::Init::Const(0.0)))
    }

    /// PyTorch's default `nn.Conv2d` init: weight (and bias) ~ U(±1/√fan_in) (EfficientNet).
    pub fn pytorch_default(p: &nn::Path, shape: ConvShape, bias: bool) -> Self {
        let bound = 1.0 / shape.fan_in().sqrt();
        let init = nn::Init::Uniform { lo: -bound, up: bound };
        Self::build(p, shape, init, bias.then_some(init))
    }

    fn kaiming(shape: &ConvShape) -> nn::Init {
        nn::Init::Randn { mean: 0.0, stdev: (2.0 / shape.fan_out()).sqrt() }
    }

    fn build(p: &nn::Path, shape: ConvShape, weight_init: nn::Init, bias_init: Option<nn::Init>) -> Self {
        let weight = p.var("weight", &shape.weight_shape(), weight_init);
        let bias = bias_init.map(|init| p.var("bias", &[shape.c_out], init));
        Conv2d { weight, bias, stride: shape.stride, padding: shape.padding, groups: shape.groups }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, self.bias.as_ref(), [self.stride], [self.padding], [1], self.groups)
    }

    pub(crate) fn onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let w = g.weight(&self.weight)?;
        let mut inputs = vec![x.to_string(), w];
        if let Some(b) = &self.bias {
            inputs.push(g.weight(b)?);
        }
        let size = self.weight.size();
        let (s, p) = (self.stride, self.padding);
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(g.node(
            "Conv",
            &inputs,
            &[
                ("kernel_shape", Attr::Ints(size[2..].to_vec())),
                ("strides", Attr::Ints(vec![s, s])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
                ("dilations", Attr::Ints(vec![1, 1])),
                ("group", Attr::Int(self.groups)),
            ],
        ))
    }
}

/// The statistics BatchNorm layers normalise with in training, chosen when a model is built:
/// this process's batch (the official per-GPU BatchNorm), or the global batch of a distributed
/// group (`--syncbn`, as torch.nn.SyncBatchNorm). Evaluation uses the running statistics either way.
#[derive(Clone, Copy, Default)]
pub enum BatchNormKind {
    #[default]
    Local,
    Synchronised(&'static Distributed),
}

impl BatchNormKind {
    /// SyncBatchNorm over `group` when `syncbn` asks for it and the group has several ranks;
    /// otherwise local statistics.
    pub fn for_run(syncbn: bool, group: Option<&'static Distributed>) -> Self {
        match group {
            Some(d) if syncbn && d.world_size > 1 => BatchNormKind::Synchronised(d),
            _ => BatchNormKind::Local,
        }
    }
}

impl std::fmt::Debug for BatchNormKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchNormKind::Local => f.write_str("Local"),
            BatchNormKind::Synchronised(d) => write!(f, "Synchronised({} ranks)", d.world_size),
        }
    }
}

/// BatchNorm2d with PyTorch's defaults (eps 1e-5, momentum 0.1, weight 1, bias 0) and its
/// `num_batches_tracked` buffer, counted up in training mode as PyTorch does; training-mode
/// statistics as its [`BatchNormKind`] says.
#[derive(Debug)]
pub struct BatchNorm2d {
    kind: BatchNormKind,
    momentum: f64,
    eps: f64,
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
}

impl BatchNorm2d {
    const EPS: f64 = 1e-5;

    /// Inference-mode BatchNormalization with the running statistics.
    pub(crate) fn onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let names = [&self.weight, &self.bias, &self.running_mean, &self.running_var]
            .into_iter()
            .map(|t| g.weight(t))
            .collect::<Result<Vec<_>>>()?;
        Ok(g.node(
            "BatchNormalization",
            &[x, &names[0], &names[1], &names[2], &names[3]],
            &[("epsilon", Attr::Float(self.eps as f32))],
        ))
    }

    const MOMENTUM: f64 = 0.1;

    pub fn new(p: &nn::Path, channels: i64, kind: BatchNormKind) -> Self {
        Self::with(p, channels, Self::MOMENTUM, Self::EPS, kind)
    }

    /// With PyTorch-semantics `momentum` (weight of the new batch in the running statistics).
    pub fn with(p: &nn::Path, channels: i64, momentum: f64, eps: f64, kind: BatchNormKind) -> Self {
        let tracked = Tensor::zeros([], (Kind::Int64, p.device()));
        BatchNorm2d {
            kind,
            momentum,
            eps,
            weight: p.ones("weight", &[channels]),
            bias: p.zeros("bias", &[channels]),
            running_mean: p.zeros_no_train("running_mean", &[channels]),
            running_var: p.ones_no_train("running_var", &[channels]),
            num_batches_tracked: p.add("num_batches_tracked", tracked, false),
        }
    }

    /// Fails only when synchronised statistics cannot reach the other ranks.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            let mut tracked = self.num_batches_tracked.shallow_clone();
            tch::no_grad(|| tracked += 1);
            if let BatchNormKind::Synchronised(group) = self.kind {
                let state = BatchNormState {
                    weight: &self.weight,
                    bias: &self.bias,
                    running_mean: &self.running_mean,
                    running_var: &self.running_var,
                    momentum: self.momentum,
                    eps: self.eps,
                };
                return group.sync_batch_norm(x, &state);
            }
        }
        Ok(x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            self.momentum,
            self.eps,
            true,
        ))
    }
}

/// A fully connected layer with PyTorch's default init: weight and bias ~ U(−1/√fan_in, 1/√fan_in).
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(p: &nn::Path, d_in: i64, d_out: i64) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        let init = nn::Init::Uniform { lo: -bound, up: bound };
        Linear { weight: p.var("weight", &[d_out, d_in], init), bias: p.var("bias", &[d_out], init) }
    }

    /// Weight ~ N(0, std²), bias 0 (the Linear layers inside VGG encoders).
    pub fn normal(p: &nn::Path, d_in: i64, d_out: i64, std: f64) -> Self {
        Linear {
            weight: p.var("weight", &[d_out, d_in], nn::Init::Randn { mean: 0.0, stdev: std }),
            bias: p.var("bias", &[d_out], nn::Init::Const(0.0)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }

    pub(crate) fn onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let (w, b) = (g.weight(&self.weight)?, g.weight(&self.bias)?);
        Ok(g.node("Gemm", &[x, &w, &b], &[("transB", Attr::Int(1))]))
    }
}

/// Swish / SiLU, `x·σ(x)` (EfficientNet).
pub fn swish(x: &Tensor) -> Tensor {
    x.silu()
}

/// Global average pooling to a `[N, C]` matrix.
pub fn global_avg_pool(x: &Tensor) -> Tensor {
    x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
}

/// Row-wise L2 normalisation, `x / max(‖x‖₂, 1e-12)` exactly as `F.normalize(x, dim=1)`.
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    x / norm
}

/// [`global_avg_pool`] as ONNX nodes.
pub(crate) fn global_avg_pool_onnx(g: &mut OnnxGraph, x: &str) -> String {
    let pooled = g.node("GlobalAveragePool", &[x], &[]);
    g.node("Flatten", &[&pooled], &[("axis", Attr::Int(1))])
}
