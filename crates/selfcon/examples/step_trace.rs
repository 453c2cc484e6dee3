//! Writes a freshly initialised README model (ResNet-18, CIFAR stem, fc exit after layer2) to the
//! given safetensors file and prints the SelfCon loss of 3 SGD steps on a fixed input. Running
//! `python bench/pytorch_reference.py trace FILE` on the same file repeats the steps in PyTorch:
//! the two traces must agree.
//!
//!     cargo run --release --example step_trace -- /tmp/trace.safetensors

use tch::{Device, Kind, Tensor};

use selfcon::data::DatasetKind;
use selfcon::loss::{ConLoss, Method, MethodLoss};
use selfcon::model::{ConModel, ModelConfig};
use selfcon::train::Sgd;

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "trace.safetensors".into());
    tch::manual_seed(5);
    let config = ModelConfig::readme(DatasetKind::Cifar10);
    let (vs, model) = ConModel::build(&config, Device::Cpu, selfcon::model::BatchNormKind::Local).expect("model");
    let tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    selfcon::checkpoint::save(std::path::Path::new(&path), &tensors, &Default::default()).expect("write weights");
    let mut sgd = Sgd::new(&vs, 0.9, 1e-4);
    let objective = MethodLoss {
        method: Method::SelfCon,
        multiview: false,
        use_labels: true,
        alpha: 0.0,
        con_loss: ConLoss::new(0.1),
    };
    let x = (Tensor::arange(16 * 3 * 32 * 32, (Kind::Float, Device::Cpu)) * 0.37).sin().view([16, 3, 32, 32]);
    let y = Tensor::arange(16, (Kind::Int64, Device::Cpu)).remainder(4);
    for step in 0..3 {
        let out = model.forward_t(&x, true).expect("forward");
        let loss = objective.compute(&out.exit_projections, &out.backbone_projection, &y).expect("loss");
        println!("step {step} loss {:.10}", loss.total.double_value(&[]));
        sgd.zero_grad();
        loss.total.backward();
        sgd.step(0.05).unwrap();
    }
}
