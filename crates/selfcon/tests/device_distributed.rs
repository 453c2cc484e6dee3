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
    distributed::shutdown(true).unwrap();
}
