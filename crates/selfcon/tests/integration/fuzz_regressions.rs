//! Replays every input under tests/data/fuzz/<target>/ through the library calls of that fuzz
//! target (fuzz/fuzz_targets/<target>.rs): each must end in a value or an error, quickly.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use selfcon::checkpoint::ModelCheckpoint;
use selfcon::data::augment::{sample_rng, EvalTransform, TrainTransform};
use selfcon::data::{decode_image_bytes, parse_binary_batch, parse_idx, parse_python_batch, CifarVariant};
use selfcon::model::ExitPositions;
use selfcon::pickle::{parse_as, Dialect, NdArray};
use selfcon::train::{PretrainConfig, Resumed};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no regression inputs in {}", dir.display());
    files
}

/// Runs `f` on every input of `target`, each within a few seconds.
fn replay(target: &str, f: impl Fn(&[u8])) {
    for path in inputs(target) {
        let bytes = std::fs::read(&path).unwrap();
        let started = Instant::now();
        f(&bytes);
        assert!(started.elapsed() < Duration::from_secs(10), "{} took {:?}", path.display(), started.elapsed());
    }
}

#[test]
fn pickle_inputs() {
    replay("pickle", |data| {
        for dialect in [Dialect::NUMPY, Dialect::TORCH] {
            if let Ok(v) = parse_as(data, dialect) {
                let _ = NdArray::from_value(&v).and_then(|a| a.to_i64());
            }
        }
    });
}

#[test]
fn pth_inputs() {
    replay("pth", |data| {
        let _ = ModelCheckpoint::from_bytes(Path::new("fuzz.pth"), data.to_vec());
    });
}

#[test]
fn cifar_inputs() {
    replay("cifar", |data| {
        for variant in [CifarVariant::Cifar10, CifarVariant::Cifar100] {
            let _ = parse_python_batch(Path::new("b"), data, variant);
            let _ = parse_binary_batch(Path::new("b"), data, variant);
        }
    });
}

#[test]
fn idx_inputs() {
    replay("idx", |data| {
        for dims in [1, 3] {
            let _ = parse_idx(data, dims);
        }
    });
}

#[test]
fn checkpoint_inputs() {
    replay("checkpoint", |data| {
        let path = Path::new("fuzz.safetensors");
        let _ = ModelCheckpoint::from_bytes(path, data.to_vec());
        if let Ok(r) = Resumed::from_bytes(path, data, "pretrain") {
            let _ = r.config::<PretrainConfig>();
        }
    });
}

#[test]
fn image_inputs() {
    replay("image", |data| {
        if let Ok(image) = decode_image_bytes(data) {
            let mut rng = sample_rng(0, 1, 2, 0);
            let _ = TrainTransform::pretrain(16, false).with_randaugment().apply(&image, &mut rng);
            let _ = EvalTransform::for_folder(16).apply(&image);
        }
    });
}

#[test]
fn cli_parser_inputs() {
    replay("cli_parsers", |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = text.parse::<ExitPositions>();
            let _ = selfcon::data::parse_triple(text);
        }
    });
}
