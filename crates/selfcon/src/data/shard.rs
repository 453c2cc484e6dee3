//! Each rank's share of an epoch in a distributed run.
//!
//! Training (`GlobalBatches`): the epoch's permutation — the same on every rank — is padded to a
//! multiple of the world size by repeating its start (as torch's DistributedSampler pads), cut
//! into global batches of W·B, and rank r takes the r-th B of each. The ranks' batches therefore
//! form, in rank order, exactly the global batch one process with batch W·B would draw, and all
//! ranks run the same number of equal-sized steps.
//! Evaluation (`Strided`): rank r takes every W-th sample from r, without padding, so that summed
//! counts cover each sample once.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardMode {
    GlobalBatches,
    Strided,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world_size: usize,
    pub mode: ShardMode,
}

impl Shard {
    /// This rank's batches of an epoch whose sample order is `order`.
    pub fn batches(&self, order: &[usize], batch_size: usize, drop_last: bool) -> Vec<Vec<usize>> {
        let (w, b) = (self.world_size.max(1), batch_size.max(1));
        match self.mode {
            ShardMode::GlobalBatches => {
                let padded_len = order.len().div_ceil(w) * w;
                let padded: Vec<usize> = order.iter().copied().cycle().take(padded_len).collect();
                padded
                    .chunks(w * b)
                    .filter(|chunk| !drop_last || chunk.len() == w * b)
                    .map(|chunk| {
                        let part = chunk.len() / w;
                        chunk[self.rank * part..(self.rank + 1) * part].to_vec()
                    })
                    .collect()
            }
            ShardMode::Strided => {
                let mine: Vec<usize> = order.iter().copied().skip(self.rank).step_by(w).collect();
                mine.chunks(b).filter(|c| !drop_last || c.len() == b).map(<[usize]>::to_vec).collect()
            }
        }
    }

    /// How many batches [`Shard::batches`] gives for `n` samples.
    pub fn batch_count(&self, n: usize, batch_size: usize, drop_last: bool) -> usize {
        let (w, b) = (self.world_size.max(1), batch_size.max(1));
        let (items, per_batch) = match self.mode {
            ShardMode::GlobalBatches => (n.div_ceil(w) * w, w * b),
            ShardMode::Strided => ((n + w - 1 - self.rank.min(n + w - 1)) / w, b),
        };
        if drop_last {
            items / per_batch
        } else {
            items.div_ceil(per_batch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_batches_reassemble_the_single_process_batches() {
        let order: Vec<usize> = (0..23).rev().collect();
        for drop_last in [false, true] {
            let single = Shard { rank: 0, world_size: 1, mode: ShardMode::GlobalBatches }.batches(&order, 8, drop_last);
            let ranks: Vec<Vec<Vec<usize>>> = (0..2)
                .map(|rank| Shard { rank, world_size: 2, mode: ShardMode::GlobalBatches }.batches(&order, 4, drop_last))
                .collect();
            assert_eq!(ranks[0].len(), ranks[1].len());
            for (step, batch) in single.iter().enumerate() {
                let joined: Vec<usize> = ranks[0][step].iter().chain(&ranks[1][step]).copied().collect();
                if batch.len() == 8 {
                    assert_eq!(&joined, batch);
                } else {
                    // 23 samples pad to 24: the last global batch is 7 + one repeated sample.
                    assert_eq!(joined.len(), 8);
                    assert_eq!(&joined[..7], &batch[..]);
                }
            }
            for (rank, batches) in ranks.iter().enumerate() {
                let s = Shard { rank, world_size: 2, mode: ShardMode::GlobalBatches };
                assert_eq!(s.batch_count(23, 4, drop_last), batches.len());
            }
        }
    }

    #[test]
    fn strided_shards_cover_each_sample_once() {
        let order: Vec<usize> = (0..10).collect();
        let mut seen = Vec::new();
        for rank in 0..3 {
            let s = Shard { rank, world_size: 3, mode: ShardMode::Strided };
            let batches = s.batches(&order, 2, false);
            assert_eq!(s.batch_count(10, 2, false), batches.len());
            seen.extend(batches.into_iter().flatten());
        }
        seen.sort();
        assert_eq!(seen, order);
    }
}
