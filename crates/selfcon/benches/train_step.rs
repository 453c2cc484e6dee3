//! `cargo bench --bench train_step`: compute-only ResNet-18 training steps on CPU (synthetic
//! CIFAR-size batch): forward, the SelfCon / SupCon loss, backward, SGD.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use selfcon::data::DatasetKind;
use selfcon::loss::{ConLoss, Method, MethodLoss};
use selfcon::model::{ConModel, ExitPositions, ModelConfig};
use selfcon::train::Sgd;

fn main() {
    let batch: i64 = std::env::var("BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(64);
    println!("libtorch threads: {}", tch::get_num_threads());
    for (name, exits, multiview) in
        [("SelfCon fc@layer2", vec![false, true, false], false), ("SupCon 2 views", vec![false, false, false], true)]
    {
        tch::manual_seed(0);
        let mut config = ModelConfig::readme(DatasetKind::Cifar100);
        config.exits = ExitPositions::new(exits);
        let (vs, model) = ConModel::build(&config, Device::Cpu, selfcon::model::BatchNormKind::Local).unwrap();
        let mut sgd = Sgd::new(&vs, 0.9, 1e-4);
        let method = if multiview { Method::SupCon } else { Method::SelfCon };
        let objective = MethodLoss { method, multiview, use_labels: true, alpha: 0.0, con_loss: ConLoss::new(0.1) };
        let rows = if multiview { 2 * batch } else { batch };
        let images = Tensor::randn([rows, 3, 32, 32], (Kind::Float, Device::Cpu));
        let labels = Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu));
        let mut times = Vec::new();
        for i in 0..4 {
            let start = Instant::now();
            let out = model.forward_t(&images, true).unwrap();
            let loss = objective.compute(&out.exit_projections, &out.backbone_projection, &labels).unwrap();
            sgd.zero_grad();
            loss.total.backward();
            sgd.step(0.1).unwrap();
            if i > 0 {
                times.push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        println!("train_step/{name}/batch {batch}: {mean:.0} ms/step, {:.0} images/s", batch as f64 / mean * 1000.0);
    }
}
