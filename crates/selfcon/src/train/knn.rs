//! The online kNN monitor of pre-training (`--knn_every`): a weighted k-nearest-neighbour
//! classifier on the encoder's features, as lightly's benchmark module and InstDisc compute it.
//! The bank holds the L2-normalised pooled features of the training images (evaluation transform,
//! no augmentation); each query — a test image, or the held-out part of `--val_split` — takes its
//! `k` most cosine-similar bank entries, weights each by `exp(similarity / t)`, and predicts the
//! classes with the largest summed weights (top-1, top-5). Reported for the backbone and every exit.
//!
//! Memory: the bank is `N × d` floats on the device; similarities are computed for a chunk of
//! queries at a time, at most [`SIMILARITY_BUDGET`] entries (256 MiB in fp32), so the rest stays
//! bounded on ImageNet-sized banks. In a distributed run every rank extracts the features of its
//! strided shard of both splits; the bank shards are gathered and put back in dataset order on
//! every rank, each rank classifies its own queries, and the hit counts are summed: the same
//! numbers as one process.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::evaluation::Accuracy;
use super::features::{encoder_features, EncoderFeatures, FeatureExtraction};
use crate::data::augment::EvalTransform;
use crate::data::{Dataset, Shard, ShardMode};
use crate::distributed::Distributed;
use crate::error::{Error, Result};
use crate::model::ConModel;

/// Similarity entries (queries × bank) computed at once.
pub const SIMILARITY_BUDGET: i64 = 64 << 20;

/// `--knn_every`, `--knn_k`, `--knn_t`, `--val_split`; saved with the pre-training configuration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KnnMonitor {
    /// Evaluate after every this many epochs (and after the last one); 0: off.
    pub every: usize,
    /// Neighbours that vote.
    pub k: usize,
    /// Temperature of the vote weights `exp(similarity / t)`.
    pub temperature: f64,
    /// Fraction of the training set held out of pre-training as the queries (0: the test split).
    pub val_split: f64,
    /// The test-time transform of the dataset (set whenever the monitor is on).
    pub eval: Option<EvalTransform>,
}

impl Default for KnnMonitor {
    fn default() -> Self {
        KnnMonitor { every: 0, k: 200, temperature: 0.1, val_split: 0.0, eval: None }
    }
}

impl KnnMonitor {
    pub fn validate(&self) -> Result<()> {
        if self.every > 0 && self.k == 0 {
            return Err(Error::option("knn_k", "must be at least 1"));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::option("knn_t", format!("must be a positive number, got {}", self.temperature)));
        }
        if !(0.0..1.0).contains(&self.val_split) {
            return Err(Error::option("val_split", format!("must be in [0, 1), got {}", self.val_split)));
        }
        if self.val_split > 0.0 && self.every == 0 {
            return Err(Error::option("val_split", "holds images out for the kNN monitor: give --knn_every too"));
        }
        Ok(())
    }

    /// Whether the monitor runs after `epoch` of `epochs`.
    pub fn due(&self, epoch: usize, epochs: usize) -> bool {
        self.every > 0 && (epoch.is_multiple_of(self.every) || epoch == epochs)
    }
}

/// One evaluation of the monitor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KnnReport {
    pub backbone: Accuracy,
    /// One per exit, in exit order.
    pub exits: Vec<Accuracy>,
    pub bank_size: usize,
    pub queries: usize,
    pub seconds: f64,
}

impl KnnReport {
    /// `kNN 81.2/98.9 (exit 1: 75.0/97.1) · 3.4 s` for the epoch summary line.
    pub fn summary(&self) -> String {
        let exits: Vec<String> = self
            .exits
            .iter()
            .enumerate()
            .map(|(i, a)| format!("exit {}: {:.1}/{:.1}", i + 1, a.top1, a.top5))
            .collect();
        let exits = if exits.is_empty() { String::new() } else { format!(" ({})", exits.join(", ")) };
        format!("kNN {:.1}/{:.1}{exits} in {:.1} s", self.backbone.top1, self.backbone.top5, self.seconds)
    }

    /// The fields of a metrics record: `knn_top1`, `knn_top5`, `knn_exit1_top1`, ...
    pub fn record_fields(&self, record: &mut serde_json::Map<String, serde_json::Value>) {
        record.insert("knn_top1".into(), self.backbone.top1.into());
        record.insert("knn_top5".into(), self.backbone.top5.into());
        for (i, a) in self.exits.iter().enumerate() {
            record.insert(format!("knn_exit{}_top1", i + 1), a.top1.into());
            record.insert(format!("knn_exit{}_top5", i + 1), a.top5.into());
        }
        record.insert("knn_seconds".into(), self.seconds.into());
    }
}

/// The metrics CSV columns the monitor fills for a model with `exits` exits.
pub fn record_columns(exits: usize) -> Vec<String> {
    let mut columns = vec!["knn_top1".to_string(), "knn_top5".to_string()];
    for i in 1..=exits {
        columns.push(format!("knn_exit{i}_top1"));
        columns.push(format!("knn_exit{i}_top5"));
    }
    columns
}

/// Runs the monitor: features of `bank` and `queries` (evaluation transform), then the weighted
/// kNN vote for the backbone and every exit. The model is used in evaluation mode, without
/// gradients; `dist` shards the work (see the module documentation).
pub fn evaluate(
    model: &ConModel,
    bank: &Arc<dyn Dataset>,
    queries: &Arc<dyn Dataset>,
    transform: EvalTransform,
    how: FeatureExtraction,
    monitor: &KnnMonitor,
    dist: Option<&Distributed>,
) -> Result<KnnReport> {
    let how = FeatureExtraction {
        shard: dist.filter(|d| d.world_size > 1).map(|d| Shard {
            rank: d.rank,
            world_size: d.world_size,
            mode: ShardMode::Strided,
        }),
        ..how
    };
    let started = Instant::now();
    let classes = bank.num_classes().max(queries.num_classes());
    let bank_features = gathered(encoder_features(model, bank, transform, how)?, bank.len(), dist)?;
    let query_features = encoder_features(model, queries, transform, how)?;
    let device = how.device;
    let vote = |bank: &Tensor, bank_labels: &Tensor, queries: &Tensor| {
        weighted_knn_hits(bank, bank_labels, queries, &query_features.labels, classes, monitor, device)
    };
    let mut hits = vote(&bank_features.backbone, &bank_features.labels, &query_features.backbone)?;
    for (b, q) in bank_features.exits.iter().zip(&query_features.exits) {
        hits.extend(vote(b, &bank_features.labels, q)?);
    }
    hits.push(query_features.labels.size()[0]);
    let hits = match dist.filter(|d| d.world_size > 1) {
        Some(d) => d.sum_counts(&hits, "summing the kNN hits")?,
        None => hits,
    };
    let queries_total = *hits.last().unwrap_or(&0);
    let percent = |h: i64| if queries_total > 0 { 100.0 * h as f64 / queries_total as f64 } else { 0.0 };
    let accuracy = |i: usize| Accuracy { top1: percent(hits[2 * i]), top5: percent(hits[2 * i + 1]) };
    Ok(KnnReport {
        backbone: accuracy(0),
        exits: (1..=query_features.exits.len()).map(accuracy).collect(),
        bank_size: bank.len(),
        queries: queries_total as usize,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The whole bank in dataset order on every rank: each rank extracted every `world`-th image
/// starting at its rank (a strided shard); the shards are padded to one length, gathered, and
/// interleaved back.
fn gathered(mine: EncoderFeatures, n: usize, dist: Option<&Distributed>) -> Result<EncoderFeatures> {
    let Some(d) = dist.filter(|d| d.world_size > 1) else { return Ok(mine) };
    let per_rank = n.div_ceil(d.world_size) as i64;
    let gather = |t: &Tensor| -> Result<Tensor> {
        let rows = t.size()[0];
        let padded = if rows < per_rank {
            let mut shape = t.size();
            shape[0] = per_rank - rows;
            Tensor::cat(&[t.shallow_clone(), Tensor::zeros(&shape, (t.kind(), t.device()))], 0)
        } else {
            t.shallow_clone()
        };
        let parts = d.all_gather(&padded.contiguous(), "gathering the kNN bank")?;
        Ok(interleave(&parts, n))
    };
    Ok(EncoderFeatures {
        backbone: gather(&mine.backbone)?,
        exits: mine.exits.iter().map(gather).collect::<Result<_>>()?,
        labels: gather(&mine.labels)?,
    })
}

/// Rows in dataset order from strided shards: `parts[r]` holds rows r, r + w, r + 2w, ... (padded
/// to one length); the first `n` rows of the interleaving.
fn interleave(parts: &[Tensor], n: usize) -> Tensor {
    // [w, per_rank, ...] → [per_rank, w, ...] → rows in dataset order.
    let stacked = Tensor::stack(parts, 0);
    let mut shape = stacked.size();
    let (w, per_rank) = (shape[0], shape[1]);
    shape.remove(0);
    shape[0] = per_rank * w;
    stacked.transpose(0, 1).contiguous().reshape(&shape).narrow(0, 0, n as i64)
}

/// Top-1 and top-5 hits of the weighted kNN vote of `queries` (`[Q, d]`, labels `[Q]`) against
/// `bank` (`[N, d]`, labels `[N]`), both L2-normalised here, computed on `device` in chunks of
/// queries of at most [`SIMILARITY_BUDGET`] similarities.
pub fn weighted_knn_hits(
    bank: &Tensor,
    bank_labels: &Tensor,
    queries: &Tensor,
    query_labels: &Tensor,
    classes: i64,
    monitor: &KnnMonitor,
    device: Device,
) -> Result<Vec<i64>> {
    let sets = (bank, bank_labels, queries, query_labels);
    hits_within(sets, classes, monitor, device, SIMILARITY_BUDGET)
}

/// [`weighted_knn_hits`] with `budget` similarities per chunk.
fn hits_within(
    (bank, bank_labels, queries, query_labels): (&Tensor, &Tensor, &Tensor, &Tensor),
    classes: i64,
    monitor: &KnnMonitor,
    device: Device,
    budget: i64,
) -> Result<Vec<i64>> {
    let _guard = tch::no_grad_guard();
    let n = bank.size()[0];
    if n == 0 {
        return Err(Error::input("the kNN bank is empty"));
    }
    let normalise = |t: &Tensor| -> Tensor {
        let t = t.to_device(device).to_kind(Kind::Float);
        &t / t.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12)
    };
    let bank = normalise(bank);
    let bank_labels = bank_labels.to_device(device).to_kind(Kind::Int64);
    let k = (monitor.k as i64).min(n);
    let top = 5.min(classes);
    let chunk = (budget / n).max(1);
    let total = queries.size()[0];
    let (mut top1, mut top5) = (Tensor::zeros([], (Kind::Int64, device)), Tensor::zeros([], (Kind::Int64, device)));
    let mut start = 0;
    while start < total {
        let len = chunk.min(total - start);
        let q = normalise(&queries.narrow(0, start, len));
        let y = query_labels.narrow(0, start, len).to_device(device).to_kind(Kind::Int64);
        let similarity = q.matmul(&bank.tr());
        let (nearest, index) = similarity.topk(k, 1, true, true);
        // exp((sim - 1) / t): the same votes as exp(sim / t) up to one factor, without overflow
        // at small temperatures (sim ≤ 1).
        let weights = ((nearest - 1.0) / monitor.temperature).exp();
        let neighbour_labels = bank_labels.index_select(0, &index.reshape([-1])).reshape([len, k]);
        let scores = Tensor::zeros([len, classes], (Kind::Float, device)).scatter_add(1, &neighbour_labels, &weights);
        let (_, predicted) = scores.topk(top, 1, true, true);
        let correct = predicted.eq_tensor(&y.unsqueeze(1));
        top1 += correct.narrow(1, 0, 1).sum(Kind::Int64);
        top5 += correct.sum(Kind::Int64);
        start += len;
    }
    // One read per feature set (the host needs the counts once).
    Ok(vec![top1.int64_value(&[]), top5.int64_value(&[])])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vote_weights_neighbours_by_similarity() {
        // Bank: two class-0 points near (1, 0), one class-1 point at (0, 1).
        let bank = Tensor::from_slice(&[1.0f32, 0.0, 0.9, 0.1, 0.0, 1.0]).view([3, 2]);
        let labels = Tensor::from_slice(&[0i64, 0, 1]);
        let queries = Tensor::from_slice(&[1.0f32, 0.05, 0.1, 1.0, 0.5, 0.7]).view([3, 2]);
        let query_labels = Tensor::from_slice(&[0i64, 1, 1]);
        let monitor = KnnMonitor { every: 1, k: 3, temperature: 1.0, ..Default::default() };
        // Query 3 is closest to the class-1 point (cosine 0.81 against 0.67 and 0.58), but at
        // temperature 1 the two class-0 neighbours outvote it: e^0.58 + e^0.67 > e^0.81.
        let hits = weighted_knn_hits(&bank, &labels, &queries, &query_labels, 2, &monitor, Device::Cpu).unwrap();
        assert_eq!(hits, vec![2, 3]);
        // With k = 1 only the nearest votes: query 3 is then right.
        let nearest = KnnMonitor { k: 1, ..monitor };
        let hits = weighted_knn_hits(&bank, &labels, &queries, &query_labels, 2, &nearest, Device::Cpu).unwrap();
        assert_eq!(hits, vec![3, 3]);
    }

    #[test]
    fn chunked_queries_give_the_unchunked_counts() {
        let bank = engine_seeded_randn([300, 16]);
        let labels = Tensor::arange(300, (Kind::Int64, Device::Cpu)).remainder(7);
        let queries = engine_seeded_randn([1000, 16]);
        let query_labels = Tensor::arange(1000, (Kind::Int64, Device::Cpu)).remainder(7);
        let monitor = KnnMonitor { every: 1, k: 20, temperature: 0.07, ..Default::default() };
        let sets = (&bank, &labels, &queries, &query_labels);
        let whole = hits_within(sets, 7, &monitor, Device::Cpu, i64::MAX).unwrap();
        // Chunks of 7 queries (2 100 similarities each), the last one shorter.
        let chunked = hits_within(sets, 7, &monitor, Device::Cpu, 7 * 300).unwrap();
        assert_eq!(whole, chunked);
        assert!(whole[0] > 0 && whole[1] > whole[0], "{whole:?}");
    }

    fn engine_seeded_randn(shape: [i64; 2]) -> Tensor {
        crate::engine::seeded(3, || Tensor::randn(shape, (Kind::Float, Device::Cpu)))
    }

    #[test]
    fn strided_shards_interleave_back_into_dataset_order() {
        // 7 rows over 3 ranks: rank 0 has 0, 3, 6; rank 1 has 1, 4 (+ padding); rank 2 has 2, 5 (+ padding).
        let shard = |r: i64| {
            let rows: Vec<i64> = (0..7).skip(r as usize).step_by(3).collect();
            let mut t = Tensor::from_slice(&rows).view([-1, 1]) * Tensor::from_slice(&[1i64, 10]).view([1, 2]);
            if rows.len() < 3 {
                t = Tensor::cat(&[t, Tensor::zeros([1, 2], (Kind::Int64, Device::Cpu))], 0);
            }
            t
        };
        let parts: Vec<Tensor> = (0..3).map(shard).collect();
        let joined = interleave(&parts, 7);
        let want: Vec<i64> = (0..7).flat_map(|i| [i, 10 * i]).collect();
        assert_eq!(Vec::<i64>::try_from(&joined.view([-1])).unwrap(), want);
    }

    #[test]
    fn settings_are_checked_and_the_last_epoch_is_always_due() {
        assert!(KnnMonitor { k: 0, every: 1, ..Default::default() }.validate().is_err());
        assert!(KnnMonitor { temperature: 0.0, ..Default::default() }.validate().is_err());
        assert!(KnnMonitor { val_split: 1.0, every: 1, ..Default::default() }.validate().is_err());
        assert!(KnnMonitor { val_split: 0.1, every: 0, ..Default::default() }.validate().is_err());
        assert!(KnnMonitor { val_split: 0.1, every: 2, ..Default::default() }.validate().is_ok());
        let m = KnnMonitor { every: 3, ..Default::default() };
        let due: Vec<usize> = (1..=7).filter(|&e| m.due(e, 7)).collect();
        assert_eq!(due, vec![3, 6, 7]);
        assert!(!KnnMonitor::default().due(1, 1));
    }
}
