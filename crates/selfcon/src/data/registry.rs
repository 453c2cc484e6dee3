//! Opening a dataset by name: finds the files under `--data_folder` (or the bundled / system
//! Fashion-MNIST when none is given) and returns the split with its normalisation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cifar::{load_cifar, CifarVariant};
use super::dataset::{Dataset, MemoryDataset};
use super::dataset_kind::DatasetKind;
use super::folder::{image_folder, imagenet, imagenet100, tiny_imagenet, FileDataset};
use super::mnist::{find_idx_folder, load_mnist, SYSTEM_FASHION_MNIST};
use crate::error::{Error, Result};

/// The bundled Fashion-MNIST demo subset, relative to the repository root.
pub const BUNDLED_FASHION_MNIST: &str = "data/fashion-mnist-demo";

/// A dataset split ready for the loader.
pub struct OpenedDataset {
    pub train: Arc<dyn Dataset>,
    /// `None` for an image folder without a `val/` split.
    pub test: Option<Arc<dyn Dataset>>,
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
    let default_root = Path::new("datasets");
    let (train, test, source) = match kind {
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
            let root = folder.unwrap_or(default_root);
            let variant = if kind == DatasetKind::Cifar10 { CifarVariant::Cifar10 } else { CifarVariant::Cifar100 };
            let n = variant.num_classes();
            let train = MemoryDataset { images: load_cifar(root, variant, true)?, num_classes: n };
            let test = MemoryDataset { images: load_cifar(root, variant, false)?, num_classes: n };
            return Ok(in_memory(kind, train, test, root.to_path_buf()));
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
            return Ok(in_memory(kind, train, test, dir));
        }
        DatasetKind::TinyImageNet => {
            let root = folder.unwrap_or(default_root);
            (tiny_imagenet(root, true)?, tiny_imagenet(root, false)?, root)
        }
        DatasetKind::ImageNet => return open_imagenet(folder.unwrap_or(default_root)),
        DatasetKind::ImageNet100 => {
            let root = folder.unwrap_or(default_root);
            (imagenet100(root, true)?, imagenet100(root, false)?, root)
        }
    };
    let expected = kind.num_classes();
    if train.classes.len() as i64 != expected && kind != DatasetKind::ImageNet100 {
        return Err(Error::file(source, format!("{} classes found, {kind} has {expected}", train.classes.len())));
    }
    let (mean, std) = kind.normalization().expect("image-folder datasets use fixed statistics");
    Ok(OpenedDataset { train: Arc::new(train), test: Some(Arc::new(test)), mean, std, source: source.to_path_buf() })
}

/// ImageNet as the official code reads it: `ImageFolder(root/train)` and `ImageFolder(root/val)`.
/// As there, a tree without `val/` (pre-training reads only `train/`) and one with fewer classes
/// than 1,000 (a subset for a quick try) are accepted, each with a note; `val/`, when there, must
/// have `train/`'s classes. Classifiers (linear, ce) take the classes found.
fn open_imagenet(root: &Path) -> Result<OpenedDataset> {
    let kind = DatasetKind::ImageNet;
    let note = |text: String| {
        if crate::distributed::is_primary() {
            eprintln!("selfcon: note: {}: {text}", root.display());
        }
    };
    let train = imagenet(root, true)?;
    let test = if root.join("val").is_dir() {
        Some(imagenet(root, false)?)
    } else {
        note("no val/: no test split (pre-training reads train/ only; linear and ce need val/)".into());
        None
    };
    let expected = kind.num_classes();
    if train.classes.len() as i64 != expected {
        note(format!("{} classes in train/ (ImageNet has {expected}): read as a subset", train.classes.len()));
    }
    opened_folders(root, train, test, kind.normalization().expect("ImageNet uses fixed statistics"))
}

/// `root`'s training split and, when there is one, its test split (`val/`, which must have the
/// training split's classes) with their normalisation.
fn opened_folders(
    root: &Path,
    train: FileDataset,
    test: Option<FileDataset>,
    (mean, std): ([f32; 3], [f32; 3]),
) -> Result<OpenedDataset> {
    if test.as_ref().is_some_and(|t| t.classes != train.classes) {
        return Err(Error::file(root.join("val"), "class folders differ from train/"));
    }
    Ok(OpenedDataset {
        train: Arc::new(train),
        test: test.map(|t| Arc::new(t) as Arc<dyn Dataset>),
        mean,
        std,
        source: root.to_path_buf(),
    })
}

fn in_memory(kind: DatasetKind, train: MemoryDataset, test: MemoryDataset, source: PathBuf) -> OpenedDataset {
    let (mean, std) = kind.normalization().unwrap_or_else(|| {
        let (m, s) = train.images.channel_stats();
        ([m[0] as f32, m[1] as f32, m[2] as f32], [s[0] as f32, s[1] as f32, s[2] as f32])
    });
    OpenedDataset { train: Arc::new(train), test: Some(Arc::new(test)), mean, std, source }
}

/// Any class-per-folder tree (`--dataset folder`): `root/train` and `root/val` when both exist,
/// else `root` itself as the training set; statistics come from `--mean/--std`.
pub fn open_image_folder(root: &Path, mean: [f32; 3], std: [f32; 3]) -> Result<OpenedDataset> {
    let (train, test) = if root.join("train").is_dir() && root.join("val").is_dir() {
        (image_folder(&root.join("train"))?, Some(image_folder(&root.join("val"))?))
    } else {
        (image_folder(root)?, None)
    };
    opened_folders(root, train, test, (mean, std))
}
