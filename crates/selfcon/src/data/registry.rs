//! Opening a dataset by name: finds the files under `--data_folder` (or the bundled / system
//! Fashion-MNIST when none is given) and returns the split with its normalisation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cifar::{load_cifar, CifarVariant};
use super::dataset::{Dataset, MemoryDataset};
use super::dataset_kind::DatasetKind;
use super::mnist::{find_idx_folder, load_mnist, SYSTEM_FASHION_MNIST};
use crate::error::{Error, Result};

/// The bundled Fashion-MNIST demo subset, relative to the repository root.
pub const BUNDLED_FASHION_MNIST: &str = "data/fashion-mnist-demo";

/// A dataset split ready for the loader.
pub struct OpenedDataset {
    pub train: Arc<dyn Dataset>,
    pub test: Arc<dyn Dataset>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Where the data was read from.
    pub source: PathBuf,
}

/// Where the bundled demo data lives: next to the sources (a checkout) or in the working folder.
pub fn bundled_fashion_mnist() -> Option<PathBuf> {
    let candidates = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(BUNDLED_FASHION_MNIST),
        PathBuf::from(BUNDLED_FASHION_MNIST),
    ];
    candidates.into_iter().find(|p| p.join("train-images-idx3-ubyte.gz").is_file())
}

/// Opens `kind` under `folder`. `folder = None` means no data was given: Fashion-MNIST then comes
/// from the system package when installed, else from the bundled subset.
pub fn open_dataset(kind: DatasetKind, folder: Option<&Path>) -> Result<OpenedDataset> {
    let (train, test, source) = match kind {
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
            let root = folder.unwrap_or(Path::new("datasets"));
            let variant = if kind == DatasetKind::Cifar10 { CifarVariant::Cifar10 } else { CifarVariant::Cifar100 };
            let n = variant.num_classes();
            let train = MemoryDataset { images: load_cifar(root, variant, true)?, num_classes: n };
            let test = MemoryDataset { images: load_cifar(root, variant, false)?, num_classes: n };
            (train, test, root.to_path_buf())
        }
        DatasetKind::Mnist | DatasetKind::FashionMnist => {
            let torchvision_name = if kind == DatasetKind::Mnist { "MNIST" } else { "FashionMNIST" };
            let dir = match folder {
                Some(root) => find_idx_folder(root, torchvision_name).ok_or_else(|| {
                    Error::file(root, format!("no {kind} IDX files (train-images-idx3-ubyte[.gz], ...) here or in {torchvision_name}/raw/"))
                })?,
                None if kind == DatasetKind::FashionMnist => find_idx_folder(Path::new(SYSTEM_FASHION_MNIST), torchvision_name)
                    .or_else(bundled_fashion_mnist)
                    .ok_or_else(|| Error::option("data_folder", "no Fashion-MNIST found: give --data_folder"))?,
                None => return Err(Error::option("data_folder", "mnist needs --data_folder (the folder with its IDX files)")),
            };
            let train = MemoryDataset { images: load_mnist(&dir, true)?, num_classes: 10 };
            let test = MemoryDataset { images: load_mnist(&dir, false)?, num_classes: 10 };
            (train, test, dir)
        }
        other => return Err(Error::NotImplemented(format!("--dataset {other} (image-folder datasets)"))),
    };
    let (mean, std) = match kind.normalization() {
        Some(stats) => stats,
        None => {
            let (m, s) = train.images.channel_stats();
            ([m[0] as f32, m[1] as f32, m[2] as f32], [s[0] as f32, s[1] as f32, s[2] as f32])
        }
    };
    Ok(OpenedDataset { train: Arc::new(train), test: Arc::new(test), mean, std, source })
}
