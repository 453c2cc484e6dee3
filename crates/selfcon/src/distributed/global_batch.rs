//! Global negatives: the contrastive loss of the whole global batch on every rank.
//!
//! Each rank all-gathers the normalised projections and the labels, keeps its own slice live and
//! the others' detached, and computes the loss over all W·B images. Every rank then holds the
//! same loss L, and the gradient it back-propagates reaches only its own samples' path; summing
//! those gradients over ranks ([`super::gradients::Reduction::Sum`]) gives exactly dL/dθ of one
//! process on the global batch — what solo-learn's GatherLayer achieves with a custom backward.

use tch::Tensor;

use super::Distributed;
use crate::error::Result;

impl Distributed {
    /// `rows` laid out `[view 1 of every image; view 2; …]` (`views` blocks of B rows) becomes the
    /// same layout over the global batch: `[view 1 of rank 0's images, of rank 1's, …; view 2 …]`,
    /// with this rank's rows still attached to the graph.
    pub fn gather_batch(&self, rows: &Tensor, views: i64) -> Result<Tensor> {
        let size = rows.size();
        let per_view = size[0] / views;
        let mut shape = vec![views, per_view];
        shape.extend_from_slice(&size[1..]);
        let blocks = rows.reshape(&shape);
        let mut parts = self.all_gather(&blocks.detach().contiguous(), "all-gathering the features")?;
        parts[self.rank] = blocks;
        let mut out_shape = vec![views * per_view * self.world_size as i64];
        out_shape.extend_from_slice(&size[1..]);
        Ok(Tensor::cat(&parts, 1).reshape(&out_shape))
    }
}
