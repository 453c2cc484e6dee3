//! The model flags shared by every command, with the official names and defaults of
//! `main_represent.py`. Commands that read a pre-trained encoder (`linear`, `features`, `export`)
//! take the model from the checkpoint instead; a flag given there must agree with it.

use clap::Args;
use selfcon::checkpoint::ModelCheckpoint;
use selfcon::data::DatasetKind;
use selfcon::model::{Architecture, ExitPositions, Family, ModelConfig, Stem, SubNetworkArch, SubNetworkSize};
use selfcon::Error;

const DEFAULT_MODEL: &str = "resnet50";
const DEFAULT_POS: &str = "[False,False,False]";
const DEFAULT_ARCH: &str = "resnet";
const DEFAULT_SIZE: &str = "same";
const DEFAULT_FEAT_DIM: i64 = 128;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Encoder: resnet18, resnet34, resnet50, resnet101, vgg13, vgg13_bn, vgg16, vgg16_bn,
    /// wrn_16_8 or efficientnet [default: resnet50; with --ckpt: the checkpoint's].
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,

    /// Where sub-networks (exits) are attached, as the official Python list: one boolean per
    /// candidate — ResNets after layer1, layer2, layer3; VGG after block1..block4 (4 entries);
    /// WRN after layer1, layer2 (2); EfficientNet reads only the first (after stage 4). The paper
    /// uses "[False,True,False]". VGG and WRN turn the default into as many Falses as they need
    /// [default: [False,False,False]; with --ckpt: the checkpoint's].
    #[arg(long = "selfcon_pos", visible_alias = "selfcon-pos", value_name = "LIST")]
    pub selfcon_pos: Option<String>,

    /// Family of the sub-network blocks: resnet, vgg, wrn or efficientnet. ResNets take only
    /// resnet; VGG, WRN and EfficientNet use their own family whatever is given (as the official
    /// code) [default: resnet; with --ckpt: the checkpoint's].
    #[arg(long = "selfcon_arch", visible_alias = "selfcon-arch", value_name = "ARCH")]
    pub selfcon_arch: Option<String>,

    /// Size of each sub-network: fc (pool + one Linear), small (remaining stages with half the
    /// blocks; VGG: one conv per block), same (remaining stages as the backbone; VGG: 3 convs per
    /// block for vgg16, 2 for vgg13) or large (twice the blocks; ResNet and WRN only, not offered
    /// by the official CLI). EfficientNet ignores it [default: same; with --ckpt: the checkpoint's].
    #[arg(long = "selfcon_size", visible_alias = "selfcon-size", value_name = "SIZE")]
    pub selfcon_size: Option<String>,

    /// Width of the projections the contrastive loss sees. The official code parses this flag but
    /// always uses 128; here it is honoured (the default keeps the official behaviour)
    /// [default: 128; with --ckpt: the checkpoint's].
    #[arg(long = "feat_dim", visible_alias = "feat-dim", value_name = "N")]
    pub feat_dim: Option<i64>,
}

impl ModelArgs {
    /// The model for `dataset`, which sets the classes and the stem (CIFAR stem for cifar10,
    /// cifar100, tinyimagenet, mnist, fashionmnist; 7×7 stem with max-pool for imagenet, imagenet100;
    /// for `folder` chosen by the training size `image_size`, see [`DatasetKind::for_folder`]).
    pub fn to_config(&self, dataset: &str, image_size: usize) -> selfcon::Result<ModelConfig> {
        ModelConfig::new(
            self.model.as_deref().unwrap_or(DEFAULT_MODEL).parse::<Architecture>()?,
            dataset_kind(dataset, image_size)?,
            self.selfcon_pos.as_deref().unwrap_or(DEFAULT_POS).parse::<ExitPositions>()?,
            self.selfcon_arch.as_deref().unwrap_or(DEFAULT_ARCH).parse::<SubNetworkArch>()?,
            self.selfcon_size.as_deref().unwrap_or(DEFAULT_SIZE).parse::<SubNetworkSize>()?,
            self.feat_dim.unwrap_or(DEFAULT_FEAT_DIM),
        )
    }

    /// The model of a pre-trained encoder evaluated on `dataset`: the checkpoint's own when it
    /// records one (ours, or the official `opt`), every given flag checked against it; the flags
    /// (with their defaults) for a bare state dict.
    pub fn for_checkpoint(
        &self,
        ckpt: &ModelCheckpoint,
        dataset: &str,
        image_size: usize,
    ) -> selfcon::Result<ModelConfig> {
        let Some(saved) = &ckpt.model else { return self.to_config(dataset, image_size) };
        let kind = dataset_kind(dataset, image_size)?;
        let given = ModelConfig::new(
            self.model.as_deref().map_or(Ok(saved.architecture), str::parse)?,
            saved.dataset,
            self.selfcon_pos.as_deref().map_or_else(|| Ok(saved.exits.clone()), str::parse)?,
            self.selfcon_arch.as_deref().map_or(Ok(saved.sub_arch), str::parse)?,
            self.selfcon_size.as_deref().map_or(Ok(saved.sub_size), str::parse)?,
            self.feat_dim.unwrap_or(saved.feat_dim),
        )?;
        let contradiction = |flag: &str, ours: String, theirs: String| {
            Error::option(
                flag,
                format!("{ours} contradicts the checkpoint's {theirs} ({}); leave the flag out", ckpt.path.display()),
            )
        };
        if given.architecture != saved.architecture {
            return Err(contradiction("model", given.architecture.to_string(), saved.architecture.to_string()));
        }
        if given.exits != saved.exits {
            return Err(contradiction("selfcon_pos", given.exits.to_string(), saved.exits.to_string()));
        }
        if given.sub_arch != saved.sub_arch {
            return Err(contradiction("selfcon_arch", given.sub_arch.to_string(), saved.sub_arch.to_string()));
        }
        if given.sub_size != saved.sub_size {
            return Err(contradiction("selfcon_size", given.sub_size.to_string(), saved.sub_size.to_string()));
        }
        if given.feat_dim != saved.feat_dim {
            return Err(contradiction("feat_dim", given.feat_dim.to_string(), saved.feat_dim.to_string()));
        }
        // The encoder is the checkpoint's; the dataset only decides the classes and must keep its stem.
        if saved.architecture.family() == Family::ResNet && kind.stem() != saved.dataset.stem() {
            return Err(Error::option(
                "dataset",
                format!(
                    "{kind} uses the {} stem, but {} was pre-trained on {} with the {} stem",
                    stem_name(kind.stem()),
                    ckpt.path.display(),
                    saved.dataset,
                    stem_name(saved.dataset.stem())
                ),
            ));
        }
        ModelConfig::new(given.architecture, kind, given.exits, given.sub_arch, given.sub_size, given.feat_dim)
    }
}

fn dataset_kind(dataset: &str, image_size: usize) -> selfcon::Result<DatasetKind> {
    if dataset == "folder" {
        Ok(DatasetKind::for_folder(image_size))
    } else {
        dataset.parse()
    }
}

fn stem_name(stem: Stem) -> &'static str {
    match stem {
        Stem::Cifar => "CIFAR (3×3 conv)",
        Stem::ImageNet => "ImageNet (7×7 conv + max-pool)",
    }
}
