//! Training pieces shared by pre-training, linear evaluation and 1-stage CE.

mod ce;
mod linear;
mod optim_config;
mod optimizer;
mod pretrain;
mod probe;
mod run_name;
mod schedule;

pub use ce::{kd_loss, train_ce, CeConfig, CeMethod, CeResult};
pub use linear::{linear_eval, linear_eval_model, Accuracy, EpochAccuracy, LinearConfig, LinearResult};
pub use optim_config::OptimConfig;
pub use optimizer::Sgd;
pub use pretrain::{pretrain, PretrainConfig, PretrainResult, Progress, Quiet};
pub use probe::{extract_features, linear_probe, CachedFeatures, ProbeResult};
pub use run_name::{python_bool, python_float};
pub use schedule::{LrSchedule, Warmup};
