//! Distributed training on CPU: every rank is a real process (started by `selfcon launch`, or by
//! the test with the torchrun variables) and the ranks talk Gloo over 127.0.0.1. Each test uses
//! its own ports, so the tests can run in parallel.
//!
//! Equivalence is checked in fp64 (`--precision fp64`): at initialisation SelfCon's gradient at
//! temperature 0.1 is so ill-conditioned that fp32 itself is only good to about 1e-2 in the early
//! layers (measured against an fp64 run: libtorch's own BatchNorm in fp32 is that far off too), so
//! an fp32 comparison could not tell a bug from rounding; in fp64 the runs agree to ~1e-12.

use crate::common;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tch::{Kind, Tensor};

const BIN: &str = env!("CARGO_BIN_EXE_selfcon");

/// 48 training and 20 test images.
fn data(dir: &Path) -> String {
    data_of(dir, 48)
}

/// `n` training and 20 test images.
fn data_of(dir: &Path, n: usize) -> String {
    let path = dir.join("data");
    std::fs::create_dir_all(&path).unwrap();
    common::tiny_fashion_mnist(&path, n, 20);
    path.display().to_string()
}

/// SelfCon pre-training of ResNet-18 with one exit on the tiny set.
fn pretrain_args(data: &str, save_dir: &Path, batch: usize, epochs: usize, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "pretrain",
        "--method",
        "SelfCon",
        "--dataset",
        "fashionmnist",
        "--data_folder",
        data,
        "--model",
        "resnet18",
        "--selfcon_pos",
        "[False,True,False]",
        "--selfcon_size",
        "fc",
        "--num_workers",
        "1",
        "--temp",
        "0.1",
        "--print_freq",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // `extra` may replace these defaults.
    for (flag, default) in [("--learning_rate", "0.05"), ("--dist_timeout", "20")] {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), default.to_string()]);
        }
    }
    args.extend(["--epochs".into(), epochs.to_string(), "--batch_size".into(), batch.to_string()]);
    args.extend(["--save_dir".into(), save_dir.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn launch(nproc: usize, port: u16, args: &[String]) -> Output {
    Command::new(BIN)
        .args(["launch", "--nproc_per_node", &nproc.to_string(), "--master_port", &port.to_string(), "--"])
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run selfcon launch")
}

fn single(args: &[String]) -> Output {
    Command::new(BIN).args(args).env("OMP_NUM_THREADS", "1").output().expect("run selfcon")
}

/// One rank started the way torchrun or SLURM scripts would.
fn spawn_rank(rank: usize, world: usize, port: u16, args: &[String]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a rank")
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "failed: {err}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The run folder under `save_dir` (one pre-training run per save_dir in these tests).
fn run_dir(save_dir: &Path) -> PathBuf {
    let models = save_dir.join("SelfCon/fashionmnist_models");
    std::fs::read_dir(&models).unwrap().next().unwrap().unwrap().path()
}

fn records(run_dir: &Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

fn step_losses(save_dir: &Path) -> Vec<f64> {
    records(&run_dir(save_dir), "step").iter().map(|v| v["loss"].as_f64().unwrap()).collect()
}

fn close(a: &[f64], b: &[f64], rel: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= rel * x.abs().max(1.0))
}

/// Largest absolute difference over every floating-point tensor (weights, BatchNorm statistics,
/// momentum buffers) of two checkpoints; integer tensors must be equal.
fn max_difference(a: &Path, b: &Path) -> (f64, String) {
    let a = Tensor::read_safetensors(a).unwrap();
    let b: HashMap<String, Tensor> = Tensor::read_safetensors(b).unwrap().into_iter().collect();
    assert_eq!(a.len(), b.len());
    let mut worst = (0.0, String::new());
    for (name, t) in a {
        let u = &b[&name];
        if t.kind() == Kind::Int64 {
            assert_eq!(t, *u, "{name}");
            continue;
        }
        let d = (&t - u).abs().max().double_value(&[]);
        if d > worst.0 {
            worst = (d, name);
        }
    }
    worst
}

/// The runs in `a` and `b` ended on the same weights (fp64: within 1e-8).
fn assert_same_weights(a: &Path, b: &Path, what: &str) {
    let (d, name) = max_difference(&run_dir(a).join("last.safetensors"), &run_dir(b).join("last.safetensors"));
    assert!(d < 1e-8, "{what}: the checkpoints differ by {d:e} at {name}");
}

/// The fast set's distributed step: two ranks (processes under `selfcon launch`, Gloo) with
/// SyncBN and global negatives take one step on 2 × 8 images, equal to one process's step on the
/// 16 (fp64): loss and weights.
#[test]
fn two_ranks_take_the_step_of_one_process_on_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_of(tmp.path(), 16);
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    ok(&single(&pretrain_args(&data, &one, 16, 1, &["--precision", "fp64"])));
    let flags = ["--precision", "fp64", "--syncbn", "--global_negatives"];
    ok(&launch(2, 29812, &pretrain_args(&data, &two, 8, 1, &flags)));
    let (a, b) = (step_losses(&one), step_losses(&two));
    assert_eq!((a.len(), b.len()), (1, 1), "one step each: {a:?} {b:?}");
    assert!(close(&a, &b, 1e-9), "losses {a:?} vs {b:?}");
    assert_same_weights(&one, &two, "after the step");
}

#[test]
#[ignore = "heavy (2 epochs, kNN and overlapped all-reduce; the fast set has one step): CI's extended set, cargo test -- --ignored"]
fn global_negatives_with_syncbn_on_two_ranks_equal_one_process_on_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let knn = ["--knn_every", "1", "--knn_k", "5"];
    ok(&single(&pretrain_args(&data, &one, 16, 2, &[&["--precision", "fp64"][..], &knn].concat())));
    let out = ok(&launch(
        2,
        29810,
        &pretrain_args(
            &data,
            &two,
            8,
            2,
            &[&["--precision", "fp64", "--syncbn", "--global_negatives"][..], &knn].concat(),
        ),
    ));
    assert_eq!(out.lines().count(), 1, "rank 0 alone prints the checkpoint: {out}");
    let (a, b) = (step_losses(&one), step_losses(&two));
    assert_eq!(a.len(), 6);
    assert!(close(&a, &b, 1e-9), "losses {a:?} vs {b:?}");
    assert_same_weights(&one, &two, "after 6 steps");
    // The kNN monitor: each rank its shard of the bank and the queries, combined — the numbers of
    // one process.
    let knn_of = |dir: &Path| -> Vec<Vec<f64>> {
        records(&run_dir(dir), "epoch")
            .iter()
            .map(|r| {
                ["knn_top1", "knn_top5", "knn_exit1_top1", "knn_exit1_top5"]
                    .iter()
                    .map(|k| r[*k].as_f64().unwrap_or_else(|| panic!("{k} missing in {r}")))
                    .collect()
            })
            .collect()
    };
    let (knn_one, knn_two) = (knn_of(&one), knn_of(&two));
    assert_eq!(knn_one.len(), 2);
    assert_eq!(knn_one, knn_two);
    assert!(knn_one.iter().flatten().all(|v| (0.0..=100.0).contains(v)), "{knn_one:?}");
    // The gradient all-reduce overlapped with backward (hooks, buckets started as they fill) gives
    // the same run.
    let overlapped = tmp.path().join("overlapped");
    let flags = ["--precision", "fp64", "--syncbn", "--dist_overlap"];
    ok(&launch(2, 29811, &pretrain_args(&data, &overlapped, 8, 2, &flags)));
    assert!(close(&a, &step_losses(&overlapped), 1e-9));
    assert_same_weights(&one, &overlapped, "overlapped");
}

#[test]
#[ignore = "heavy (three multi-process runs): CI's extended set, cargo test -- --ignored"]
fn without_global_negatives_each_rank_contrasts_its_own_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    // A learning rate of 1e-12 keeps the weights fixed, so the single process's consecutive
    // batches of 8 are the two ranks' batches of the same step.
    let lr = ["--precision", "fp64", "--learning_rate", "1e-12"];
    ok(&single(&pretrain_args(&data, &one, 8, 1, &lr)));
    let mut per_rank = lr.to_vec();
    per_rank.extend(["--global_negatives", "false"]);
    ok(&launch(2, 29820, &pretrain_args(&data, &two, 8, 1, &per_rank)));
    let (a, b) = (step_losses(&one), step_losses(&two));
    assert_eq!((a.len(), b.len()), (6, 3));
    let means: Vec<f64> = a.chunks(2).map(|p| (p[0] + p[1]) / 2.0).collect();
    assert!(close(&means, &b, 1e-8), "per-rank losses {b:?} are not the means of {a:?}");
    // With global negatives the same step has another loss: the flag does something.
    let global = tmp.path().join("global");
    ok(&launch(2, 29821, &pretrain_args(&data, &global, 8, 1, &lr)));
    let g = step_losses(&global);
    assert!((g[0] - b[0]).abs() > 1e-3, "{g:?} vs {b:?}");
}

#[test]
#[ignore = "heavy (SIGKILL of a rank and resume): CI's extended set, cargo test -- --ignored"]
fn a_killed_rank_stops_the_others_by_name_and_the_run_resumes_on_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let (dist, resumed, reference) = (tmp.path().join("dist"), tmp.path().join("resumed"), tmp.path().join("ref"));
    let flags = ["--precision", "fp64", "--syncbn"];
    let args = pretrain_args(&data, &dist, 8, 6, &flags);
    let mut ranks: Vec<Child> = (0..2).map(|r| spawn_rank(r, 2, 29830, &args)).collect();
    // Kill rank 1 once rank 0 saved its first checkpoint (mid-run, in epoch 2 or later).
    let started = Instant::now();
    let last = loop {
        if let Ok(entries) = std::fs::read_dir(dist.join("SelfCon/fashionmnist_models")) {
            if let Some(dir) = entries.flatten().next() {
                let last = dir.path().join("last.safetensors");
                if last.exists() {
                    break last;
                }
            }
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    ranks[1].kill().unwrap();
    let killed = Instant::now();
    let status = ranks[0].wait().unwrap();
    let waited = killed.elapsed();
    let err = stderr_of(&mut ranks[0]);
    let _ = ranks[1].wait();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(waited < Duration::from_secs(20), "rank 0 took {waited:?} to notice");
    // Progress lines come first (stderr is not a terminal); the error is the last line.
    let last_line = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last_line.starts_with("selfcon: error: rank 0: ") && last_line.contains("rank 1 stopped responding"),
        "{err}"
    );

    // Resume the same global batch (16) on one process from whatever rank 0 saved last.
    let epochs_done = selfcon::train::Resumed::open(&last, "pretrain").unwrap().epoch;
    let mut resume_args = pretrain_args(&data, &resumed, 16, 6, &["--precision", "fp64"]);
    resume_args.extend(["--resume".into(), last.display().to_string()]);
    ok(&single(&resume_args));
    let epochs: Vec<u64> = records(&run_dir(&resumed), "epoch").iter().map(|v| v["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, (epochs_done as u64 + 1..=6).collect::<Vec<_>>());
    // It ends exactly where an uninterrupted single-process run on batch 16 ends.
    ok(&single(&pretrain_args(&data, &reference, 16, 6, &["--precision", "fp64"])));
    assert_same_weights(&reference, &resumed, "resumed run");
}

#[test]
#[ignore = "heavy (waits for a timeout (SIGSTOP)): CI's extended set, cargo test -- --ignored"]
fn a_hanging_rank_is_named_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let save = tmp.path().join("hang");
    let args = pretrain_args(&data, &save, 8, 20, &["--dist_timeout", "4"]);
    let mut ranks: Vec<Child> = (0..2).map(|r| spawn_rank(r, 2, 29840, &args)).collect();
    let started = Instant::now();
    while !save.join("SelfCon").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SIGSTOP: the process stays, its sockets stay open, it just stops answering.
    unsafe { libc::kill(ranks[1].id() as i32, libc::SIGSTOP) };
    let stopped = Instant::now();
    let status = ranks[0].wait().unwrap();
    let waited = stopped.elapsed();
    let err = stderr_of(&mut ranks[0]);
    ranks[1].kill().unwrap();
    let _ = ranks[1].wait();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(waited < Duration::from_secs(30), "took {waited:?}");
    assert!(err.contains("rank 1 stopped responding"), "{err}");
}

#[test]
fn ranks_with_different_configurations_refuse_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let save = tmp.path().join("mismatch");
    let mut ranks: Vec<Child> = [8, 4]
        .iter()
        .enumerate()
        .map(|(r, &b)| spawn_rank(r, 2, 29850, &pretrain_args(&data, &save, b, 1, &[])))
        .collect();
    for (r, rank) in ranks.iter_mut().enumerate() {
        let status = rank.wait().unwrap();
        let err = stderr_of(rank);
        assert_eq!(status.code(), Some(2), "rank {r}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("rank 1 was started with another configuration than rank 0")
                && err.contains("batch_size: 8 vs 4"),
            "{err}"
        );
    }
}

#[test]
#[ignore = "heavy (linear and CE on two ranks): CI's extended set, cargo test -- --ignored"]
fn linear_and_ce_on_two_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let pre = tmp.path().join("pre");
    let ckpt = ok(&single(&pretrain_args(&data, &pre, 16, 1, &[])));
    let linear = |save: &Path, batch: usize| -> Vec<String> {
        [
            "linear",
            "--dataset",
            "fashionmnist",
            "--data_folder",
            &data,
            "--model",
            "resnet18",
            "--selfcon_pos",
            "[False,True,False]",
            "--selfcon_size",
            "fc",
            "--subnet",
            "--ckpt",
            &ckpt,
            "--epochs",
            "2",
            "--num_workers",
            "1",
            "--print_freq",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--batch_size".into(), batch.to_string(), "--save_dir".into(), save.display().to_string()])
        .collect()
    };
    let (one, two) = (tmp.path().join("lin1"), tmp.path().join("lin2"));
    let a: Value = serde_json::from_str(&ok(&single(&linear(&one, 16)))).unwrap();
    let out = ok(&launch(2, 29860, &linear(&two, 8)));
    assert_eq!(out.lines().count(), 1, "{out}");
    let b: Value = serde_json::from_str(&out).unwrap();
    // Same classifiers (the global batch is the same), same test accuracy over the whole test
    // set (each rank evaluated its half; the counts are summed).
    for key in ["backbone", "sub", "ensemble"] {
        // [top-1, top-5, (last training accuracy)]
        assert_eq!(a[key], b[key], "{key}: {a} vs {b}");
    }

    // SIGTERM in the last epoch's second pass (the sub-network classifier), resumed under launch:
    // the same results, the final training accuracies included (their running counts cross the
    // stop summed over the ranks).
    let stopped = tmp.path().join("lin_stopped");
    let err = launch_and_sigterm(29862, &linear(&stopped, 8), "epoch 2 step 1 ", 2);
    assert!(err.contains("selfcon: linear stopped by SIGTERM at epoch "), "{err}");
    let last =
        std::fs::read_dir(stopped.join("linear")).unwrap().next().unwrap().unwrap().path().join("last.safetensors");
    let at = selfcon::train::Resumed::open(&last, "linear").unwrap().position.expect("a mid-epoch checkpoint");
    assert!(at.epoch == 2 && at.pass == 1 && at.earlier.len() == 1, "{at:?}");
    // The running counts of both ranks: 16 images per global step.
    assert_eq!(at.counters[1], 16 * at.steps as i64, "{at:?}");
    let mut resume = linear(&stopped, 8);
    resume.extend(["--resume".into(), last.display().to_string()]);
    let c: Value = serde_json::from_str(&ok(&launch(2, 29863, &resume))).unwrap();
    assert_eq!(b, c, "resumed under launch");

    let ce = |save: &Path| -> Vec<String> {
        [
            "ce",
            "--method",
            "ce",
            "--dataset",
            "fashionmnist",
            "--data_folder",
            &data,
            "--model",
            "resnet18",
            "--epochs",
            "1",
            "--batch_size",
            "8",
            "--num_workers",
            "1",
            "--syncbn",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--save_dir".into(), save.display().to_string()])
        .collect()
    };
    let out = ok(&launch(2, 29861, &ce(&tmp.path().join("ce"))));
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn launch_and_environment_errors_are_one_line_with_exit_code_2() {
    common::assert_usage_error(&["launch", "--nnodes", "1", "--node_rank", "1", "--", "pretrain"], "--node_rank");
    common::assert_usage_error(&["launch", "--", "summary"], "launch runs pretrain, linear, ce or bench train");
    common::assert_usage_error(&["launch", "--nproc_per_node", "0", "--", "pretrain"], "--nproc_per_node");
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let args = pretrain_args(&data, tmp.path(), 8, 1, &[]);
    for (vars, want) in [
        (vec![("RANK", "x"), ("WORLD_SIZE", "2")], "RANK='x'"),
        (vec![("RANK", "0"), ("WORLD_SIZE", "2")], "MASTER_ADDR"),
        (vec![("RANK", "3"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1")], "rank 3 is not below"),
    ] {
        let o = Command::new(BIN).args(&args).envs(vars.iter().copied()).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{vars:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{vars:?}: {err}");
    }
    let o = Command::new(BIN)
        .args(&args)
        .args(["--dist_backend", "nccl"])
        .envs([("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("--dist_backend") && err.contains("nccl needs GPU ranks"), "{err}");
    // A rank that fails at once: the launcher names it and passes its exit code on.
    let bad: Vec<String> =
        args.iter().map(|a| if a == &data { "/nonexistent".to_string() } else { a.clone() }).collect();
    let o = launch(2, 29870, &bad);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.lines().last().unwrap().starts_with("selfcon: error: launch: rank ")
            && err.contains("exited with status 2"),
        "{err}"
    );
}

#[test]
fn the_launcher_passes_sigterm_on_and_names_a_busy_port() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let save = tmp.path().join("term");
    let mut launcher = Command::new(BIN)
        .args(["launch", "--nproc_per_node", "2", "--master_port", "29880", "--"])
        .args(pretrain_args(&data, &save, 8, 50, &[]))
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !save.join("SelfCon").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
    let status = launcher.wait().unwrap();
    let err = stderr_of(&mut launcher);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{err}");
    assert!(err.trim_end().ends_with("launch: stopped by signal 15, passed on to every rank"), "{err}");

    // Something else listens on the port: rank 0 says so (exit 2); the launcher stops rank 1.
    let _busy = std::net::TcpListener::bind("127.0.0.1:29881").unwrap();
    let o = Command::new(BIN)
        .args(["launch", "--nproc_per_node", "2", "--master_port", "29881", "--grace_period", "2", "--"])
        .args(pretrain_args(&data, &tmp.path().join("busy"), 8, 1, &[]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("rank 0: port 29881 is already in use on 127.0.0.1 (choose another --master_port"), "{err}");
}

/// The launcher as a library call, its ranks shell scripts: rank 0 sends SIGTERM to the launcher
/// (this test process) and is ended by the passed-on signal itself, as a rank that had not yet
/// started training is; rank 1 then "fails" (exit 1, as a collective broken by rank 0's end
/// does). That is the stop, not a failure (CI once saw this race in the real SIGTERM test).
#[test]
fn a_rank_failing_because_a_peer_was_ended_by_the_passed_on_signal_is_a_stop() {
    use selfcon::distributed::launch::{launch, LaunchConfig};
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // A rank program (the launcher only starts training commands: it gets `pretrain`, ignored).
    let rank_program = |name: &str, body: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    let config = |port: u16, program: PathBuf| LaunchConfig {
        nproc_per_node: 2,
        nnodes: 1,
        node_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        grace: Duration::from_secs(5),
        program,
        args: vec!["pretrain".into()],
    };
    let peer_ended = rank_program(
        "peer_ended.sh",
        "if [ \"$RANK\" = 0 ]; then sleep 0.5; kill -TERM $PPID; exec sleep 30; fi\n\
         trap 'exit 1' TERM; while :; do sleep 0.05; done",
    );
    let failure = launch(&config(29960, peer_ended)).unwrap_err();
    assert_eq!(failure.exit_code, 128 + libc::SIGTERM, "{}", failure.message);
    assert_eq!(failure.message, "launch: stopped by signal 15, passed on to every rank");
    // Without a rank ended by the signal itself, a rank's failure stays a failure.
    let both_fail = rank_program(
        "both_fail.sh",
        "trap 'exit 1' TERM\nif [ \"$RANK\" = 0 ]; then sleep 0.5; kill -TERM $PPID; fi\n\
         while :; do sleep 0.05; done",
    );
    let failure = launch(&config(29961, both_fail)).unwrap_err();
    assert_eq!(failure.exit_code, 1, "{}", failure.message);
    assert!(failure.message.contains("exited with status 1 (the first rank to fail)"), "{}", failure.message);
    // A failure before the signal (a usage error, say) is reported, even when a Ctrl-C during the
    // grace period then ends another rank by the signal itself.
    let failed_first = rank_program(
        "failed_first.sh",
        "if [ \"$RANK\" = 1 ]; then exit 2; fi\nsleep 0.5; kill -TERM $PPID; exec sleep 30",
    );
    let failure = launch(&config(29962, failed_first)).unwrap_err();
    assert_eq!(failure.exit_code, 2, "{}", failure.message);
    assert!(failure.message.contains("rank 1 exited with status 2 (the first rank to fail)"), "{}", failure.message);
}

#[test]
#[ignore = "heavy (two launchers as two nodes): CI's extended set, cargo test -- --ignored"]
fn two_launchers_as_two_nodes_train_like_one_node_with_two_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let (nodes, local) = (tmp.path().join("nodes"), tmp.path().join("local"));
    let flags = ["--precision", "fp64", "--syncbn"];
    let node = |rank: usize| {
        Command::new(BIN)
            .args(["launch", "--nnodes", "2", "--node_rank", &rank.to_string(), "--nproc_per_node", "1"])
            .args(["--master_addr", "127.0.0.1", "--master_port", "29890", "--"])
            .args(pretrain_args(&data, &nodes, 8, 1, &flags))
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (n0, n1) = (node(0), node(1));
    let (o0, o1) = (n0.wait_with_output().unwrap(), n1.wait_with_output().unwrap());
    let printed = ok(&o0);
    ok(&o1);
    assert!(printed.ends_with("last.safetensors"), "node 0 hosts rank 0: {printed}");
    assert!(o1.stdout.is_empty(), "node 1 runs rank 1, which prints nothing");
    ok(&launch(2, 29891, &pretrain_args(&data, &local, 8, 1, &flags)));
    let (d, name) =
        max_difference(&run_dir(&nodes).join("last.safetensors"), &run_dir(&local).join("last.safetensors"));
    assert!(d < 1e-10, "{d:e} at {name}");
}

/// Launches 2 ranks and sends SIGTERM to the launcher once the `n`-th stderr line starting with
/// `at` appeared; expects exit status 143 and returns stderr.
fn launch_and_sigterm(port: u16, args: &[String], at: &str, n: usize) -> String {
    use std::io::{BufRead, BufReader};
    let mut launcher = Command::new(BIN)
        .args(["launch", "--nproc_per_node", "2", "--master_port", &port.to_string(), "--"])
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(launcher.stderr.take().unwrap()).lines().map_while(Result::ok);
    let (mut err, mut seen) = (Vec::new(), 0);
    for line in lines.by_ref() {
        seen += usize::from(line.starts_with(at));
        err.push(line);
        if seen == n {
            break;
        }
    }
    unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
    err.extend(lines);
    let status = launcher.wait().unwrap();
    let err = err.join("\n");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{err}");
    err
}

/// SIGTERM to the launcher: every rank finishes the same step, rank 0 alone writes `last` and
/// reports, all exit 143; launching again with `--resume` ends on the uninterrupted run's weights.
#[test]
#[ignore = "heavy (SIGTERM soak under launch): CI's extended set, cargo test -- --ignored"]
fn sigterm_under_launch_stops_every_rank_after_the_same_step_and_the_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let (straight, stopped) = (tmp.path().join("straight"), tmp.path().join("stopped"));
    let flags = ["--precision", "fp64", "--syncbn", "--cosine"];
    ok(&launch(2, 29900, &pretrain_args(&data, &straight, 8, 2, &flags)));

    // Rank 0 logs every step (stderr is not a terminal): stop during epoch 1.
    let err = launch_and_sigterm(29901, &pretrain_args(&data, &stopped, 8, 2, &flags), "epoch 1 step 1 ", 1);
    let reports: Vec<&str> = err.lines().filter(|l| l.contains("stopped by SIGTERM")).collect();
    assert_eq!(reports.len(), 1, "rank 0 alone reports: {err}");
    assert!(reports[0].starts_with("selfcon: pretrain stopped by SIGTERM at epoch "), "{err}");
    assert!(!err.contains("to continue:"), "a rank does not know the launch command: {err}");
    assert!(err.trim_end().ends_with("launch: stopped by signal 15, passed on to every rank"), "{err}");
    let last = run_dir(&stopped).join("last.safetensors");
    let position = selfcon::train::Resumed::open(&last, "pretrain").unwrap().position;
    assert!(position.is_some_and(|p| p.steps < 3 && p.batches == 3), "{err}");

    let mut resume = pretrain_args(&data, &stopped, 8, 2, &flags);
    resume.extend(["--resume".into(), last.display().to_string()]);
    ok(&launch(2, 29902, &resume));
    let (d, name) = max_difference(&run_dir(&straight).join("last.safetensors"), &last);
    assert!(d == 0.0, "resumed run differs by {d:e} at {name}");
}
