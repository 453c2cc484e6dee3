//! Mixed precision: `--precision` runs the forward pass under autocast (fp16 with dynamic loss
//! scaling on CUDA, as the official `torch.cuda.amp` code does; bf16 on CPU), while the losses are
//! computed in fp32 outside the autocast region.

use strum::{Display, EnumIter, EnumMessage, IntoStaticStr};
use tch::{Device, Kind, Tensor};
use torch_shim::AutocastGuard;

use crate::error::{Error, Result};
use crate::hardware::{CpuInfo, EMULATED_BF16_SLOWDOWN};

/// `--precision [auto|fp16|bf16|fp32|fp64]`; the bare flag (official `--precision`) means `auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Display, IntoStaticStr, EnumIter, EnumMessage)]
pub enum Precision {
    /// fp16 on CUDA (the official choice); on CPU bf16 where oneDNN runs it natively (AVX-512
    /// BF16, AMX, Arm BF16), else fp32 (emulated bf16 is 15–21× slower than fp32 on AVX2).
    #[strum(to_string = "auto", serialize = "true", serialize = "amp")]
    Auto,
    #[strum(to_string = "fp16", serialize = "float16", serialize = "half")]
    Fp16,
    #[strum(to_string = "bf16", serialize = "bfloat16")]
    Bf16,
    #[default]
    #[strum(to_string = "fp32", serialize = "float32", serialize = "no", serialize = "false")]
    Fp32,
    /// Weights, batches and losses in float64: slow, for numerical checks (e.g. that a
    /// distributed run reproduces the single-process update, which in fp32 is only as
    /// well-defined as the early contrastive gradient's conditioning allows).
    #[strum(to_string = "fp64", serialize = "float64", serialize = "double")]
    Fp64,
}
crate::named_enum!(Precision, "precision", "precision", ignore_case);

impl Precision {
    /// The precision actually used on `device` (never `Auto`), on this machine's CPU.
    pub fn resolve(self, device: Device) -> Precision {
        self.resolve_on(device, CpuInfo::detect())
    }

    /// The precision used on `device` when the CPU is `cpu`.
    pub fn resolve_on(self, device: Device, cpu: &CpuInfo) -> Precision {
        self.choose(device, cpu).precision
    }

    /// The precision used on `device` with `cpu`, why, and a warning when an explicit choice
    /// runs slowly there.
    pub fn choose(self, device: Device, cpu: &CpuInfo) -> PrecisionChoice {
        let on_cpu = !matches!(device, Device::Cuda(_));
        let (precision, reason) = match (self, device) {
            (Precision::Auto, Device::Cuda(_)) => (Precision::Fp16, "auto: fp16 autocast on CUDA".to_string()),
            (Precision::Auto, _) if cpu.native_bf16() => {
                (Precision::Bf16, format!("auto: {} runs bf16 natively", cpu.describe()))
            }
            (Precision::Auto, _) => (
                Precision::Fp32,
                format!(
                    "auto: {} has no native bf16 (oneDNN would emulate it, {EMULATED_BF16_SLOWDOWN})",
                    cpu.describe()
                ),
            ),
            (other, _) => (other, format!("--precision {other}")),
        };
        let warning = (on_cpu && self == Precision::Bf16 && !cpu.native_bf16()).then(|| {
            format!(
                "--precision bf16 on {}, which has no native bf16: oneDNN emulates it, {EMULATED_BF16_SLOWDOWN}; \
                 --precision auto or fp32 is faster here",
                cpu.describe()
            )
        });
        PrecisionChoice { precision, reason, warning }
    }

    /// Says once per process which precision `device` runs at and why (and warns when an
    /// explicit bf16 will be slow): the line a user reads to know what they measured.
    pub fn announce(self, device: Device) {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            if !crate::distributed::is_primary() {
                return;
            }
            let choice = self.choose(device, CpuInfo::detect());
            let threads = match device {
                Device::Cuda(_) => String::new(),
                _ => format!("; {}", crate::hardware::compute_threads().describe()),
            };
            eprintln!("precision: {} ({}){threads}", choice.precision, choice.reason);
            if let Some(warning) = choice.warning {
                eprintln!("selfcon: warning: {warning}");
            }
        });
    }

    /// The autocast dtype, `None` for fp32.
    pub fn autocast_kind(self, device: Device) -> Option<Kind> {
        match self.resolve(device) {
            Precision::Fp16 => Some(Kind::Half),
            Precision::Bf16 => Some(Kind::BFloat16),
            _ => None,
        }
    }

    /// Turns autocast on for `device` until the returned guard is dropped (no-op for fp32).
    pub fn autocast(self, device: Device) -> Result<Option<AutocastGuard>> {
        self.autocast_kind(device)
            .map(|kind| AutocastGuard::new(device, kind).map_err(|e| Error::option("precision", e.to_string())))
            .transpose()
    }

    /// The dtype of weights and input batches: float64 for fp64, float32 otherwise.
    pub fn storage_kind(self) -> Kind {
        if self == Precision::Fp64 {
            Kind::Double
        } else {
            Kind::Float
        }
    }

    /// fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
    pub fn needs_loss_scaling(self, device: Device) -> bool {
        self.resolve(device) == Precision::Fp16
    }
}

/// What [`Precision::choose`] decided.
#[derive(Clone, Debug, PartialEq)]
pub struct PrecisionChoice {
    /// Never `Auto`.
    pub precision: Precision,
    /// "auto: AMD EPYC, avx2 has no native bf16 (...)".
    pub reason: String,
    /// Set for an explicit bf16 on a CPU that emulates it.
    pub warning: Option<String>,
}

/// Dynamic loss scaling, as `torch.cuda.amp.GradScaler()` with its defaults: the loss is multiplied
/// by `scale` before backward; gradients are unscaled before the step; a step whose gradients hold
/// inf/NaN is skipped and the scale halved; after 2000 clean steps in a row the scale doubles.
pub struct GradScaler {
    scale: Tensor,
    growth_tracker: Tensor,
    found_inf: Tensor,
}

impl GradScaler {
    pub const INIT_SCALE: f64 = 65536.0;
    pub const GROWTH_FACTOR: f64 = 2.0;
    pub const BACKOFF_FACTOR: f64 = 0.5;
    pub const GROWTH_INTERVAL: i64 = 2000;

    pub fn new(device: Device) -> Self {
        GradScaler {
            scale: Tensor::full([1], Self::INIT_SCALE, (Kind::Float, device)),
            growth_tracker: Tensor::zeros([1], (Kind::Int, device)),
            found_inf: Tensor::zeros([1], (Kind::Float, device)),
        }
    }

    /// A scaler continuing from a saved `(scale, growth tracker)` (mid-epoch resume).
    pub fn from_state(device: Device, (scale, growth_tracker): (f64, i64)) -> Self {
        let mut scaler = Self::new(device);
        let _ = scaler.scale.fill_(scale);
        let _ = scaler.growth_tracker.fill_(growth_tracker);
        scaler
    }

    /// `(scale, growth tracker)`, what [`GradScaler::from_state`] takes back.
    pub fn state(&self) -> (f64, i64) {
        (self.scale_value(), self.growth_tracker.int64_value(&[0]))
    }

    pub fn scale_value(&self) -> f64 {
        self.scale.double_value(&[0])
    }

    /// `loss · scale` (in fp32).
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        loss.to_kind(Kind::Float) * &self.scale
    }

    /// Divides the gradients by the scale in place and sets [`GradScaler::found_inf`] when any
    /// of them holds an inf/NaN (the step must be skipped), all on the device.
    pub fn unscale(&mut self, grads: &[Tensor]) -> Result<()> {
        let _ = self.found_inf.zero_();
        let inv_scale = self.scale.to_kind(Kind::Double).reciprocal().to_kind(Kind::Float);
        // The fused kernel wants one dtype per call; gradients are fp32 (parameters stay fp32).
        torch_shim::amp_unscale_(grads, &mut self.found_inf, &inv_scale)
            .map_err(|e| Error::input(format!("loss scaling: {e}")))
    }

    /// 1.0 when the last unscaled gradients overflowed, else 0.0 (one float on the device).
    pub fn found_inf(&self) -> &Tensor {
        &self.found_inf
    }

    /// Whether the last unscaled gradients were all finite (reads the device: tests, tools).
    pub fn finite(&self) -> bool {
        self.found_inf.double_value(&[0]) == 0.0
    }

    /// Backs off after a skipped step, grows after `GROWTH_INTERVAL` clean ones.
    pub fn update(&mut self) {
        let _ = self.scale.internal_amp_update_scale_(
            &self.growth_tracker,
            &self.found_inf,
            Self::GROWTH_FACTOR,
            Self::BACKOFF_FACTOR,
            Self::GROWTH_INTERVAL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaler_continues_from_its_saved_state() {
        let mut scaler = GradScaler::new(Device::Cpu);
        let grads = [Tensor::from_slice(&[f32::INFINITY])];
        scaler.unscale(&grads).unwrap();
        assert!(!scaler.finite());
        scaler.update();
        let clean = [Tensor::from_slice(&[1.0f32])];
        scaler.unscale(&clean).unwrap();
        assert!(scaler.finite());
        scaler.update();
        assert_eq!(scaler.state(), (32768.0, 1), "backed off once, one clean step since");
        let mut resumed = GradScaler::from_state(Device::Cpu, scaler.state());
        assert_eq!(resumed.state(), scaler.state());
        for s in [&mut scaler, &mut resumed] {
            s.unscale(&[Tensor::from_slice(&[1.0f32])]).unwrap();
            assert!(s.finite());
            s.update();
        }
        assert_eq!(resumed.state(), scaler.state());
    }

    #[test]
    fn names_round_trip_and_auto_resolves_per_device() {
        use crate::names::Named;
        use strum::IntoEnumIterator;
        for p in Precision::iter() {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.name());
        }
        // The official bare flag and PyTorch's spellings, in any case.
        for (alias, p) in [
            ("true", Precision::Auto),
            ("BFloat16", Precision::Bf16),
            ("half", Precision::Fp16),
            ("no", Precision::Fp32),
        ] {
            assert_eq!(alias.parse::<Precision>().unwrap(), p);
        }
        assert_eq!(
            "fp8".parse::<Precision>().unwrap_err().to_string(),
            "--precision: unknown precision 'fp8' (choose from auto, fp16, bf16, fp32, fp64)"
        );
        assert_eq!(Precision::Auto.resolve(Device::Cuda(0)), Precision::Fp16);
        assert!(Precision::Auto.needs_loss_scaling(Device::Cuda(0)));
        assert!(!Precision::Auto.needs_loss_scaling(Device::Cpu));
        assert!(Precision::Fp32.autocast(Device::Cpu).unwrap().is_none());
    }

    #[test]
    fn auto_on_cpu_is_bf16_only_where_it_is_native() {
        let flags = |extra: &[&str]| {
            let mut f: Vec<(String, String)> = ["avx2", "fma3", "avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"]
                .iter()
                .chain(extra)
                .map(|f| (f.to_string(), "True".to_string()))
                .collect();
            f.push(("cpu_name".into(), "Test CPU".into()));
            f
        };
        let native = CpuInfo::from_capabilities(flags(&["avx512_bf16"]), None);
        let emulated = CpuInfo::from_capabilities(flags(&[]), None);
        let capped = CpuInfo::from_capabilities(flags(&["avx512_bf16"]), Some("AVX2".into()));
        assert_eq!(Precision::Auto.resolve_on(Device::Cpu, &native), Precision::Bf16);
        assert_eq!(Precision::Auto.resolve_on(Device::Cpu, &emulated), Precision::Fp32);
        assert_eq!(Precision::Auto.resolve_on(Device::Cpu, &capped), Precision::Fp32);
        assert_eq!(Precision::Auto.resolve_on(Device::Cuda(0), &emulated), Precision::Fp16);
        let auto = Precision::Auto.choose(Device::Cpu, &emulated);
        assert!(auto.reason.starts_with("auto: Test CPU, avx512 has no native bf16"), "{}", auto.reason);
        assert!(auto.warning.is_none());
        // An explicit bf16 is kept, with a warning only where it is emulated.
        let explicit = Precision::Bf16.choose(Device::Cpu, &emulated);
        assert_eq!(explicit.precision, Precision::Bf16);
        assert!(explicit.warning.as_deref().is_some_and(|w| w.contains("21× slower")), "{explicit:?}");
        assert!(Precision::Bf16.choose(Device::Cpu, &native).warning.is_none());
        assert!(Precision::Bf16.choose(Device::Cuda(0), &emulated).warning.is_none());
        assert_eq!(Precision::Fp32.resolve_on(Device::Cpu, &native), Precision::Fp32);
    }

    #[test]
    fn scaler_skips_overflowing_steps_and_backs_off() {
        let mut scaler = GradScaler::new(Device::Cpu);
        let loss = Tensor::from(2.0f32);
        assert_eq!(scaler.scale(&loss).double_value(&[]), 2.0 * GradScaler::INIT_SCALE);
        let grads = [Tensor::from_slice(&[65536.0f32, -131072.0])];
        scaler.unscale(&grads).unwrap();
        assert!(scaler.finite());
        assert_eq!(Vec::<f32>::try_from(&grads[0]).unwrap(), vec![1.0, -2.0]);
        scaler.update();
        assert_eq!(scaler.scale_value(), GradScaler::INIT_SCALE);
        let bad = [Tensor::from_slice(&[f32::NAN])];
        scaler.unscale(&bad).unwrap();
        assert!(!scaler.finite());
        scaler.update();
        assert_eq!(scaler.scale_value(), GradScaler::INIT_SCALE * GradScaler::BACKOFF_FACTOR);
    }
}
