//! Runs the ONNX models `selfcon export --format onnx` writes in tract, an independent pure-Rust
//! runtime, so that the export is checked against something other than our own forward pass.
//! A crate of its own: tract is the longest compile of the workspace, so it is built only by CI's
//! extended set (`cargo test --workspace -- --ignored`, docs/development.md), not by `cargo test`.

use std::path::Path;

use tch::Tensor;
use tract_onnx::prelude::*;

/// Every output of the ONNX model at `path` run on `images` (f32, NCHW): shape and values.
pub fn run_in_tract(path: &Path, images: &Tensor) -> TractResult<Vec<(Vec<usize>, Vec<f32>)>> {
    let shape: Vec<usize> = images.size().iter().map(|&d| d as usize).collect();
    let runnable = tract_onnx::onnx()
        .model_for_path(path)?
        .with_input_fact(0, f32::fact(&shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let pixels: Vec<f32> = Vec::try_from(&images.flatten(0, -1))?;
    let input = tract_ndarray::ArrayD::from_shape_vec(shape, pixels)?;
    let outputs = runnable.run(tvec!(input.into_tensor().into()))?;
    outputs
        .iter()
        .map(|t| {
            let view = t.to_array_view::<f32>()?;
            Ok((view.shape().to_vec(), view.iter().copied().collect()))
        })
        .collect()
}

/// The largest |got − want|, and want's largest magnitude (the scale to judge it by).
pub fn max_difference(got: &[f32], want: &Tensor) -> (f32, f32) {
    let want: Vec<f32> = Vec::try_from(&want.flatten(0, -1)).expect("f32 values");
    assert_eq!(got.len(), want.len(), "output sizes differ");
    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
    (diff, scale)
}
