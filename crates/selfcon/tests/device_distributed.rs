//! A distributed training step at world size 1 on the device named by `SELFCON_TEST_DEVICE` (its
//! own test binary: joining a run is once per process). On a GPU with the NCCL shim the ranks
//! talk over NCCL, and the whole step — forward with SyncBatchNorm, the loss over the gathered
//! global batch, gradient all-reduce, update and the stop votes — never makes the host wait for
//! the device (CUDA's sync debug mode "error"); on the CPU the same path runs over Gloo. The stop
//! votes reach the step's answer (one rank: its own; several are tested in tests/integration/distributed.rs).

mod common;

use common::device::{batch, with_device_waits_forbidden, Trainer};
use selfcon::distributed::{self, Backend, DistributedOptions};
use selfcon::train::Precision;

#[test]
fn a_distributed_step_never_waits_for_the_device_and_carries_the_stop_votes() {
    let device = common::test_device();
    for (name, value) in [
        ("RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29692"),
    ] {
        std::env::set_var(name, value);
    }
    // 30 s instead of the default 300: a hanging NCCL set-up fails this test well inside the GPU
    // kit's box for it (bench/gpu_check.sh) instead of eating the whole stage.
    let options = DistributedOptions { timeout_s: 30, ..DistributedOptions::default() };
    let d = distributed::init(&options, device).unwrap().expect("a rank of a run");
    if device.is_cuda() {
        match &d.nccl_unavailable {
            None => assert_eq!(d.backend, Backend::Nccl),
            // The GPU kit names its NCCL shim: there, NCCL must work.
            Some(why) if std::env::var_os("SELFCON_NCCL_LIB").is_some() => panic!("NCCL unusable: {why}"),
            Some(why) => eprintln!("note: NCCL not tested, the step runs over Gloo: {why}"),
        }
    }
    let precisions: &[Precision] =
        if device.is_cuda() { &[Precision::Fp32, Precision::Fp16, Precision::Bf16] } else { &[Precision::Fp32] };
    for &precision in precisions {
        // SyncBatchNorm and the gathered global batch too (a run uses them only with more than one
        // rank; forced here so that their collectives run under the same check).
        let mut trainer = Trainer::synchronised(precision, device, d);
        let (images, labels) = batch(device);
        let images = trainer.train.images_to_device(&images).unwrap();
        // The first step sets up (momentum buffers, buckets, cuDNN plans); the checked one follows.
        let (first, stop) = trainer.step_voting(&images, &labels, None);
        assert_eq!(stop, None);
        let mut step = || trainer.step_voting(&images, &labels, None);
        let (second, stop) = if device.is_cuda() && d.backend == Backend::Nccl {
            with_device_waits_forbidden(&mut step)
        } else {
            step()
        };
        assert_eq!(stop, None);
        let (_, sigterm) = trainer.step_voting(&images, &labels, Some(libc::SIGTERM));
        assert_eq!(sigterm, Some(libc::SIGTERM));
        let (_, sigint) = trainer.step_voting(&images, &labels, Some(libc::SIGINT));
        assert_eq!(sigint, Some(libc::SIGINT));
        let values = [first.double_value(&[]), second.double_value(&[])];
        eprintln!("{precision} on {device:?} over {}: losses {values:.4?}", d.backend);
        assert!(values.iter().all(|v| v.is_finite()), "{precision}: {values:?}");
    }
    if device.is_cuda() {
        fused_sync_batch_norm_matches_the_composite(d, device);
    } else {
        fused_sync_batch_norm_is_a_clear_error_off_cuda(d);
    }
    distributed::shutdown(true).unwrap();
}

/// torch.nn.SyncBatchNorm's fused CUDA kernels (the shim's `sync_batch_norm`, opt-in with
/// SELFCON_SYNCBN_FUSED=1) against the composite path every device runs: the output, the running
/// statistics and every gradient, with an fp32 and an fp16 input, channels-last too (#32). Over
/// NCCL neither makes the host wait.
fn fused_sync_batch_norm_matches_the_composite(d: &'static distributed::Distributed, device: tch::Device) {
    use tch::{Kind, Tensor};
    let x0 = selfcon::engine::seeded(7, || Tensor::randn([8, 4, 5, 5], (Kind::Float, tch::Device::Cpu)));
    let upstream = selfcon::engine::seeded(8, || Tensor::randn([8, 4, 5, 5], (Kind::Float, tch::Device::Cpu)));
    let upstream = upstream.to_device(device);
    for (kind, channels_last, tolerance) in
        [(Kind::Float, false, 1e-4), (Kind::Half, false, 2e-2), (Kind::Float, true, 1e-4)]
    {
        let run = |fused: bool| {
            let mut x = (&x0 * 3.0 + 1.0).to_device(device).to_kind(kind);
            if channels_last {
                x = selfcon::model::channels_last(&x).unwrap();
            }
            let x = x.detach().set_requires_grad(true);
            let bn = BatchNormParts::new(
                Tensor::from_slice(&[1.5f32, 0.5, 2.0, 1.0]).to_device(device).set_requires_grad(true),
                Tensor::from_slice(&[0.1f32, -0.2, 0.0, 0.3]).to_device(device).set_requires_grad(true),
            );
            let state = bn.state();
            let pass = || {
                let y =
                    if fused { d.sync_batch_norm_fused(&x, &state) } else { d.sync_batch_norm_composite(&x, &state) };
                let y = y.unwrap();
                (&y.to_kind(Kind::Float) * &upstream).sum(Kind::Float).backward();
                y
            };
            let y = if d.backend == Backend::Nccl { with_device_waits_forbidden(pass) } else { pass() };
            assert_eq!(y.kind(), kind, "the output keeps the input's dtype");
            [
                y.to_kind(Kind::Float),
                bn.running_mean.shallow_clone(),
                bn.running_var.shallow_clone(),
                x.grad().to_kind(Kind::Float),
                bn.weight.grad(),
                bn.bias.grad(),
            ]
        };
        let (composite, fused) = (run(false), run(true));
        for (name, (a, b)) in ["output", "running mean", "running var", "input grad", "weight grad", "bias grad"]
            .iter()
            .zip(composite.iter().zip(&fused))
        {
            let scale = a.abs().max().double_value(&[]).max(1e-6);
            let diff = (a - b).abs().max().double_value(&[]) / scale;
            eprintln!(
                "SyncBatchNorm fused vs composite, {kind:?}{}: {name} {diff:.2e}",
                if channels_last { " channels-last" } else { "" }
            );
            assert!(diff < tolerance, "{kind:?} channels-last {channels_last}: {name} differs by {diff:.2e}");
        }
    }
}

/// Off CUDA the fused kernels do not exist (ATen has them for CUDA only): the shim's call comes
/// back as a one-line error naming the missing kernel, not a crash.
fn fused_sync_batch_norm_is_a_clear_error_off_cuda(d: &'static distributed::Distributed) {
    use tch::{Kind, Tensor};
    let x = Tensor::ones([2, 3, 2, 2], (Kind::Float, tch::Device::Cpu));
    let bn = BatchNormParts::new(
        Tensor::ones([3], (Kind::Float, tch::Device::Cpu)),
        Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)),
    );
    let state = bn.state();
    let e = d.sync_batch_norm_fused(&x, &state).unwrap_err().to_string();
    assert!(e.contains("batch_norm_stats") && e.lines().count() == 1, "{e}");
    // The composite path every device runs normalises the same input.
    let y = d.sync_batch_norm_composite(&x, &state).unwrap();
    assert_eq!(y.size(), x.size());
}

/// A BatchNorm layer's tensors for the SyncBatchNorm checks: the given affine parameters, fresh
/// running statistics (mean 0, variance 1) on their device, momentum 0.1, eps 1e-5.
struct BatchNormParts {
    weight: tch::Tensor,
    bias: tch::Tensor,
    running_mean: tch::Tensor,
    running_var: tch::Tensor,
}

impl BatchNormParts {
    fn new(weight: tch::Tensor, bias: tch::Tensor) -> Self {
        let running_mean = weight.detach().zeros_like();
        let running_var = weight.detach().ones_like();
        BatchNormParts { weight, bias, running_mean, running_var }
    }

    fn state(&self) -> selfcon::distributed::sync_bn::BatchNormState<'_> {
        selfcon::distributed::sync_bn::BatchNormState {
            weight: &self.weight,
            bias: &self.bias,
            running_mean: &self.running_mean,
            running_var: &self.running_var,
            momentum: 0.1,
            eps: 1e-5,
        }
    }
}
