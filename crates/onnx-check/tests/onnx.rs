//! The ONNX export (`ConModel::to_onnx`, what `selfcon export --format onnx` writes; the CLI's
//! bytes are checked against it in selfcon's interop tests) run in tract gives our forward pass.

use selfcon::data::DatasetKind;
use selfcon::model::{
    Architecture, BatchNormKind, ConModel, ExitPositions, ModelConfig, SubNetworkArch, SubNetworkSize,
};
use selfcon_onnx_check::{max_difference, run_in_tract};
use tch::{Device, Kind, Tensor};

#[test]
#[ignore = "heavy: builds tract, CI's extended set (cargo test --workspace -- --ignored)"]
fn onnx_covers_every_resnet_configuration() {
    let dir = tempfile::tempdir().unwrap();
    // Both stems, both block kinds, every exit position and sub-network size.
    let grid = [
        (Architecture::ResNet18, DatasetKind::Cifar10, [true, true, true], SubNetworkSize::Small, 32),
        (Architecture::ResNet18, DatasetKind::ImageNet, [false, false, true], SubNetworkSize::Large, 64),
        (Architecture::ResNet50, DatasetKind::Cifar100, [false, true, false], SubNetworkSize::Same, 32),
        (Architecture::ResNet34, DatasetKind::Cifar10, [true, false, false], SubNetworkSize::Fc, 32),
    ];
    for (arch, dataset, exits, size, side) in grid {
        let config =
            ModelConfig::new(arch, dataset, ExitPositions::new(exits.to_vec()), SubNetworkArch::Resnet, size, 128)
                .unwrap();
        let (vs, model, images) = selfcon::engine::seeded(3, || {
            let (vs, model) = ConModel::build(&config, Device::Cpu, BatchNormKind::Local).unwrap();
            // Non-trivial BatchNorm statistics, so that inference-mode BN is really checked.
            tch::no_grad(|| {
                for (name, mut t) in vs.variables() {
                    if name.ends_with("running_mean") {
                        t.copy_(&(Tensor::randn(t.size().as_slice(), (Kind::Float, Device::Cpu)) * 0.1));
                    } else if name.ends_with("running_var") {
                        t.copy_(&(Tensor::rand(t.size().as_slice(), (Kind::Float, Device::Cpu)) + 0.5));
                    }
                }
            });
            (vs, model, Tensor::randn([2, 3, side, side], (Kind::Float, Device::Cpu)))
        });
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, model.to_onnx(&vs.variables()).unwrap()).unwrap();
        let ours = tch::no_grad(|| model.encode(&images, false)).unwrap();
        let wants: Vec<&Tensor> = std::iter::once(&ours.backbone).chain(&ours.exits).collect();
        let result = run_in_tract(&path, &images).unwrap();
        assert_eq!(result.len(), wants.len(), "{arch} {exits:?}");
        for (k, ((_, got), want)) in result.iter().zip(wants).enumerate() {
            let (diff, scale) = max_difference(got, want);
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "{arch} {dataset} {exits:?} {size:?} output {k}: max |ONNX − ours| = {diff}"
            );
        }
    }
}
