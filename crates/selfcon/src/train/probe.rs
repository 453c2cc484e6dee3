//! A fast linear probe on frozen features computed once (no augmentation): the encoder runs a
//! single forward pass over each split, then the classifiers train on the cached features. Used by
//! `selfcon demo` (and for the random-initialisation baseline), where the full per-epoch protocol
//! of [`super::linear_eval`] would not fit the time budget.

use std::sync::Arc;

use rand::seq::SliceRandom;
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use super::linear::Accuracy;
use super::optimizer::Sgd;
use crate::data::augment::{sample_rng, EvalTransform};
use crate::data::{DataLoader, Dataset, LoaderConfig, Transform};
use crate::error::Result;
use crate::model::{ConModel, LinearClassifier};

/// Pooled features of a whole split: backbone and, when the model has exits, the last exit.
pub struct CachedFeatures {
    pub backbone: Tensor,
    pub exit: Option<Tensor>,
    pub labels: Tensor,
}

pub fn extract_features(
    model: &ConModel,
    set: &Arc<dyn Dataset>,
    mean: [f32; 3],
    std: [f32; 3],
    threads: usize,
    device: Device,
) -> Result<CachedFeatures> {
    let loader = DataLoader::new(
        set.clone(),
        Transform::Eval(EvalTransform::Identity),
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
            shard: None,
        },
    )?;
    let _guard = tch::no_grad_guard();
    let (mut backbone, mut exit, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for batch in loader.epoch(0) {
        let batch = batch?;
        let out = model.encode(&batch.images.to_device(device), false)?;
        backbone.push(out.backbone);
        if let Some(e) = out.exits.last() {
            exit.push(e.shallow_clone());
        }
        labels.push(batch.labels.to_device(device));
    }
    Ok(CachedFeatures {
        backbone: Tensor::cat(&backbone, 0),
        exit: (!exit.is_empty()).then(|| Tensor::cat(&exit, 0)),
        labels: Tensor::cat(&labels, 0),
    })
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ProbeResult {
    pub backbone: Accuracy,
    pub sub: Option<Accuracy>,
    pub ensemble: Option<Accuracy>,
}

/// Trains `Linear(d, n_cls)` classifiers on cached features with SGD (momentum 0.9, cosine
/// learning rate) and reports test accuracy; features are standardised with training statistics.
pub fn linear_probe(
    train: &CachedFeatures,
    test: &CachedFeatures,
    n_classes: i64,
    epochs: usize,
    lr: f64,
    seed: u64,
) -> ProbeResult {
    let fit = |x: &Tensor, tx: &Tensor| -> Tensor {
        let mean = x.mean_dim(0, true, Kind::Float);
        let std = x.std_dim(0, true, true) + 1e-6;
        let (x, tx) = ((x - &mean) / &std, (tx - &mean) / &std);
        let vs = nn::VarStore::new(x.device());
        let clf = crate::engine::seeded(seed, || LinearClassifier::new(&vs.root(), x.size()[1], n_classes));
        let mut sgd = Sgd::new(&vs, 0.9, 0.0);
        let n = x.size()[0] as usize;
        let batch = 256;
        let steps = n.div_ceil(batch);
        let mut rng = sample_rng(seed, 0, 0, 7);
        for epoch in 0..epochs {
            let rate = lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs as f64).cos());
            let mut order: Vec<i64> = (0..n as i64).collect();
            order.shuffle(&mut rng);
            for s in 0..steps {
                let idx = Tensor::from_slice(&order[s * batch..((s + 1) * batch).min(n)]).to_device(x.device());
                let logits = clf.forward(&x.index_select(0, &idx));
                let loss = logits.cross_entropy_for_logits(&train.labels.index_select(0, &idx));
                sgd.zero_grad();
                loss.backward();
                sgd.step(rate);
            }
        }
        tch::no_grad(|| clf.forward(&tx))
    };
    let accuracy = |logits: &Tensor| -> Accuracy {
        let k = 5.min(logits.size()[1]);
        let (_, top) = logits.topk(k, 1, true, true);
        let hits = top.eq_tensor(&test.labels.unsqueeze(1));
        let n = test.labels.size()[0] as f64;
        Accuracy {
            top1: 100.0 * hits.narrow(1, 0, 1).sum(Kind::Int64).int64_value(&[]) as f64 / n,
            top5: 100.0 * hits.sum(Kind::Int64).int64_value(&[]) as f64 / n,
        }
    };
    let backbone_logits = fit(&train.backbone, &test.backbone);
    let sub_logits = match (&train.exit, &test.exit) {
        (Some(x), Some(tx)) => Some(fit(x, tx)),
        _ => None,
    };
    ProbeResult {
        backbone: accuracy(&backbone_logits),
        sub: sub_logits.as_ref().map(accuracy),
        ensemble: sub_logits.as_ref().map(|s| accuracy(&((&backbone_logits + s) / 2.0))),
    }
}
