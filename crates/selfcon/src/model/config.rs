//! What a model is made of: the flags `--model --selfcon_pos --selfcon_arch --selfcon_size
//! --feat_dim` plus the dataset's stem and class count, validated once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use strum::{Display, EnumIter, EnumMessage, IntoStaticStr};

use crate::data::DatasetKind;
use crate::error::{Error, Result};

/// Encoder families and depths (`--model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Display, IntoStaticStr, EnumIter, EnumMessage)]
pub enum Architecture {
    #[strum(serialize = "resnet18")]
    ResNet18,
    #[strum(serialize = "resnet34")]
    ResNet34,
    #[strum(serialize = "resnet50")]
    ResNet50,
    #[strum(serialize = "resnet101")]
    ResNet101,
    #[strum(serialize = "vgg13")]
    Vgg13,
    #[strum(serialize = "vgg13_bn")]
    Vgg13Bn,
    #[strum(serialize = "vgg16")]
    Vgg16,
    #[strum(serialize = "vgg16_bn")]
    Vgg16Bn,
    #[strum(serialize = "wrn_16_8")]
    Wrn16x8,
    #[strum(serialize = "efficientnet")]
    EfficientNet,
}
crate::named_enum!(Architecture, "model", "model");

/// The encoder families of the paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    ResNet,
    Vgg,
    Wrn,
    EfficientNet,
}

impl Architecture {
    pub fn family(self) -> Family {
        match self {
            Architecture::ResNet18 | Architecture::ResNet34 | Architecture::ResNet50 | Architecture::ResNet101 => {
                Family::ResNet
            }
            Architecture::Vgg13 | Architecture::Vgg13Bn | Architecture::Vgg16 | Architecture::Vgg16Bn => Family::Vgg,
            Architecture::Wrn16x8 => Family::Wrn,
            Architecture::EfficientNet => Family::EfficientNet,
        }
    }

    /// Number of exit candidates, i.e. the length `--selfcon_pos` must have.
    pub fn exit_candidates(self) -> usize {
        match self.family() {
            Family::ResNet => 3,
            Family::Vgg => 4,
            Family::Wrn => 2,
            Family::EfficientNet => 1,
        }
    }

    /// Human name of exit candidate `k` ("layer2", "block3", ...).
    pub fn exit_name(self, k: usize) -> String {
        match self.family() {
            Family::ResNet | Family::Wrn => format!("layer{}", k + 1),
            Family::Vgg => format!("block{}", k + 1),
            Family::EfficientNet => "stage 4".to_string(),
        }
    }

    /// Blocks per stage of a ResNet (the ResNet family only).
    pub fn blocks_per_stage(self) -> [usize; 4] {
        match self {
            Architecture::ResNet18 => [2, 2, 2, 2],
            Architecture::ResNet34 | Architecture::ResNet50 => [3, 4, 6, 3],
            Architecture::ResNet101 => [3, 4, 23, 3],
            other => unreachable!("{other} is not a ResNet"),
        }
    }

    /// Block type of a ResNet (the ResNet family only).
    pub fn block(self) -> super::resnet::BlockKind {
        match self {
            Architecture::ResNet18 | Architecture::ResNet34 => super::resnet::BlockKind::Basic,
            Architecture::ResNet50 | Architecture::ResNet101 => super::resnet::BlockKind::Bottleneck,
            other => unreachable!("{other} is not a ResNet"),
        }
    }

    /// Width of the pooled encoder output (backbone and every exit).
    pub fn feature_dim(self) -> i64 {
        match self.family() {
            Family::ResNet => 512 * self.block().expansion(),
            _ => 512,
        }
    }
}

/// The input stem of a ResNet, chosen by the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// conv3×3 stride 1 + BN + ReLU, no max-pool (CIFAR, Tiny-ImageNet).
    Cifar,
    /// conv7×7 stride 2 + BN + ReLU + max-pool 3×3 stride 2 (ImageNet, ImageNet-100).
    ImageNet,
}

/// Where sub-networks are attached (`--selfcon_pos`): one flag per exit candidate, any
/// combination. Written as the official Python list literal, e.g. `[False,True,False]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExitPositions(Vec<bool>);

impl ExitPositions {
    pub fn new(flags: Vec<bool>) -> Self {
        ExitPositions(flags)
    }

    pub fn none(len: usize) -> Self {
        ExitPositions(vec![false; len])
    }

    pub fn flags(&self) -> &[bool] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Indices of the enabled exits, in stage order.
    pub fn enabled(&self) -> Vec<usize> {
        self.0.iter().enumerate().filter(|(_, on)| **on).map(|(k, _)| k).collect()
    }

    pub fn count(&self) -> usize {
        self.0.iter().filter(|on| **on).count()
    }
}

impl fmt::Display for ExitPositions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<_> = self.0.iter().map(|b| if *b { "True" } else { "False" }).collect();
        write!(f, "[{}]", items.join(","))
    }
}

impl FromStr for ExitPositions {
    type Err = Error;

    /// Accepts the Python literal the official scripts pass (`[False,True,False]`), with or
    /// without brackets and spaces, and `true/false/1/0` spellings.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: String| Error::option("selfcon_pos", why);
        let trimmed = s.trim();
        let inner = match (trimmed.strip_prefix('['), trimmed.strip_suffix(']')) {
            (Some(_), Some(_)) => &trimmed[1..trimmed.len() - 1],
            (None, None) => trimmed,
            _ => return Err(bad(format!("'{s}' has unbalanced brackets (expected e.g. \"[False,True,False]\")"))),
        };
        if inner.trim().is_empty() {
            return Err(bad(format!("'{s}' is empty (expected e.g. \"[False,True,False]\")")));
        }
        let flags = inner
            .split(',')
            .map(|item| match item.trim() {
                "True" | "true" | "1" => Ok(true),
                "False" | "false" | "0" => Ok(false),
                other => Err(bad(format!("'{other}' in '{s}' is not a boolean (use True/False)"))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ExitPositions(flags))
    }
}

/// How much of the remaining backbone a sub-network replicates (`--selfcon_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Display, IntoStaticStr, EnumIter, EnumMessage)]
#[strum(serialize_all = "lowercase")]
pub enum SubNetworkSize {
    /// Global-average-pool, then one Linear to the backbone width.
    Fc,
    /// The remaining stages with half the blocks (floor).
    Small,
    /// The remaining stages with as many blocks as the backbone.
    Same,
    /// The remaining stages with twice the blocks (in the official model code, not its CLI).
    Large,
}

crate::named_enum!(SubNetworkSize, "selfcon_size", "size");

impl SubNetworkSize {
    /// Blocks of a replicated stage whose backbone counterpart has `n`.
    pub fn replicated_blocks(self, n: usize) -> usize {
        match self {
            SubNetworkSize::Fc => 0,
            SubNetworkSize::Small => n / 2,
            SubNetworkSize::Same => n,
            SubNetworkSize::Large => 2 * n,
        }
    }
}

/// Family of the sub-network blocks (`--selfcon_arch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Display, IntoStaticStr, EnumIter, EnumMessage)]
#[strum(serialize_all = "lowercase")]
pub enum SubNetworkArch {
    Resnet,
    Vgg,
    Efficientnet,
    Wrn,
}

crate::named_enum!(SubNetworkArch, "selfcon_arch", "arch");

/// The official code's silent adjustments per family: VGG and WRN replace the default
/// `--selfcon_pos` (three Falses) by as many Falses as they have exit candidates and force
/// `--selfcon_arch` to their own family; EfficientNet reads only `selfcon_pos[0]` and ignores
/// `--selfcon_arch`/`--selfcon_size`.
fn official_defaults(
    arch: Architecture,
    exits: ExitPositions,
    sub_arch: SubNetworkArch,
) -> (ExitPositions, SubNetworkArch) {
    let default_pos = exits.len() == 3 && exits.count() == 0;
    match arch.family() {
        Family::ResNet => (exits, sub_arch),
        Family::Vgg | Family::Wrn => {
            let exits = if default_pos { ExitPositions::none(arch.exit_candidates()) } else { exits };
            (exits, if arch.family() == Family::Vgg { SubNetworkArch::Vgg } else { SubNetworkArch::Wrn })
        }
        Family::EfficientNet => {
            let first = exits.flags().first().copied().unwrap_or(false);
            (if exits.is_empty() { exits } else { ExitPositions::new(vec![first]) }, SubNetworkArch::Efficientnet)
        }
    }
}

/// A validated model description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub dataset: DatasetKind,
    pub exits: ExitPositions,
    pub sub_arch: SubNetworkArch,
    pub sub_size: SubNetworkSize,
    /// Width of the projections that the contrastive loss sees (`--feat_dim`, default 128).
    pub feat_dim: i64,
}

impl ModelConfig {
    pub fn new(
        architecture: Architecture,
        dataset: DatasetKind,
        exits: ExitPositions,
        sub_arch: SubNetworkArch,
        sub_size: SubNetworkSize,
        feat_dim: i64,
    ) -> Result<Self> {
        let (exits, sub_arch) = official_defaults(architecture, exits, sub_arch);
        let config = ModelConfig { architecture, dataset, exits, sub_arch, sub_size, feat_dim };
        config.validate()?;
        Ok(config)
    }

    /// The README model: ResNet-18 with an `fc` exit after layer2.
    pub fn readme(dataset: DatasetKind) -> Self {
        ModelConfig {
            architecture: Architecture::ResNet18,
            dataset,
            exits: ExitPositions::new(vec![false, true, false]),
            sub_arch: SubNetworkArch::Resnet,
            sub_size: SubNetworkSize::Fc,
            feat_dim: 128,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let arch = self.architecture;
        if arch.family() == Family::Wrn && self.stem() == Stem::ImageNet {
            return Err(Error::option(
                "model",
                format!(
                    "{arch} has no working ImageNet stem in the official code (its conv is declared with 7 input channels); use a 32×32 or 64×64 dataset (cifar10, cifar100, tinyimagenet, ...) with {arch}"
                ),
            ));
        }
        let n = arch.exit_candidates();
        if self.exits.len() != n {
            let names: Vec<_> = (0..n).map(|k| arch.exit_name(k)).collect();
            return Err(Error::option(
                "selfcon_pos",
                format!(
                    "{arch} takes {n} booleans (exits after {}), got {} in {}",
                    names.join(", "),
                    self.exits.len(),
                    self.exits
                ),
            ));
        }
        if arch.family() == Family::ResNet && self.sub_arch != SubNetworkArch::Resnet {
            return Err(Error::option(
                "selfcon_arch",
                format!("{arch} supports only 'resnet' sub-networks, got '{}'", self.sub_arch),
            ));
        }
        if arch.family() == Family::Vgg && self.sub_size == SubNetworkSize::Large && self.exits.count() > 0 {
            return Err(Error::option(
                "selfcon_size",
                format!("'large' sub-networks are not defined for {arch} (the official VGG code raises for them); choose fc, small or same"),
            ));
        }
        if self.feat_dim < 1 {
            return Err(Error::option("feat_dim", format!("must be positive, got {}", self.feat_dim)));
        }
        Ok(())
    }

    pub fn num_classes(&self) -> i64 {
        self.dataset.num_classes()
    }

    pub fn stem(&self) -> Stem {
        self.dataset.stem()
    }

    /// Width of the pooled backbone/exit features (the linear classifier's input).
    pub fn feature_dim(&self) -> i64 {
        self.architecture.feature_dim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Named;
    use strum::IntoEnumIterator;

    #[test]
    fn exit_positions_accept_python_and_relaxed_spellings() {
        for text in
            ["[False,True,False]", "[False, True, False]", " [false,true,false] ", "False,True,False", "[0,1,0]"]
        {
            let p: ExitPositions = text.parse().unwrap();
            assert_eq!(p.flags(), &[false, true, false], "{text}");
            assert_eq!(p.enabled(), vec![1]);
            assert_eq!(p.to_string(), "[False,True,False]");
        }
        assert_eq!("[True,True,True]".parse::<ExitPositions>().unwrap().count(), 3);
    }

    #[test]
    fn exit_positions_reject_garbage_with_the_flag_name() {
        for text in ["[False,Maybe,False]", "[False,True", "[]", "", "[False,,True]"] {
            let err = text.parse::<ExitPositions>().unwrap_err().to_string();
            assert!(err.starts_with("--selfcon_pos: "), "{text}: {err}");
        }
    }

    #[test]
    fn config_validation_names_the_flag() {
        let base = ModelConfig::readme(DatasetKind::Cifar100);
        let mut c = base.clone();
        c.exits = ExitPositions::new(vec![true, false]);
        assert!(c.validate().unwrap_err().to_string().starts_with("--selfcon_pos: resnet18 takes 3 booleans"));
        let mut c = base.clone();
        c.sub_arch = SubNetworkArch::Vgg;
        assert!(c.validate().unwrap_err().to_string().starts_with("--selfcon_arch: "));
        let mut c = base;
        c.feat_dim = 0;
        assert!(c.validate().unwrap_err().to_string().starts_with("--feat_dim: "));
    }

    #[test]
    fn names_round_trip_and_unknown_names_fail() {
        for a in Architecture::iter() {
            assert_eq!(a.name().parse::<Architecture>().unwrap(), a);
            assert_eq!(a.to_string(), a.name());
        }
        for s in SubNetworkSize::iter() {
            assert_eq!(s.name().parse::<SubNetworkSize>().unwrap(), s);
        }
        // serde uses the CLI names (checkpoints' config.json).
        for a in Architecture::iter() {
            assert_eq!(serde_json::to_value(a).unwrap(), a.name());
            assert_eq!(serde_json::from_value::<Architecture>(a.name().into()).unwrap(), a);
        }
        assert_eq!(serde_json::to_value(SubNetworkArch::Efficientnet).unwrap(), "efficientnet");
        assert_eq!(SubNetworkSize::Fc.to_string(), "fc");
        assert_eq!(
            "huge".parse::<SubNetworkSize>().unwrap_err().to_string(),
            "--selfcon_size: unknown size 'huge' (choose from fc, small, same, large)"
        );
        assert!("resnet19".parse::<Architecture>().unwrap_err().to_string().starts_with("--model: unknown model"));
        assert!("huge".parse::<SubNetworkSize>().unwrap_err().to_string().starts_with("--selfcon_size: "));
        assert!("mnist!".parse::<DatasetKind>().unwrap_err().to_string().starts_with("--dataset: "));
    }

    #[test]
    fn stems_and_classes_follow_the_dataset() {
        assert_eq!(DatasetKind::TinyImageNet.stem(), Stem::Cifar);
        assert_eq!(DatasetKind::ImageNet100.stem(), Stem::ImageNet);
        assert_eq!(DatasetKind::TinyImageNet.num_classes(), 200);
        assert_eq!(Architecture::ResNet50.feature_dim(), 2048);
        assert_eq!(SubNetworkSize::Small.replicated_blocks(23), 11);
        assert_eq!(SubNetworkSize::Large.replicated_blocks(3), 6);
    }
}
