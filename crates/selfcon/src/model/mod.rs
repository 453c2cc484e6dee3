//! Models: ResNet encoders with SelfCon sub-network exits and projection heads, named so that
//! every variable path equals the official PyTorch state-dict key.

mod ce_model;
mod con_model;
mod config;
mod efficientnet;
mod encoder;
mod head;
mod layers;
mod memory_format;
mod resnet;
mod subnetwork;
mod summary;
mod vgg;
mod wrn;

pub use ce_model::{CeModel, CeOutput};
pub use con_model::{ConModel, ModelOutput};
pub use config::{Architecture, ExitPositions, Family, ModelConfig, Stem, SubNetworkArch, SubNetworkSize};
pub use encoder::{Encoder, EncoderOutput};
pub use head::LinearClassifier;
pub use layers::{l2_normalize, BatchNormKind};
pub use memory_format::{channels_last, is_channels_last, to_channels_last};
pub use resnet::BlockKind;
pub use summary::{state_dict_shapes, ModelSummary};
