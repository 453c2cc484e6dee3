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
    /// images (at least one batch each). The image count comes from a ladder of ×0.8 rungs below
    /// the full set, so that the few percent by which a timed step varies from run to run seldom
    /// changes the plan (and with it the numbers) on the same machine.
    pub fn within(self, budget: f64, step_seconds: f64) -> Self {
        let affordable = (budget / step_seconds.max(1e-9)).floor().min(usize::MAX as f64) as usize;
        let batch = self.batch_size.max(1);
        let fits = |images: usize| self.epochs * (images / batch) <= affordable;
        let mut rung = self.images as f64;
        let images = loop {
            let images = (rung as usize / batch * batch).max(batch).min(self.images);
            if fits(images) || images <= batch {
                break images;
            }
            rung *= RUNG;
        };
        PretrainPlan { images, affordable: Some(affordable), ..self }
    }
}

/// Ratio between two image counts a budget may choose.
const RUNG: f64 = 0.8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_shrinks_each_pass_not_their_number() {
        let full = PretrainPlan::all(10_000, 3, 64);
        assert_eq!(full.steps(), 468);
        assert_eq!(full.within(600.0, 1.0).steps(), 468, "enough time: every step");
        // 140 steps fit: the rungs 10,000 → 8,000 → 6,400 → 5,120 → 4,096 → 3,276 → 2,621, in
        // whole batches: 3,264 images (153 steps) do not fit, 2,560 (120 steps) do.
        let cut = full.within(280.0, 2.0);
        assert_eq!((cut.images, cut.epochs, cut.steps(), cut.affordable), (2560, 3, 120, Some(140)));
        // A step 5% slower or faster chooses the same plan.
        assert_eq!(full.within(280.0, 1.9).images, cut.images);
        assert_eq!(full.within(280.0, 2.1).images, cut.images);
        assert_eq!(full.within(1.0, 10.0).steps(), 3, "at least one batch a pass");
        assert!(full.within(1.0, 10.0).images == 64);
    }
}
