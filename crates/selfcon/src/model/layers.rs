//! The few layers the encoders are built from, with the official (PyTorch) initialisation and
//! parameter names: tch's own `nn::linear` uses a different default init and its batch norm has
//! no `num_batches_tracked`, both of which the state dict must match.

use tch::{nn, Kind, Tensor};

/// A bias-free 2-D convolution, Kaiming-normal (fan_out, ReLU gain) as `networks/resnet_big.py`.
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    pub fn kaiming_fan_out(p: &nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64) -> Self {
        let fan_out = (c_out * kernel * kernel) as f64;
        let std = (2.0 / fan_out).sqrt();
        let weight = p.var("weight", &[c_out, c_in, kernel, kernel], nn::Init::Randn { mean: 0.0, stdev: std });
        Conv2d { weight, stride, padding }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, None::<Tensor>, [self.stride], [self.padding], [1], 1)
    }
}

/// BatchNorm2d with PyTorch's defaults (eps 1e-5, momentum 0.1, weight 1, bias 0) and its
/// `num_batches_tracked` buffer, counted up in training mode as PyTorch does.
#[derive(Debug)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
}

impl BatchNorm2d {
    const EPS: f64 = 1e-5;
    const MOMENTUM: f64 = 0.1;

    pub fn new(p: &nn::Path, channels: i64) -> Self {
        let tracked = Tensor::zeros([], (Kind::Int64, p.device()));
        BatchNorm2d {
            weight: p.ones("weight", &[channels]),
            bias: p.zeros("bias", &[channels]),
            running_mean: p.zeros_no_train("running_mean", &[channels]),
            running_var: p.ones_no_train("running_var", &[channels]),
            num_batches_tracked: p.add("num_batches_tracked", tracked, false),
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if train {
            let mut tracked = self.num_batches_tracked.shallow_clone();
            tch::no_grad(|| tracked += 1);
        }
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            Self::MOMENTUM,
            Self::EPS,
            true,
        )
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

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }
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
