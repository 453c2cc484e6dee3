//! Fixtures written by PyTorch's own `torch.save` (scripts/make_official_checkpoints.py) and the
//! values PyTorch computed from them (expected.json).
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tch::{nn::VarStore, Device, Kind, Tensor};

use selfcon::checkpoint::OfficialCheckpoint;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/official")
}

/// Unpacks fixture `name` (gzipped twice) into `dir`.
pub fn fixture(dir: &Path, name: &str) -> PathBuf {
    let packed = std::fs::read(fixtures().join(format!("{name}.gz.gz"))).unwrap();
    let mut once = Vec::new();
    flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut once).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&once[..]).read_to_end(&mut raw).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, raw).unwrap();
    path
}

pub fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap()
}

/// The script's `pattern(n, j, period)`.
pub fn pattern(n: i64, j: i64, period: i64) -> Tensor {
    let i = Tensor::arange(n, (Kind::Int64, Device::Cpu));
    ((i * 37 + j * 11).remainder(period) - period / 2).to_kind(Kind::Float) / (period / 2) as f64
}

/// The script's fixed inputs.
pub fn inputs() -> Tensor {
    pattern(4 * 3 * 32 * 32, 7, 31).view([4, 3, 32, 32])
}

pub fn matrix(v: &Value) -> Tensor {
    let rows: Vec<Tensor> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            Tensor::from_slice(&r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>())
        })
        .collect();
    Tensor::stack(&rows, 0)
}

pub fn assert_close_to(got: &Tensor, want: &Value, relative: f64, what: &str) {
    let want = matrix(want);
    let diff = (got - &want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]);
    assert!(diff <= relative * scale.max(1.0), "{what}: max |ours − PyTorch| = {diff} (scale {scale})");
}

/// Loads the official checkpoint's weights and momentum into `vs` / our SGD, takes one step with
/// the script's gradient (0.001 · pattern(numel, 900 + parameter index), trainable parameters
/// only) and checks every parameter against `want` (PyTorch's torch.optim.SGD step: lr 0.05,
/// momentum 0.9, weight decay 1e-4).
pub fn assert_official_sgd_step(official: &OfficialCheckpoint, vs: &VarStore, want: &Value) {
    let weights = official.weights.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    selfcon::checkpoint::load_into_var_store(Path::new("fixture"), vs, &weights).unwrap();
    let mut sgd = selfcon::train::Sgd::new(vs, 0.9, 1e-4);
    sgd.load_state(official.momentum.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect()).unwrap();
    let vars = vs.variables();
    let names: Vec<&String> =
        official.weights.iter().map(|(k, _)| k).filter(|k| !selfcon::checkpoint::official::is_buffer(k)).collect();
    let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
    for (j, name) in names.iter().enumerate() {
        let p = &vars[*name];
        if p.requires_grad() {
            let g = pattern(p.numel() as i64, 900 + j as i64, 29).view(p.size().as_slice()) * 0.001;
            loss += (p * g).sum(Kind::Float);
        }
    }
    loss.backward();
    sgd.step(0.05).unwrap();
    for name in names {
        let p = &vars[name];
        let first = p.flatten(0, -1).double_value(&[0]);
        let want_first = want["param_first"][name.as_str()].as_f64().unwrap();
        assert!((first - want_first).abs() <= 1e-6 * want_first.abs().max(1.0), "{name}: {first} vs {want_first}");
        let sum = p.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
        let want_sum = want["param_sums"][name.as_str()].as_f64().unwrap();
        assert!((sum - want_sum).abs() <= 1e-4 * want_sum.abs().max(1.0), "{name}: sum {sum} vs {want_sum}");
    }
}

/// An official checkpoint unpacked into `dir` with tiny Fashion-MNIST data and a save folder, for
/// the `--resume` tests: (checkpoint, data folder, save folder).
pub fn resume_fixture(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ckpt = fixture(dir, name);
    let data = dir.join("fmnist");
    std::fs::create_dir_all(&data).unwrap();
    super::tiny_fashion_mnist(&data, 24, 12);
    (ckpt, data, dir.join("save"))
}

/// The epochs a run folder's metrics.jsonl logged.
pub fn logged_epochs(run_dir: &Path) -> Vec<i64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "epoch")
        .map(|r| r["epoch"].as_i64().unwrap())
        .collect()
}
