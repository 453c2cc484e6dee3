//! Diagnostic: trains the demo model on the bundled Fashion-MNIST and prints, every few steps, what
//! the projections and features look like (is the loss at its uniform value because everything
//! collapsed, and where).
//!
//!     cargo run --release --example collapse_probe -- LR STEPS [TEMP] [WD] [BATCH]
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use selfcon::data::augment::TrainTransform;
use selfcon::data::{open_dataset, DataLoader, Dataset, DatasetKind, LoaderConfig, Transform};
use selfcon::loss::{ConLoss, Method, MethodLoss};
use selfcon::model::{ConModel, ModelConfig};
use selfcon::train::Sgd;

fn mean_offdiag_cos(z: &Tensor) -> f64 {
    let z = z.to_kind(Kind::Float);
    let n = z.size()[0] as f64;
    let s = z.matmul(&z.tr());
    (s.sum(Kind::Float).double_value(&[]) - n) / (n * (n - 1.0))
}

/// Spread across the batch relative to the mean vector: |std over rows| / |mean row|.
fn spread(x: &Tensor) -> f64 {
    let x = x.to_kind(Kind::Float);
    let mean = x.mean_dim(0, false, Kind::Float);
    let dev = (&x - &mean).square().sum(Kind::Float).double_value(&[]) / x.size()[0] as f64;
    dev.sqrt() / mean.norm().double_value(&[])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lr: f64 = args.get(1).map_or(0.3, |s| s.parse().unwrap());
    let steps: usize = args.get(2).map_or(60, |s| s.parse().unwrap());
    let temp: f64 = args.get(3).map_or(0.1, |s| s.parse().unwrap());
    let wd: f64 = args.get(4).map_or(1e-4, |s| s.parse().unwrap());
    let batch: usize = args.get(5).map_or(64, |s| s.parse().unwrap());
    let warm: usize = args.get(6).map_or(0, |s| s.parse().unwrap());
    let kind = DatasetKind::FashionMnist;
    let data = open_dataset(kind, None).unwrap();
    let set: Arc<dyn Dataset> = data.train.clone();
    let loader = DataLoader::new(
        set,
        Transform::Train { transform: TrainTransform::pretrain(32, false), views: 1 },
        LoaderConfig {
            batch_size: batch,
            threads: 2,
            prefetch: 2,
            shuffle: true,
            seed: 0,
            drop_last: true,
            mean: data.mean,
            std: data.std,
            background: true,
            shard: None,
            format: Default::default(),
        },
    )
    .unwrap();
    let config = ModelConfig::readme(kind);
    let (vs, model) =
        selfcon::engine::seeded(0, || ConModel::build(&config, Device::Cpu, selfcon::model::BatchNormKind::Local))
            .unwrap();
    let mut sgd = Sgd::new(&vs, 0.9, wd);
    let objective = MethodLoss {
        method: Method::SelfCon,
        multiview: false,
        use_labels: true,
        alpha: 0.0,
        con_loss: ConLoss::new(temp),
    };
    let vars = vs.variables();
    let norm = |name: &str| vars[name].norm().double_value(&[]);
    for (step, b) in loader.epoch(0).enumerate().take(steps) {
        let b = b.unwrap();
        let out = model.forward_t(&b.images, true).unwrap();
        let loss = objective.compute(&out.exit_projections, &out.backbone_projection, &b.labels).unwrap();
        if step % 10 == 0 || step + 1 == steps {
            let _g = tch::no_grad_guard();
            let h = out.encoder.backbone.to_kind(Kind::Float);
            let pre = h.matmul(&vars["head.0.weight"].tr()) + &vars["head.0.bias"];
            let hidden = pre.relu();
            let active = pre.gt(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            let u = hidden.matmul(&vars["head.2.weight"].tr());
            println!(
                "      active {:.3} spread hidden {:.3} spread W2r {:.3} |W2r mean| {:.3} |b2| {:.3} |h mean| {:.2}",
                active,
                spread(&hidden),
                spread(&u),
                u.mean_dim(0, false, Kind::Float).norm().double_value(&[]),
                vars["head.2.bias"].norm().double_value(&[]),
                h.mean_dim(0, false, Kind::Float).norm().double_value(&[]),
            );
            println!(
                "step {step:3} loss {:.4} cos bb {:.4} sub {:.4} | spread pooled bb {:.3} exit {:.3} | |head.0.w| {:.2} |head.0.b| {:.2} |head.2.b| {:.3} |sub.2.b| {:.3}",
                loss.total.double_value(&[]),
                mean_offdiag_cos(&out.backbone_projection),
                mean_offdiag_cos(&out.exit_projections[0]),
                spread(&out.encoder.backbone),
                spread(&out.encoder.exits[0]),
                norm("head.0.weight"),
                norm("head.0.bias"),
                norm("head.2.bias"),
                norm("sub_heads.0.2.bias"),
            );
        }
        sgd.zero_grad();
        loss.total.backward();
        sgd.step(if step < warm { lr * (step + 1) as f64 / warm as f64 } else { lr }).unwrap();
    }
}
