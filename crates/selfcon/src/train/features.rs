//! The encoder's features of a whole split, computed once in dataset order: the pooled backbone
//! vector and each exit's pooled vector — exactly what the linear classifiers see. Used by the
//! demo's probes and by `selfcon features` (kNN, retrieval, t-SNE or any analysis in Python).

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::precision::Precision;
use crate::data::augment::EvalTransform;
use crate::data::{BatchFormat, DataLoader, Dataset, LoaderConfig, Shard, Transform};
use crate::error::Result;
use crate::model::ConModel;

/// How [`encoder_features`] runs the encoder.
#[derive(Clone, Copy, Debug)]
pub struct FeatureExtraction {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub threads: usize,
    pub device: Device,
    /// Autocast for the forward pass (features are returned in fp32).
    pub precision: Precision,
    /// Channels-last batches (give it when the model's weights are channels-last).
    pub channels_last: bool,
    /// Only this part of the split (a distributed run's strided shard), still in dataset order.
    pub shard: Option<Shard>,
}

/// Features of every image of a split, on the CPU, in dataset order.
pub struct EncoderFeatures {
    /// `[N, d]`.
    pub backbone: Tensor,
    /// One `[N, d]` per exit, in exit order.
    pub exits: Vec<Tensor>,
    /// `[N]`, int64.
    pub labels: Tensor,
}

/// Runs the encoder in eval mode, without gradients, over `set` with the evaluation `transform`.
pub fn encoder_features(
    model: &ConModel,
    set: &Arc<dyn Dataset>,
    transform: EvalTransform,
    how: FeatureExtraction,
) -> Result<EncoderFeatures> {
    let FeatureExtraction { mean, std, threads, device, precision, channels_last, shard } = how;
    crate::engine::use_device(device)?;
    let loader = DataLoader::new(
        set.clone(),
        Transform::Eval(transform),
        LoaderConfig {
            batch_size: 256,
            threads,
            prefetch: 2,
            shuffle: false,
            seed: 0,
            drop_last: false,
            mean,
            std,
            background: device == Device::Cpu,
            shard,
            format: BatchFormat::for_device(device, channels_last),
        },
    )?;
    let _guard = tch::no_grad_guard();
    let _autocast = precision.autocast(device)?;
    let n_exits = model.config().exits.count();
    let (mut backbone, mut labels) = (Vec::new(), Vec::new());
    let mut exits: Vec<Vec<Tensor>> = (0..n_exits).map(|_| Vec::new()).collect();
    for batch in loader.epoch(0) {
        let batch = batch?;
        // In the weights' dtype (fp64 runs), then their memory format.
        let images = batch.images_on(device)?.to_kind(precision.storage_kind());
        let images = if channels_last { crate::model::channels_last(&images)? } else { images.contiguous() };
        let out = model.encode(&images, false)?;
        backbone.push(out.backbone.to_kind(Kind::Float).to_device(Device::Cpu));
        for (k, e) in out.exits.iter().enumerate() {
            exits[k].push(e.to_kind(Kind::Float).to_device(Device::Cpu));
        }
        labels.push(batch.labels.to_kind(Kind::Int64));
    }
    if backbone.is_empty() {
        return Err(crate::error::Error::input("no images to compute features of (an empty split or shard)"));
    }
    Ok(EncoderFeatures {
        backbone: Tensor::cat(&backbone, 0),
        exits: exits.iter().map(|e| Tensor::cat(e, 0)).collect(),
        labels: Tensor::cat(&labels, 0),
    })
}
