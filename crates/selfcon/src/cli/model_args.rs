//! The model flags shared by every command, with the official names and defaults of
//! `main_represent.py`.

use clap::Args;
use selfcon::data::DatasetKind;
use selfcon::model::{Architecture, ExitPositions, ModelConfig, SubNetworkArch, SubNetworkSize};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Encoder: resnet18, resnet34, resnet50, resnet101, vgg13, vgg13_bn, vgg16, vgg16_bn,
    /// wrn_16_8 or efficientnet.
    #[arg(long, default_value = "resnet50")]
    pub model: String,

    /// Where sub-networks (exits) are attached, as the official Python list: one boolean per
    /// candidate — ResNets after layer1, layer2, layer3; VGG after block1..block4 (4 entries);
    /// WRN after layer1, layer2 (2); EfficientNet reads only the first (after stage 4). The paper
    /// uses "[False,True,False]". VGG and WRN turn the default into as many Falses as they need.
    #[arg(
        long = "selfcon_pos",
        visible_alias = "selfcon-pos",
        default_value = "[False,False,False]",
        value_name = "LIST"
    )]
    pub selfcon_pos: String,

    /// Family of the sub-network blocks: resnet, vgg, wrn or efficientnet. ResNets take only
    /// resnet; VGG, WRN and EfficientNet use their own family whatever is given (as the official code).
    #[arg(long = "selfcon_arch", visible_alias = "selfcon-arch", default_value = "resnet", value_name = "ARCH")]
    pub selfcon_arch: String,

    /// Size of each sub-network: fc (pool + one Linear), small (remaining stages with half the
    /// blocks; VGG: one conv per block), same (remaining stages as the backbone; VGG: 3 convs per
    /// block for vgg16, 2 for vgg13) or large (twice the blocks; ResNet and WRN only, not offered
    /// by the official CLI). EfficientNet ignores it.
    #[arg(long = "selfcon_size", visible_alias = "selfcon-size", default_value = "same", value_name = "SIZE")]
    pub selfcon_size: String,

    /// Width of the projections the contrastive loss sees. The official code parses this flag but
    /// always uses 128; here it is honoured (the default keeps the official behaviour).
    #[arg(long = "feat_dim", visible_alias = "feat-dim", default_value_t = 128, value_name = "N")]
    pub feat_dim: i64,
}

impl ModelArgs {
    /// The model for `dataset`, which sets the classes and the stem (CIFAR stem for cifar10,
    /// cifar100, tinyimagenet, mnist, fashionmnist; 7×7 stem with max-pool for imagenet, imagenet100;
    /// for `folder` chosen by the training size `image_size`, see [`DatasetKind::for_folder`]).
    pub fn to_config(&self, dataset: &str, image_size: usize) -> selfcon::Result<ModelConfig> {
        let kind = if dataset == "folder" { DatasetKind::for_folder(image_size) } else { dataset.parse()? };
        ModelConfig::new(
            self.model.parse::<Architecture>()?,
            kind,
            self.selfcon_pos.parse::<ExitPositions>()?,
            self.selfcon_arch.parse::<SubNetworkArch>()?,
            self.selfcon_size.parse::<SubNetworkSize>()?,
            self.feat_dim,
        )
    }
}
