//! `selfcon export`: a pre-trained encoder (ours, official, or a bare state dict) as a PyTorch
//! `.pth`, a TorchScript module, an ONNX graph or safetensors weights.

use std::path::PathBuf;

use clap::Args;
use tch::Device;

use selfcon::checkpoint::{self, ExportFormat, ModelCheckpoint};
use selfcon::model::ConModel;
use selfcon::Error;

use super::model_args::ModelArgs;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The pre-training checkpoint: ours, the official code's last.pth, or a bare state dict (then
    /// the model flags describe it).
    #[arg(long, value_name = "PATH")]
    pub ckpt: PathBuf,

    /// pth (torch.load(weights_only=True), official keys), torchscript (the eval-mode encoder:
    /// forward(x) → (backbone features, exit features...)), onnx (the same encoder, opset 17,
    /// ResNet encoders; outputs `backbone`, `sub_network.{k}`), or safetensors (weights).
    #[arg(long, value_name = "FORMAT")]
    pub format: String,

    /// Output file, written atomically.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// The dataset the encoder is meant for (decides the ResNet stem and the traced input size)
    /// [default: the checkpoint's pre-training dataset, else imagenet].
    #[arg(long)]
    pub dataset: Option<String>,

    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    if !a.ckpt.is_file() {
        return Err(Error::option("ckpt", format!("{} does not exist", a.ckpt.display())).into());
    }
    if selfcon::files::same_file(&a.ckpt, &a.out) {
        let why = "is the file --ckpt reads: the export would replace the checkpoint; choose another file";
        return Err(Error::option("out", format!("{} {why}", a.out.display())).into());
    }
    let format: ExportFormat = a.format.parse()?;
    let ckpt = ModelCheckpoint::open(&a.ckpt)?;
    let dataset = a.dataset.clone().unwrap_or_else(|| super::linear::default_dataset(&ckpt));
    if dataset == "folder" {
        return Err(Error::option("dataset", "give the dataset the encoder was trained like (e.g. imagenet)").into());
    }
    let kind: selfcon::data::DatasetKind = dataset.parse()?;
    let config = a.model.for_checkpoint(&ckpt, &dataset, kind.image_size() as usize)?;
    let (mut vs, model) = ConModel::build(&config, Device::Cpu, selfcon::model::BatchNormKind::Local)?;
    ckpt.load_into(&vs)?;
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, format!("cannot create the folder: {e}")))?;
    }
    checkpoint::export(&model, &mut vs, format, &a.out, ckpt.epoch)?;
    println!("wrote {} ({}, {} {})", a.out.display(), a.format, config.architecture, config.exits);
    Ok(())
}
