//! Losses: the general contrastive loss ([`ConLoss`]) and each method's objective built from it
//! ([`MethodLoss`]).

mod con_loss;
mod method;

pub use con_loss::{ConLoss, ConLossFlags, ConLossOutput, ContrastMode, Positives};
pub use method::{pair_views, stack_views, LossComponent, LossTerms, Method, MethodLoss};
