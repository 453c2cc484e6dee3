//! `selfcon summary`: parameter counts per part and output shapes of a model.

use anyhow::Context;
use clap::Args;
use serde_json::json;
use tch::{Device, Kind, Tensor};

use selfcon::model::{ConModel, ModelConfig, ModelSummary};

use super::ModelArgs;

#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// Dataset, which sets the number of classes, the image size and the ResNet stem: cifar10,
    /// cifar100, tinyimagenet, mnist, fashionmnist (CIFAR stem) or imagenet, imagenet100 (7×7 stem
    /// with max-pool).
    #[arg(long, default_value = "cifar10")]
    pub dataset: String,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Batch used to read off the output shapes.
const PROBE_BATCH: i64 = 2;

pub fn run(args: SummaryArgs) -> anyhow::Result<()> {
    let kind: selfcon::data::DatasetKind = args.dataset.parse()?;
    let config = args.model.to_config(&args.dataset, kind.image_size() as usize)?;
    let (vs, model) = ConModel::build(&config, Device::Cpu, selfcon::model::BatchNormKind::Local)?;
    let summary = ModelSummary::of(&vs, &config);
    let size = config.dataset.image_size();
    let probe = Tensor::zeros([PROBE_BATCH, 3, size, size], (Kind::Float, Device::Cpu));
    let out = tch::no_grad(|| model.forward_t(&probe, false)).context("forward pass on a zero batch")?;
    let shapes = |ts: &[Tensor]| ts.iter().map(Tensor::size).collect::<Vec<_>>();
    let encoder_sub = shapes(&out.encoder.exits);
    let head_sub = shapes(&out.exit_projections);

    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        let obj = value.as_object_mut().context("summary serialises to an object")?;
        obj.insert("model".into(), json!(config.architecture));
        obj.insert("dataset".into(), json!(config.dataset));
        obj.insert("selfcon_pos".into(), json!(config.exits.flags()));
        obj.insert("selfcon_arch".into(), json!(config.sub_arch));
        obj.insert("selfcon_size".into(), json!(config.sub_size));
        obj.insert("feat_dim".into(), json!(config.feat_dim));
        obj.insert("input_shape".into(), json!(probe.size()));
        obj.insert("encoder_out_dims".into(), json!({"sub": encoder_sub, "backbone": out.encoder.backbone.size()}));
        obj.insert("head_out_dims".into(), json!({"sub": head_sub, "backbone": out.backbone_projection.size()}));
        println!("{}", serde_json::to_string(&value)?);
        return Ok(());
    }

    print_table(&config, &summary);
    println!();
    println!("outputs for an input of {:?}:", probe.size());
    for (k, (enc, head)) in config.exits.enabled().iter().zip(encoder_sub.iter().zip(&head_sub)) {
        let name = format!("exit after {}", config.architecture.exit_name(*k));
        println!("  {name:<22} features {enc:?}  projection {head:?}");
    }
    println!(
        "  {:<22} features {:?}  projection {:?}",
        "backbone",
        out.encoder.backbone.size(),
        out.backbone_projection.size()
    );
    Ok(())
}

fn print_table(config: &ModelConfig, s: &ModelSummary) {
    let arch = config.architecture;
    let stem = match config.stem() {
        selfcon::model::Stem::Cifar => "CIFAR stem",
        selfcon::model::Stem::ImageNet => "ImageNet stem",
    };
    println!(
        "{arch} on {} ({stem}, {} classes) · selfcon_pos {} · selfcon_size {} · selfcon_arch {} · feat_dim {}",
        config.dataset,
        config.num_classes(),
        config.exits,
        config.sub_size,
        config.sub_arch,
        config.feat_dim
    );
    println!();
    let row = |name: &str, n: i64| println!("  {name:<28}{:>14}", thousands(n));
    println!("  {:<28}{:>14}", "part", "parameters");
    row("backbone (encoder)", s.backbone_params);
    row("sub-networks", s.subnetwork_params);
    for (k, n) in &s.exit_params {
        row(&format!("  exit after {}", arch.exit_name(*k)), *n);
    }
    row("projection head", s.head_params);
    row("sub-network heads", s.sub_heads_params);
    row("total (pre-training)", s.total_params);
    println!();
    row("BN buffer elements", s.bn_buffers_total);
    let d = config.feature_dim();
    row(&format!("linear classifier {d}→{}", config.num_classes()), s.linear_classifier_params);
}

fn thousands(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}
