//! The training set-up of the device tests (`tests/integration/device.rs`, `tests/device_distributed.rs`):
//! the tiny model with its optimiser, loop and objective, a fixed batch, and CUDA's sync debug
//! mode.
#![allow(dead_code)]

use selfcon::distributed::Distributed;
use selfcon::model::{BatchNormKind, ConModel};
use selfcon::train::{GradScaler, Precision, PretrainConfig, Sgd, StepObjective};
use tch::{nn, Device, Kind, Tensor};

pub fn config(precision: Precision) -> PretrainConfig {
    let mut c = super::tiny_pretrain_config(std::path::Path::new("unused"), 1, 16);
    c.optim.precision = precision;
    c
}

/// A fixed batch of 16 images in 4 classes, normalised (drawn under the seeding lock: tests in
/// parallel threads share libtorch's generator).
pub fn batch(device: Device) -> (Tensor, Tensor) {
    batch_of_side(device, 32)
}

/// Image side for steps in reduced precision: 32 on a GPU, 8 on the CPU, where bf16 without
/// native support (AVX2 CPUs) runs in reference loops about 20× slower than fp32.
pub fn mixed_precision_side(device: Device) -> i64 {
    if device.is_cuda() {
        32
    } else {
        8
    }
}

/// [`batch`] with `side`×`side` images.
pub fn batch_of_side(device: Device, side: i64) -> (Tensor, Tensor) {
    let images = selfcon::engine::seeded(11, || Tensor::randn([16, 3, side, side], (Kind::Float, Device::Cpu)));
    let labels = Tensor::arange(16, (Kind::Int64, Device::Cpu)).remainder(4);
    (images.to_device(device), labels.to_device(device))
}

/// The README model with `precision`'s optimiser, loop and objective, ready to take steps.
pub struct Trainer {
    _vs: nn::VarStore,
    pub model: ConModel,
    pub optimizer: Sgd,
    pub train: selfcon::train::TrainLoop,
    pub objective: StepObjective,
    pub scaler: Option<GradScaler>,
}

impl Trainer {
    pub fn new(precision: Precision, device: Device) -> Self {
        Self::with(precision, device, BatchNormKind::Local, |objective| objective)
    }

    /// With SyncBatchNorm over `group` and the loss over its gathered global batch, whatever
    /// its size (a run picks them only with more than one rank).
    pub fn synchronised(precision: Precision, device: Device, group: &'static Distributed) -> Self {
        Self::with(precision, device, BatchNormKind::Synchronised(group), |objective| {
            objective.over_global_batch(group)
        })
    }

    /// With `change` applied to the test configuration first (another method, LARS, ...).
    pub fn variant(precision: Precision, device: Device, change: impl FnOnce(&mut PretrainConfig)) -> Self {
        let mut c = config(precision);
        change(&mut c);
        Self::from_config(c, device, BatchNormKind::Local, |objective| objective)
    }

    fn with(
        precision: Precision,
        device: Device,
        norm: BatchNormKind,
        objective: impl FnOnce(StepObjective) -> StepObjective,
    ) -> Self {
        Self::from_config(config(precision), device, norm, objective)
    }

    fn from_config(
        c: PretrainConfig,
        device: Device,
        norm: BatchNormKind,
        objective: impl FnOnce(StepObjective) -> StepObjective,
    ) -> Self {
        let (vs, model) = selfcon::engine::seeded(3, || ConModel::build(&c.model, device, norm)).unwrap();
        c.optim.prepare_model(&vs).unwrap();
        let objective = objective(c.step_objective());
        let optimizer = c.optim.optimizer(&vs, objective.reduction()).unwrap();
        let train = selfcon::train::TrainLoop::new(selfcon::train::TrainLoopConfig {
            model: Some(&vs),
            ..selfcon::train::TrainLoopConfig::new("test", device, &c.optim, c.schedule())
        })
        .unwrap();
        let scaler = train.new_scaler();
        Trainer { _vs: vs, model, optimizer, train, objective, scaler }
    }

    /// One training step at learning rate 0.05; the loss stays on the device.
    pub fn step(&mut self, images: &Tensor, labels: &Tensor) -> Tensor {
        self.step_voting(images, labels, None).0
    }

    /// [`Trainer::step`] that answers `vote` when asked whether to stop; returns the loss and the
    /// decision (in a distributed run, every rank's).
    pub fn step_voting(&mut self, images: &Tensor, labels: &Tensor, vote: Option<i32>) -> (Tensor, Option<i32>) {
        let (model, objective) = (&self.model, &self.objective);
        let (output, stop) = self
            .train
            .step_voting(
                images,
                labels,
                &mut self.optimizer,
                self.scaler.as_mut(),
                0.05,
                &mut |x: &Tensor| model.forward_t(x, true),
                &mut |out, y: &Tensor| objective.compute(&out, y),
                &mut || vote,
            )
            .unwrap();
        (output.loss, stop)
    }
}

/// Makes every CUDA call that waits for the device an error (`torch.cuda.set_sync_debug_mode
/// ("error")`) while `f` runs. The mode lives in libc10_cuda's `warning_state()`, an inline
/// function's static (C++ header only, no accessor): its exported symbol is set directly.
pub fn with_device_waits_forbidden<T>(f: impl FnOnce() -> T) -> T {
    const SYMBOL: &[u8] = b"_ZZN3c104cuda13warning_stateEvE14warning_state_\0";
    // SAFETY: looks a symbol up in the loaded libraries.
    let mode = unsafe { libc::dlsym(libc::RTLD_DEFAULT, SYMBOL.as_ptr() as *const libc::c_char) } as *mut i32;
    assert!(!mode.is_null(), "libc10_cuda's sync debug mode (warning_state_) not found");
    /// Turns the mode off again even when `f` panics (later tests must not inherit it).
    struct Restore(*mut i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: the same live static as below.
            unsafe { self.0.write_volatile(0) };
        }
    }
    // SAFETY: `c10::cuda::WarningState` holds one `SyncDebugMode` (an int enum: 0 off, 2 error).
    unsafe { mode.write_volatile(2) };
    let _restore = Restore(mode);
    f()
}
