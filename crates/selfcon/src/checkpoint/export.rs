//! `selfcon export`: a pre-trained encoder in the formats Python and deployment tools load.
//! - `pth`: `{'model': state dict under the official keys (fp32), 'epoch'}` for `torch.load(...,
//!   weights_only=True)` and the official `ConResNet.load_state_dict(strict=True)`;
//! - `torchscript`: the encoder in eval mode traced through libtorch's JIT; `forward(x)` returns
//!   (backbone features, each exit's features in exit order) — what linear evaluation uses;
//! - `safetensors`: the weights alone under the official keys;
//! - `onnx`: the same encoder as an ONNX graph (opset 17) written from the model's structure
//!   (ResNet encoders; other families a clear error).

use crate::names::Named;
use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::{save, torch_writer, write_atomically, Metadata};
use crate::error::{Error, Result};
use crate::model::ConModel;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::Display, strum::IntoStaticStr, strum::EnumIter, strum::EnumMessage,
)]
#[strum(serialize_all = "lowercase")]
pub enum ExportFormat {
    Pth,
    Torchscript,
    Onnx,
    Safetensors,
}

crate::named_enum!(ExportFormat, "format", "format", parse_only);

/// The model's weights under their state-dict names, sorted, floating point as fp32.
pub fn state_dict(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut weights: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| {
            let t = t.detach().to_device(Device::Cpu);
            let t = if t.is_floating_point() { t.to_kind(Kind::Float) } else { t };
            (k, t.contiguous())
        })
        .collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    weights
}

/// Writes `model` (whose weights are in `vs`) to `out` in `format`.
pub fn export(
    model: &ConModel,
    vs: &mut VarStore,
    format: ExportFormat,
    out: &Path,
    epoch: Option<usize>,
) -> Result<()> {
    match format {
        ExportFormat::Pth => {
            let c = model.config();
            let text = |s: String| torch_writer::Plain::Str(s);
            let described = [
                ("model", text(c.architecture.to_string())),
                ("dataset", text(c.dataset.name().to_string())),
                ("selfcon_pos", text(c.exits.to_string())),
                ("selfcon_arch", text(c.sub_arch.to_string())),
                ("selfcon_size", text(c.sub_size.to_string())),
                ("feat_dim", torch_writer::Plain::Int(c.feat_dim)),
            ];
            torch_writer::save_state_dict(out, &state_dict(vs), epoch.map_or(0, |e| e as i64), &described)
        }
        ExportFormat::Safetensors => {
            let mut meta = Metadata::new();
            meta.insert("format".into(), "selfcon-weights-1".into());
            meta.insert("model".into(), serde_json::to_string(model.config()).unwrap_or_default());
            if let Some(e) = epoch {
                meta.insert("epoch".into(), e.to_string());
            }
            save(out, &state_dict(vs), &meta)
        }
        ExportFormat::Torchscript => torchscript(model, vs, out),
        ExportFormat::Onnx => {
            let bytes = model.to_onnx(&vs.variables())?;
            write_atomically(out, &bytes, "the ONNX model")
        }
    }
}

/// Traces `model.encode(x, eval)` on a CPU batch of the dataset's image size and saves the module.
fn torchscript(model: &ConModel, vs: &mut VarStore, out: &Path) -> Result<()> {
    // Weights enter the trace as constants, which the tracer accepts only without gradients.
    vs.freeze();
    let size = model.config().dataset.image_size();
    let example = Tensor::zeros([2, 3, size, size], (Kind::Float, vs.device()));
    let io = |e: std::io::Error| Error::file(out, format!("cannot write: {e}"));
    let tmp = super::temporary_for(out).map_err(io)?;
    let traced = tch::no_grad(|| {
        torch_shim::jit::trace_and_save(
            "SelfConEncoder",
            &[example],
            |inputs| model.encode(&inputs[0], false).map(|o| std::iter::once(o.backbone).chain(o.exits).collect()),
            tmp.path(),
        )
    })
    .map_err(|e| Error::input(format!("TorchScript tracing failed: {e}")))?;
    traced?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(out).map_err(|e| io(e.error))?;
    Ok(())
}
