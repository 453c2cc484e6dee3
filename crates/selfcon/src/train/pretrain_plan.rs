//! Pre-training sized to a time budget: the same number of passes over fewer images when the
//! measured step time cannot fit them all (`selfcon demo --pretrain_seconds`), so a slow CPU ends in
//! time and a fast one does every step.

/// How much pre-training a run does: `epochs` passes of `images` at `batch_size`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PretrainPlan {
    pub images: usize,
    pub epochs: usize,
    pub batch_size: usize,
    /// Steps the time budget allowed, when one was measured.
    pub affordable: Option<usize>,
}

impl PretrainPlan {
    pub fn all(images: usize, epochs: usize, batch_size: usize) -> Self {
        PretrainPlan { images, epochs, batch_size, affordable: None }
    }

    /// Steps of the plan (the last partial batch of a pass is dropped).
    pub fn steps(&self) -> usize {
        self.epochs * (self.images / self.batch_size)
    }

    /// The plan cut to `budget` seconds at `step_seconds` a step: the same passes over fewer
    /// images (at least one batch each).
    pub fn within(self, budget: f64, step_seconds: f64) -> Self {
        let affordable = (budget / step_seconds.max(1e-9)).floor().min(usize::MAX as f64) as usize;
        let per_epoch = (affordable / self.epochs.max(1)).max(1);
        let images = self.images.min(per_epoch * self.batch_size);
        PretrainPlan { images, affordable: Some(affordable), ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_shrinks_each_pass_not_their_number() {
        let full = PretrainPlan::all(10_000, 3, 64);
        assert_eq!(full.steps(), 468);
        assert_eq!(full.within(600.0, 1.0).steps(), 468, "enough time: every step");
        let cut = full.within(300.0, 2.0);
        assert_eq!((cut.images, cut.epochs, cut.steps(), cut.affordable), (3200, 3, 150, Some(150)));
        assert_eq!(full.within(1.0, 10.0).steps(), 3, "at least one batch a pass");
    }
}
