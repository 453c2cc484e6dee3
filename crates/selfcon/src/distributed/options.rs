//! The distributed-training options of pretrain, linear and ce (`--global_negatives`,
//! `--syncbn`, `--dist_backend`, `--dist_timeout`); saved with the run configuration.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumIter, EnumMessage, IntoStaticStr};

/// Which c10d backend carries the collectives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Display, IntoStaticStr, EnumIter, EnumMessage)]
#[strum(serialize_all = "lowercase")]
pub enum Backend {
    /// NCCL for GPU ranks when the NCCL shim is built (else Gloo through host memory); Gloo on CPU.
    #[default]
    Auto,
    Gloo,
    Nccl,
}

crate::named_enum!(Backend, "dist_backend", "backend");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DistributedOptions {
    /// Contrast every anchor against the whole global batch (features and labels all-gathered);
    /// off: each rank's loss over its own batch, as DataParallel-free per-GPU training would.
    pub global_negatives: bool,
    /// BatchNorm statistics over the global batch instead of each rank's batch.
    pub syncbn: bool,
    pub backend: Backend,
    /// Seconds a collective waits for the other ranks before the run stops.
    pub timeout_s: u64,
    /// All-reduce gradient buckets while backward runs (DDP's Reducer) instead of after it.
    pub overlap: bool,
}

impl Default for DistributedOptions {
    fn default() -> Self {
        DistributedOptions {
            global_negatives: true,
            syncbn: false,
            backend: Backend::Auto,
            timeout_s: 300,
            overlap: false,
        }
    }
}
