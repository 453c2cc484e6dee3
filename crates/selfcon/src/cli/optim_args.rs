//! The optimisation and output flags shared by `pretrain`, `linear` and `ce`. The defaults here are
//! `main_represent.py`'s; `linear` and `ce` replace theirs with `mut_arg` (see `cli/mod.rs`), so
//! every command keeps its official defaults.

use std::path::PathBuf;

use clap::Args;
use selfcon::distributed::DistributedOptions;
use selfcon::engine::{select_device, DeviceRequest};
use selfcon::train::OptimConfig;
use selfcon::Error;

#[derive(Args, Debug, Clone)]
pub struct OptimArgs {
    #[arg(long = "batch_size", visible_alias = "batch-size", default_value_t = 256, value_name = "N")]
    pub batch_size: usize,

    /// Data loader worker threads [default: 16 (the official), at most one per CPU this process may
    /// use (affinity, cgroup quota)].
    #[arg(long = "num_workers", visible_alias = "num-workers", value_name = "N")]
    pub num_workers: Option<usize>,

    #[arg(long, default_value_t = 1000)]
    pub epochs: usize,

    #[arg(long = "learning_rate", visible_alias = "learning-rate", default_value_t = 0.05, value_name = "LR")]
    pub learning_rate: f64,

    /// Step-decay milestones, comma-separated (used without --cosine).
    #[arg(
        long = "lr_decay_epochs",
        visible_alias = "lr-decay-epochs",
        default_value = "700,800,900",
        value_name = "LIST"
    )]
    pub lr_decay_epochs: String,

    /// Step-decay factor; also sets the cosine floor lr·rate³.
    #[arg(long = "lr_decay_rate", visible_alias = "lr-decay-rate", default_value_t = 0.1, value_name = "RATE")]
    pub lr_decay_rate: f64,

    /// SGD weight decay (on every trained parameter).
    #[arg(long = "weight_decay", visible_alias = "weight-decay", default_value_t = 1e-4, value_name = "WD")]
    pub weight_decay: f64,

    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,

    /// Cosine learning-rate schedule (set per epoch).
    #[arg(long)]
    pub cosine: bool,

    /// 10-epoch linear warm-up from 0.01 (automatic for batch sizes ≥ 1024 in pretrain and ce).
    #[arg(long)]
    pub warm: bool,

    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Log every N steps.
    #[arg(long = "print_freq", visible_alias = "print-freq", default_value_t = 10, value_name = "N")]
    pub print_freq: usize,

    /// Also write last.safetensors every N steps within an epoch (0: at the end of each epoch only).
    /// `--resume` from it continues at the next step with the same batches and learning rate and
    /// ends exactly where an uninterrupted run ends. SIGTERM/SIGINT always save before stopping.
    #[arg(long = "save_every_steps", visible_alias = "save-every-steps", default_value_t = 0, value_name = "N")]
    pub save_every_steps: usize,

    /// Also write the metrics (loss, lr, images/s, kNN and linear accuracies, peak memory) as
    /// TensorBoard event files in the run folder (`tensorboard --logdir <save_dir>`).
    #[arg(long)]
    pub tensorboard: bool,

    /// Root of the output tree.
    #[arg(long = "save_dir", visible_alias = "save-dir", default_value = "./save/representation", value_name = "DIR")]
    pub save_dir: PathBuf,

    /// Suffix of the run name (and of the results.json key).
    #[arg(long = "exp_name", visible_alias = "exp-name", default_value = "", value_name = "TEXT")]
    pub exp_name: String,

    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Mixed precision: the bare flag (official) is `auto` = fp16 autocast with dynamic loss scaling
    /// on CUDA, bf16 autocast on CPU; or name it: fp16, bf16, fp32, or fp64 (everything in float64:
    /// slow, for numerical checks). Losses stay in fp32 (fp64 with fp64).
    #[arg(long, num_args = 0..=1, default_value = "fp32", default_missing_value = "auto", value_name = "KIND")]
    pub precision: String,

    /// Channels-last (NHWC) weights and batches: cuDNN's fast convolution layout under mixed
    /// precision on GPUs (same results up to summation order).
    #[arg(long = "channels_last", visible_alias = "channels-last")]
    pub channels_last: bool,

    /// CPU: treat subnormal floats as zero in every kernel (torch.set_flush_denormal); about 10%
    /// faster CPU training once activations and updates get tiny, same losses to 4 digits here.
    #[arg(long = "flush_denormal", visible_alias = "flush-denormal")]
    pub flush_denormal: bool,

    /// Distributed pre-training (selfcon launch, torchrun, SLURM): contrast every anchor against the whole
    /// global batch (features and labels all-gathered; the update equals one process on the
    /// global batch). `--global_negatives false`: each rank's loss over its own batch only.
    #[arg(
        long = "global_negatives",
        visible_alias = "global-negatives",
        num_args = 0..=1,
        default_value = "true",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub global_negatives: bool,

    /// Distributed runs: BatchNorm statistics over the global batch (SyncBatchNorm). Off by
    /// default, as the official per-GPU BatchNorm.
    #[arg(long)]
    pub syncbn: bool,

    /// Distributed runs: the c10d backend — auto (nccl for GPU ranks when its shim is built, else
    /// gloo), gloo (host memory; CUDA tensors are staged there) or nccl (GPU ranks; needs
    /// `SELFCON_NCCL=1 ./scripts/setup.sh` before the build).
    #[arg(long = "dist_backend", visible_alias = "dist-backend", default_value = "auto", value_name = "NAME")]
    pub dist_backend: String,

    /// Distributed runs: seconds to wait for the other ranks (rendezvous, each collective) before
    /// stopping with an error that names the rank that failed (NCCL: its watchdog ends the
    /// processes and the launcher names the rank that exited first).
    #[arg(long = "dist_timeout", visible_alias = "dist-timeout", default_value_t = 300, value_name = "SECONDS")]
    pub dist_timeout: u64,

    /// Distributed runs: all-reduce gradient buckets while backward still runs (as DDP), instead of
    /// after it. Same update; faster where the backend can reduce while backward computes (NCCL on
    /// its own stream; Gloo only with idle cores: measured no gain on 2 CPU cores).
    #[arg(long = "dist_overlap", visible_alias = "dist-overlap")]
    pub dist_overlap: bool,
}

impl OptimArgs {
    pub fn to_config(&self) -> selfcon::Result<OptimConfig> {
        Ok(OptimConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            lr_decay_epochs: self.milestones()?,
            lr_decay_rate: self.lr_decay_rate,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            cosine: self.cosine,
            warm: self.warm,
            seed: self.seed,
            num_workers: self.num_workers.unwrap_or_else(|| selfcon::hardware::default_loader_workers(16)),
            save_dir: self.save_dir.clone(),
            exp_name: self.exp_name.clone(),
            precision: self.precision.parse()?,
            channels_last: self.channels_last,
            flush_denormal: self.flush_denormal,
            distributed: DistributedOptions {
                global_negatives: self.global_negatives,
                syncbn: self.syncbn,
                backend: self.dist_backend.parse()?,
                timeout_s: self.dist_timeout,
                overlap: self.dist_overlap,
            },
            step_cosine_warmup: None,
            lars_eta: None,
            save_every_steps: self.save_every_steps,
            tensorboard: self.tensorboard,
        })
    }

    /// Joins the distributed run the environment describes (if any) and picks this process's
    /// device: `--device`, or `cuda:LOCAL_RANK` for a GPU rank.
    pub fn join_run(&self, config: &OptimConfig) -> anyhow::Result<tch::Device> {
        let device = select_device(self.device.parse::<DeviceRequest>()?)?;
        if config.distributed.timeout_s == 0 {
            return Err(Error::option("dist_timeout", "must be at least 1 second").into());
        }
        match selfcon::distributed::init(&config.distributed, device)? {
            Some(d) => {
                if let (0, Some(why)) = (d.rank, &d.nccl_unavailable) {
                    eprintln!(
                        "note: --dist_backend auto: GPU ranks on Gloo, through host memory (NCCL unavailable: {why})"
                    );
                }
                Ok(d.device)
            }
            None => Ok(device),
        }
    }

    pub fn milestones(&self) -> selfcon::Result<Vec<usize>> {
        let text = &self.lr_decay_epochs;
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim().parse().map_err(|_| {
                    Error::option("lr_decay_epochs", format!("'{text}' is not a comma-separated list of epochs"))
                })
            })
            .collect()
    }
}
