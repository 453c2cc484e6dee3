//! What the official code's checkpoints hold, in our terms. `main_represent.py` and `main_ce.py`
//! write `torch.save({'opt': argparse.Namespace, 'model': state_dict, 'optimizer':
//! optimizer.state_dict(), 'epoch': int})`; people also save a bare `model.state_dict()`.
//!
//! Keys are mapped as the official `main_linear.py` maps them — every `module.` (DataParallel)
//! removed, `downsample` renamed `shortcut` — and then checked strictly by the caller.
//!
//! The optimiser state names parameters by index: index i is the i-th tensor of
//! `model.parameters()` given to `optim.SGD`, which is the order of the `model` state dict with
//! the BatchNorm buffers (`running_mean`, `running_var`, `num_batches_tracked`) left out —
//! `state_dict()` and `parameters()` both walk the modules depth-first in registration order,
//! each module's own parameters first.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};
use tch::Tensor;

use super::torch_archive::TorchArchive;
use crate::data::DatasetKind;
use crate::error::{Error, Result};
use crate::model::{Architecture, ExitPositions, ModelConfig, SubNetworkArch, SubNetworkSize};
use crate::pickle::{shorten, Value};

/// State-dict entries that are buffers, not parameters (the only buffers these models have).
const BUFFER_SUFFIXES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// An official (or bare `state_dict`) checkpoint, read.
pub struct OfficialCheckpoint {
    pub path: PathBuf,
    /// Mapped state-dict keys with their tensors, in the file's order.
    pub weights: Vec<(String, Tensor)>,
    /// The `opt` namespace as JSON, or the model description of our `.pth` export (None for a
    /// bare state dict).
    pub options: Option<Map<String, Json>>,
    /// Written by `selfcon export --format pth` (its `feat_dim` is the real projection width).
    pub exported: bool,
    /// The last finished epoch (`epoch`).
    pub epoch: Option<usize>,
    /// SGD momentum buffers by parameter name (mapped through the parameter order above).
    pub momentum: Vec<(String, Tensor)>,
}

/// The official key mapping of `main_linear.py`.
pub fn map_key(key: &str) -> String {
    key.replace("module.", "").replace("downsample", "shortcut")
}

pub fn is_buffer(key: &str) -> bool {
    BUFFER_SUFFIXES.iter().any(|s| key.rsplit('.').next() == Some(*s))
}

impl OfficialCheckpoint {
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_archive(TorchArchive::open(path)?, path)
    }

    pub fn from_archive(archive: TorchArchive, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::file(path, reason);
        let root = &archive.root;
        let Value::Dict(_) = root else {
            return Err(bad("holds no dict (expected a checkpoint dict or a state dict)".into()));
        };
        // A checkpoint dict has 'model'; a bare state dict maps names to tensors.
        let (state, full) = match root.get("model") {
            Some(model) => (model, true),
            None => (root, false),
        };
        let Value::Dict(items) = state else { return Err(bad("'model' is not a state dict".into())) };
        let mut weights = Vec::with_capacity(items.len().min(1 << 16));
        let mut seen = std::collections::HashSet::new();
        for (k, v) in items.iter() {
            let key = k.as_key().map_err(|e| bad(format!("a state-dict key: {e}")))?;
            let mapped = map_key(&key);
            // Before the tensor is made: a file repeating one entry costs one tensor, not many.
            if !seen.insert(mapped.clone()) {
                return Err(bad(format!(
                    "two state-dict keys map to {} (after removing module. / renaming downsample)",
                    shorten(&mapped, 80)
                )));
            }
            let key = shorten(&key, 80);
            let what = if full { format!("model['{key}']") } else { format!("['{key}']") };
            weights.push((mapped, archive.tensor(v, &what)?));
        }
        if weights.is_empty() {
            return Err(bad("holds an empty state dict".into()));
        }
        // The official 'opt', or the plain dict `selfcon export --format pth` writes.
        let options = match (root.get("opt"), root.get("selfcon_model")) {
            (Some(opt), _) if full => Some(namespace(opt).map_err(|e| bad(format!("'opt': {e}")))?),
            (None, Some(model)) if full => match to_plain_json(model) {
                Ok(Json::Object(map)) => Some(map),
                _ => return Err(bad("'selfcon_model' is not a dict of plain values".into())),
            },
            _ => None,
        };
        let epoch = match root.get("epoch") {
            Some(e) if full => Some(
                e.as_int()
                    .and_then(|e| usize::try_from(e).ok())
                    .ok_or_else(|| bad("'epoch' is not a non-negative integer".into()))?,
            ),
            _ => None,
        };
        let momentum = match root.get("optimizer") {
            Some(opt) if full => momentum_buffers(&archive, opt, &weights, path)?,
            _ => Vec::new(),
        };
        let exported = full && root.get("opt").is_none() && root.get("selfcon_model").is_some();
        Ok(OfficialCheckpoint { path: path.to_path_buf(), weights, options, exported, epoch, momentum })
    }

    /// The model the official options describe (`--model`, `--dataset`, `--selfcon_pos`,
    /// `--selfcon_arch`, `--selfcon_size`; the official projection is always 128 wide, whatever
    /// its `--feat_dim` says; our exports record the real width as an integer `feat_dim`).
    pub fn model_config(&self) -> Result<Option<ModelConfig>> {
        let Some(opt) = &self.options else { return Ok(None) };
        let text = |name: &str, default: &str| -> Result<String> {
            match opt.get(name) {
                None | Some(Json::Null) => Ok(default.to_string()),
                Some(Json::String(s)) => Ok(s.clone()),
                Some(other) => Err(Error::file(
                    &self.path,
                    format!("'opt.{name}' is {}, expected text", shorten(&other.to_string(), 60)),
                )),
            }
        };
        let in_file = |e: Error| Error::file(&self.path, format!("its options: {e}"));
        let config = ModelConfig::new(
            text("model", "resnet50")?.parse::<Architecture>().map_err(in_file)?,
            text("dataset", "cifar10")?.parse::<DatasetKind>().map_err(in_file)?,
            text("selfcon_pos", "[False,False,False]")?.parse::<ExitPositions>().map_err(in_file)?,
            text("selfcon_arch", "resnet")?.parse::<SubNetworkArch>().map_err(in_file)?,
            text("selfcon_size", "same")?.parse::<SubNetworkSize>().map_err(in_file)?,
            match opt.get("feat_dim") {
                Some(Json::Number(n)) if self.exported => n.as_i64().unwrap_or(128),
                _ => 128,
            },
        )
        .map_err(in_file)?;
        Ok(Some(config))
    }
}

impl OfficialCheckpoint {
    /// Errors unless the checkpoint's options (when it has them) describe `model`; another
    /// dataset with the same stem (and so the same weights' shapes) is accepted.
    pub fn check_same_model(&self, model: &ModelConfig) -> Result<()> {
        let Some(saved) = self.model_config()? else { return Ok(()) };
        if saved.dataset.stem() == model.dataset.stem()
            && (ModelConfig { dataset: model.dataset, ..saved.clone() }) == *model
        {
            return Ok(());
        }
        Err(Error::file(
            &self.path,
            format!(
                "was trained with another model ({} on {}, exits {}, size {}); leave the model flags out or give the same",
                saved.architecture, saved.dataset, saved.exits, saved.sub_size
            ),
        ))
    }
}

/// `argparse.Namespace(**d)` pickled as `Build(Reduce(Namespace, ()), d)` → d as JSON.
fn namespace(v: &Value) -> std::result::Result<Map<String, Json>, String> {
    let Value::Build(obj, state) = v else { return Err("is not an argparse.Namespace".into()) };
    if !matches!(obj.as_ref(), Value::Reduce(f, _) if crate::pickle::is_global(f, "argparse", "Namespace")) {
        return Err("is not an argparse.Namespace".into());
    }
    let Value::Dict(items) = state.as_ref() else { return Err("namespace state is not a dict".into()) };
    let mut budget = JSON_BUDGET;
    items
        .iter()
        .map(|(k, v)| Ok((k.as_key().map_err(|e| format!("an option name: {e}"))?, to_json(v, &mut budget)?)))
        .collect()
}

/// How much an options dict may expand to: one unit per value and per byte of text (keys
/// included). Pickled objects are shared (memoised), so a small file can describe a value whose
/// tree has astronomically many nodes or repeats one huge string; real options are a few
/// kilobytes (the official `opt` ~2 KB, ~60 values).
pub const JSON_BUDGET: usize = 1_000_000;

fn over_budget() -> String {
    format!("expands to more than {JSON_BUDGET} values and bytes of text (options are a few kilobytes)")
}

fn to_plain_json(v: &Value) -> std::result::Result<Json, String> {
    let mut budget = JSON_BUDGET;
    to_json(v, &mut budget)
}

fn to_json(v: &Value, budget: &mut usize) -> std::result::Result<Json, String> {
    let text = match v {
        Value::Str(t) => t.len(),
        Value::Bytes(b) => b.len(),
        _ => 0,
    };
    *budget = budget.checked_sub(1 + text).ok_or_else(over_budget)?;
    Ok(match v {
        Value::None => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(_) | Value::Bytes(_) => Json::String(v.as_text().unwrap_or_default()),
        Value::List(items) | Value::Tuple(items) => {
            Json::Array(items.iter().map(|v| to_json(v, budget)).collect::<Result<_, _>>()?)
        }
        Value::Dict(items) => Json::Object(
            items
                .iter()
                .map(|(k, v)| {
                    let key = k.as_key()?;
                    *budget = budget.checked_sub(key.len()).ok_or_else(over_budget)?;
                    Ok((key, to_json(v, budget)?))
                })
                .collect::<Result<_, String>>()?,
        ),
        _ => return Err("holds an object that is not plain data".into()),
    })
}

/// The most entries one parameter's optimiser state may have.
const MAX_STATE_KEYS: usize = 16;

/// `{'state': {i: {'momentum_buffer': t}}, 'param_groups': [{'params': [i, ...], ...}]}` →
/// momentum buffers by parameter name.
fn momentum_buffers(
    archive: &TorchArchive,
    opt: &Value,
    weights: &[(String, Tensor)],
    path: &Path,
) -> Result<Vec<(String, Tensor)>> {
    let bad = |reason: String| Error::file(path, format!("'optimizer': {reason}"));
    let params: Vec<(&str, &Tensor)> =
        weights.iter().filter(|(k, _)| !is_buffer(k)).map(|(k, t)| (k.as_str(), t)).collect();
    let Some(Value::Dict(state)) = opt.get("state") else { return Err(bad("has no 'state' dict".into())) };
    let mut out = Vec::new();
    // Each index once, so the loop runs at most once per parameter whatever the file repeats.
    let mut seen = vec![false; params.len()];
    for (index, entry) in state.iter() {
        let i = index.as_int().ok_or_else(|| bad("a state key is not a parameter index".into()))?;
        let (name, param) = usize::try_from(i)
            .ok()
            .and_then(|i| params.get(i))
            .ok_or_else(|| bad(format!("state for parameter {i}, but the model has {} parameters", params.len())))?;
        if std::mem::replace(&mut seen[i as usize], true) {
            return Err(bad(format!("parameter {i} has two state entries")));
        }
        // SGD keeps one buffer per parameter (Adam three): a lookup in a huge shared dict per
        // entry would cost its size each time.
        match entry {
            Value::Dict(items) if items.len() <= MAX_STATE_KEYS => {}
            Value::Dict(items) => {
                return Err(bad(format!(
                    "the state of parameter {i} has {} entries (an optimiser keeps a few)",
                    items.len()
                )))
            }
            _ => return Err(bad(format!("the state of parameter {i} is not a dict"))),
        }
        match entry.get("momentum_buffer") {
            None | Some(Value::None) => continue,
            Some(buffer) => {
                let t = archive.tensor(buffer, &format!("optimizer['state'][{i}]['momentum_buffer']"))?;
                if t.size() != param.size() {
                    return Err(bad(format!(
                        "momentum buffer {i} has shape {:?}, parameter {i} ({name}) has {:?}: the parameter order does not match",
                        t.size(),
                        param.size()
                    )));
                }
                out.push((name.to_string(), t));
            }
        }
    }
    Ok(out)
}
