//! `selfcon bench train` on CPU: it runs, reports what it measured, and refuses bad input.

use crate::common;

use common::{assert_usage_error, selfcon};

const MODEL: [&str; 6] = ["--model", "resnet18", "--selfcon_pos", "[False,True,False]", "--selfcon_size", "fc"];

#[test]
fn bench_train_reports_step_time_throughput_and_memory() {
    let args = [
        &["bench", "train", "--method", "SelfCon", "--batch_size", "4", "--steps", "2", "--warmup_steps", "1"][..],
        &["--device", "cpu", "--json", "--precision", "bf16", "--channels_last"],
        &MODEL,
    ]
    .concat();
    let o = selfcon(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["mode"], "compute");
    assert_eq!(r["precision"], "bf16");
    assert_eq!(r["steps"], 2);
    assert_eq!(r["channels_last"], true);
    let ms = r["ms_per_step"].as_f64().unwrap();
    let rate = r["images_per_s"].as_f64().unwrap();
    assert!(ms > 0.0 && (rate - 4.0 * 1000.0 / ms).abs() < 1e-6 * rate, "{r}");
    assert!(r["peak_memory_bytes"].as_i64().unwrap() > 0, "{r}");
    assert!(r["last_loss"].as_f64().unwrap().is_finite(), "{r}");
    // On the CPU queuing a step is running it: the host time is (nearly) the step time.
    let enqueue = r["host_enqueue_ms_per_step"].as_f64().unwrap();
    assert!(enqueue > 0.0 && enqueue <= ms * 1.001, "{r}");
    assert!(r["data_wait_ms_per_step"].is_null(), "compute mode has no loader: {r}");
    // Where it ran: the CPU, its ISA class and the threads.
    assert!(r["cpu_model"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
    let isa = r["isa"].as_str().unwrap();
    assert!(["other", "avx2", "avx512", "avx512_bf16", "amx", "neon", "sve"].contains(&isa), "{r}");
    assert!(r["threads"].as_i64().unwrap() >= 1 && r["native_bf16"].is_boolean(), "{r}");
}

/// The compute threads follow the CPUs the process may use: one under `taskset -c 0`, whatever
/// the machine has, and OMP_NUM_THREADS wins over the affinity.
#[test]
fn bench_train_threads_follow_the_affinity_and_the_environment() {
    let args = [
        &["bench", "train", "--method", "SelfCon", "--batch_size", "2", "--steps", "1", "--warmup_steps", "0"][..],
        &["--device", "cpu", "--json", "--precision", "fp32"],
        &MODEL,
    ]
    .concat();
    let run = |prefix: &[&str], omp: Option<&str>| {
        let mut command = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = std::process::Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_selfcon"));
                c
            }
            None => std::process::Command::new(env!("CARGO_BIN_EXE_selfcon")),
        };
        command.args(&args).env_remove("OMP_NUM_THREADS").env_remove("MKL_NUM_THREADS");
        if let Some(n) = omp {
            command.env("OMP_NUM_THREADS", n);
        }
        let o = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{stderr}");
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (r["threads"].as_i64().unwrap(), stderr)
    };
    // Rust's standard library counts affinity and cgroup quota the same way.
    let available = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let (n, stderr) = run(&[], None);
    assert_eq!(n, available, "{stderr}");
    let (n, stderr) = run(&[], Some("1"));
    assert_eq!(n, 1, "{stderr}");
    assert!(stderr.contains("1 compute thread (OMP_NUM_THREADS=1)"), "{stderr}");
    let taskset = std::path::Path::new("/usr/bin/taskset");
    if !taskset.exists() {
        eprintln!("taskset not installed: the affinity case is not run");
        return;
    }
    let (n, stderr) = run(&["/usr/bin/taskset", "-c", "0"], None);
    assert_eq!(n, 1, "{stderr}");
    assert!(stderr.contains("1 compute thread (the CPUs this process may use: 1 CPU (affinity 1"), "{stderr}");
}

#[test]
fn bench_train_end_to_end_uses_the_loader() {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 8, 2);
    let args = [
        &["bench", "train", "--method", "SupCon", "--multiview", "--batch_size", "4", "--steps", "3"][..],
        &["--warmup_steps", "0", "--end_to_end", "--dataset", "fashionmnist", "--num_workers", "1", "--json"],
        &["--data_folder", d.path().to_str().unwrap(), "--model", "resnet18"],
    ]
    .concat();
    let o = selfcon(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["mode"], "end_to_end");
    assert_eq!(r["steps"], 3, "3 steps over an 8-image set: the loader wraps into the next epoch");
    let [ms, enqueue, wait] = ["ms_per_step", "host_enqueue_ms_per_step", "data_wait_ms_per_step"]
        .map(|k| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}")));
    assert!(enqueue > 0.0 && wait >= 0.0 && enqueue + wait <= ms * 1.001, "{r}");
}

#[test]
fn bench_train_bad_input() {
    let base = [&["bench", "train", "--method", "SelfCon", "--device", "cpu"][..], &MODEL].concat();
    assert_usage_error(&[&base[..], &["--steps", "0"]].concat(), "--steps: must be at least 1");
    assert_usage_error(&[&base[..], &["--precision", "int8"]].concat(), "--precision: unknown precision 'int8'");
    assert_usage_error(&["bench", "train", "--method", "SelfCon", "--device", "cpu"], "--selfcon_pos: ");
}
