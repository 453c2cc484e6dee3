//! `selfcon features`: a pre-trained encoder's features of one split, in dataset order with the
//! evaluation transform, as a safetensors file — `backbone` [N, d], `sub_network.{k}` [N, d_k] for
//! each exit k (in exit order), `labels` [N] int64 — for kNN, retrieval, t-SNE or any analysis in
//! Python without re-implementing the model.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use selfcon::checkpoint::{self, ModelCheckpoint};
use selfcon::data::{Dataset, Subset};
use selfcon::engine::{select_device, DeviceRequest};
use selfcon::model::ConModel;
use selfcon::train::{encoder_features, FeatureExtraction, Precision};
use selfcon::Error;

use super::data_args::DataArgs;
use super::model_args::ModelArgs;

#[derive(Args, Debug)]
pub struct FeaturesArgs {
    /// The pre-training checkpoint: ours, the official code's last.pth, or a bare state dict (then
    /// the model flags describe it).
    #[arg(long, value_name = "PATH")]
    pub ckpt: PathBuf,

    /// cifar10, cifar100, tinyimagenet, imagenet, imagenet100, mnist, fashionmnist or folder
    /// [default: the checkpoint's pre-training dataset, else imagenet].
    #[arg(long)]
    pub dataset: Option<String>,

    /// Which split: train or test (an image folder's train/ or val/).
    #[arg(long, default_value = "test", value_parser = ["train", "test"])]
    pub split: String,

    /// Only the first N images of the split (dataset order).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Output file (safetensors), written atomically.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    #[arg(long = "num_workers", visible_alias = "num-workers", default_value_t = 4)]
    pub num_workers: usize,

    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Forward-pass precision: fp32, or bf16/fp16 autocast (features are stored in fp32).
    #[arg(long, default_value = "fp32")]
    pub precision: String,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub data: DataArgs,
}

pub fn run(a: FeaturesArgs) -> anyhow::Result<()> {
    if !a.ckpt.is_file() {
        return Err(Error::option("ckpt", format!("{} does not exist", a.ckpt.display())).into());
    }
    if a.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(Error::option("out", format!("{} should end in .safetensors", a.out.display())).into());
    }
    let precision: Precision = a.precision.parse()?;
    if precision == Precision::Fp64 {
        return Err(Error::option("precision", "fp64 is for pretrain and ce; use fp32, bf16 or fp16").into());
    }
    let device = select_device(a.device.parse::<DeviceRequest>()?)?;
    let requested = precision;
    let precision = precision.resolve(device);
    let ckpt = ModelCheckpoint::open(&a.ckpt)?;
    let dataset = a.dataset.clone().unwrap_or_else(|| super::linear::default_dataset(&ckpt));
    let config = a.model.for_checkpoint(&ckpt, &dataset, a.data.image_size(&dataset)?)?;
    let (vs, model) = ConModel::build(&config, device, selfcon::model::BatchNormKind::Local)?;
    ckpt.load_into(&vs)?;
    drop(ckpt);
    let (data, _) = a.data.open(&dataset)?;
    let split: Arc<dyn Dataset> = match a.split.as_str() {
        "train" => data.train.clone(),
        _ => data.test.clone().ok_or_else(|| Error::option("split", format!("{dataset} has no test split here")))?,
    };
    let split: Arc<dyn Dataset> = match a.limit {
        Some(0) => return Err(Error::option("limit", "must be at least 1").into()),
        Some(n) if n < split.len() => Arc::new(Subset::new(split, (0..n).collect())),
        _ => split,
    };
    let n = split.len();
    eprintln!("features: {n} {} images of {dataset} through {} on {device:?}", a.split, a.ckpt.display());
    requested.announce(device);
    let how = FeatureExtraction {
        mean: data.mean,
        std: data.std,
        threads: a.num_workers.max(1),
        device,
        precision,
        channels_last: false,
        shard: None,
    };
    let features = encoder_features(&model, &split, a.data.eval_transform(&dataset)?, how)?;
    let mut tensors = vec![("backbone".to_string(), features.backbone)];
    for (k, e) in features.exits.into_iter().enumerate() {
        tensors.push((format!("sub_network.{k}"), e));
    }
    tensors.push(("labels".to_string(), features.labels));
    let mut meta = checkpoint::Metadata::new();
    meta.insert("format".into(), "selfcon-features-1".into());
    meta.insert("checkpoint".into(), a.ckpt.display().to_string());
    meta.insert("dataset".into(), dataset.clone());
    meta.insert("split".into(), a.split.clone());
    meta.insert("model".into(), serde_json::to_string(&config)?);
    meta.insert(
        "exits".into(),
        config.exits.enabled().iter().map(|k| config.architecture.exit_name(*k)).collect::<Vec<_>>().join(","),
    );
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, format!("cannot create the folder: {e}")))?;
    }
    checkpoint::save(&a.out, &tensors, &meta)?;
    let dims: Vec<String> = tensors.iter().map(|(k, t)| format!("{k} {:?}", t.size())).collect();
    println!("wrote {}: {}", a.out.display(), dims.join(", "));
    Ok(())
}
