use crate::model::Stem;
use strum::{Display, EnumIter, EnumMessage, IntoStaticStr};

/// The datasets of the official scripts (`--dataset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Display, IntoStaticStr, EnumIter, EnumMessage)]
#[strum(serialize_all = "lowercase")]
pub enum DatasetKind {
    Cifar10,
    Cifar100,
    TinyImageNet,
    ImageNet,
    ImageNet100,
    Mnist,
    FashionMnist,
}

impl DatasetKind {
    /// For `--dataset folder`: the official dataset whose model fits images of side `size` — the
    /// CIFAR stem up to 64 px (as for Tiny-ImageNet), the ImageNet stem (7×7, max-pool) above.
    pub fn for_folder(size: usize) -> DatasetKind {
        if size <= 64 {
            DatasetKind::TinyImageNet
        } else {
            DatasetKind::ImageNet
        }
    }

    pub fn num_classes(self) -> i64 {
        match self {
            DatasetKind::Cifar10 | DatasetKind::Mnist | DatasetKind::FashionMnist => 10,
            DatasetKind::Cifar100 => 100,
            DatasetKind::TinyImageNet => 200,
            DatasetKind::ImageNet => 1000,
            DatasetKind::ImageNet100 => 100,
        }
    }

    /// Side of the square training crop.
    pub fn image_size(self) -> i64 {
        match self {
            // MNIST-style 28×28 images are padded to 32×32 so the CIFAR recipes apply unchanged.
            DatasetKind::Cifar10 | DatasetKind::Cifar100 | DatasetKind::Mnist | DatasetKind::FashionMnist => 32,
            DatasetKind::TinyImageNet => 64,
            DatasetKind::ImageNet | DatasetKind::ImageNet100 => 224,
        }
    }

    /// Per-channel normalisation of the official scripts; `None` for the MNIST family, whose
    /// statistics are measured on the (padded) training set.
    pub fn normalization(self) -> Option<([f32; 3], [f32; 3])> {
        const IMAGENET: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        match self {
            DatasetKind::Cifar10 => Some(([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])),
            DatasetKind::Cifar100 => Some(([0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761])),
            DatasetKind::TinyImageNet | DatasetKind::ImageNet | DatasetKind::ImageNet100 => Some(IMAGENET),
            DatasetKind::Mnist | DatasetKind::FashionMnist => None,
        }
    }

    /// Official rule: only imagenet/imagenet100 get the 7×7 stride-2 stem with max-pool
    /// (Tiny-ImageNet at 64×64 keeps the CIFAR stem).
    pub fn stem(self) -> Stem {
        match self {
            DatasetKind::ImageNet | DatasetKind::ImageNet100 => Stem::ImageNet,
            _ => Stem::Cifar,
        }
    }
}

crate::named_enum!(DatasetKind, "dataset", "dataset");
