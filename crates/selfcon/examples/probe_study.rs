//! Diagnostic: how the demo's linear probe sees a pre-trained checkpoint next to the random
//! initialisation, under several probe protocols, chosen on a validation split of the training images.
//!
//!     cargo run --release --example probe_study -- CKPT [SEED]
//!
//! BatchNorm modes: `eval` uses the running statistics pre-training left (collected on augmented
//! views); `recal` first re-estimates them on unaugmented training images (what the probe sees).
use std::path::PathBuf;
use std::sync::Arc;

use rand::seq::SliceRandom;
use tch::Device;

use selfcon::checkpoint;
use selfcon::data::augment::{sample_rng, EvalTransform};
use selfcon::data::{open_dataset, DataLoader, Dataset, DatasetKind, LoaderConfig, Subset, Transform};
use selfcon::model::{ConModel, ModelConfig};
use selfcon::train::{extract_features, linear_probe, FeatureExtraction, Precision, ProbeSettings};

fn recalibrate(model: &ConModel, set: &Arc<dyn Dataset>, mean: [f32; 3], std: [f32; 3]) {
    let loader = DataLoader::new(
        set.clone(),
        Transform::Eval(EvalTransform::Identity),
        LoaderConfig {
            batch_size: 256,
            threads: 2,
            prefetch: 2,
            shuffle: true,
            seed: 5,
            drop_last: true,
            mean,
            std,
            background: true,
            shard: None,
            format: Default::default(),
        },
    )
    .unwrap();
    let _g = tch::no_grad_guard();
    // momentum 0.1: 30 batches leave < 5% of the old statistics.
    for epoch in 0..2 {
        for batch in loader.epoch(epoch) {
            let batch = batch.unwrap();
            model.forward_t(&batch.images, true).unwrap();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ckpt = PathBuf::from(&args[1]);
    let seed: u64 = args.get(2).map_or(0, |s| s.parse().unwrap());
    let kind = DatasetKind::FashionMnist;
    let data = open_dataset(kind, None).unwrap();
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    order.shuffle(&mut sample_rng(seed, 99, 0, 0));
    let fit: Arc<dyn Dataset> = Arc::new(Subset::new(data.train.clone(), order[..8000].to_vec()));
    let val: Arc<dyn Dataset> = Arc::new(Subset::new(data.train.clone(), order[8000..].to_vec()));
    let test: Arc<dyn Dataset> = data.test.clone().unwrap();
    let config = ModelConfig::readme(kind);
    for which in ["random", "trained"] {
        for bn in ["eval", "recal"] {
            let (vs, model) = selfcon::engine::seeded(seed, || {
                ConModel::build(&config, Device::Cpu, selfcon::model::BatchNormKind::Local)
            })
            .unwrap();
            if which == "trained" {
                let loaded = checkpoint::load(&ckpt).unwrap();
                let weights = checkpoint::model_weights(loaded.tensors);
                checkpoint::load_into_var_store(&ckpt, &vs, &weights).unwrap();
            }
            if bn == "recal" {
                recalibrate(&model, &fit, data.mean, data.std);
            }
            let t0 = std::time::Instant::now();
            let how = FeatureExtraction {
                mean: data.mean,
                std: data.std,
                threads: 2,
                device: Device::Cpu,
                precision: Precision::Bf16,
                channels_last: false,
                shard: None,
            };
            let f = extract_features(&model, &fit, how).unwrap();
            let v = extract_features(&model, &val, how).unwrap();
            let t = extract_features(&model, &test, how).unwrap();
            eprintln!("{which} {bn}: features in {:.1}s", t0.elapsed().as_secs_f64());
            for n_fit in [3000i64, 8000] {
                let f_n = selfcon::train::CachedFeatures {
                    backbone: f.backbone.narrow(0, 0, n_fit),
                    exit: f.exit.as_ref().map(|e| e.narrow(0, 0, n_fit)),
                    labels: f.labels.narrow(0, 0, n_fit),
                };
                for (epochs, lr) in [(60, 0.1), (30, 0.1), (60, 0.02), (60, 0.5)] {
                    let t1 = std::time::Instant::now();
                    let s = ProbeSettings { epochs, lr, weight_decay: 0.0 };
                    let rv = linear_probe(&f_n, &v, 10, s, seed).unwrap();
                    let rt = linear_probe(&f_n, &t, 10, s, seed).unwrap();
                    println!(
                        "{which:7} bn={bn:5} fit={n_fit:5} ep={epochs:3} lr={lr:4}  val {:6.2} {:6.2} {:6.2}  test {:6.2} {:6.2} {:6.2}  ({:.1}s)",
                        rv.backbone.top1,
                        rv.sub.unwrap().top1,
                        rv.ensemble.unwrap().top1,
                        rt.backbone.top1,
                        rt.sub.unwrap().top1,
                        rt.ensemble.unwrap().top1,
                        t1.elapsed().as_secs_f64() / 2.0
                    );
                }
            }
        }
    }
}
