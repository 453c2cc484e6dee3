//! CIFAR-10/100 in the layouts torchvision downloads (`cifar-10-batches-py/`, `cifar-100-python/`:
//! pickled dicts with numpy arrays) and the binary layouts (`cifar-10-batches-bin/`,
//! `cifar-100-binary/`). CIFAR-100 uses the fine labels.

use std::path::{Path, PathBuf};

use super::images::{chw_to_hwc, InMemoryImages};
use crate::error::{Error, Result};
use crate::pickle::{self, NdArray};

const SIDE: usize = 32;
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarVariant {
    Cifar10,
    Cifar100,
}

impl CifarVariant {
    pub fn num_classes(self) -> i64 {
        match self {
            CifarVariant::Cifar10 => 10,
            CifarVariant::Cifar100 => 100,
        }
    }

    fn python_dir(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "cifar-10-batches-py",
            CifarVariant::Cifar100 => "cifar-100-python",
        }
    }

    fn binary_dir(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "cifar-10-batches-bin",
            CifarVariant::Cifar100 => "cifar-100-binary",
        }
    }

    fn python_files(self, train: bool) -> Vec<String> {
        match (self, train) {
            (CifarVariant::Cifar10, true) => (1..=5).map(|i| format!("data_batch_{i}")).collect(),
            (CifarVariant::Cifar10, false) => vec!["test_batch".into()],
            (CifarVariant::Cifar100, true) => vec!["train".into()],
            (CifarVariant::Cifar100, false) => vec!["test".into()],
        }
    }

    fn binary_files(self, train: bool) -> Vec<String> {
        match (self, train) {
            (CifarVariant::Cifar10, true) => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            (CifarVariant::Cifar10, false) => vec!["test_batch.bin".into()],
            (CifarVariant::Cifar100, true) => vec!["train.bin".into()],
            (CifarVariant::Cifar100, false) => vec!["test.bin".into()],
        }
    }
}

/// Loads the train or test split from `root` (the `--data_folder`), whichever layout is there.
pub fn load_cifar(root: &Path, variant: CifarVariant, train: bool) -> Result<InMemoryImages> {
    let python = root.join(variant.python_dir());
    let binary = root.join(variant.binary_dir());
    let (dir, files, reader): (PathBuf, Vec<String>, fn(&Path, CifarVariant) -> Result<InMemoryImages>) =
        if python.is_dir() {
            (python, variant.python_files(train), read_python_batch)
        } else if binary.is_dir() {
            (binary, variant.binary_files(train), read_binary_batch)
        } else {
            return Err(Error::file(
                root,
                format!(
                    "no CIFAR data: expected {}/ or {}/ here (use --download to fetch it)",
                    variant.python_dir(),
                    variant.binary_dir()
                ),
            ));
        };
    let mut out: Option<InMemoryImages> = None;
    for name in files {
        let batch = reader(&dir.join(name), variant)?;
        match out.as_mut() {
            Some(all) => all.extend(batch),
            None => out = Some(batch),
        }
    }
    Ok(out.expect("every split has at least one file"))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::file(path, "missing"),
        _ => Error::Io { path: path.to_path_buf(), source: e },
    })
}

/// The first few keys of a pickled dict, for an error message.
fn some_keys(root: &pickle::Value) -> String {
    let (shown, all) = root.some_keys(8);
    if all > shown.len() {
        format!("{}, … {all} in all", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn check_labels(path: &Path, labels: &[i64], variant: CifarVariant) -> Result<()> {
    let n = variant.num_classes();
    match labels.iter().position(|l| !(0..n).contains(l)) {
        Some(i) => Err(Error::file(path, format!("label {} of image {i} is outside 0..{n}", labels[i]))),
        None => Ok(()),
    }
}

/// One pickled batch: `{data: uint8 [N, 3072], labels | fine_labels: list or array}`.
fn read_python_batch(path: &Path, variant: CifarVariant) -> Result<InMemoryImages> {
    parse_python_batch(path, &read(path)?, variant)
}

/// A pickled batch held in memory (`path` names it in errors).
pub fn parse_python_batch(path: &Path, bytes: &[u8], variant: CifarVariant) -> Result<InMemoryImages> {
    let bad = |why: String| Error::file(path, why);
    if bytes.first() != Some(&0x80) {
        return Err(bad("not a Python pickle (protocol 2 or later expected)".into()));
    }
    let root = pickle::parse(bytes).map_err(bad)?;
    let data = root.get("data").ok_or_else(|| bad(format!("no 'data' entry (keys: {})", some_keys(&root))))?;
    let array = NdArray::from_value(data).map_err(|e| bad(format!("'data': {e}")))?;
    let pixels = array.to_u8().map_err(|e| bad(format!("'data': {e}")))?;
    if array.shape.len() != 2 || array.shape[1] != IMAGE_BYTES {
        return Err(bad(format!("'data' has shape {:?}, expected [N, {IMAGE_BYTES}]", array.shape)));
    }
    let key = match variant {
        CifarVariant::Cifar10 => "labels",
        CifarVariant::Cifar100 => "fine_labels",
    };
    let raw = root.get(key).ok_or_else(|| bad(format!("no '{key}' entry (keys: {})", some_keys(&root))))?;
    let labels: Vec<i64> = match raw.as_seq() {
        Some(items) => items
            .iter()
            .map(|v| v.as_int().ok_or_else(|| bad(format!("'{key}' holds a non-integer"))))
            .collect::<Result<_>>()?,
        None => NdArray::from_value(raw).and_then(|a| a.to_i64()).map_err(|e| bad(format!("'{key}': {e}")))?,
    };
    if labels.len() != array.shape[0] {
        return Err(bad(format!("{} labels for {} images", labels.len(), array.shape[0])));
    }
    check_labels(path, &labels, variant)?;
    let hwc = pixels.chunks_exact(IMAGE_BYTES).flat_map(|chw| chw_to_hwc(chw, 3, SIDE, SIDE)).collect();
    Ok(InMemoryImages { pixels: hwc, height: SIDE, width: SIDE, channels: 3, labels })
}

/// One binary batch: records of label byte(s) + 3072 CHW bytes (CIFAR-100: coarse, fine).
fn read_binary_batch(path: &Path, variant: CifarVariant) -> Result<InMemoryImages> {
    parse_binary_batch(path, &read(path)?, variant)
}

/// A binary batch held in memory (`path` names it in errors).
pub fn parse_binary_batch(path: &Path, bytes: &[u8], variant: CifarVariant) -> Result<InMemoryImages> {
    let label_bytes = match variant {
        CifarVariant::Cifar10 => 1,
        CifarVariant::Cifar100 => 2,
    };
    let record = label_bytes + IMAGE_BYTES;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(Error::file(
            path,
            format!(
                "size {} is not a multiple of the {record}-byte CIFAR record (truncated or wrong file)",
                bytes.len()
            ),
        ));
    }
    let mut pixels = Vec::with_capacity(bytes.len() / record * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(bytes.len() / record);
    for r in bytes.chunks_exact(record) {
        labels.push(r[label_bytes - 1] as i64);
        pixels.extend(chw_to_hwc(&r[label_bytes..], 3, SIDE, SIDE));
    }
    check_labels(path, &labels, variant)?;
    Ok(InMemoryImages { pixels, height: SIDE, width: SIDE, channels: 3, labels })
}
