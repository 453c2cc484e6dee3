//! The losses of the last few steps, kept where they were computed and read by the host together:
//! a training step never waits for the device to report its loss (reading a CUDA value waits for
//! every kernel queued before it, leaving the GPU idle while the host queues the next step).
//! The loop reads the window every `--print_freq` steps, before any checkpoint and at the end of
//! a pass; a NaN/inf loss is then reported with the step it happened at.

use tch::{Kind, Tensor};

use super::pass_state::PassState;
use crate::distributed::Distributed;
use crate::error::Result;

/// Read when no `--print_freq` sets the rhythm (the official default).
pub const DEFAULT_READ_EVERY: usize = 10;

/// Read at least this often whatever `--print_freq` is: a NaN/inf loss stops the run within this
/// many steps, and the window stays small.
pub const MAX_READ_EVERY: usize = 50;

#[derive(Default)]
pub struct LossWindow {
    /// (step index, images the loss covers) of each loss below.
    steps: Vec<(usize, usize)>,
    /// Each step's loss: a detached scalar on the device (no autograd graph kept alive).
    losses: Vec<Tensor>,
    /// Steps whose update the loss scaler skipped, counted on the device.
    skipped: Option<Tensor>,
}

/// What one read of the window found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowRead {
    /// (step index, images, loss) of each step, in step order: a caller summing them one by one
    /// gets the same total however the steps were grouped into reads (a resumed run, another
    /// `--print_freq`, give the uninterrupted run's bits).
    pub steps: Vec<(usize, usize, f64)>,
    pub skipped_steps: usize,
}

impl WindowRead {
    /// The newest step's loss (NaN for an empty window).
    pub fn last(&self) -> f64 {
        self.steps.last().map_or(f64::NAN, |s| s.2)
    }

    /// The first step with a NaN/inf loss: (step index, loss).
    pub fn non_finite(&self) -> Option<(usize, f64)> {
        self.steps.iter().find(|s| !s.2.is_finite()).map(|&(step, _, value)| (step, value))
    }

    /// Adds the steps to the pass's running totals one by one, in step order: the total does not
    /// depend on where the reads fell (a resumed run, another `--print_freq`).
    pub fn add_to(&self, state: &mut PassState) {
        for &(_, images, value) in &self.steps {
            state.loss_sum += value * images as f64;
            state.images += images;
        }
        state.skipped_steps += self.skipped_steps;
    }
}

impl LossWindow {
    /// Adds one step's loss (covering `images` images) and, with loss scaling, its skip flag (a
    /// one-element float tensor, 1 when the update was skipped; it is read now, on the device).
    pub fn push(&mut self, step: usize, images: usize, loss: &Tensor, skipped: Option<&Tensor>) {
        self.steps.push((step, images));
        self.losses.push(loss.detach().to_kind(Kind::Double).reshape([1]));
        if let Some(flag) = skipped {
            let flag = flag.to_kind(Kind::Double).reshape([1]);
            self.skipped = Some(match self.skipped.take() {
                Some(sum) => sum + flag,
                None => flag,
            });
        }
    }

    /// Copies the window to the host (one synchronisation) and empties it. In a distributed run
    /// (`dist`) each step's loss is the mean over the ranks (one collective per read; every rank
    /// reads after the same steps): the log shows it, and a NaN/inf on one rank stops every rank
    /// at the same step. The ranks' losses are gathered and added in rank order, then divided on
    /// the host, so a step's mean has the same bits whatever window it was read in (an all-reduce
    /// would sum in an order that depends on the message length).
    pub fn read(&mut self, dist: Option<&Distributed>) -> Result<WindowRead> {
        let mut read = WindowRead::default();
        if !self.steps.is_empty() {
            let losses = Tensor::cat(&self.losses, 0);
            let (losses, ranks) = match dist.filter(|d| d.world_size > 1) {
                Some(d) => (d.sum_in_rank_order(&losses, "averaging the loss over the ranks")?, d.world_size as f64),
                None => (losses, 1.0),
            };
            let values = Vec::<f64>::try_from(losses.to_device(tch::Device::Cpu)).expect("a float64 vector converts");
            read.steps =
                self.steps.iter().zip(values).map(|(&(step, images), value)| (step, images, value / ranks)).collect();
        }
        if let Some(skipped) = self.skipped.take() {
            // Equal on every rank: the scaler sees the all-reduced gradients.
            read.skipped_steps = skipped.double_value(&[0]).round() as usize;
        }
        self.steps.clear();
        self.losses.clear();
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sums_and_names_the_first_non_finite_step() {
        let mut window = LossWindow::default();
        assert!(window.read(None).unwrap().steps.is_empty());
        let flag = |v: f32| Tensor::from_slice(&[v]);
        window.push(4, 8, &Tensor::from(2.0f32), Some(&flag(0.0)));
        window.push(5, 8, &Tensor::from(f32::NAN), Some(&flag(1.0)));
        window.push(6, 4, &Tensor::from(f32::INFINITY), Some(&flag(1.0)));
        window.push(7, 4, &Tensor::from(1.5f32), Some(&flag(0.0)));
        assert_eq!(window.steps.len(), 4);
        let read = window.read(None).unwrap();
        assert!(window.steps.is_empty() && window.losses.is_empty());
        assert_eq!(read.steps.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(), [(4, 8), (5, 8), (6, 4), (7, 4)]);
        assert_eq!(read.skipped_steps, 2);
        assert_eq!(read.last(), 1.5);
        let (step, value) = read.non_finite().unwrap();
        assert!(step == 5 && value.is_nan());
        window.push(8, 2, &Tensor::from(3.0f64), None);
        let read = window.read(None).unwrap();
        assert_eq!((read.steps.clone(), read.skipped_steps, read.non_finite()), (vec![(8, 2, 3.0)], 0, None));
    }

    #[test]
    fn a_kept_loss_does_not_hold_its_graph() {
        let x = Tensor::ones([3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let loss = (&x * 2.0).sum(Kind::Float);
        let mut window = LossWindow::default();
        window.push(0, 1, &loss, None);
        assert!(!window.losses[0].requires_grad());
        assert_eq!(window.read(None).unwrap().last(), 6.0);
    }

    #[test]
    fn totals_do_not_depend_on_how_steps_were_grouped_into_reads() {
        let order = crate::data::OrderKey { samples: 3, batch_size: 1, seed: None, drop_last: false };
        let mut state = PassState::start(1, 0, 3, order);
        state.loss_sum = 1e16;
        // Summed as a group first, 1 + 1 would survive next to 1e16; step by step neither does,
        // which is what a run reading after every step computes.
        let read = WindowRead { steps: vec![(1, 1, 1.0), (2, 1, 1.0)], skipped_steps: 1 };
        read.add_to(&mut state);
        assert_eq!(state.loss_sum, 1e16);
        assert_eq!((state.images, state.skipped_steps), (2, 1));
    }
}
