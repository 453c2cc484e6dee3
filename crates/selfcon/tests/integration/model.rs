//! Model behaviour beyond the golden counts: initialisation, train/eval BatchNorm, exit order,
//! gradients reaching the shared stages, and `--feat_dim`.

use tch::{Device, Kind, Tensor};

use crate::common;

use selfcon::data::DatasetKind;
use selfcon::model::{ConModel, ExitPositions, ModelConfig, SubNetworkSize};

fn config(exits: [bool; 3], size: SubNetworkSize) -> ModelConfig {
    let mut c = ModelConfig::readme(DatasetKind::Cifar10);
    c.exits = ExitPositions::new(exits.to_vec());
    c.sub_size = size;
    c
}

fn var(vs: &tch::nn::VarStore, name: &str) -> Tensor {
    vs.variables().remove(name).unwrap_or_else(|| panic!("no variable {name}"))
}

#[test]
fn initialisation_follows_the_official_code() {
    let (vs, _) = selfcon::engine::seeded(0, || {
        ConModel::build(
            &config([false, true, false], SubNetworkSize::Fc),
            Device::Cpu,
            selfcon::model::BatchNormKind::Local,
        )
    })
    .unwrap();
    // Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (512·3·3)).
    let w = var(&vs, "encoder.layer4.1.conv2.weight");
    let std = w.std(true).double_value(&[]);
    let want = (2.0f64 / (512.0 * 9.0)).sqrt();
    assert!((std / want - 1.0).abs() < 0.02, "conv std {std} vs {want}");
    assert!(w.mean(Kind::Float).abs().double_value(&[]) < 1e-3);
    // PyTorch Linear default: U(−1/√fan_in, 1/√fan_in) for weight and bias.
    for (name, fan_in) in
        [("encoder.selfcon_layer.1.weight", 128.0f64), ("head.2.bias", 512.0), ("sub_heads.0.0.weight", 512.0)]
    {
        let t = var(&vs, name);
        let bound = 1.0 / fan_in.sqrt();
        let max = t.abs().max().double_value(&[]);
        assert!(max <= bound && max > 0.9 * bound, "{name}: max |w| {max}, bound {bound}");
    }
    assert_eq!(var(&vs, "encoder.bn1.weight").min().double_value(&[]), 1.0);
    assert_eq!(var(&vs, "encoder.layer1.0.bn2.bias").abs().max().double_value(&[]), 0.0);
    assert_eq!(var(&vs, "encoder.bn1.running_var").min().double_value(&[]), 1.0);
    assert_eq!(var(&vs, "encoder.bn1.num_batches_tracked").kind(), Kind::Int64);
}

#[test]
fn batch_norm_switches_between_batch_and_running_statistics() {
    let (vs, model) = selfcon::engine::seeded(1, || {
        ConModel::build(
            &config([false, true, false], SubNetworkSize::Same),
            Device::Cpu,
            selfcon::model::BatchNormKind::Local,
        )
    })
    .unwrap();
    let x = common::seeded_randn(&[4, 3, 32, 32]);
    let mean_before = var(&vs, "encoder.bn1.running_mean").copy();

    let eval1 = tch::no_grad(|| model.forward_t(&x, false)).unwrap();
    let eval2 = tch::no_grad(|| model.forward_t(&x, false)).unwrap();
    assert!(eval1.backbone_projection.equal(&eval2.backbone_projection), "eval mode must be deterministic");
    assert!(var(&vs, "encoder.bn1.running_mean").equal(&mean_before), "eval must not touch running stats");
    assert_eq!(var(&vs, "encoder.bn1.num_batches_tracked").int64_value(&[]), 0);

    let train = tch::no_grad(|| model.forward_t(&x, true)).unwrap();
    assert!(!var(&vs, "encoder.bn1.running_mean").equal(&mean_before), "train mode updates running stats");
    for name in ["encoder.bn1", "encoder.layer3.1.bn2", "encoder.selfcon_layer.1.1.0.shortcut.1"] {
        assert_eq!(var(&vs, &format!("{name}.num_batches_tracked")).int64_value(&[]), 1, "{name}");
    }
    let diff = (&train.backbone_projection - &eval1.backbone_projection).abs().max().double_value(&[]);
    assert!(diff > 1e-4, "train and eval outputs should differ, diff {diff}");
}

#[test]
fn every_exit_combination_gives_normalised_projections_in_stage_order() {
    let mut c = config([true, true, true], SubNetworkSize::Small);
    c.feat_dim = 32;
    let (vs, model) =
        selfcon::engine::seeded(2, || ConModel::build(&c, Device::Cpu, selfcon::model::BatchNormKind::Local)).unwrap();
    let out = tch::no_grad(|| model.forward_t(&common::seeded_randn(&[3, 3, 32, 32]), true)).unwrap();
    assert_eq!(out.encoder.exits.len(), 3);
    assert_eq!(out.exit_projections.len(), 3);
    for p in out.exit_projections.iter().chain(std::iter::once(&out.backbone_projection)) {
        assert_eq!(p.size(), [3, 32]);
        let norms = p.norm_scalaropt_dim(2, [1], false);
        assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-5);
    }
    // Stage order: sub_heads.0 belongs to the exit after layer1 (64 channels in).
    assert_eq!(var(&vs, "encoder.selfcon_layer.0.0.0.conv1.weight").size(), [128, 64, 3, 3]);
    assert_eq!(var(&vs, "encoder.selfcon_layer.2.0.0.conv1.weight").size(), [512, 256, 3, 3]);
    assert_eq!(var(&vs, "sub_heads.2.2.weight").size(), [32, 512]);
    assert!(vs.variables().keys().all(|k| !k.contains("__")), "no duplicated variable names");
}

#[test]
fn exit_and_backbone_gradients_both_reach_the_shared_stages() {
    let (vs, model) = selfcon::engine::seeded(3, || {
        ConModel::build(
            &config([false, true, false], SubNetworkSize::Fc),
            Device::Cpu,
            selfcon::model::BatchNormKind::Local,
        )
    })
    .unwrap();
    let x = common::seeded_randn(&[4, 3, 32, 32]);
    let shared = var(&vs, "encoder.layer1.0.conv1.weight");
    let backbone_only = var(&vs, "encoder.layer4.0.conv1.weight");

    let out = model.forward_t(&x, true).unwrap();
    out.exit_projections[0].sum(Kind::Float).backward();
    assert!(shared.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "exit gradient reaches layer1");
    let g = backbone_only.grad();
    assert!(!g.defined() || g.abs().sum(Kind::Float).double_value(&[]) == 0.0, "exit gradient must not reach layer4");

    let out = model.forward_t(&x, true).unwrap();
    out.backbone_projection.sum(Kind::Float).backward();
    assert!(backbone_only.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn imagenet_stem_and_bottleneck_blocks() {
    let mut c = ModelConfig::readme(DatasetKind::ImageNet100);
    c.architecture = selfcon::model::Architecture::ResNet50;
    c.exits = ExitPositions::new(vec![true, false, false]);
    c.sub_size = SubNetworkSize::Fc;
    let (vs, model) =
        selfcon::engine::seeded(4, || ConModel::build(&c, Device::Cpu, selfcon::model::BatchNormKind::Local)).unwrap();
    assert_eq!(var(&vs, "encoder.conv1.weight").size(), [64, 3, 7, 7]);
    assert_eq!(var(&vs, "encoder.layer1.0.conv3.weight").size(), [256, 64, 1, 1]);
    assert_eq!(var(&vs, "encoder.selfcon_layer.0.weight").size(), [2048, 256]);
    // Any input size works; 64×64 keeps the test quick (the 7×7 stem and max-pool divide by 4).
    let out = tch::no_grad(|| model.encode(&Tensor::zeros([2, 3, 64, 64], (Kind::Float, Device::Cpu)), false)).unwrap();
    assert_eq!(out.backbone.size(), [2, 2048]);
    assert_eq!(out.exits[0].size(), [2, 2048]);
}

#[test]
fn bad_input_is_an_error() {
    let (_, model) = ConModel::build(
        &config([false, true, false], SubNetworkSize::Fc),
        Device::Cpu,
        selfcon::model::BatchNormKind::Local,
    )
    .unwrap();
    let e = model.forward_t(&Tensor::zeros([2, 1, 32, 32], (Kind::Float, Device::Cpu)), false).unwrap_err();
    assert!(e.to_string().contains("[N, 3, H, W]"), "{e}");
    let e = model.forward_t(&Tensor::zeros([2, 3, 32, 32], (Kind::Uint8, Device::Cpu)), false).unwrap_err();
    assert!(e.to_string().contains("floating point"), "{e}");
}
