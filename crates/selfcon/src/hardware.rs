//! What this machine offers the engine: the CPU's instruction-set class (does oneDNN run bf16
//! natively, or emulate it ~20× slower than fp32?) and how many CPUs this process may use. The
//! defaults that depend on the machine — `--precision auto`, libtorch's compute threads, the loader
//! workers — are chosen here, so they are right on the slowest CPU too.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use strum::{Display, IntoStaticStr};

/// What emulated bf16 costs where oneDNN has no bf16 instructions, as measured (for messages).
pub const EMULATED_BF16_SLOWDOWN: &str =
    "15–21× slower than fp32 per training step on AVX2 (bench/results/2026-12-07-demo-by-cpu.md)";

/// The instruction-set class that decides how fast the CPU kernels run, slowest first on x86.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Display, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum IsaClass {
    /// Below AVX2 (or an architecture libtorch's cpuinfo does not describe).
    Other,
    /// AVX2 + FMA, no AVX-512: most laptops and many cloud VMs. No native bf16.
    Avx2,
    /// AVX-512 (F, BW, VL, DQ) without its bf16 instructions.
    Avx512,
    /// AVX-512 with `avx512_bf16`: bf16 dot products in hardware.
    Avx512Bf16,
    /// Intel AMX tiles with bf16.
    Amx,
    /// Arm NEON (Advanced SIMD).
    Neon,
    /// Arm SVE.
    Sve,
}

impl IsaClass {
    /// Order of the x86 classes (what ONEDNN_MAX_CPU_ISA can cap), `None` for Arm.
    fn x86_rank(self) -> Option<u8> {
        match self {
            IsaClass::Other => Some(0),
            IsaClass::Avx2 => Some(1),
            IsaClass::Avx512 => Some(2),
            IsaClass::Avx512Bf16 => Some(3),
            IsaClass::Amx => Some(4),
            IsaClass::Neon | IsaClass::Sve => None,
        }
    }
}

/// The CPU as libtorch sees it: its cpuinfo flags (`at::cpu::get_cpu_capabilities`, the same
/// table `torch.backends.cpu` reads) and the oneDNN ISA cap set in the environment.
#[derive(Clone, Debug)]
pub struct CpuInfo {
    flags: BTreeMap<String, String>,
    /// `ONEDNN_MAX_CPU_ISA` (or its older name `DNNL_MAX_CPU_ISA`): oneDNN uses no instruction set
    /// above it, whatever the CPU has.
    onednn_max_isa: Option<String>,
}

impl CpuInfo {
    /// This machine's CPU, asked once per process.
    pub fn detect() -> &'static CpuInfo {
        static DETECTED: OnceLock<CpuInfo> = OnceLock::new();
        DETECTED.get_or_init(|| {
            // Without the table (an old libtorch, an exotic CPU) every flag reads false: the
            // conservative answer (class `other`, no native bf16, fp32 by default).
            let pairs = torch_shim::cpu_capabilities().unwrap_or_default();
            let cap = ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"]
                .iter()
                .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()));
            CpuInfo::from_capabilities(pairs, cap)
        })
    }

    /// A CPU described by cpuinfo's `(key, value)` pairs and an optional oneDNN ISA cap: what
    /// [`CpuInfo::detect`] builds, and what tests build to inject a capability.
    pub fn from_capabilities(
        pairs: impl IntoIterator<Item = (String, String)>,
        onednn_max_isa: Option<String>,
    ) -> CpuInfo {
        CpuInfo { flags: pairs.into_iter().collect(), onednn_max_isa }
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.get(flag).is_some_and(|v| v == "True" || v == "true" || v == "1")
    }

    /// The CPU's model name (cpuinfo's `cpu_name`), e.g. "AMD EPYC".
    pub fn model(&self) -> &str {
        self.flags.get("cpu_name").map_or("unknown CPU", String::as_str)
    }

    /// The vector ISA ATen dispatches its own kernels to ("AVX512", "AVX2", "DEFAULT", ...;
    /// `ATEN_CPU_CAPABILITY` caps it).
    pub fn aten_capability(&self) -> Option<&str> {
        self.flags.get("aten_capability").map(String::as_str)
    }

    fn is_arm(&self) -> bool {
        self.has("neon") || self.flags.get("architecture").is_some_and(|a| a.contains("arm") || a.contains("aarch64"))
    }

    /// The class of the hardware itself.
    pub fn hardware_class(&self) -> IsaClass {
        if self.is_arm() {
            return if self.has("sve") { IsaClass::Sve } else { IsaClass::Neon };
        }
        let avx512 = ["avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"].iter().all(|f| self.has(f));
        if avx512 && self.has("amx_bf16") && self.has("amx_tile") {
            IsaClass::Amx
        } else if avx512 && self.has("avx512_bf16") {
            IsaClass::Avx512Bf16
        } else if avx512 {
            IsaClass::Avx512
        } else if self.has("avx2") && self.has("fma3") {
            IsaClass::Avx2
        } else {
            IsaClass::Other
        }
    }

    /// The class oneDNN's kernels run at: the hardware's, capped by `ONEDNN_MAX_CPU_ISA`.
    pub fn isa_class(&self) -> IsaClass {
        let hardware = self.hardware_class();
        match (self.onednn_cap(), hardware.x86_rank()) {
            (Some(cap), Some(rank)) if cap.x86_rank().is_some_and(|c| c < rank) => cap,
            _ => hardware,
        }
    }

    /// The class an `ONEDNN_MAX_CPU_ISA` value allows at most (`None`: no cap, or a value oneDNN
    /// ignores). Names from oneDNN's `dnnl_cpu_isa_t` documentation.
    fn onednn_cap(&self) -> Option<IsaClass> {
        let value = self.onednn_max_isa.as_deref()?.trim().to_ascii_uppercase();
        match value.as_str() {
            "SSE41" | "AVX" => Some(IsaClass::Other),
            "AVX2" | "AVX2_VNNI" | "AVX2_VNNI_2" => Some(IsaClass::Avx2),
            "AVX512_CORE" | "AVX512_CORE_VNNI" => Some(IsaClass::Avx512),
            "AVX512_CORE_BF16" | "AVX512_CORE_FP16" | "AVX10_1_512" => Some(IsaClass::Avx512Bf16),
            _ => None,
        }
    }

    /// Whether oneDNN runs bf16 convolutions and matrix products in hardware here. Without it
    /// (AVX2-only and plain AVX-512 x86, Arm without the BF16 extension) bf16 autocast falls to
    /// emulation or reference loops ([`EMULATED_BF16_SLOWDOWN`]).
    pub fn native_bf16(&self) -> bool {
        match self.isa_class() {
            IsaClass::Avx512Bf16 | IsaClass::Amx => true,
            IsaClass::Neon | IsaClass::Sve => self.has("bf16") || self.has("sve_bf16"),
            IsaClass::Other | IsaClass::Avx2 | IsaClass::Avx512 => false,
        }
    }

    /// "AMD EPYC, avx512_bf16", or with a cap "AMD EPYC, avx2 (ONEDNN_MAX_CPU_ISA=AVX2 on an
    /// avx512_bf16 CPU)".
    pub fn describe(&self) -> String {
        let (class, hardware) = (self.isa_class(), self.hardware_class());
        let cap = match (&self.onednn_max_isa, class == hardware) {
            (Some(value), false) => format!(" (ONEDNN_MAX_CPU_ISA={value} on an {hardware} CPU)"),
            _ => String::new(),
        };
        format!("{}, {class}{cap}", self.model())
    }
}

/// How many CPUs this process may use, and what bounds them.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuBudget {
    /// Whole CPUs: at least 1.
    pub cpus: usize,
    /// The CPUs the scheduler lets this process run on (`sched_getaffinity`: taskset, SLURM, numactl).
    pub affinity: usize,
    /// The cgroup's CPU quota in CPUs (`cpu.max` of cgroup v2, `cpu.cfs_quota_us` of v1:
    /// containers, SLURM), `None` when unlimited.
    pub quota: Option<f64>,
}

impl CpuBudget {
    /// The budget of `affinity` CPUs under a quota of `quota` CPUs (rounded up: a 1.5-CPU quota
    /// keeps two threads busy three quarters of the time, as the Rust standard library counts it).
    pub fn new(affinity: usize, quota: Option<f64>) -> CpuBudget {
        let bound = quota.filter(|q| q.is_finite() && *q > 0.0).map_or(usize::MAX, |q| q.ceil() as usize);
        CpuBudget { cpus: affinity.min(bound).max(1), affinity: affinity.max(1), quota }
    }

    /// This process's budget, read once.
    pub fn detect() -> &'static CpuBudget {
        static DETECTED: OnceLock<CpuBudget> = OnceLock::new();
        DETECTED.get_or_init(|| {
            let affinity = affinity_cpus()
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
            CpuBudget::new(affinity, cgroup_quota())
        })
    }

    /// "2 CPUs (affinity 2, no cgroup quota)".
    pub fn describe(&self) -> String {
        let quota = match self.quota {
            Some(q) => format!("cgroup quota {q:.2} CPUs"),
            None => "no cgroup quota".into(),
        };
        format!("{} CPU{} (affinity {}, {quota})", self.cpus, if self.cpus == 1 { "" } else { "s" }, self.affinity)
    }
}

/// CPUs in this process's affinity mask.
fn affinity_cpus() -> Option<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it for pid 0 (us).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        usize::try_from(libc::CPU_COUNT(&set)).ok().filter(|&n| n > 0)
    }
}

/// The CPU quota of this process's cgroup, in CPUs (`None`: unlimited or unreadable).
fn cgroup_quota() -> Option<f64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2: one line "0::/path".
    if let Some(path) = membership.lines().find_map(|l| l.strip_prefix("0::")) {
        let file = format!("/sys/fs/cgroup{}/cpu.max", path.trim_end_matches('/'));
        if let Some(quota) = std::fs::read_to_string(&file).ok().and_then(|t| parse_cpu_max(&t)) {
            return Some(quota);
        }
        // A container sees its own cgroup as the root of its namespace.
        return std::fs::read_to_string("/sys/fs/cgroup/cpu.max").ok().and_then(|t| parse_cpu_max(&t));
    }
    // cgroup v1: the cpu controller's quota and period in microseconds.
    let read = |name: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/{name}")).ok();
    parse_cfs_quota(&read("cpu.cfs_quota_us")?, &read("cpu.cfs_period_us")?)
}

/// cgroup v2's `cpu.max` ("150000 100000" → 1.5; "max 100000" → unlimited).
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_whitespace();
    let (quota, period) = (fields.next()?, fields.next().unwrap_or("100000"));
    ratio(quota, period)
}

/// cgroup v1's quota and period files ("-1": unlimited).
pub fn parse_cfs_quota(quota: &str, period: &str) -> Option<f64> {
    ratio(quota.trim(), period.trim())
}

fn ratio(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.parse().ok().filter(|q: &f64| *q > 0.0)?;
    let period: f64 = period.parse().ok().filter(|p: &f64| *p > 0.0)?;
    Some(quota / period)
}

/// libtorch's compute (intra-op) threads for this process and why.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadChoice {
    pub threads: usize,
    pub reason: String,
}

impl ThreadChoice {
    /// "2 compute threads (the CPUs this process may use: ...)".
    pub fn describe(&self) -> String {
        format!("{} compute thread{} ({})", self.threads, if self.threads == 1 { "" } else { "s" }, self.reason)
    }
}

/// The compute threads `budget` allows unless the environment names a count: `OMP_NUM_THREADS`
/// (or `MKL_NUM_THREADS`) wins, as it does for PyTorch; otherwise one per CPU of the budget, not
/// one per CPU of the machine (libtorch's own default counts the host's cores, which oversubscribes
/// a container's quota).
pub fn choose_threads(budget: &CpuBudget, env: impl Fn(&str) -> Option<String>) -> ThreadChoice {
    for var in ["OMP_NUM_THREADS", "MKL_NUM_THREADS"] {
        if let Some(n) = env(var).and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n > 0) {
            return ThreadChoice { threads: n, reason: format!("{var}={n}") };
        }
    }
    ThreadChoice { threads: budget.cpus, reason: format!("the CPUs this process may use: {}", budget.describe()) }
}

static APPLIED_THREADS: OnceLock<ThreadChoice> = OnceLock::new();

/// Sets libtorch's compute threads for this process from [`CpuBudget::detect`] and the
/// environment (once; later calls return the first choice). The CLI calls it at start; a library
/// user who manages threads does not.
pub fn apply_thread_budget() -> &'static ThreadChoice {
    APPLIED_THREADS.get_or_init(|| {
        let choice = choose_threads(CpuBudget::detect(), |var| std::env::var(var).ok());
        tch::set_num_threads(i32::try_from(choice.threads).unwrap_or(i32::MAX));
        choice
    })
}

/// The compute threads in use and why: the applied budget, or libtorch's own setting.
pub fn compute_threads() -> ThreadChoice {
    APPLIED_THREADS.get().cloned().unwrap_or_else(|| ThreadChoice {
        threads: usize::try_from(tch::get_num_threads()).unwrap_or(1),
        reason: "libtorch's setting".into(),
    })
}

/// Loader workers when no `--num_workers` is given: the official default (`wanted`), at most one
/// per CPU this process may use (16 loader threads on 2 CPUs only take time from the compute).
pub fn default_loader_workers(wanted: usize) -> usize {
    wanted.min(CpuBudget::detect().cpus).max(1)
}

/// Facts for a benchmark's record: where it ran.
/// CPU time this process has used so far (user + system, every thread), in seconds: what a
/// benchmark's host work cost, whatever the wall clock says.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

pub fn machine_record() -> serde_json::Value {
    let cpu = CpuInfo::detect();
    let budget = CpuBudget::detect();
    serde_json::json!({
        "cpu_model": cpu.model(),
        "isa": cpu.isa_class().to_string(),
        "isa_hardware": cpu.hardware_class().to_string(),
        "native_bf16": cpu.native_bf16(),
        "aten_capability": cpu.aten_capability(),
        "onednn_max_isa": cpu.onednn_max_isa,
        "threads": tch::get_num_threads(),
        "cpus_available": budget.cpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn cpu(flags: &[&str], cap: Option<&str>) -> CpuInfo {
        let pairs = flags.iter().map(|f| (f.to_string(), "True".to_string())).chain([
            ("cpu_name".to_string(), "Test CPU".to_string()),
            ("architecture".to_string(), "x86_64".to_string()),
        ]);
        CpuInfo::from_capabilities(pairs, cap.map(str::to_string))
    }

    const AVX512: [&str; 4] = ["avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"];

    #[test]
    fn classes_and_native_bf16_follow_the_flags() {
        let avx2 = cpu(&["avx2", "fma3"], None);
        assert_eq!(avx2.isa_class(), IsaClass::Avx2);
        assert!(!avx2.native_bf16());
        let plain512 = cpu(&[&AVX512[..], &["avx2", "fma3"]].concat(), None);
        assert_eq!(plain512.isa_class(), IsaClass::Avx512);
        assert!(!plain512.native_bf16(), "AVX-512 without avx512_bf16 emulates bf16");
        let bf16 = cpu(&[&AVX512[..], &["avx2", "fma3", "avx512_bf16"]].concat(), None);
        assert_eq!(bf16.isa_class(), IsaClass::Avx512Bf16);
        assert!(bf16.native_bf16());
        let amx = cpu(&[&AVX512[..], &["avx2", "fma3", "avx512_bf16", "amx_bf16", "amx_tile"]].concat(), None);
        assert_eq!(amx.isa_class(), IsaClass::Amx);
        assert!(amx.native_bf16());
        assert_eq!(cpu(&[], None).isa_class(), IsaClass::Other);
        assert_eq!(amx.describe(), "Test CPU, amx");
    }

    #[test]
    fn a_onednn_cap_takes_native_bf16_away() {
        let flags = [&AVX512[..], &["avx2", "fma3", "avx512_bf16"]].concat();
        let capped = cpu(&flags, Some("AVX2"));
        assert_eq!(capped.hardware_class(), IsaClass::Avx512Bf16);
        assert_eq!(capped.isa_class(), IsaClass::Avx2);
        assert!(!capped.native_bf16());
        assert_eq!(capped.describe(), "Test CPU, avx2 (ONEDNN_MAX_CPU_ISA=AVX2 on an avx512_bf16 CPU)");
        // A cap at or above the hardware changes nothing; an unknown value is ignored, as oneDNN does.
        for cap in ["avx512_core_bf16", "AVX512_CORE_AMX", "ALL", "nonsense"] {
            assert!(cpu(&flags, Some(cap)).native_bf16(), "{cap}");
        }
    }

    #[test]
    fn arm_bf16_needs_the_extension() {
        let arm = |flags: &[&str]| {
            let pairs = flags
                .iter()
                .map(|f| (f.to_string(), "True".to_string()))
                .chain([("architecture".to_string(), "arm64".to_string())]);
            CpuInfo::from_capabilities(pairs, None)
        };
        assert_eq!(arm(&["neon"]).isa_class(), IsaClass::Neon);
        assert!(!arm(&["neon"]).native_bf16());
        assert!(arm(&["neon", "bf16"]).native_bf16());
        assert_eq!(arm(&["neon", "sve", "sve_bf16"]).isa_class(), IsaClass::Sve);
        assert!(arm(&["neon", "sve", "sve_bf16"]).native_bf16());
    }

    #[test]
    fn this_machine_is_described() {
        let here = CpuInfo::detect();
        assert_ne!(here.model(), "unknown CPU", "libtorch's cpuinfo table was not read");
        assert!(here.aten_capability().is_some());
    }

    #[test]
    fn budgets_take_the_smaller_of_affinity_and_quota() {
        assert_eq!(CpuBudget::new(8, None).cpus, 8);
        assert_eq!(CpuBudget::new(8, Some(2.0)).cpus, 2);
        assert_eq!(CpuBudget::new(8, Some(1.5)).cpus, 2);
        assert_eq!(CpuBudget::new(1, Some(4.0)).cpus, 1);
        assert_eq!(CpuBudget::new(4, Some(0.25)).cpus, 1);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cfs_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs_quota("200000\n", "100000\n"), Some(2.0));
        assert!(CpuBudget::detect().cpus >= 1);
    }

    #[test]
    fn the_environment_wins_over_the_budget() {
        let budget = CpuBudget::new(2, None);
        let none = |_: &str| None;
        assert_eq!(choose_threads(&budget, none).threads, 2);
        let omp = |var: &str| (var == "OMP_NUM_THREADS").then(|| "3".to_string());
        assert_eq!(choose_threads(&budget, omp), ThreadChoice { threads: 3, reason: "OMP_NUM_THREADS=3".into() });
        let junk = |_: &str| Some("lots".to_string());
        assert_eq!(choose_threads(&budget, junk).threads, 2);
    }
}
