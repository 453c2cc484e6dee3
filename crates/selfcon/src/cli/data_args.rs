//! The data flags shared by the commands that read images (`--dataset`, `--data_folder`, and
//! SupContrast's `--mean/--std/--size` for `--dataset folder`).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use selfcon::data::augment::EvalTransform;
use selfcon::data::{ensure_downloaded, open_dataset, open_image_folder, ArchiveSource, DatasetKind, OpenedDataset};
use selfcon::Error;

/// Where the images come from; `--dataset` itself is declared by each command (its default
/// differs between commands, as in the official scripts).
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Dataset root (official default `datasets/`). Without it, Fashion-MNIST comes from
    /// /usr/share/datasets/fashion-mnist when installed, else from the bundled demo subset.
    #[arg(long = "data_folder", visible_alias = "data-folder", value_name = "DIR")]
    pub data_folder: Option<PathBuf>,

    /// Per-channel mean for --dataset folder, e.g. "(0.485, 0.456, 0.406)".
    #[arg(long, value_name = "TRIPLE")]
    pub mean: Option<String>,

    /// Per-channel std for --dataset folder, e.g. "(0.229, 0.224, 0.225)".
    #[arg(long, value_name = "TRIPLE")]
    pub std: Option<String>,

    /// Training crop size for --dataset folder.
    #[arg(long, value_name = "PIXELS")]
    pub size: Option<usize>,

    /// Download CIFAR-10/100 into --data_folder when absent (official archive, MD5-checked).
    #[arg(long)]
    pub download: bool,
}

/// How training images are decoded (the commands that train or time training input).
#[derive(Args, Debug, Clone)]
pub struct DecodeArgs {
    /// Decode every JPEG whole. By default a JPEG whose training crop is at least four times the
    /// training size on both sides is decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain
    /// (libjpeg's scaled decoding), keeping the crop at least twice the output: faster, and not
    /// pixel-identical to torchvision.
    #[arg(long = "full_decode", visible_alias = "full-decode")]
    pub full_decode: bool,
}

impl DataArgs {
    /// The training crop size of `dataset` (`--size` for a folder), known before any file is read.
    pub fn image_size(&self, dataset: &str) -> selfcon::Result<usize> {
        if dataset == "folder" {
            return match self.size {
                None => Err(Error::option("size", "--dataset folder needs --size")),
                Some(0) => Err(Error::option("size", "must be positive")),
                Some(size) => Ok(size),
            };
        }
        Ok(dataset.parse::<DatasetKind>()?.image_size() as usize)
    }

    /// The test-time transform: the official one of a dataset; for a folder, resize to
    /// `--size`/0.875 and centre-crop `--size`.
    pub fn eval_transform(&self, dataset: &str) -> selfcon::Result<EvalTransform> {
        if dataset == "folder" {
            return Ok(EvalTransform::for_folder(self.image_size(dataset)?));
        }
        Ok(EvalTransform::for_dataset(dataset.parse()?))
    }

    /// Opens `dataset` (cifar10, cifar100, tinyimagenet, imagenet, imagenet100, mnist,
    /// fashionmnist or folder); returns it with the training crop size.
    pub fn open(&self, dataset: &str) -> selfcon::Result<(OpenedDataset, usize)> {
        if let Some(pack) = self.data_folder.as_deref().filter(|p| selfcon::data::packed::is_pack(p)) {
            return self.open_pack(dataset, pack);
        }
        if dataset == "folder" {
            let root = self
                .data_folder
                .as_deref()
                .ok_or_else(|| Error::option("data_folder", "--dataset folder needs --data_folder"))?;
            let mean = triple("mean", self.mean.as_deref())?;
            let std = triple("std", self.std.as_deref())?;
            if std.iter().any(|s| *s <= 0.0) {
                return Err(Error::option("std", "every entry must be positive"));
            }
            let size = self.image_size(dataset)?;
            return Ok((open_image_folder(root, mean, std)?, size));
        }
        refuse_given(
            [("mean", self.mean.is_some()), ("std", self.std.is_some()), ("size", self.size.is_some())],
            &format!("only used with --dataset folder ({dataset} has fixed values)"),
        )?;
        let kind: DatasetKind = dataset.parse()?;
        if self.download {
            let source = match kind {
                DatasetKind::Cifar10 => ArchiveSource::cifar10(),
                DatasetKind::Cifar100 => ArchiveSource::cifar100(),
                other => {
                    return Err(Error::option(
                        "download",
                        format!("only cifar10 and cifar100 can be downloaded, not {other}"),
                    ))
                }
            };
            let root = self.data_folder.clone().unwrap_or_else(|| PathBuf::from("datasets"));
            ensure_downloaded(&root, &source, std::io::stderr().is_terminal())?;
        }
        Ok((open_dataset(kind, self.data_folder.as_deref())?, kind.image_size() as usize))
    }
}

impl DataArgs {
    /// `--data_folder FILE` naming a packed file (`selfcon prepare`): read with the dataset's
    /// name it was packed from, its statistics from the pack.
    fn open_pack(&self, dataset: &str, path: &std::path::Path) -> selfcon::Result<(OpenedDataset, usize)> {
        refuse_given(
            [("mean", self.mean.is_some()), ("std", self.std.is_some()), ("download", self.download)],
            "not used with a packed file (it holds its images and statistics)",
        )?;
        let pack = selfcon::data::packed::Pack::open(path)?;
        if pack.info.dataset != dataset {
            return Err(Error::file(
                path,
                format!("was packed from --dataset {}: read it with that (not {dataset})", pack.info.dataset),
            ));
        }
        let size = self.image_size(dataset)?;
        let (train, test) = pack.splits();
        let opened = OpenedDataset {
            train: std::sync::Arc::new(train),
            test: test.map(|t| std::sync::Arc::new(t) as std::sync::Arc<dyn selfcon::data::Dataset>),
            mean: pack.info.mean,
            std: pack.info.std,
            source: path.to_path_buf(),
        };
        Ok((opened, size))
    }
}

/// The first flag of `flags` that was given, refused with `why`.
fn refuse_given<const N: usize>(flags: [(&str, bool); N], why: &str) -> selfcon::Result<()> {
    match flags.iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(Error::option(*flag, why)),
        None => Ok(()),
    }
}

/// `--mean` / `--std`: three numbers.
fn triple(flag: &str, text: Option<&str>) -> selfcon::Result<[f32; 3]> {
    let text = text.ok_or_else(|| Error::option(flag, "--dataset folder needs it (three numbers)"))?;
    selfcon::data::parse_triple(text).map_err(|why| Error::option(flag, why))
}
