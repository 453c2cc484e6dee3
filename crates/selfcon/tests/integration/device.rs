//! The training step on the device named by `SELFCON_TEST_DEVICE` (the CPU when unset; a GPU
//! when `bench/gpu_check.sh` runs these binaries there): the loss and gradients agree with the
//! CPU's, fp16 and bf16 steps train, fp16 overflow is skipped on the device, a step and the
//! loader's batches never make the host wait for the device, and the loader's u8 batches give
//! the model the numbers of host normalisation.

use crate::common;

use std::sync::Arc;

use common::device::{batch, batch_of_side, config, mixed_precision_side, with_device_waits_forbidden, Trainer};
use selfcon::data::augment::TrainTransform;
use selfcon::data::{BatchFormat, DataLoader, Dataset, InMemoryImages, LoaderConfig, MemoryDataset, Transform};
use selfcon::model::ConModel;
use selfcon::train::{GradScaler, Precision, Sgd};
use tch::{nn, Device, Kind, Tensor};

/// The largest difference relative to the largest magnitude of `want`.
fn relative_difference(got: &Tensor, want: &Tensor) -> f64 {
    let got = got.to_device(Device::Cpu).to_kind(Kind::Double);
    let want = want.to_device(Device::Cpu).to_kind(Kind::Double);
    (got - &want).abs().max().double_value(&[]) / want.abs().max().double_value(&[]).max(1e-12)
}

#[test]
fn loss_and_gradients_agree_with_the_cpu() {
    let device = common::test_device();
    let c = config(Precision::Fp32);
    let objective = c.step_objective();
    let local = selfcon::model::BatchNormKind::Local;
    let run = |device: Device| {
        // Initial weights are drawn on the CPU and copied: CUDA's generator draws other values
        // than the CPU's under the same seed.
        let (cpu_vs, cpu_model) = selfcon::engine::seeded(3, || ConModel::build(&c.model, Device::Cpu, local)).unwrap();
        let (vs, model) = match device {
            Device::Cpu => (cpu_vs, cpu_model),
            _ => {
                let (mut vs, model) = ConModel::build(&c.model, device, local).unwrap();
                vs.copy(&cpu_vs).unwrap();
                (vs, model)
            }
        };
        let (images, labels) = batch(device);
        let loss = objective.compute(&model.forward_t(&images, true).unwrap(), &labels).unwrap();
        loss.backward();
        let mut grads: Vec<(String, Tensor)> =
            vs.variables().into_iter().filter(|(_, p)| p.requires_grad()).map(|(n, p)| (n, p.grad())).collect();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        (loss.detach(), grads)
    };
    let (cpu_loss, cpu_grads) = run(Device::Cpu);
    let (loss, grads) = run(device);
    // cuDNN convolutions run in TF32 by default (PyTorch's default too): about 1e-3 relative.
    let loss_diff = relative_difference(&loss, &cpu_loss);
    assert!(
        loss_diff < 1e-3,
        "loss {} on {device:?} vs {} on the CPU",
        loss.double_value(&[]),
        cpu_loss.double_value(&[])
    );
    let worst = grads
        .iter()
        .zip(&cpu_grads)
        .map(|((name, g), (_, want))| (relative_difference(g, want), name.clone()))
        .fold((0.0, String::new()), |a, b| if b.0 > a.0 { b } else { a });
    eprintln!("{device:?} vs CPU: loss {loss_diff:.2e}, worst gradient {:.2e} ({})", worst.0, worst.1);
    assert!(worst.0 < 2e-2, "gradient of {} differs by {:.2e} (relative to its largest value)", worst.1, worst.0);
}

/// fp16 and bf16 on a GPU; bf16 alone on the CPU, whose fp16 convolutions are reference loops
/// (minutes for one step; the fp16 loss-scaling path is covered by the overflow test below).
fn mixed_precisions(device: Device) -> &'static [Precision] {
    if device.is_cuda() {
        &[Precision::Fp16, Precision::Bf16]
    } else {
        &[Precision::Bf16]
    }
}

#[test]
fn fp16_and_bf16_steps_train() {
    let device = common::test_device();
    for &precision in mixed_precisions(device) {
        let mut trainer = Trainer::new(precision, device);
        assert_eq!(trainer.scaler.is_some(), precision == Precision::Fp16, "loss scaling for fp16 only");
        let (images, labels) = batch_of_side(device, mixed_precision_side(device));
        let images = trainer.train.images_to_device(&images).unwrap();
        // Fewer steps on the CPU, where bf16 may be emulated (see mixed_precision_side).
        let steps = if device.is_cuda() { 8 } else { 4 };
        let losses: Vec<Tensor> = (0..steps).map(|_| trainer.step(&images, &labels)).collect();
        let values: Vec<f64> = losses.iter().map(|l| l.double_value(&[])).collect();
        eprintln!("{precision} on {device:?}: losses {values:.4?}");
        assert!(values.iter().all(|v| v.is_finite()), "{precision}: {values:?}");
        assert!(values[steps - 1] < values[0], "{precision}: the loss did not fall on a fixed batch: {values:?}");
    }
}

#[test]
fn an_overflowing_fp16_step_is_skipped_on_the_device_and_the_scale_backs_off() {
    let device = common::test_device();
    let vs = nn::VarStore::new(device);
    let w = vs.root().var("w", &[4], nn::Init::Const(1.0));
    let mut sgd = Sgd::new(&vs, 0.9, 1e-4);
    let mut scaler = GradScaler::new(device);
    let step = |sgd: &mut Sgd, scaler: &mut GradScaler, g: f32| {
        (&w * f64::from(g)).sum(Kind::Float).backward();
        scaler.unscale(&sgd.grads()).unwrap();
        sgd.step_unless(0.1, scaler.found_inf()).unwrap();
        scaler.update();
        sgd.zero_grad();
    };
    step(&mut sgd, &mut scaler, f32::INFINITY);
    assert_eq!(Vec::<f32>::try_from(w.to_device(Device::Cpu)).unwrap(), vec![1.0; 4], "skipped: unchanged");
    assert_eq!(scaler.state(), (GradScaler::INIT_SCALE * GradScaler::BACKOFF_FACTOR, 0));
    step(&mut sgd, &mut scaler, 32768.0);
    // Unscaled gradient 1: w ← 1 − 0.1 · (1 + 1e-4).
    let v = w.mean(Kind::Float).double_value(&[]);
    assert!((v - (1.0 - 0.1 * 1.0001)).abs() < 1e-6, "taken: {v}");
    assert_eq!(scaler.state(), (32768.0, 1));
}

#[test]
fn a_training_step_and_its_batch_never_wait_for_the_device() {
    let device = common::test_device();
    let side = mixed_precision_side(device) as usize;
    let dataset: Arc<dyn Dataset> = Arc::new(MemoryDataset {
        images: InMemoryImages {
            pixels: (0..32 * 32 * 32 * 3).map(|i| (i * 13 % 256) as u8).collect(),
            height: 32,
            width: 32,
            channels: 3,
            labels: (0..32).map(|i| i % 4).collect(),
        },
        num_classes: 4,
    });
    for &precision in [Precision::Fp32].iter().chain(mixed_precisions(device)) {
        let mut trainer = Trainer::new(precision, device);
        let loader = DataLoader::new(
            dataset.clone(),
            Transform::Train { transform: TrainTransform::pretrain(side, false), views: 1 },
            LoaderConfig {
                batch_size: 16,
                threads: 2,
                prefetch: 2,
                shuffle: true,
                seed: 1,
                drop_last: true,
                mean: [0.5; 3],
                std: [0.25; 3],
                background: false,
                shard: None,
                format: BatchFormat::for_device(device, false),
            },
        )
        .unwrap();
        let mut batches = loader.epoch(0);
        let mut run_step = || {
            // As the training loop moves a batch: copied ahead on a side stream, then normalised.
            let batch = batches.next().unwrap().unwrap();
            let pixels = selfcon::engine::copy_ahead(&batch.images, device).unwrap();
            let labels = selfcon::engine::copy_ahead(&batch.labels, device).unwrap().ready().unwrap();
            let images = trainer.train.images_to_device(&batch.model_pixels(pixels.ready().unwrap())).unwrap();
            trainer.step(&images, &labels)
        };
        // The first step sets up (momentum buffers, cuDNN plans); the checked one follows.
        let _ = run_step();
        let loss = if device.is_cuda() { with_device_waits_forbidden(&mut run_step) } else { run_step() };
        assert!(loss.double_value(&[]).is_finite(), "{precision}");
    }
}

/// The step's other paths stay free of host waits too: SupCon-S and the single-view SelfCon alpha
/// variant with labels (an anchor without a positive dropped by masking) and LARS under fp16 loss scaling (the skip
/// decided on the device). On the CPU the same steps run, unchecked.
#[test]
fn loss_and_optimizer_variants_never_wait_for_the_device() {
    use selfcon::loss::Method;
    let device = common::test_device();
    let half = if device.is_cuda() { Precision::Fp16 } else { Precision::Fp32 };
    type Change = fn(&mut selfcon::train::PretrainConfig);
    let variants: [(&str, Precision, Change); 3] = [
        ("SupCon-S", Precision::Fp32, |c| c.method = Method::SupCon),
        ("SelfCon alpha 0.5", Precision::Fp32, |c| c.alpha = 0.5),
        ("LARS with loss scaling", half, |c| c.optim.lars_eta = Some(0.02)),
    ];
    for (name, precision, change) in variants {
        let mut trainer = Trainer::variant(precision, device, change);
        let (images, _) = batch(device);
        // One class with a single image: SupCon-S drops that anchor (by masking, on the device).
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 4]).to_device(device);
        let images = trainer.train.images_to_device(&images).unwrap();
        let first = trainer.step(&images, &labels);
        let second = if device.is_cuda() {
            with_device_waits_forbidden(|| trainer.step(&images, &labels))
        } else {
            trainer.step(&images, &labels)
        };
        let values = [first.double_value(&[]), second.double_value(&[])];
        eprintln!("{name} ({precision}) on {device:?}: losses {values:.4?}");
        assert!(values.iter().all(|v| v.is_finite()), "{name}: {values:?}");
    }
}

/// Library users pass a `Device` without going through `select_device`: every entry point loads
/// the CUDA backend itself first, and without one refuses CUDA with the CLI's one-line error
/// (not a panic from the first CUDA tensor).
#[test]
fn library_entry_points_refuse_cuda_cleanly_where_there_is_none() {
    if selfcon::engine::cuda_backend().is_ok() {
        return;
    }
    let cuda = Device::Cuda(0);
    let want = "--device: cuda:0 requested but libtorch's CUDA backend could not be loaded";
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 8, 4);
    let data = selfcon::data::open_dataset(selfcon::data::DatasetKind::FashionMnist, Some(d.path())).unwrap();
    let save = tempfile::tempdir().unwrap();
    let c = common::tiny_pretrain_config(save.path(), 1, 4);
    let errors = [
        (
            "pretrain",
            selfcon::train::pretrain(&c, &data, cuda, &selfcon::train::Start::Fresh, &mut selfcon::train::Quiet)
                .err()
                .map(|e| e.to_string()),
        ),
        (
            "bench",
            selfcon::train::measure_pretrain_steps(&c, cuda, selfcon::train::BatchSource::Synthetic, 0, 1)
                .err()
                .map(|e| e.to_string()),
        ),
        ("model", ConModel::build(&c.model, cuda, selfcon::model::BatchNormKind::Local).err().map(|e| e.to_string())),
    ];
    for (entry, error) in errors {
        let error = error.unwrap_or_else(|| panic!("{entry} accepted CUDA on a machine without it"));
        assert!(error.starts_with(want), "{entry}: {error}");
    }
    let (_, model) = ConModel::build(&c.model, Device::Cpu, selfcon::model::BatchNormKind::Local).unwrap();
    let how = selfcon::train::FeatureExtraction {
        mean: data.mean,
        std: data.std,
        threads: 1,
        device: cuda,
        precision: Precision::Fp32,
        channels_last: false,
        shard: None,
    };
    let error =
        selfcon::train::encoder_features(&model, &data.train, selfcon::data::augment::EvalTransform::Identity, how)
            .err()
            .expect("features on CUDA without CUDA")
            .to_string();
    assert!(error.starts_with(want), "features: {error}");
}

#[test]
fn u8_batches_normalised_on_the_device_equal_the_hosts_normalisation() {
    let device = common::test_device();
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 12, 4);
    let data = selfcon::data::open_dataset(selfcon::data::DatasetKind::FashionMnist, Some(d.path())).unwrap();
    let batch = |format: BatchFormat| {
        let loader = DataLoader::new(
            data.train.clone(),
            Transform::Train { transform: TrainTransform::pretrain(32, false), views: 1 },
            LoaderConfig {
                batch_size: 12,
                threads: 1,
                prefetch: 1,
                shuffle: true,
                seed: 4,
                drop_last: false,
                mean: data.mean,
                std: data.std,
                background: false,
                shard: None,
                format,
            },
        )
        .unwrap();
        let batch = loader.epoch(0).next().unwrap().unwrap();
        batch.images_on(device).unwrap()
    };
    let host = batch(BatchFormat::default());
    let raw = batch(BatchFormat { raw_u8: true, pinned: device.is_cuda(), ..BatchFormat::default() });
    assert_eq!(raw.device(), device);
    // True divisions by device tensors on both sides: the same bits as the CPU's ToTensor + Normalize.
    assert!(raw.equal(&host), "largest difference {}", (&raw - &host).abs().max().double_value(&[]));
}

/// `--dist_backend nccl` at world size 1 on the test GPU: the collectives and the gradient buckets
/// give Gloo's results with every tensor (and bucket) in device memory, and an all-reduce of
/// device tensors never makes the host wait. Skipped on the CPU (NCCL needs GPU ranks) and, with
/// a note, where the NCCL shim is not built.
#[test]
fn nccl_collectives_and_buckets_work_in_device_memory() {
    use std::time::Duration;
    use torch_shim::distributed::{nccl_shim, GradientBuckets, ProcessGroup, TcpStore};
    let device = common::test_device();
    let Device::Cuda(index) = device else { return };
    if let Err(e) = nccl_shim() {
        eprintln!("note: NCCL not tested: {}", e.0);
        return;
    }
    let timeout = Duration::from_secs(30);
    let store = TcpStore::connect("127.0.0.1", 29690, true, Some(1), timeout).unwrap();
    let group = ProcessGroup::nccl(&store, 0, 1, timeout, index).unwrap();
    let a = Tensor::from_slice(&[1.0f32, 2.0]).to_device(device);
    let counts = Tensor::from_slice(&[3i64]); // a host tensor: staged on the GPU and back
    group.all_reduce_sum(&[&a, &counts]).unwrap();
    assert_eq!(Vec::<f32>::try_from(&a).unwrap(), vec![1.0, 2.0]);
    assert_eq!(counts.int64_value(&[0]), 3);
    let gathered = group.all_gather(&a).unwrap();
    assert_eq!((gathered.len(), gathered[0].device()), (1, device));
    let stacked = group.all_gather_autograd(&a).unwrap();
    assert_eq!((stacked.size(), stacked.device()), (vec![1, 2], device));
    group.broadcast(&[&a], 0).unwrap();
    group.barrier().unwrap();
    let b = a.shallow_clone();
    with_device_waits_forbidden(|| group.all_reduce_sum(&[&b]).unwrap());
    for overlap in [false, true] {
        let w = Tensor::from_slice(&[1.0f32, 1.0, 1.0]).to_device(device).set_requires_grad(true);
        let buckets = GradientBuckets::new(&group, &[w.shallow_clone()], 8, overlap).unwrap();
        (&w * Tensor::from_slice(&[2.0f32, 4.0, 6.0]).to_device(device)).sum(Kind::Float).backward();
        with_device_waits_forbidden(|| buckets.finish(0.5).unwrap());
        assert_eq!(Vec::<f32>::try_from(&w.grad()).unwrap(), vec![1.0, 2.0, 3.0], "overlap {overlap}");
    }
}
