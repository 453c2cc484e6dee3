//! A fast linear probe on frozen features computed once (no augmentation): the encoder runs a
//! single forward pass over each split, then the classifiers train on the cached features. Used by
//! `selfcon demo` (and for the random-initialisation baseline), where the full per-epoch protocol
//! of [`super::linear_eval`] would not fit the time budget. [`select_and_probe`] chooses the
//! probe's settings on a validation split of the training features, never on the test images.

use std::sync::Arc;

use rand::seq::SliceRandom;
use serde::Serialize;
use tch::{nn, Kind, Tensor};

use super::evaluation::{accuracy, Accuracy};
use super::features::{encoder_features, FeatureExtraction};
use super::optimizer::Sgd;
use crate::data::augment::{sample_rng, EvalTransform};
use crate::data::Dataset;
use crate::engine::to_device;
use crate::error::Result;
use crate::model::{ConModel, LinearClassifier};

/// Pooled features of a whole split: backbone and, when the model has exits, the last exit.
pub struct CachedFeatures {
    pub backbone: Tensor,
    pub exit: Option<Tensor>,
    pub labels: Tensor,
}

/// The demo's probe features: the unaugmented images, the backbone and the last exit.
pub fn extract_features(model: &ConModel, set: &Arc<dyn Dataset>, how: FeatureExtraction) -> Result<CachedFeatures> {
    let mut f = encoder_features(model, set, EvalTransform::Identity, how)?;
    let device = how.device;
    Ok(CachedFeatures {
        backbone: to_device(&f.backbone, device)?,
        exit: f.exits.pop().map(|e| to_device(&e, device)).transpose()?,
        labels: to_device(&f.labels, device)?,
    })
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ProbeResult {
    pub backbone: Accuracy,
    pub sub: Option<Accuracy>,
    pub ensemble: Option<Accuracy>,
}

/// One way to fit a probe: SGD (momentum 0.9, batch 256, cosine learning rate) on standardised
/// features.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ProbeSettings {
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
}

impl ProbeSettings {
    /// The grid `selfcon demo` searches: learning rates over two decades (0.02–2), with and without
    /// weight decay.
    pub fn demo_grid(epochs: usize) -> Vec<ProbeSettings> {
        let mut grid = Vec::new();
        for weight_decay in [0.0, 1e-3] {
            for lr in [0.02, 0.1, 0.5, 2.0] {
                grid.push(ProbeSettings { epochs, lr, weight_decay });
            }
        }
        grid
    }
}

/// Trains `Linear(d, n_classes)` on `(x, y)` (standardised with `x`'s statistics) and returns the
/// logits of `evaluate`.
fn fit_linear(
    x: &Tensor,
    y: &Tensor,
    evaluate: &Tensor,
    n_classes: i64,
    s: ProbeSettings,
    seed: u64,
) -> Result<Tensor> {
    let mean = x.mean_dim(0, true, Kind::Float);
    let std = x.std_dim(0, true, true) + 1e-6;
    let x = (x - &mean) / &std;
    let vs = nn::VarStore::new(x.device());
    let clf = crate::engine::seeded(seed, || LinearClassifier::new(&vs.root(), x.size()[1], n_classes));
    let mut sgd = Sgd::new(&vs, 0.9, s.weight_decay);
    let n = x.size()[0] as usize;
    let batch = 256;
    let steps = n.div_ceil(batch);
    let mut rng = sample_rng(seed, 0, 0, 7);
    for epoch in 0..s.epochs {
        let rate = s.lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / s.epochs as f64).cos());
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut rng);
        for step in 0..steps {
            let idx = to_device(&Tensor::from_slice(&order[step * batch..((step + 1) * batch).min(n)]), x.device())?;
            let logits = clf.forward(&x.index_select(0, &idx));
            let loss = logits.cross_entropy_for_logits(&y.index_select(0, &idx));
            sgd.zero_grad();
            loss.backward();
            sgd.step(rate)?;
        }
    }
    Ok(tch::no_grad(|| clf.forward(&((evaluate - &mean) / &std))))
}

/// Trains classifiers on cached features with one setting for all and reports test accuracy
/// (the ensemble averages the backbone's and the sub-network's logits).
pub fn linear_probe(
    train: &CachedFeatures,
    test: &CachedFeatures,
    n_classes: i64,
    s: ProbeSettings,
    seed: u64,
) -> Result<ProbeResult> {
    let backbone = fit_linear(&train.backbone, &train.labels, &test.backbone, n_classes, s, seed)?;
    let sub = match (&train.exit, &test.exit) {
        (Some(x), Some(tx)) => Some(fit_linear(x, &train.labels, tx, n_classes, s, seed)?),
        _ => None,
    };
    Ok(ProbeResult::score(&backbone, sub.as_ref(), &test.labels))
}

impl ProbeResult {
    /// Test accuracies of the backbone's and the sub-network's logits and of their average.
    fn score(backbone: &Tensor, sub: Option<&Tensor>, labels: &Tensor) -> ProbeResult {
        ProbeResult {
            backbone: accuracy(backbone, labels),
            sub: sub.map(|l| accuracy(l, labels)),
            ensemble: sub.map(|l| accuracy(&((backbone + l) / 2.0), labels)),
        }
    }
}

/// What [`select_and_probe`] chose and measured.
#[derive(Clone, Debug, Serialize)]
pub struct SelectedProbe {
    pub test: ProbeResult,
    /// Validation top-1 of the chosen settings (backbone, sub-network).
    pub validation_top1: (f64, Option<f64>),
    pub backbone: ProbeSettings,
    pub sub: Option<ProbeSettings>,
}

/// For the backbone and the sub-network separately: fits every setting of `grid` on the training
/// features less a held-out `val_fraction` (a seeded split), keeps the one with the best held-out
/// top-1 (the first on ties), refits it on all training features and scores the test features.
/// The test features play no part in any choice.
pub fn select_and_probe(
    train: &CachedFeatures,
    test: &CachedFeatures,
    n_classes: i64,
    grid: &[ProbeSettings],
    val_fraction: f64,
    seed: u64,
) -> Result<SelectedProbe> {
    assert!(!grid.is_empty(), "an empty probe grid");
    let n = train.labels.size()[0];
    let n_val = ((n as f64 * val_fraction).round() as i64).clamp(1, n - 1);
    let mut order: Vec<i64> = (0..n).collect();
    order.shuffle(&mut sample_rng(seed, 0, 0, 11));
    let device = train.labels.device();
    let val_idx = to_device(&Tensor::from_slice(&order[..n_val as usize]), device)?;
    let fit_idx = to_device(&Tensor::from_slice(&order[n_val as usize..]), device)?;
    let (y_fit, y_val) = (train.labels.index_select(0, &fit_idx), train.labels.index_select(0, &val_idx));
    let choose = |x: &Tensor, tx: &Tensor| -> Result<(ProbeSettings, f64, Tensor)> {
        let (x_fit, x_val) = (x.index_select(0, &fit_idx), x.index_select(0, &val_idx));
        let mut best: Option<(ProbeSettings, f64)> = None;
        for &s in grid {
            let logits = fit_linear(&x_fit, &y_fit, &x_val, n_classes, s, seed)?;
            let top1 = accuracy(&logits, &y_val).top1;
            if best.is_none_or(|(_, b)| top1 > b) {
                best = Some((s, top1));
            }
        }
        let (s, val) = best.expect("a non-empty grid");
        Ok((s, val, fit_linear(x, &train.labels, tx, n_classes, s, seed)?))
    };
    let (bs, bv, backbone) = choose(&train.backbone, &test.backbone)?;
    let sub = match (&train.exit, &test.exit) {
        (Some(x), Some(tx)) => Some(choose(x, tx)?),
        _ => None,
    };
    Ok(SelectedProbe {
        test: ProbeResult::score(&backbone, sub.as_ref().map(|(_, _, l)| l), &test.labels),
        validation_top1: (bv, sub.as_ref().map(|(_, v, _)| *v)),
        backbone: bs,
        sub: sub.as_ref().map(|(s, _, _)| *s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Two Gaussian blobs per class in 8 dimensions, `n` rows. Drawn under the seeding lock:
    /// tests running in parallel must not interleave their draws from the global generator.
    fn blobs(n: i64, seed: i64, shift: f64) -> CachedFeatures {
        crate::engine::seeded(seed as u64, || {
            let labels = Tensor::randint(3, [n], (Kind::Int64, Device::Cpu));
            let centres = Tensor::eye(8, (Kind::Float, Device::Cpu)).narrow(0, 0, 3) * 3.0;
            let backbone = centres.index_select(0, &labels) + Tensor::randn([n, 8], (Kind::Float, Device::Cpu)) + shift;
            let exit = Some(&backbone * 0.5 + Tensor::randn([n, 8], (Kind::Float, Device::Cpu)));
            CachedFeatures { backbone, exit, labels }
        })
    }

    #[test]
    fn settings_are_chosen_on_held_out_training_features_never_on_the_test_features() {
        let train = blobs(400, 1, 0.0);
        let grid = ProbeSettings::demo_grid(5);
        let a = select_and_probe(&train, &blobs(200, 2, 0.0), 3, &grid, 0.2, 0).unwrap();
        // A test set that is pure noise scores worse but changes no choice.
        let mut noise = blobs(200, 3, 0.0);
        noise.labels = noise.labels.flip([0]);
        let b = select_and_probe(&train, &noise, 3, &grid, 0.2, 0).unwrap();
        assert_eq!(a.backbone, b.backbone);
        assert_eq!(a.sub, b.sub);
        assert_eq!(a.validation_top1, b.validation_top1);
        assert!(grid.contains(&a.backbone) && grid.contains(&a.sub.unwrap()));
        assert!(a.validation_top1.0 > 90.0, "{:?}", a.validation_top1);
        assert!(a.test.backbone.top1 > 90.0, "{:?}", a.test);
        assert!(b.test.backbone.top1 < 60.0, "{:?}", b.test);
        let ensemble = a.test.ensemble.unwrap().top1;
        assert!((0.0..=100.0).contains(&ensemble));
    }

    #[test]
    fn the_probe_standardises_with_training_statistics() {
        // Features shifted by a large constant probe as well as unshifted ones.
        let plain = linear_probe(
            &blobs(300, 4, 0.0),
            &blobs(100, 5, 0.0),
            3,
            ProbeSettings { epochs: 5, lr: 0.1, weight_decay: 0.0 },
            0,
        )
        .unwrap();
        let shifted = linear_probe(
            &blobs(300, 4, 1e3),
            &blobs(100, 5, 1e3),
            3,
            ProbeSettings { epochs: 5, lr: 0.1, weight_decay: 0.0 },
            0,
        )
        .unwrap();
        assert!((plain.backbone.top1 - shifted.backbone.top1).abs() <= 2.0, "{plain:?} {shifted:?}");
    }
}
