//! `selfcon bench train`: ms/step, images/s and peak memory of pre-training steps.

use clap::Args;
use selfcon::names::Named;
use serde_json::json;

use selfcon::train::{measure_pretrain_steps, BatchSource};

use super::pretrain::PretrainArgs;

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,

    /// Untimed steps first (cuDNN autotuning, allocator warm-up).
    #[arg(long = "warmup_steps", visible_alias = "warmup-steps", default_value_t = 5)]
    pub warmup_steps: usize,

    /// Feed the steps from the real data loader instead of one synthetic batch on the device.
    #[arg(long = "end_to_end", visible_alias = "end-to-end")]
    pub end_to_end: bool,

    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub pretrain: PretrainArgs,
}

pub fn run(a: TrainBenchArgs) -> anyhow::Result<()> {
    let p = &a.pretrain;
    let config = p.to_config()?;
    // Under `selfcon launch` (or torchrun) each rank measures its steps, gradient all-reduce included.
    let device = p.optim.join_run(&config.optim)?;
    let data = if a.end_to_end { Some(p.data.open(&p.dataset)?.0) } else { None };
    let source = match &data {
        Some(d) => BatchSource::Loader(d),
        None => BatchSource::Synthetic,
    };
    let t = measure_pretrain_steps(&config, device, source, a.warmup_steps, a.steps)?;
    if !selfcon::distributed::is_primary() {
        return Ok(());
    }
    let mode = if a.end_to_end { "end_to_end" } else { "compute" };
    let precision = config.optim.precision.resolve(device);
    if a.json {
        let mut record = json!({
                "bench": "train", "mode": mode, "device": format!("{device:?}"), "method": config.method.name(),
                "model": config.model.architecture.to_string(), "dataset": p.dataset, "selfcon_pos": config.model.exits.to_string(),
                "selfcon_size": config.model.sub_size.to_string(), "multiview": config.multiview,
                "batch_size": t.batch_size, "precision": precision.name(), "channels_last": config.optim.channels_last,
                "num_workers": config.optim.num_workers, "steps": t.steps, "seconds": t.seconds,
                "ms_per_step": t.ms_per_step, "images_per_s": t.images_per_s,
                "peak_memory_bytes": t.peak_memory_bytes, "peak_memory_kind": t.peak_memory_kind, "last_loss": t.last_loss,
                "world_size": t.world_size, "gradient_sync_ms_per_step": t.gradient_sync_ms_per_step,
                "dist_backend": t.dist_backend, "host_enqueue_ms_per_step": t.host_enqueue_ms_per_step,
                "data_wait_ms_per_step": t.data_wait_ms_per_step,
        });
        super::bench::add_machine(&mut record);
        println!("{record}");
    } else {
        let memory = t
            .peak_memory_bytes
            .map(|b| format!("{:.2} GiB ({})", b as f64 / (1u64 << 30) as f64, t.peak_memory_kind))
            .unwrap_or_else(|| "n/a".into());
        let ranks = match t.gradient_sync_ms_per_step {
            Some(sync) => format!(
                " · {} ranks ({}), gradient all-reduce {sync:.1} ms/step (host)",
                t.world_size,
                t.dist_backend.as_deref().unwrap_or("?")
            ),
            None => String::new(),
        };
        let wait = t.data_wait_ms_per_step.map(|w| format!(", waiting for data {w:.1}")).unwrap_or_default();
        println!(
            "train {mode} · {} {} bsz {} · {precision}{} · {device:?}: {:.1} ms/step (host: queuing {:.1}{wait}), {:.0} images/s, peak memory {memory}{ranks} · {}",
            config.method,
            config.model.architecture,
            t.batch_size,
            if config.optim.channels_last { " channels-last" } else { "" },
            t.ms_per_step,
            t.host_enqueue_ms_per_step,
            t.images_per_s,
            super::bench::machine_line()
        );
    }
    Ok(())
}
