//! selfcon — Self-Contrastive learning (Bae, Kim et al., AAAI 2023) on libtorch.
//!
//! One augmented view goes through the encoder once; projections of the sub-network exits and of
//! the backbone are contrasted with a supervised contrastive loss. The crate holds everything:
//! the models ([`model`]), the losses ([`loss`]), training pieces ([`train`]), dataset facts
//! ([`data`]) and the libtorch runtime set-up ([`engine`]); the `selfcon` binary is a thin CLI.

pub mod checkpoint;
pub mod data;
pub mod distributed;
pub mod engine;
pub mod error;
pub mod files;
pub mod hardware;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod names;
pub mod onnx;
pub mod pickle;
pub mod report;
pub mod train;

pub use error::{Error, Result};
