//! Channels-last (NHWC) layout: cuDNN's fast path for convolutions under mixed precision. The
//! model's 4-d weights and each input batch are converted; every other tensor is unaffected and
//! results are the same up to summation order.

use tch::nn::VarStore;
use tch::Tensor;
use torch_shim::MemoryFormat;

use crate::error::{Error, Result};

/// Converts every 4-d variable of `vs` (convolution weights) to channels-last, in place, so
/// optimisers and checkpoints that hold them see the change.
pub fn to_channels_last(vs: &VarStore) -> Result<()> {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            if var.dim() == 4 {
                let converted = channels_last(&var).map_err(|e| Error::input(format!("{name}: {e}")))?;
                var.set_data(&converted);
            }
        }
        Ok(())
    })
}

/// A channels-last copy of a 4-d batch.
pub fn channels_last(t: &Tensor) -> Result<Tensor> {
    torch_shim::contiguous(t, MemoryFormat::ChannelsLast).map_err(|e| Error::input(e.to_string()))
}

pub fn is_channels_last(t: &Tensor) -> bool {
    torch_shim::is_contiguous(t, MemoryFormat::ChannelsLast).unwrap_or(false)
}
