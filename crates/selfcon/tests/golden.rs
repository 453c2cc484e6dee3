//! Checks the implementation against values computed with the official code.
//!
//! Every `*.json` in `tests/data/golden/` (a copy of the project's golden files) and, when
//! `SELFCON_GOLDEN_DIR` is set, every `*.json` in that folder is one test, dispatched on its schema:
//! loss files (loss in f64 and f32, every gradient present, through autograd and the L2
//! normalisation), parameter counts, state-dict keys and LR schedules. Run with
//! `cargo test --test golden`; a file that cannot be read or has an unknown schema fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use selfcon::data::DatasetKind;
use selfcon::loss::{stack_views, ConLoss, ConLossFlags, Method, MethodLoss, Positives};
use selfcon::model::{
    l2_normalize, state_dict_shapes, Architecture, ConModel, ExitPositions, ModelConfig, ModelSummary, SubNetworkArch,
    SubNetworkSize,
};
use selfcon::train::LrSchedule;

type Check = Result<(), Failed>;

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    add_folder(&mut trials, "golden", &bundled);
    if let Some(dir) = std::env::var_os("SELFCON_GOLDEN_DIR") {
        add_folder(&mut trials, "external", Path::new(&dir));
    }
    libtest_mimic::run(&args, trials).exit();
}

fn add_folder(trials: &mut Vec<Trial>, prefix: &str, dir: &Path) {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) => {
            let msg = format!("{}: {e}", dir.display());
            trials.push(Trial::test(format!("{prefix}::<folder>"), move || Err(msg.into())));
            return;
        }
    };
    files.sort();
    if files.is_empty() {
        let msg = format!("{}: no *.json files", dir.display());
        trials.push(Trial::test(format!("{prefix}::<folder>"), move || Err(msg.into())));
    }
    for path in files {
        let name = format!("{prefix}::{}", path.file_name().unwrap().to_string_lossy());
        match load(&path) {
            Err(e) => trials.push(Trial::test(name, move || Err(e))),
            Ok(doc) if doc.get("models").is_some() => add_param_count_trials(trials, &name, doc),
            Ok(doc) => trials.push(Trial::test(name, move || check_document(&doc))),
        }
    }
}

fn load(path: &Path) -> Result<Value, Failed> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()).into())
}

fn check_document(doc: &Value) -> Check {
    let inputs = &doc["inputs"];
    if doc["expected"].get("loss_f64").is_some() {
        if inputs.get("features").is_some() {
            return check_conloss_file(doc);
        }
        if inputs.get("sub_raw").is_some() {
            return check_method_file(doc);
        }
    }
    if doc.get("fc").is_some() && doc.get("same_subnet_keys").is_some() {
        return check_state_dict_file(doc);
    }
    if doc.get("cases").is_some() {
        return check_lr_schedule_file(doc);
    }
    Err("unrecognised golden schema (expected a loss, param_counts, state_dict or lr_schedule file)".into())
}

// ---------------------------------------------------------------------------------------------
// JSON helpers

fn tensor(v: &Value, kind: Kind) -> Result<Tensor, Failed> {
    let mut shape = Vec::new();
    let mut level = v;
    while let Value::Array(items) = level {
        shape.push(items.len() as i64);
        match items.first() {
            Some(first) => level = first,
            None => break,
        }
    }
    let mut flat = Vec::new();
    flatten(v, &mut flat)?;
    let expected: i64 = shape.iter().product();
    if flat.len() as i64 != expected {
        return Err(format!("ragged array: shape {shape:?} but {} numbers", flat.len()).into());
    }
    Ok(Tensor::from_slice(&flat).view(shape.as_slice()).to_kind(kind))
}

fn flatten(v: &Value, out: &mut Vec<f64>) -> Check {
    match v {
        Value::Array(items) => items.iter().try_for_each(|x| flatten(x, out)),
        Value::Number(n) => {
            out.push(n.as_f64().ok_or("number out of range")?);
            Ok(())
        }
        other => Err(format!("expected a number, found {other}").into()),
    }
}

fn labels(v: &Value) -> Result<Tensor, Failed> {
    let items = v.as_array().ok_or("labels must be a list")?;
    let ints: Vec<i64> = items.iter().map(|x| x.as_i64().ok_or("labels must be integers")).collect::<Result<_, _>>()?;
    Ok(Tensor::from_slice(&ints))
}

fn num(v: &Value, what: &str) -> Result<f64, Failed> {
    v.as_f64().ok_or_else(|| format!("{what} is missing or not a number").into())
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn tolerances(doc: &Value) -> Result<(f64, f64), Failed> {
    Ok((
        num(&doc["tolerance"]["f64_abs"], "tolerance.f64_abs")?,
        num(&doc["tolerance"]["f32_abs"], "tolerance.f32_abs")?,
    ))
}

fn con_loss(call: &Value) -> Result<ConLoss, Failed> {
    Ok(ConLoss {
        temperature: num(&call["temperature"], "call.temperature")?,
        base_temperature: num(&call["base_temperature"], "call.base_temperature")?,
        contrast_mode: call["contrast_mode"].as_str().unwrap_or("all").parse().map_err(|e| format!("{e}"))?,
    })
}

fn close_scalar(what: &str, got: &Tensor, want: f64, tol: f64) -> Check {
    let g = got.double_value(&[]);
    if (g - want).abs() <= tol {
        Ok(())
    } else {
        Err(format!("{what}: got {g:.15}, expected {want:.15} (|diff| {:.3e} > {tol:.0e})", (g - want).abs()).into())
    }
}

fn close_tensor(what: &str, got: &Tensor, want: &Value, tol: f64) -> Check {
    let want = tensor(want, Kind::Double)?;
    let got = got.to_kind(Kind::Double);
    if got.size() != want.size() {
        return Err(format!("{what}: shape {:?}, expected {:?}", got.size(), want.size()).into());
    }
    let diff = (&got - &want).abs().max().double_value(&[]);
    if diff <= tol {
        Ok(())
    } else {
        Err(format!("{what}: max |diff| {diff:.3e} > {tol:.0e}").into())
    }
}

fn grad_of(t: &Tensor, what: &str) -> Result<Tensor, Failed> {
    let g = t.grad();
    if g.defined() {
        Ok(g)
    } else {
        Err(format!("{what}: no gradient reached the input").into())
    }
}

// ---------------------------------------------------------------------------------------------
// ConLoss files (features [R, V, D] already normalised)

fn check_conloss_file(doc: &Value) -> Check {
    let (tol64, tol32) = tolerances(doc)?;
    let call = &doc["call"];
    let inputs = &doc["inputs"];
    let expected = &doc["expected"];
    let loss = con_loss(call)?;
    let flags = ConLossFlags {
        supcon_s: flag(call, "supcon_s"),
        selfcon_s_fg: flag(call, "selfcon_s_FG"),
        selfcon_m_fg: flag(call, "selfcon_m_FG"),
    };
    let use_labels = call.get("use_labels").and_then(Value::as_bool).unwrap_or(!inputs["labels"].is_null());
    let y = if use_labels { Some(labels(&inputs["labels"])?) } else { None };
    for (kind, tol, loss_key) in [(Kind::Double, tol64, "loss_f64"), (Kind::Float, tol32, "loss_f32")] {
        let features = tensor(&inputs["features"], kind)?.set_requires_grad(true);
        let positives = y.as_ref().map_or(Positives::SameImage, Positives::Labels);
        let out = loss.forward_with_stats(&features, positives, flags).map_err(|e| e.to_string())?;
        close_scalar(loss_key, &out.loss, num(&expected[loss_key], loss_key)?, tol)?;
        if let Some(kept) = expected.get("num_anchors_kept").and_then(Value::as_i64) {
            let anchors = out.anchors.double_value(&[]);
            if anchors != kept as f64 {
                return Err(format!("anchors kept: {anchors} instead of {kept}").into());
            }
        }
        if let Some(grad) = expected.get("grad_features_f64") {
            out.loss.backward();
            close_tensor(&format!("grad_features ({kind:?})"), &grad_of(&features, "features")?, grad, tol)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Method files (projection-head outputs → normalisation → the method's objective)

fn check_method_file(doc: &Value) -> Check {
    let (tol64, tol32) = tolerances(doc)?;
    let inputs = &doc["inputs"];
    let expected = &doc["expected"];
    let objective = MethodLoss {
        method: Method::SelfCon,
        multiview: flag(inputs, "multiview"),
        use_labels: flag(inputs, "use_labels"),
        alpha: num(&inputs["alpha"], "inputs.alpha")?,
        con_loss: con_loss(&doc["call"])?,
    };
    let y = labels(&inputs["labels"])?;

    for (kind, tol, loss_key) in [(Kind::Double, tol64, "loss_f64"), (Kind::Float, tol32, "loss_f32")] {
        // From the raw head outputs, through the normalisation.
        let sub_raw: Vec<Tensor> =
            tensor(&inputs["sub_raw"], kind)?.unbind(0).into_iter().map(|t| t.set_requires_grad(true)).collect();
        let backbone_raw = tensor(&inputs["backbone_raw"], kind)?.set_requires_grad(true);
        let sub: Vec<Tensor> = sub_raw.iter().map(l2_normalize).collect();
        let backbone = l2_normalize(&backbone_raw);
        close_tensor("sub_features", &Tensor::stack(&sub, 0), &inputs["sub_features"], tol)?;
        close_tensor("backbone_features", &backbone, &inputs["backbone_features"], tol)?;
        close_tensor("stacked_features", &stack_views(&sub, &backbone), &inputs["stacked_features"], tol)?;

        let terms = objective.compute(&sub, &backbone, &y).map_err(|e| e.to_string())?;
        close_scalar(loss_key, &terms.total, num(&expected[loss_key], loss_key)?, tol)?;
        if let Some(Value::Object(components)) = expected.get("components_f64") {
            let ours: BTreeSet<&str> = terms.components.iter().map(|c| c.name).collect();
            let theirs: BTreeSet<&str> = components.keys().map(String::as_str).collect();
            if ours != theirs {
                return Err(format!("loss components {ours:?}, expected {theirs:?}").into());
            }
            for c in &terms.components {
                let want = num(&components[c.name], c.name)?;
                close_scalar(&format!("component {}", c.name), &c.value, want, tol)?;
            }
        }
        if expected.get("grad_sub_raw_f64").is_some() || expected.get("grad_backbone_raw_f64").is_some() {
            terms.total.backward();
            if let Some(want) = expected.get("grad_sub_raw_f64") {
                let grads = sub_raw.iter().map(|t| grad_of(t, "sub_raw")).collect::<Result<Vec<_>, _>>()?;
                close_tensor(&format!("grad_sub_raw ({kind:?})"), &Tensor::stack(&grads, 0), want, tol)?;
            }
            if let Some(want) = expected.get("grad_backbone_raw_f64") {
                close_tensor(
                    &format!("grad_backbone_raw ({kind:?})"),
                    &grad_of(&backbone_raw, "backbone_raw")?,
                    want,
                    tol,
                )?;
            }
        }

        // From the normalised features as leaves: gradients w.r.t. what the loss receives.
        if expected.get("grad_sub_features_f64").is_some() || expected.get("grad_backbone_features_f64").is_some() {
            let sub: Vec<Tensor> = tensor(&inputs["sub_features"], kind)?
                .unbind(0)
                .into_iter()
                .map(|t| t.set_requires_grad(true))
                .collect();
            let backbone = tensor(&inputs["backbone_features"], kind)?.set_requires_grad(true);
            let terms = objective.compute(&sub, &backbone, &y).map_err(|e| e.to_string())?;
            close_scalar(loss_key, &terms.total, num(&expected[loss_key], loss_key)?, tol)?;
            terms.total.backward();
            if let Some(want) = expected.get("grad_sub_features_f64") {
                let grads = sub.iter().map(|t| grad_of(t, "sub_features")).collect::<Result<Vec<_>, _>>()?;
                close_tensor(&format!("grad_sub_features ({kind:?})"), &Tensor::stack(&grads, 0), want, tol)?;
            }
            if let Some(want) = expected.get("grad_backbone_features_f64") {
                let g = grad_of(&backbone, "backbone_features")?;
                close_tensor(&format!("grad_backbone_features ({kind:?})"), &g, want, tol)?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Parameter counts: per model family, a trial of a few entries that cover its datasets and
// sub-network sizes (the fast set) and one of the rest (CI's extended set: building every ResNet-50
// and -34 configuration takes most of a minute).

/// The entries `cargo test` checks: in file order, each one that brings a dataset, a sub-network
/// size or an exit/no-exit model not seen yet (the rest run with `-- --ignored`).
fn covering(entries: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    let (mut datasets, mut sizes, mut exits) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    entries.into_iter().partition(|m| {
        let has_exit = m["selfcon_pos"].as_array().is_some_and(|p| p.iter().any(|v| v.as_bool() == Some(true)));
        let dataset = datasets.insert(m["dataset"].to_string());
        let size = sizes.insert(m["selfcon_size"].to_string());
        let exit = exits.insert(has_exit);
        dataset | size | exit
    })
}

fn add_param_count_trials(trials: &mut Vec<Trial>, name: &str, doc: Value) {
    let Some(models) = doc["models"].as_array() else {
        trials.push(Trial::test(name.to_string(), || Err("'models' is not a list".into())));
        return;
    };
    let mut families: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in models {
        let model = m["model"].as_str().unwrap_or("?").to_string();
        families.entry(model).or_default().push(m.clone());
    }
    for (model, entries) in families {
        let total = entries.len();
        let arch = match model.parse::<Architecture>() {
            Ok(arch) => arch,
            Err(e) => {
                let msg = e.to_string();
                trials.push(Trial::test(format!("{name}::{model} ({total} entries)"), move || Err(msg.into())));
                continue;
            }
        };
        let (fast, rest) = covering(entries);
        let fast_name = format!("{name}::{model} ({} of {total} entries)", fast.len());
        trials.push(Trial::test(fast_name, move || check_param_counts(arch, &fast)));
        if !rest.is_empty() {
            let heavy = format!("{name}::{model} (the other {} entries)", rest.len());
            trials.push(
                Trial::test(heavy, move || check_param_counts(arch, &rest)).with_ignored_flag(true).with_kind("heavy"),
            );
        }
    }
}

fn model_config(m: &Value, arch: Architecture) -> Result<ModelConfig, Failed> {
    let text = |key: &str| m[key].as_str().ok_or_else(|| format!("'{key}' missing"));
    let exits: Vec<bool> = m["selfcon_pos"]
        .as_array()
        .ok_or("'selfcon_pos' missing")?
        .iter()
        .map(|b| b.as_bool().ok_or("selfcon_pos entries must be booleans"))
        .collect::<Result<_, _>>()?;
    let err = |e: selfcon::Error| Failed::from(e.to_string());
    // EfficientNet's entries say "(fixed)" / "(ignored)": the flags do not apply to it.
    let flag = |key: &str, default: &'static str| text(key).map(|t| if t.starts_with('(') { default } else { t });
    ModelConfig::new(
        arch,
        text("dataset")?.parse::<DatasetKind>().map_err(err)?,
        ExitPositions::new(exits),
        flag("selfcon_arch", "resnet")?.parse::<SubNetworkArch>().map_err(err)?,
        flag("selfcon_size", "same")?.parse::<SubNetworkSize>().map_err(err)?,
        128,
    )
    .map_err(err)
}

fn check_param_counts(arch: Architecture, entries: &[Value]) -> Check {
    let _guard = tch::no_grad_guard();
    for m in entries {
        let config = model_config(m, arch)?;
        let label = format!("{arch} {} {} {}", config.dataset, config.exits, config.sub_size);
        let (vs, model) =
            ConModel::build(&config, Device::Cpu, selfcon::model::BatchNormKind::Local).map_err(|e| e.to_string())?;
        let s = ModelSummary::of(&vs, &config);
        let ours = [
            ("backbone_params", s.backbone_params),
            ("subnetwork_params", s.subnetwork_params),
            ("head_params", s.head_params),
            ("sub_heads_params", s.sub_heads_params),
            ("total_params", s.total_params),
            ("bn_buffers_total", s.bn_buffers_total),
            ("linear_classifier_params", s.linear_classifier_params),
        ];
        for (key, got) in ours {
            let want = m[key].as_i64().ok_or_else(|| format!("{label}: '{key}' missing"))?;
            if got != want {
                return Err(format!("{label}: {key} {got}, expected {want}").into());
            }
        }
        if let Some(dims) = m.get("encoder_out_dims") {
            let size = config.dataset.image_size();
            let batch = dims["backbone"][0].as_i64().unwrap_or(2);
            let out = model
                .forward_t(&Tensor::zeros([batch, 3, size, size], (Kind::Float, Device::Cpu)), false)
                .map_err(|e| e.to_string())?;
            let shapes = |ts: &[Tensor]| ts.iter().map(Tensor::size).collect::<Vec<_>>();
            let check = |what: &str, got: Value, want: &Value| -> Check {
                if &got == want {
                    Ok(())
                } else {
                    Err(format!("{label}: {what} {got}, expected {want}").into())
                }
            };
            check("encoder sub dims", serde_json::json!(shapes(&out.encoder.exits)), &dims["sub"])?;
            check("encoder backbone dims", serde_json::json!(out.encoder.backbone.size()), &dims["backbone"])?;
            let head = &m["head_out_dims"];
            check("head sub dims", serde_json::json!(shapes(&out.exit_projections)), &head["sub"])?;
            check("head backbone dims", serde_json::json!(out.backbone_projection.size()), &head["backbone"])?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// State-dict keys and shapes of the README model.

fn check_state_dict_file(doc: &Value) -> Check {
    let parse = |v: &Value| -> Result<BTreeMap<String, Vec<i64>>, Failed> {
        let obj = v.as_object().ok_or("expected an object of key → shape")?;
        obj.iter()
            .map(|(k, s)| {
                let shape = s.as_array().ok_or("shape must be a list")?.iter().map(|d| d.as_i64().ok_or("bad dim"));
                Ok((k.clone(), shape.collect::<Result<Vec<_>, _>>()?))
            })
            .collect()
    };
    let build = |size: SubNetworkSize| -> Result<BTreeMap<String, Vec<i64>>, Failed> {
        let mut config = ModelConfig::readme(DatasetKind::Cifar100);
        config.sub_size = size;
        let (vs, _model) =
            ConModel::build(&config, Device::Cpu, selfcon::model::BatchNormKind::Local).map_err(|e| e.to_string())?;
        Ok(state_dict_shapes(&vs))
    };
    compare_keys("fc", &build(SubNetworkSize::Fc)?, &parse(&doc["fc"])?)?;
    let same: BTreeMap<_, _> = build(SubNetworkSize::Same)?
        .into_iter()
        .filter(|(k, _)| k.starts_with("encoder.selfcon_layer.") || k.starts_with("sub_heads."))
        .collect();
    compare_keys("same (sub-network keys)", &same, &parse(&doc["same_subnet_keys"])?)
}

fn compare_keys(what: &str, ours: &BTreeMap<String, Vec<i64>>, theirs: &BTreeMap<String, Vec<i64>>) -> Check {
    let missing: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let shapes: Vec<_> = theirs
        .iter()
        .filter_map(|(k, s)| ours.get(k).filter(|o| *o != s).map(|o| format!("{k} {o:?} vs {s:?}")))
        .collect();
    if missing.is_empty() && extra.is_empty() && shapes.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: missing {missing:?}, unexpected {extra:?}, shape mismatches {shapes:?}").into())
    }
}

// ---------------------------------------------------------------------------------------------
// Learning-rate schedules.

fn check_lr_schedule_file(doc: &Value) -> Check {
    const TOL: f64 = 1e-12;
    let cases = doc["cases"].as_array().ok_or("'cases' must be a list")?;
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let a = &case["args"];
        let batch_size = a["batch_size"].as_i64().unwrap_or(0);
        let warm = match &a["warm"] {
            Value::Bool(b) => *b,
            Value::String(s) if s.starts_with("auto") => batch_size >= 1024,
            other => return Err(format!("{name}: unknown warm value {other}").into()),
        };
        let milestones = match a.get("lr_decay_epochs") {
            Some(v) => v
                .as_array()
                .ok_or("lr_decay_epochs must be a list")?
                .iter()
                .filter_map(Value::as_u64)
                .map(|m| m as usize)
                .collect(),
            None => Vec::new(),
        };
        let schedule = LrSchedule::new(
            num(&a["learning_rate"], "learning_rate")?,
            a["epochs"].as_u64().ok_or("epochs missing")? as usize,
            flag(a, "cosine"),
            num(&a["lr_decay_rate"], "lr_decay_rate")?,
            milestones,
            warm,
        );
        if let Some(to) = a.get("warmup_to").and_then(Value::as_f64) {
            let ours = schedule.warmup.map(|w| w.to).ok_or_else(|| format!("{name}: no warm-up"))?;
            if (ours - to).abs() > TOL {
                return Err(format!("{name}: warm-up target {ours}, expected {to}").into());
            }
        }
        let per_epoch = a["batches_per_epoch"].as_u64().unwrap_or(1) as usize;
        for point in case["trace"].as_array().ok_or("trace must be a list")? {
            let epoch = point["epoch"].as_u64().ok_or("epoch missing")? as usize;
            let batch = point["batch_idx"].as_u64().ok_or("batch_idx missing")? as usize;
            let want = num(&point["lr"], "lr")?;
            let got = schedule.lr(epoch, batch, per_epoch);
            if (got - want).abs() > TOL {
                return Err(format!("{name}: epoch {epoch} batch {batch}: lr {got}, expected {want}").into());
            }
        }
    }
    Ok(())
}
