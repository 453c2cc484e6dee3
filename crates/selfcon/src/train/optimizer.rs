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
    /// Distributed runs: the all-reduce of these parameters' gradients after every backward
    /// pass, given at construction ([`Sgd::with_gradient_sync`]).
    gradient_sync: Option<GradientSync>,
}

impl Sgd {
    /// Over every trainable variable of `vs`.
    pub fn new(vs: &VarStore, momentum: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let buffers = params.iter().map(|_| None).collect();
        Sgd { momentum, weight_decay, lars_eta: None, params, buffers, gradient_sync: None }
    }

    /// This optimiser with its parameters' gradients all-reduced over a distributed group after
    /// every backward pass (`sync` covers [`Sgd::parameters`]).
    pub fn with_gradient_sync(mut self, sync: GradientSync) -> Self {
        self.gradient_sync = Some(sync);
        self
    }

    /// The all-reduce the training loop completes after backward, in a distributed run.
    pub fn gradient_sync(&self) -> Option<&GradientSync> {
        self.gradient_sync.as_ref()
    }

    /// `zero_grad(set_to_none=True)`: the next backward writes fresh gradients (no zero-fill
    /// kernels, no gradient memory held between steps). A parameter that gets no gradient in a
    /// step is then not updated at all (no weight decay, no momentum), as in PyTorch ≥ 2.0; every
    /// model here uses all its parameters in every step, on every rank.
    pub fn zero_grad(&mut self) {
        torch_shim::set_grads_to_none(&self.parameters());
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

    /// One update at learning rate `lr`, in the multi-tensor `_foreach_*` kernels (a handful of
    /// launches per step); bit-for-bit the per-parameter update (`reference_step` in the tests).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        if self.lars_eta.is_some() {
            self.lars_step(lr, None);
            return Ok(());
        }
        let (params, grads, buffers) = self.with_gradients();
        self.sgd(lr).foreach(&params, &grads, &buffers).map_err(|e| Error::input(format!("optimizer: {e}")))
    }

    /// One update that the device itself skips when `found_inf` (one float, set by loss scaling)
    /// is non-zero: no host read of the flag. Fused `_fused_sgd_` kernel (its weight decay is a
    /// fused multiply-add: the last bit may differ from [`Sgd::step`]); with LARS each new value
    /// is selected against the old one on the device.
    pub fn step_unless(&mut self, lr: f64, found_inf: &Tensor) -> Result<()> {
        if self.lars_eta.is_some() {
            self.lars_step(lr, Some(&found_inf.eq(0.0).reshape([])));
            return Ok(());
        }
        let (params, grads, buffers) = self.with_gradients();
        self.sgd(lr)
            .fused(&params, &grads, &buffers, Some(found_inf))
            .map_err(|e| Error::input(format!("optimizer: {e}")))
    }

    fn sgd(&self, lr: f64) -> torch_shim::SgdStep {
        torch_shim::SgdStep { weight_decay: self.weight_decay, momentum: self.momentum, lr }
    }

    /// The parameters that have a gradient this step, their gradients and momentum buffers (a
    /// new buffer is zeros: `0·momentum + d` is `d`, the first step's buffer).
    fn with_gradients(&mut self) -> (Vec<Tensor>, Vec<Tensor>, Vec<Tensor>) {
        let (mut params, mut grads, mut buffers) = (Vec::new(), Vec::new(), Vec::new());
        for ((_, p), buf) in self.params.iter().zip(self.buffers.iter_mut()) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            if self.momentum != 0.0 {
                let b = buf.get_or_insert_with(|| tch::no_grad(|| p.zeros_like()));
                buffers.push(b.shallow_clone());
            }
            params.push(p.shallow_clone());
            grads.push(g);
        }
        (params, grads, buffers)
    }

    /// LARS: per parameter, as each weight's trust ratio needs its own norms. With `take` (a
    /// one-element bool on the device) the update lands only where it is true: parameters and
    /// momentum buffers keep their values otherwise, decided on the device. A buffer created by a
    /// skipped step is zeros, which the next step turns into its gradient exactly as a new one.
    fn lars_step(&mut self, lr: f64, take: Option<&Tensor>) {
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
                    match (buf.as_mut(), take) {
                        (Some(b), None) => {
                            let _ = b.g_mul_scalar_(self.momentum).g_add_(&d);
                            b.shallow_clone()
                        }
                        (Some(b), Some(take)) => {
                            let updated = &*b * self.momentum + &d;
                            b.copy_(&updated.where_self(take, b));
                            updated
                        }
                        (None, _) => {
                            let b = match take {
                                None => d.detach().copy(),
                                Some(take) => d.where_scalarother(take, 0.0),
                            };
                            *buf = Some(b.shallow_clone());
                            d
                        }
                    }
                } else {
                    d
                };
                match take {
                    None => {
                        let _ = p.g_sub_(&(d * lr));
                    }
                    Some(take) => {
                        let updated = &*p - d * lr;
                        p.copy_(&updated.where_self(take, p));
                    }
                }
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
            // In the parameter's own memory format (channels-last kernels): the fused and
            // multi-tensor kernels walk parameter, gradient and buffer element by element.
            let buffer = tch::no_grad(|| p.zeros_like());
            tch::no_grad(|| buffer.shallow_clone().copy_(&tensor));
            self.buffers[i] = Some(buffer);
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
        sgd.step(0.5).unwrap();
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
        sgd.step(0.1).unwrap();
        // d = g + wd·w = 3.1; w ← 1 − 0.1 · 3.1
        let v = w.mean(Kind::Float).double_value(&[]);
        assert!((v - 0.69).abs() < 1e-6, "{v}");
    }

    /// The per-parameter update the optimiser used before the multi-tensor kernels.
    fn reference_step(params: &[Tensor], buffers: &mut [Option<Tensor>], momentum: f64, wd: f64, lr: f64) {
        tch::no_grad(|| {
            for (p, buf) in params.iter().zip(buffers.iter_mut()) {
                let g = p.grad();
                let d = if wd != 0.0 { &g + p * wd } else { g };
                let d = match buf {
                    Some(b) => {
                        let _ = b.g_mul_scalar_(momentum).g_add_(&d);
                        b.shallow_clone()
                    }
                    None => {
                        let b = d.detach().copy();
                        *buf = Some(b.shallow_clone());
                        b
                    }
                };
                let mut p = p.shallow_clone();
                let _ = p.g_sub_(&(d * lr));
            }
        });
    }

    /// A few parameters of different shapes in fp64 with random gradients each step.
    fn double_params(vs: &nn::VarStore) -> Vec<Tensor> {
        let root = vs.root();
        [vec![8, 3, 3, 3], vec![8], vec![10, 8], vec![1]]
            .iter()
            .enumerate()
            .map(|(i, shape)| root.var(&format!("p{i}"), shape, nn::Init::Randn { mean: 0.0, stdev: 1.0 }))
            .map(|p| {
                let mut p = p;
                tch::no_grad(|| p.set_data(&p.to_kind(Kind::Double)));
                p
            })
            .collect()
    }

    /// Random gradients, drawn under the seeding lock (parallel tests share the generator).
    fn set_random_grads(params: &[Tensor], seed: u64) {
        let draws: Vec<Tensor> = crate::engine::seeded(seed, || params.iter().map(Tensor::randn_like).collect());
        for (p, draw) in params.iter().zip(draws) {
            let mut g = p.grad();
            if g.defined() {
                g.copy_(&draw);
            } else {
                // A first gradient through autograd: the random values themselves.
                (p * draw).sum(Kind::Double).backward();
            }
        }
    }

    #[test]
    fn multi_tensor_step_is_bit_for_bit_the_per_parameter_update_in_fp64() {
        let (ours_vs, reference_vs) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cpu));
        let ours = crate::engine::seeded(3, || double_params(&ours_vs));
        let reference = crate::engine::seeded(3, || double_params(&reference_vs));
        let mut sgd = Sgd::new(&ours_vs, 0.9, 5e-4);
        let mut buffers: Vec<Option<Tensor>> = reference.iter().map(|_| None).collect();
        for (step, lr) in [0.5, 0.25, 0.125, 0.3].into_iter().enumerate() {
            set_random_grads(&ours, step as u64);
            set_random_grads(&reference, step as u64);
            sgd.step(lr).unwrap();
            reference_step(&reference, &mut buffers, 0.9, 5e-4, lr);
            for (a, b) in ours.iter().zip(&reference) {
                assert!(a.equal(b), "step {step}: parameters differ");
            }
            sgd.zero_grad();
            assert!(ours.iter().all(|p| !p.grad().defined()), "gradients set to none");
            for p in &reference {
                let _ = p.grad().zero_();
            }
        }
        let state = sgd.state();
        assert_eq!(state.len(), 4);
        for ((_, a), b) in state.iter().zip(&buffers) {
            assert!(a.equal(b.as_ref().unwrap()), "momentum buffers differ");
        }
    }

    #[test]
    fn fused_step_skips_on_the_device_when_gradients_overflowed() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(1.0));
        let mut sgd = Sgd::new(&vs, 0.9, 0.1);
        (&w * 3.0).sum(Kind::Float).backward();
        sgd.step_unless(0.1, &Tensor::from_slice(&[1.0f32])).unwrap();
        assert_eq!(w.mean(Kind::Float).double_value(&[]), 1.0, "skipped");
        sgd.step_unless(0.1, &Tensor::from_slice(&[0.0f32])).unwrap();
        let v = w.mean(Kind::Float).double_value(&[]);
        assert!((v - 0.69).abs() < 1e-6, "taken: {v}");
    }

    /// LARS with loss scaling: a skipped step (its gradients overflowed: inf) leaves weights and
    /// momentum as they were, decided on the device; taken steps equal the unconditional LARS
    /// steps (in value; a zero's sign aside), also right after a skip on the first step (whose new
    /// buffer is zeros).
    #[test]
    fn lars_skips_on_the_device_and_takes_the_unconditional_update_otherwise() {
        let run = |flags: &[Option<f32>]| {
            let vs = nn::VarStore::new(Device::Cpu);
            let w = vs.root().var("w", &[4, 3], nn::Init::Const(0.5));
            let b = vs.root().var("b", &[4], nn::Init::Const(0.1));
            let mut sgd = Sgd::new(&vs, 0.9, 1e-4);
            sgd.lars_eta = Some(0.02);
            let mut after = Vec::new();
            for (i, flag) in flags.iter().enumerate() {
                sgd.zero_grad();
                // A skipped step's gradients overflowed, as loss scaling finds them.
                let slope = if *flag == Some(1.0) { f64::INFINITY } else { 3.0 + i as f64 };
                ((&w * slope).sum(Kind::Float) + (&b * &b * slope).sum(Kind::Float)).backward();
                match flag {
                    None => sgd.step(0.3).unwrap(),
                    Some(f) => sgd.step_unless(0.3, &Tensor::from_slice(&[*f])).unwrap(),
                }
                let state: Vec<Tensor> = sgd.state().into_iter().map(|(_, t)| t.copy()).collect();
                after.push((w.copy(), b.copy(), state));
            }
            after
        };
        let equal = |a: &(Tensor, Tensor, Vec<Tensor>), b: &(Tensor, Tensor, Vec<Tensor>)| {
            a.0.equal(&b.0)
                && a.1.equal(&b.1)
                && a.2.len() == b.2.len()
                && a.2.iter().zip(&b.2).all(|(x, y)| x.equal(y))
        };
        let plain = run(&[None, None]);
        let flagged = run(&[Some(0.0), Some(0.0)]);
        assert!(plain.iter().zip(&flagged).all(|(a, b)| equal(a, b)), "taken steps differ from plain LARS steps");
        // Skipped first step: weights unchanged; the next step then equals a fresh optimiser's
        // first step with that step's gradient (3 + 1).
        let skipped = run(&[Some(1.0), Some(0.0)]);
        assert!(skipped[0].0.equal(&Tensor::full([4, 3], 0.5, (Kind::Float, Device::Cpu))), "skipped step moved w");
        assert!(skipped[0].1.equal(&Tensor::full([4], 0.1, (Kind::Float, Device::Cpu))), "skipped step moved b");
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[4, 3], nn::Init::Const(0.5));
        let b = vs.root().var("b", &[4], nn::Init::Const(0.1));
        let mut sgd = Sgd::new(&vs, 0.9, 1e-4);
        sgd.lars_eta = Some(0.02);
        ((&w * 4.0).sum(Kind::Float) + (&b * &b * 4.0).sum(Kind::Float)).backward();
        sgd.step(0.3).unwrap();
        let state: Vec<Tensor> = sgd.state().into_iter().map(|(_, t)| t.copy()).collect();
        assert!(equal(&skipped[1], &(w.copy(), b.copy(), state)), "a step after a skipped first step differs");
        // A skipped later step keeps weights and buffers.
        let late = run(&[None, Some(1.0)]);
        assert!(equal(&late[0], &late[1]), "a skipped later step changed the state");
    }

    #[test]
    fn restored_momentum_takes_the_parameters_memory_format() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut w = vs.root().var("w", &[2, 3, 3, 3], nn::Init::Const(1.0));
        tch::no_grad(|| {
            w.set_data(&torch_shim::contiguous(&w, torch_shim::MemoryFormat::ChannelsLast).unwrap());
        });
        let mut sgd = Sgd::new(&vs, 0.9, 0.0);
        // A saved buffer is NCHW-contiguous; the fused kernels pair elements by position.
        let saved = Tensor::arange(54, (Kind::Float, Device::Cpu)).view([2, 3, 3, 3]);
        sgd.load_state(vec![("w".into(), saved.shallow_clone())]).unwrap();
        let (_, buffer) = &sgd.state()[0];
        assert_eq!(buffer.stride(), w.stride());
        assert!(buffer.equal(&saved));
    }
}
