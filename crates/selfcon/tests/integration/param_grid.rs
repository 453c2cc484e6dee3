//! Parameter counts over the whole configuration grid: every family × every exit combination ×
//! every sub-network size the family offers, against counts derived here from the official
//! construction rules (networks/*.py, SPEC §2) — layer by layer, independently of the model code.
//! golden/param_counts.json pins a few points of this grid with values computed by the official
//! code; this test covers the rest.

use selfcon::data::DatasetKind;
use selfcon::model::{
    Architecture, ConModel, ExitPositions, ModelConfig, ModelSummary, SubNetworkArch, SubNetworkSize,
};
use tch::Device;

/// Parameters and BatchNorm buffer elements of a module tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Count {
    params: i64,
    buffers: i64,
}

impl std::ops::Add for Count {
    type Output = Count;
    fn add(self, o: Count) -> Count {
        Count { params: self.params + o.params, buffers: self.buffers + o.buffers }
    }
}

impl std::iter::Sum for Count {
    fn sum<I: Iterator<Item = Count>>(iter: I) -> Count {
        iter.fold(Count::default(), |a, b| a + b)
    }
}

fn conv(c_in: i64, c_out: i64, k: i64, bias: bool) -> Count {
    Count { params: c_in * c_out * k * k + if bias { c_out } else { 0 }, buffers: 0 }
}

/// Depthwise k×k convolution without bias.
fn depthwise(c: i64, k: i64) -> Count {
    Count { params: c * k * k, buffers: 0 }
}

/// weight + bias; running_mean + running_var + num_batches_tracked.
fn bn(c: i64) -> Count {
    Count { params: 2 * c, buffers: 2 * c + 1 }
}

fn linear(c_in: i64, c_out: i64) -> Count {
    Count { params: c_in * c_out + c_out, buffers: 0 }
}

/// Projection head: Linear(d, d) → ReLU → Linear(d, 128).
fn head(d: i64) -> Count {
    linear(d, d) + linear(d, 128)
}

// ---- ResNet (networks/resnet_big.py) ------------------------------------------------------------

const RESNET_PLANES: [i64; 4] = [64, 128, 256, 512];
const RESNET_STRIDES: [i64; 4] = [1, 2, 2, 2];

fn resnet_layout(arch: Architecture) -> (bool, [usize; 4]) {
    match arch {
        Architecture::ResNet18 => (false, [2, 2, 2, 2]),
        Architecture::ResNet34 => (false, [3, 4, 6, 3]),
        Architecture::ResNet50 => (true, [3, 4, 6, 3]),
        Architecture::ResNet101 => (true, [3, 4, 23, 3]),
        other => panic!("{other} is not a ResNet"),
    }
}

/// BasicBlock or Bottleneck from `c_in` channels to `planes` (× expansion), with the projection
/// shortcut whenever the stride or the channel count changes.
fn resnet_block(bottleneck: bool, c_in: i64, planes: i64, stride: i64) -> Count {
    let expansion = if bottleneck { 4 } else { 1 };
    let body = if bottleneck {
        conv(c_in, planes, 1, false)
            + bn(planes)
            + conv(planes, planes, 3, false)
            + bn(planes)
            + conv(planes, planes * 4, 1, false)
            + bn(planes * 4)
    } else {
        conv(c_in, planes, 3, false) + bn(planes) + conv(planes, planes, 3, false) + bn(planes)
    };
    let shortcut = if stride != 1 || c_in != planes * expansion {
        conv(c_in, planes * expansion, 1, false) + bn(planes * expansion)
    } else {
        Count::default()
    };
    body + shortcut
}

/// Stage i (0-based) with `n` blocks, entered with `c_in` channels; the stride is on its first block.
fn resnet_stage(bottleneck: bool, i: usize, c_in: i64, n: usize) -> Count {
    let expansion = if bottleneck { 4 } else { 1 };
    (0..n)
        .map(|b| {
            let c = if b == 0 { c_in } else { RESNET_PLANES[i] * expansion };
            resnet_block(bottleneck, c, RESNET_PLANES[i], if b == 0 { RESNET_STRIDES[i] } else { 1 })
        })
        .sum()
}

fn resnet_backbone(arch: Architecture, imagenet_stem: bool) -> Count {
    let (bottleneck, blocks) = resnet_layout(arch);
    let expansion = if bottleneck { 4 } else { 1 };
    let stem = conv(3, 64, if imagenet_stem { 7 } else { 3 }, false) + bn(64);
    stem + (0..4)
        .map(|i| resnet_stage(bottleneck, i, if i == 0 { 64 } else { RESNET_PLANES[i - 1] * expansion }, blocks[i]))
        .sum()
}

/// `_make_sub_layer(idx = k)`: fc = Linear(c_k → d); otherwise stages k+2..4 with
/// floor(n/2) (small), n (same) or 2n (large) blocks.
fn resnet_exit(arch: Architecture, k: usize, size: SubNetworkSize) -> Count {
    let (bottleneck, blocks) = resnet_layout(arch);
    let expansion = if bottleneck { 4 } else { 1 };
    if size == SubNetworkSize::Fc {
        return linear(RESNET_PLANES[k] * expansion, 512 * expansion);
    }
    (k + 1..4)
        .map(|i| {
            let n = match size {
                SubNetworkSize::Small => blocks[i] / 2,
                SubNetworkSize::Same => blocks[i],
                SubNetworkSize::Large => 2 * blocks[i],
                SubNetworkSize::Fc => unreachable!(),
            };
            resnet_stage(bottleneck, i, RESNET_PLANES[i - 1] * expansion, n)
        })
        .sum()
}

// ---- VGG (networks/vgg.py) ----------------------------------------------------------------------

const VGG_WIDTHS: [i64; 5] = [64, 128, 256, 512, 512];

/// Configuration D (VGG-16) or B (VGG-13), with or without BatchNorm.
fn vgg_layout(arch: Architecture) -> (bool, bool) {
    match arch {
        Architecture::Vgg13 => (false, false),
        Architecture::Vgg13Bn => (false, true),
        Architecture::Vgg16 => (true, false),
        Architecture::Vgg16Bn => (true, true),
        other => panic!("{other} is not a VGG"),
    }
}

/// `n` convolutions 3×3 with bias (+ BN) from `c_in` to `width`.
fn vgg_convs(c_in: i64, width: i64, n: usize, with_bn: bool) -> Count {
    (0..n)
        .map(|i| {
            conv(if i == 0 { c_in } else { width }, width, 3, true) + if with_bn { bn(width) } else { Count::default() }
        })
        .sum()
}

fn vgg_backbone(arch: Architecture) -> Count {
    let (d, with_bn) = vgg_layout(arch);
    let convs = if d { [2, 2, 3, 3, 3] } else { [2, 2, 2, 2, 2] };
    (0..5).map(|b| vgg_convs(if b == 0 { 3 } else { VGG_WIDTHS[b - 1] }, VGG_WIDTHS[b], convs[b], with_bn)).sum()
}

/// fc = Linear(ch_k → 512); same = 3 (config D) or 2 convs for EVERY later block; small = 1.
fn vgg_exit(arch: Architecture, k: usize, size: SubNetworkSize) -> Count {
    let (d, with_bn) = vgg_layout(arch);
    let n = match size {
        SubNetworkSize::Fc => return linear(VGG_WIDTHS[k], 512),
        SubNetworkSize::Same => {
            if d {
                3
            } else {
                2
            }
        }
        SubNetworkSize::Small => 1,
        SubNetworkSize::Large => panic!("VGG has no large sub-network"),
    };
    (k + 1..5).map(|b| vgg_convs(VGG_WIDTHS[b - 1], VGG_WIDTHS[b], n, with_bn)).sum()
}

// ---- WRN-16-8 (networks/wrn_big.py) -------------------------------------------------------------

const WRN_WIDTHS: [i64; 3] = [128, 256, 512];
const WRN_STRIDES: [i64; 3] = [1, 2, 2];

/// Pre-activation wide block: bn1, conv1 (bias), bn2, conv2 (bias), 1×1 conv shortcut (bias).
fn wide_block(c_in: i64, planes: i64, stride: i64) -> Count {
    let shortcut = if stride != 1 || c_in != planes { conv(c_in, planes, 1, true) } else { Count::default() };
    bn(c_in) + conv(c_in, planes, 3, true) + bn(planes) + conv(planes, planes, 3, true) + shortcut
}

fn wrn_stage(i: usize, c_in: i64, n: usize) -> Count {
    (0..n)
        .map(|b| {
            wide_block(
                if b == 0 { c_in } else { WRN_WIDTHS[i] },
                WRN_WIDTHS[i],
                if b == 0 { WRN_STRIDES[i] } else { 1 },
            )
        })
        .sum()
}

fn wrn_backbone() -> Count {
    conv(3, 16, 3, true) + (0..3).map(|i| wrn_stage(i, if i == 0 { 16 } else { WRN_WIDTHS[i - 1] }, 2)).sum() + bn(512)
}

/// fc = Linear(ch_k → 512); otherwise the later stages with int((n+1)/2) (small), n (same) or
/// 2n (large) blocks, n = 2.
fn wrn_exit(k: usize, size: SubNetworkSize) -> Count {
    let n = match size {
        SubNetworkSize::Fc => return linear(WRN_WIDTHS[k], 512),
        SubNetworkSize::Small => 2usize.div_ceil(2),
        SubNetworkSize::Same => 2,
        SubNetworkSize::Large => 4,
    };
    (k + 1..3).map(|i| wrn_stage(i, WRN_WIDTHS[i - 1], n)).sum()
}

// ---- EfficientNet (networks/efficient_big.py, CIFAR B0) -------------------------------------------

/// MBConv: expansion 1×1 (when expand ≠ 1) + BN, depthwise k×k + BN, squeeze-excitation with
/// max(1, int(c_in · 0.25)) channels (1×1 convs with bias), projection 1×1 + BN.
fn mbconv(c_in: i64, c_out: i64, k: i64, expand: i64) -> Count {
    let mid = c_in * expand;
    let expansion = if expand != 1 { conv(c_in, mid, 1, false) + bn(mid) } else { Count::default() };
    let squeezed = (c_in / 4).max(1);
    expansion
        + depthwise(mid, k)
        + bn(mid)
        + conv(mid, squeezed, 1, true)
        + conv(squeezed, mid, 1, true)
        + conv(mid, c_out, 1, false)
        + bn(c_out)
}

fn efficientnet_backbone() -> Count {
    // (repeats, kernel, expand, in, out)
    let stages = [
        (1, 3, 1, 32, 16),
        (2, 3, 6, 16, 24),
        (2, 5, 6, 24, 40),
        (3, 3, 6, 40, 80),
        (3, 5, 6, 80, 112),
        (4, 5, 6, 112, 192),
        (1, 3, 6, 192, 320),
    ];
    let blocks: Count = stages
        .iter()
        .map(|&(repeats, k, e, c_in, c_out)| {
            (0..repeats).map(|r| mbconv(if r == 0 { c_in } else { c_out }, c_out, k, e)).sum()
        })
        .sum();
    conv(3, 32, 3, false) + bn(32) + blocks + conv(320, 512, 1, false) + bn(512)
}

/// The one exit after stage 4: conv 1×1 80 → 512 + BN + Swish, pool, Linear(512, 512).
fn efficientnet_exit() -> Count {
    conv(80, 512, 1, false) + bn(512) + linear(512, 512)
}

// ---- the grid ----------------------------------------------------------------------------------

/// Every combination of `n` exit flags.
fn exit_combinations(n: usize) -> Vec<Vec<bool>> {
    (0..1usize << n).map(|bits| (0..n).map(|k| bits >> k & 1 == 1).collect()).collect()
}

fn expected(arch: Architecture, dataset: DatasetKind, exits: &[bool], size: SubNetworkSize) -> (Count, Count, i64) {
    let enabled: Vec<usize> = (0..exits.len()).filter(|&k| exits[k]).collect();
    let n_cls = dataset.num_classes();
    match arch {
        Architecture::Vgg13 | Architecture::Vgg13Bn | Architecture::Vgg16 | Architecture::Vgg16Bn => (
            vgg_backbone(arch),
            enabled.iter().map(|&k| vgg_exit(arch, k, size)).sum(),
            // LinearClassifier_VGG: Linear(512, 512) - ReLU - Dropout - Linear(512, n_cls).
            linear(512, 512).params + linear(512, n_cls).params,
        ),
        Architecture::Wrn16x8 => {
            (wrn_backbone(), enabled.iter().map(|&k| wrn_exit(k, size)).sum(), linear(512, n_cls).params)
        }
        Architecture::EfficientNet => {
            (efficientnet_backbone(), enabled.iter().map(|_| efficientnet_exit()).sum(), linear(512, n_cls).params)
        }
        resnet => {
            let imagenet_stem = matches!(dataset, DatasetKind::ImageNet | DatasetKind::ImageNet100);
            let d = if resnet_layout(resnet).0 { 2048 } else { 512 };
            (
                resnet_backbone(resnet, imagenet_stem),
                enabled.iter().map(|&k| resnet_exit(resnet, k, size)).sum(),
                linear(d, n_cls).params,
            )
        }
    }
}

fn check(arch: Architecture, dataset: DatasetKind, exits: Vec<bool>, size: SubNetworkSize) -> Result<(), String> {
    let sub_arch = match arch {
        Architecture::Vgg13 | Architecture::Vgg13Bn | Architecture::Vgg16 | Architecture::Vgg16Bn => {
            SubNetworkArch::Vgg
        }
        Architecture::Wrn16x8 => SubNetworkArch::Wrn,
        Architecture::EfficientNet => SubNetworkArch::Efficientnet,
        _ => SubNetworkArch::Resnet,
    };
    let config = ModelConfig::new(arch, dataset, ExitPositions::new(exits.clone()), sub_arch, size, 128)
        .map_err(|e| e.to_string())?;
    let label = format!("{arch} {dataset} {:?} {size}", exits);
    let (backbone, subnet, classifier) = expected(arch, dataset, config.exits.flags(), size);
    let d = arch.feature_dim();
    let heads = head(d).params * (1 + config.exits.count() as i64);
    let (vs, _model) =
        ConModel::build(&config, Device::Cpu, selfcon::model::BatchNormKind::Local).map_err(|e| e.to_string())?;
    let s = ModelSummary::of(&vs, &config);
    let pairs = [
        ("backbone params", s.backbone_params, backbone.params),
        ("sub-network params", s.subnetwork_params, subnet.params),
        ("head params", s.head_params + s.sub_heads_params, heads),
        ("total params", s.total_params, backbone.params + subnet.params + heads),
        ("BN buffer elements", s.bn_buffers_total, backbone.buffers + subnet.buffers),
        ("linear classifier params", s.linear_classifier_params, classifier),
    ];
    for (what, got, want) in pairs {
        if got != want {
            return Err(format!("{label}: {what} {got}, official construction gives {want}"));
        }
    }
    Ok(())
}

/// Runs every configuration and reports all mismatches at once.
fn check_grid(configs: Vec<(Architecture, DatasetKind, Vec<bool>, SubNetworkSize)>) {
    let _guard = tch::no_grad_guard();
    let total = configs.len();
    let failures: Vec<String> = configs.into_iter().filter_map(|(a, d, e, s)| check(a, d, e, s).err()).collect();
    assert!(failures.is_empty(), "{} of {total} configurations differ:\n{}", failures.len(), failures.join("\n"));
}

const ALL_SIZES: [SubNetworkSize; 4] =
    [SubNetworkSize::Fc, SubNetworkSize::Small, SubNetworkSize::Same, SubNetworkSize::Large];

fn grid(
    archs: &[Architecture],
    datasets: &[DatasetKind],
    exits: usize,
    sizes: &[SubNetworkSize],
) -> Vec<(Architecture, DatasetKind, Vec<bool>, SubNetworkSize)> {
    let mut out = Vec::new();
    for &arch in archs {
        for &dataset in datasets {
            for combo in exit_combinations(exits) {
                for &size in sizes {
                    out.push((arch, dataset, combo.clone(), size));
                }
            }
        }
    }
    out
}

/// Every 17th configuration of the ResNet and VGG grids below (17 is prime to the 4 sizes and the
/// 8/16 exit combinations, so the sample walks through sizes, exits, stems and depths): the fast
/// set's check; the whole grids are CI's.
#[test]
fn a_sample_of_the_resnet_and_vgg_grids() {
    let vgg_sizes = [SubNetworkSize::Fc, SubNetworkSize::Small, SubNetworkSize::Same];
    let vggs = [Architecture::Vgg13, Architecture::Vgg13Bn, Architecture::Vgg16, Architecture::Vgg16Bn];
    let all = [
        grid(
            &[Architecture::ResNet18, Architecture::ResNet34],
            &[DatasetKind::Cifar100, DatasetKind::ImageNet100],
            3,
            &ALL_SIZES,
        ),
        grid(&[Architecture::ResNet50, Architecture::ResNet101], &[DatasetKind::Cifar10], 3, &ALL_SIZES),
        grid(&vggs, &[DatasetKind::Cifar10], 4, &vgg_sizes),
    ]
    .concat();
    let sample: Vec<_> = all.into_iter().step_by(17).collect();
    for arch in [Architecture::ResNet18, Architecture::ResNet34, Architecture::ResNet50, Architecture::ResNet101] {
        assert!(sample.iter().any(|c| c.0 == arch), "the sample misses {arch}");
    }
    check_grid(sample);
}

#[test]
#[ignore = "heavy (the whole grid; the fast set checks a sample): CI's extended set, cargo test -- --ignored"]
fn resnet18_34_every_exit_combination_and_size_both_stems() {
    check_grid(grid(
        &[Architecture::ResNet18, Architecture::ResNet34],
        &[DatasetKind::Cifar100, DatasetKind::ImageNet100],
        3,
        &ALL_SIZES,
    ));
}

#[test]
#[ignore = "heavy (the whole grid; the fast set checks a sample): CI's extended set, cargo test -- --ignored"]
fn resnet50_every_exit_combination_and_size() {
    check_grid(grid(&[Architecture::ResNet50], &[DatasetKind::Cifar10], 3, &ALL_SIZES));
}

#[test]
#[ignore = "heavy (the whole grid; the fast set checks a sample): CI's extended set, cargo test -- --ignored"]
fn resnet101_every_exit_combination_and_size() {
    check_grid(grid(&[Architecture::ResNet101], &[DatasetKind::Cifar10], 3, &ALL_SIZES));
}

#[test]
#[ignore = "heavy (the whole grid; the fast set checks a sample): CI's extended set, cargo test -- --ignored"]
fn vgg_every_exit_combination_and_size() {
    let sizes = [SubNetworkSize::Fc, SubNetworkSize::Small, SubNetworkSize::Same];
    check_grid(grid(
        &[Architecture::Vgg13, Architecture::Vgg13Bn, Architecture::Vgg16, Architecture::Vgg16Bn],
        &[DatasetKind::Cifar10],
        4,
        &sizes,
    ));
}

fn vgg_config(arch: Architecture, exits: Vec<bool>, size: SubNetworkSize) -> selfcon::Result<ModelConfig> {
    ModelConfig::new(arch, DatasetKind::Cifar10, ExitPositions::new(exits), SubNetworkArch::Vgg, size, 128)
}

#[test]
fn vgg_refuses_large_sub_networks() {
    let err = vgg_config(Architecture::Vgg16, vec![true, false, false, false], SubNetworkSize::Large)
        .expect_err("VGG large must be refused")
        .to_string();
    assert!(err.contains("selfcon_size") && err.contains("large"), "{err}");
}

#[test]
fn wrn_every_exit_combination_and_size() {
    check_grid(grid(&[Architecture::Wrn16x8], &[DatasetKind::Cifar100], 2, &ALL_SIZES));
}

#[test]
fn efficientnet_with_and_without_its_exit() {
    check_grid(grid(&[Architecture::EfficientNet], &[DatasetKind::Cifar10], 1, &ALL_SIZES));
}

#[test]
fn vgg16_same_matches_the_official_count_from_the_issue() {
    // Measured with the official code (issue #12): vgg16, cifar10, exit after block1, same.
    let _guard = tch::no_grad_guard();
    let config = vgg_config(Architecture::Vgg16, vec![true, false, false, false], SubNetworkSize::Same).unwrap();
    let (vs, _) = ConModel::build(&config, Device::Cpu, selfcon::model::BatchNormKind::Local).unwrap();
    assert_eq!(ModelSummary::of(&vs, &config).subnetwork_params, 14_823_552);
}

#[test]
fn vgg_sub_network_keys_follow_the_official_flat_sequential() {
    // `_make_sub_layer` returns ONE nn.Sequential: for each later block, [Conv2d, BatchNorm2d,
    // ReLU] × n (no BN without _bn), then MaxPool2d; indices count every module.
    let _guard = tch::no_grad_guard();
    for (arch, bn_on, n) in [(Architecture::Vgg16Bn, true, 3), (Architecture::Vgg13, false, 2)] {
        let config = vgg_config(arch, vec![false, true, false, false], SubNetworkSize::Same).unwrap();
        let (vs, _) = ConModel::build(&config, Device::Cpu, selfcon::model::BatchNormKind::Local).unwrap();
        let mut ours: Vec<String> =
            vs.variables().into_keys().filter(|k| k.starts_with("encoder.selfcon_layer.")).collect();
        ours.sort();
        let mut want = Vec::new();
        let mut index = 0;
        for _block in 3..=5 {
            for _ in 0..n {
                want.push(format!("encoder.selfcon_layer.1.{index}.weight"));
                want.push(format!("encoder.selfcon_layer.1.{index}.bias"));
                if bn_on {
                    for leaf in ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"] {
                        want.push(format!("encoder.selfcon_layer.1.{}.{leaf}", index + 1));
                    }
                    index += 3;
                } else {
                    index += 2;
                }
            }
            index += 1; // MaxPool2d
        }
        want.sort();
        assert_eq!(ours, want, "{arch}");
    }
}
