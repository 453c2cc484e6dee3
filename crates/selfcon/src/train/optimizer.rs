//! SGD as `torch.optim.SGD(momentum, weight_decay)` (no dampening, no Nesterov): weight decay is
//! added to the gradient, the momentum buffer starts as the first gradient. Written here so its
//! state (the momentum buffers, by parameter name) can be checkpointed and restored exactly.

use tch::{nn::VarStore, Tensor};

use crate::distributed::gradients::GradientSync;
use crate::error::{Error, Result};

pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
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
        Sgd { momentum, weight_decay, params, buffers, gradient_sync: None }
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
