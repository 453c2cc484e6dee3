//! Training pieces shared by pre-training, linear evaluation and 1-stage CE.

mod ce;
mod epoch_loop;
mod evaluation;
mod features;
pub mod knn;
mod linear;
mod loss_window;
mod optim_config;
mod optimizer;
mod pass_state;
mod precision;
mod pretrain;
mod pretrain_plan;
mod probe;
mod progress;
mod run_folder;
mod run_name;
mod schedule;
pub mod stop_signals;
mod throughput;
mod train_checkpoint;

pub use ce::{kd_loss, train_ce, CeConfig, CeMethod, CeResult};
pub use epoch_loop::{EpochStats, Pass, StepOutput, TrainLoop, TrainLoopConfig};
pub use features::{encoder_features, EncoderFeatures, FeatureExtraction};
pub use linear::{linear_eval, linear_eval_model, Accuracy, EpochAccuracy, LinearConfig, LinearResult};
pub use optim_config::OptimConfig;
pub use optimizer::Sgd;
pub use pass_state::PassState;
pub use precision::{GradScaler, Precision, PrecisionChoice};
pub use pretrain::{check_min_crop_scale, pretrain, PretrainConfig, PretrainResult, StepObjective};
pub use pretrain_plan::PretrainPlan;
pub use probe::{
    extract_features, linear_probe, select_and_probe, CachedFeatures, ProbeResult, ProbeSettings, SelectedProbe,
};
pub use progress::{Progress, Quiet};
pub use run_folder::{RunFolder, Start, LOCK_FILE};
pub use run_name::{python_bool, python_float};
pub use schedule::{LrSchedule, Warmup};
pub use throughput::{measure_pretrain_steps, BatchSource, Throughput};
pub use train_checkpoint::{Resumed, TrainingState};

/// `full_decode` of a config written before the option existed: those runs decoded every image
/// whole, and resuming one keeps doing so.
pub(crate) fn decoded_whole_before_the_option() -> bool {
    true
}
