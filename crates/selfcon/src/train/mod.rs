//! Training pieces shared by pre-training, linear evaluation and 1-stage CE.

mod schedule;

pub use schedule::{LrSchedule, Warmup};
