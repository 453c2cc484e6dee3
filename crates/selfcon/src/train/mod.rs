//! Training pieces shared by pre-training, linear evaluation and 1-stage CE.

mod optimizer;
mod pretrain;
mod run_name;
mod schedule;

pub use optimizer::Sgd;
pub use pretrain::{pretrain, PretrainConfig, PretrainResult, Progress, Quiet};
pub use run_name::{python_bool, python_float};
pub use schedule::{LrSchedule, Warmup};
