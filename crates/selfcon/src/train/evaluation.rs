//! Classification accuracy, one way for every stage: linear evaluation's classifiers, 1-stage
//! CE's heads and the demo's probes count top-1/top-5 hits on the device with [`topk_hits`];
//! evaluation passes over a test set go through [`classifier_accuracies`], which places the
//! batches as training does (layout, autocast) and reads the counts once.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::epoch_loop::TrainLoop;
use crate::data::DataLoader;
use crate::error::{Error, Result};

/// Top-1/top-5 (percent) of one classifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
}

impl Accuracy {
    /// From `[top-1 hits, top-k hits]` among `seen` images.
    fn from_hits(hits: &[i64], seen: i64) -> Self {
        let percent = |n: i64| 100.0 * n as f64 / seen as f64;
        Accuracy { top1: percent(hits[0]), top5: percent(hits[1]) }
    }
}

/// `[rows whose label is the top-1 logit, rows whose label is among the top-5]` (top-k for fewer
/// classes), int64 on the logits' device.
pub fn topk_hits(logits: &Tensor, labels: &Tensor) -> Tensor {
    let k = 5.min(logits.size()[1]);
    let (_, top) = logits.topk(k, 1, true, true);
    let hits = top.eq_tensor(&labels.unsqueeze(1));
    Tensor::stack(&[hits.narrow(1, 0, 1).sum(Kind::Int64), hits.sum(Kind::Int64)], 0)
}

/// The accuracy of `logits` for `labels` (one process, read at once).
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Accuracy {
    let hits = Vec::<i64>::try_from(topk_hits(logits, labels).to_device(Device::Cpu)).expect("int64 hit counts");
    Accuracy::from_hits(&hits, labels.size()[0].max(1))
}

/// The accuracies of `classifiers` classifiers over every batch of `loader`: `logits(images)`
/// gives each classifier's logits for the batch's images (on the device, in the model's layout,
/// under the training precision's autocast, without gradients). In a distributed run each rank
/// evaluates its shard and the counts are summed over the ranks.
pub fn classifier_accuracies(
    loader: &DataLoader,
    train: &TrainLoop,
    classifiers: usize,
    mut logits: impl FnMut(&Tensor) -> Result<Vec<Tensor>>,
) -> Result<Vec<Accuracy>> {
    let _guard = tch::no_grad_guard();
    let _autocast = train.autocast()?;
    let hits = Tensor::zeros([classifiers as i64, 2], (Kind::Int64, train.device()));
    let mut seen = 0i64;
    for batch in loader.epoch(0) {
        let batch = batch?;
        let labels = train.labels_to_device(&batch.labels)?;
        for (k, l) in logits(&train.batch_images(&batch)?)?.iter().enumerate() {
            let _ = hits.get(k as i64).g_add_(&topk_hits(l, &labels));
        }
        seen += labels.size()[0];
    }
    accuracies(&hits, seen)
}

/// Accuracies from `[classifiers, 2]` hit counts (top-1, top-k; on the device) over `seen`
/// images: read once, summed over the ranks in a distributed run (each saw its shard).
pub fn accuracies(hits: &Tensor, seen: i64) -> Result<Vec<Accuracy>> {
    let mut flat = Vec::<i64>::try_from(hits.flatten(0, -1).to_device(Device::Cpu)).map_err(Error::Torch)?;
    flat.push(seen);
    let flat = crate::distributed::total_counts(flat, "summing the evaluation counts")?;
    let (seen, counts) = flat.split_last().expect("the count of images is last");
    Ok(counts.chunks(2).map(|c| Accuracy::from_hits(c, *seen)).collect())
}
