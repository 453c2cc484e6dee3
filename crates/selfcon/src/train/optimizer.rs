//! SGD as `torch.optim.SGD(momentum, weight_decay)` (no dampening, no Nesterov): weight decay is
//! added to the gradient, the momentum buffer starts as the first gradient. Written here so its
//! state (the momentum buffers, by parameter name) can be checkpointed and restored exactly.

use tch::{nn::VarStore, Tensor};

use crate::distributed::gradients::GradientSync;
use crate::error::{Error, Result};

pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    /// LARS trust coefficient η (`None`: plain SGD). With it, every weight matrix / kernel's
    /// update (gradient plus weight decay) is rescaled to η·|w|/|update| before momentum, so each
    /// step moves a layer by a fixed fraction of its norm whatever its gradient's scale; biases
    /// and BatchNorm parameters (one-dimensional) keep the plain update, as in SimCLR's LARS.
    pub lars_eta: Option<f64>,
    /// Trainable parameters by their state-dict name, sorted.
    params: Vec<(String, Tensor)>,
    buffers: Vec<Option<Tensor>>,
    /// Distributed runs: the all-reduce of these parameters' gradients (set up by the training
    /// loop before the first backward pass).
    pub gradient_sync: Option<GradientSync>,
}

impl Sgd {
    /// Over every trainable variable of `vs`.
    pub fn new(vs: &VarStore, momentum: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let buffers = params.iter().map(|_| None).collect();
        Sgd { momentum, weight_decay, lars_eta: None, params, buffers, gradient_sync: None }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// The trained parameters (shallow handles), in state-dict name order.
    pub fn parameters(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.shallow_clone()).collect()
    }

    /// The gradients of the parameters that have one (shallow handles: changing them changes
    /// the gradients, as loss scaling does).
    pub fn grads(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.grad()).filter(Tensor::defined).collect()
    }

    /// One update at learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for ((_, p), buf) in self.params.iter_mut().zip(self.buffers.iter_mut()) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let d = if self.weight_decay != 0.0 { &g + &*p * self.weight_decay } else { g };
                let d = match self.lars_eta {
                    Some(eta) if p.dim() > 1 => {
                        let (w, u) = (p.norm(), d.norm());
                        // trust = η·|w|/|d| where both norms are positive, else 1 (no host sync).
                        let ok = w.gt(0.0).logical_and(&u.gt(0.0));
                        let trust = (&w * eta / u.clamp_min(1e-30)).where_self(&ok, &w.ones_like());
                        d * trust
                    }
                    _ => d,
                };
                let d = if self.momentum != 0.0 {
                    match buf {
                        Some(b) => {
                            let _ = b.g_mul_scalar_(self.momentum).g_add_(&d);
                            b.shallow_clone()
                        }
                        None => {
                            let b = d.detach().copy();
                            *buf = Some(b.shallow_clone());
                            b
                        }
                    }
                } else {
                    d
                };
                let _ = p.g_sub_(&(d * lr));
            }
        });
    }

    /// Momentum buffers by parameter name (parameters not yet updated have none).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.buffers)
            .filter_map(|((name, _), b)| b.as_ref().map(|b| (name.clone(), b.shallow_clone())))
            .collect()
    }

    /// Restores buffers saved by [`Sgd::state`]; unknown names or shapes are an error.
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<()> {
        for (name, tensor) in state {
            let i = self
                .params
                .iter()
                .position(|(n, _)| *n == name)
                .ok_or_else(|| Error::input(format!("optimizer state for unknown parameter '{name}'")))?;
            let p = &self.params[i].1;
            if tensor.size() != p.size() {
                return Err(Error::input(format!(
                    "optimizer state for '{name}' has shape {:?}, parameter {:?}",
                    tensor.size(),
                    p.size()
                )));
            }
            self.buffers[i] = Some(tensor.to_device(p.device()).to_kind(p.kind()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    #[test]
    fn lars_moves_each_weight_by_eta_times_its_norm_and_leaves_biases_plain() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[4, 3], nn::Init::Const(0.5));
        let b = vs.root().var("b", &[4], nn::Init::Const(0.0));
        let mut sgd = Sgd::new(&vs, 0.9, 0.0);
        sgd.lars_eta = Some(0.01);
        // A gradient a thousand times larger than the weights: plain SGD would blow them up.
        let loss = (&w * 1000.0).sum(Kind::Float) + (&b * 2.0).sum(Kind::Float);
        loss.backward();
        let (w0, b0) = (w.copy(), b.copy());
        sgd.step(0.5);
        let moved = (&w - &w0).norm().double_value(&[]);
        let expected = 0.5 * 0.01 * w0.norm().double_value(&[]);
        assert!((moved - expected).abs() < 1e-6 * expected.max(1.0), "{moved} vs {expected}");
        // The bias takes the plain step: lr · gradient.
        let bias_step = (&b0 - &b).mean(Kind::Float).double_value(&[]);
        assert!((bias_step - 1.0).abs() < 1e-6, "{bias_step}");
    }

    #[test]
    fn without_lars_the_step_is_torch_sgd() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2, 2], nn::Init::Const(1.0));
        let mut sgd = Sgd::new(&vs, 0.9, 0.1);
        (&w * 3.0).sum(Kind::Float).backward();
        sgd.step(0.1);
        // d = g + wd·w = 3.1; w ← 1 − 0.1 · 3.1
        let v = w.mean(Kind::Float).double_value(&[]);
        assert!((v - 0.69).abs() < 1e-6, "{v}");
    }
}
