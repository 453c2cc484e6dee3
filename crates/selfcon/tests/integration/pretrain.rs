//! Pre-training end to end on CPU with tiny data: every method variant, checkpoints, exact resume,
//! logs, and the errors a user can cause.

use crate::common;

use common::{assert_usage_error, selfcon};

use std::path::{Path, PathBuf};

use selfcon::checkpoint;
use selfcon::data::{open_dataset, DatasetKind};
use selfcon::loss::Method;
use selfcon::model::{ExitPositions, ModelConfig, SubNetworkSize};
use selfcon::train::{pretrain, OptimConfig, Precision, PretrainConfig, Quiet, Start};
use tch::Device;

fn config(
    save_dir: &Path,
    method: Method,
    exits: [bool; 3],
    multiview: bool,
    label: bool,
    alpha: f64,
) -> PretrainConfig {
    let mut model = ModelConfig::readme(DatasetKind::FashionMnist);
    model.exits = ExitPositions::new(exits.to_vec());
    model.sub_size = SubNetworkSize::Fc;
    PretrainConfig {
        model,
        method,
        multiview,
        label,
        alpha,
        temp: 0.1,
        optim: OptimConfig {
            epochs: 2,
            batch_size: 12,
            learning_rate: 0.05,
            lr_decay_epochs: vec![700, 800, 900],
            lr_decay_rate: 0.1,
            weight_decay: 1e-4,
            momentum: 0.9,
            cosine: true,
            warm: false,
            seed: 3,
            num_workers: 2,
            save_dir: save_dir.to_path_buf(),
            exp_name: "test".into(),
            precision: Precision::Fp32,
            channels_last: false,
            flush_denormal: false,
            distributed: Default::default(),
            step_cosine_warmup: None,
            lars_eta: None,
            save_every_steps: 0,
            tensorboard: false,
        },
        weakaug: false,
        randaug: false,
        full_decode: false,
        min_crop_scale: 0.2,
        print_freq: 1,
        save_freq: 1,
        dataset_name: "fashionmnist".into(),
        image_size: 32,
        knn: Default::default(),
    }
}

fn data(n: usize) -> (tempfile::TempDir, selfcon::data::OpenedDataset) {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(dir.path(), n, 8);
    let data = open_dataset(DatasetKind::FashionMnist, Some(dir.path())).unwrap();
    (dir, data)
}

#[test]
fn selfcon_run_writes_the_official_tree_and_resumes_exactly() {
    let (_d, data) = data(24);
    let save = tempfile::tempdir().unwrap();
    let c = config(save.path(), Method::SelfCon, [false, true, false], false, true, 0.0);
    let full = pretrain(&c, &data, Device::Cpu, &Start::Fresh, &mut Quiet).unwrap();
    assert_eq!(
        full.run_dir,
        save.path().join("SelfCon/fashionmnist_models/SelfCon_fashionmnist_resnet18_lr_0.05_multiview_False_label_True_decay_0.0001_bsz_12_temp_0.1_seed_3_cosine_test")
    );
    for f in [
        "last.safetensors",
        "ckpt_epoch_1.safetensors",
        "ckpt_epoch_2.safetensors",
        "config.json",
        "metrics.jsonl",
        "metrics.csv",
    ] {
        assert!(full.run_dir.join(f).is_file(), "{f}");
    }
    assert!(full.epoch_losses.iter().all(|l| l.is_finite()));
    let jsonl = std::fs::read_to_string(full.run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        jsonl.lines().filter(|l| l.contains("\"kind\":\"step\"")).count(),
        4,
        "2 steps × 2 epochs at print_freq 1"
    );
    let csv = std::fs::read_to_string(full.run_dir.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("kind,stage,epoch,step,loss,lr,images_per_s\n"));

    // The checkpoint holds the official keys and the optimizer state.
    let ckpt = checkpoint::load(&full.last_checkpoint).unwrap();
    assert!(ckpt.tensors.contains_key("encoder.selfcon_layer.1.weight"));
    assert!(ckpt.tensors.contains_key("encoder.layer2.0.shortcut.1.num_batches_tracked"));
    assert!(ckpt.tensors.contains_key("optimizer.momentum_buffer.head.2.bias"));
    assert_eq!(ckpt.metadata["epoch"], "2");
    let final_weights = ckpt.tensors["encoder.layer4.1.conv2.weight"].shallow_clone();

    // Interrupted after epoch 1, resumed from its checkpoint: the same epoch-2 loss and weights.
    let save2 = tempfile::tempdir().unwrap();
    let c2 = {
        let mut c2 = c.clone();
        c2.optim.save_dir = save2.path().to_path_buf();
        c2
    };
    let resumed = pretrain(
        &c2,
        &data,
        Device::Cpu,
        &Start::Resume(PathBuf::from(&full.run_dir.join("ckpt_epoch_1.safetensors"))),
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(resumed.epochs_run, 1);
    assert_eq!(resumed.epoch_losses[0], full.epoch_losses[1], "resume reproduces the uninterrupted loss");
    let again = checkpoint::load(&resumed.last_checkpoint).unwrap();
    assert!(again.tensors["encoder.layer4.1.conv2.weight"].equal(&final_weights));
}

#[test]
fn every_method_variant_trains() {
    let (_d, data) = data(12);
    let save = tempfile::tempdir().unwrap();
    let variants = [
        ("SupCon", Method::SupCon, [false, false, false], true, true, 0.0),
        ("SupCon-S", Method::SupCon, [false, false, false], false, true, 0.0),
        ("SimCLR", Method::Con, [false, false, false], true, true, 0.0),
        ("SelfCon-SU", Method::SelfCon, [false, true, false], false, false, 0.0),
        ("SelfCon-M", Method::SelfCon, [true, false, true], true, true, 0.0),
        ("SelfCon-MU", Method::SelfCon, [false, true, false], true, false, 0.0),
        ("SelfCon-S*", Method::SelfCon, [false, true, false], false, true, 0.5),
        ("SelfCon-M*", Method::SelfCon, [false, true, false], true, false, 0.5),
    ];
    for (name, method, exits, multiview, label, alpha) in variants {
        let mut c = config(save.path(), method, exits, multiview, label, alpha);
        c.optim.epochs = 1;
        c.optim.exp_name = name.into();
        let r = pretrain(&c, &data, Device::Cpu, &Start::Fresh, &mut Quiet).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(r.epoch_losses[0].is_finite(), "{name}");
    }
}

#[test]
fn resume_errors() {
    let (_d, data) = data(12);
    let save = tempfile::tempdir().unwrap();
    let mut c = config(save.path(), Method::SelfCon, [false, true, false], false, true, 0.0);
    c.optim.epochs = 1;
    let missing = save.path().join("nope.safetensors");
    let e =
        pretrain(&c, &data, Device::Cpu, &Start::Resume(PathBuf::from(&missing)), &mut Quiet).unwrap_err().to_string();
    assert!(e.starts_with("--resume: ") && e.contains("does not exist"), "{e}");
    let junk = save.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let e = pretrain(&c, &data, Device::Cpu, &Start::Resume(PathBuf::from(&junk)), &mut Quiet).unwrap_err().to_string();
    assert!(e.contains("junk.safetensors: not a selfcon checkpoint"), "{e}");
    let done = pretrain(&c, &data, Device::Cpu, &Start::Fresh, &mut Quiet).unwrap();
    let mut other = c.clone();
    other.model.sub_size = SubNetworkSize::Small;
    let e = pretrain(&other, &data, Device::Cpu, &Start::Resume(PathBuf::from(&done.last_checkpoint)), &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("was trained with another model"), "{e}");
    // Now that the run folder holds a checkpoint, another one cannot replace it.
    let e = pretrain(&c, &data, Device::Cpu, &Start::Resume(PathBuf::from(&junk)), &mut Quiet).unwrap_err().to_string();
    assert!(e.contains("this run's checkpoint already exists"), "{e}");
    // A finished run resumed with the same --epochs: nothing to do is an error, not a silent no-op
    // that names a checkpoint it never wrote.
    let e = pretrain(&c, &data, Device::Cpu, &Start::Resume(PathBuf::from(&done.last_checkpoint)), &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already covers all 1 epochs"), "{e}");
}

#[test]
fn diverging_loss_stops_with_epoch_and_step() {
    let (_d, data) = data(24);
    let save = tempfile::tempdir().unwrap();
    let mut c = config(save.path(), Method::SelfCon, [false, true, false], false, true, 0.0);
    c.optim.learning_rate = 1e30;
    c.optim.cosine = false;
    let e = pretrain(&c, &data, Device::Cpu, &Start::Fresh, &mut Quiet).unwrap_err().to_string();
    assert!(e.starts_with("pretrain loss is") && e.contains("at epoch 1, step 2"), "{e}");
}

#[test]
fn cli_pretrain_and_its_errors() {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 12, 4);
    let save = tempfile::tempdir().unwrap();
    let (data, out) = (d.path().to_str().unwrap(), save.path().to_str().unwrap());
    let base = [
        "pretrain",
        "--dataset",
        "fashionmnist",
        "--data_folder",
        data,
        "--save_dir",
        out,
        "--model",
        "resnet18",
        "--epochs",
        "1",
        "--batch_size",
        "12",
        "--num_workers",
        "1",
    ];
    let run = |extra: &[&str]| selfcon(&[&base[..], extra].concat());
    let o = run(&[
        "--method",
        "SelfCon",
        "--selfcon_pos",
        "[False,True,False]",
        "--selfcon_size",
        "fc",
        "--temp",
        "0.1",
        "--cosine",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let last = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(last.ends_with("SelfCon_fashionmnist_resnet18_lr_0.05_multiview_False_label_True_decay_0.0001_bsz_12_temp_0.1_seed_0_cosine/last.safetensors"), "{last}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("epoch 1: loss"));

    let cases: [(&[&str], &str); 7] = [
        (&["--method", "BYOL"], "--method: unknown method 'BYOL'"),
        (&["--method", "Con"], "--multiview: --method Con without labels needs --multiview"),
        (&["--method", "SelfCon"], "--selfcon_pos: --method SelfCon needs at least one sub-network exit"),
        (
            &["--method", "SupCon", "--resume", "/nonexistent/last.safetensors"],
            "--resume: /nonexistent/last.safetensors does not exist",
        ),
        (&["--method", "SupCon", "--lr_decay_epochs", "7,x"], "--lr_decay_epochs: '7,x' is not a comma-separated list"),
        (&["--method", "SupCon", "--precision", "fp8"], "--precision: unknown precision 'fp8'"),
        (
            &["--method", "SupCon", "--min_crop_scale", "0"],
            "--min_crop_scale: must be an area fraction in (0, 1], got 0",
        ),
    ];
    for (extra, want) in cases {
        assert_usage_error(&[&base[..], extra].concat(), want);
    }

    // An unwritable save dir (a file where the folder should be).
    let blocker = save.path().join("blocker");
    std::fs::write(&blocker, "x").unwrap();
    let o = selfcon(
        &[
            &base[..5],
            &[
                "--save_dir",
                blocker.to_str().unwrap(),
                "--model",
                "resnet18",
                "--epochs",
                "1",
                "--batch_size",
                "12",
                "--method",
                "SupCon",
                "--multiview",
            ],
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot create the run folder"), "{err}");
}

#[test]
fn mixed_precision_trains_on_cpu() {
    // 12 images, batch 12: each epoch is one step, so epoch 1's loss is the forward pass at the
    // same initial weights on the same batch; epoch 2 follows a (scaled, for fp16) update. 8×8
    // crops: without native bf16/fp16 (AVX2 CPUs) these run in reference loops, ~20× fp32's time.
    let (_d, data) = data(12);
    let mut losses = Vec::new();
    for precision in [Precision::Fp32, Precision::Bf16, Precision::Fp16] {
        let save = tempfile::tempdir().unwrap();
        let mut c = config(save.path(), Method::SelfCon, [false, true, false], false, true, 0.0);
        c.optim.epochs = 2;
        c.optim.precision = precision;
        c.image_size = 8;
        let r =
            pretrain(&c, &data, Device::Cpu, &Start::Fresh, &mut Quiet).unwrap_or_else(|e| panic!("{precision}: {e}"));
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(r.run_dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["optim"]["precision"], precision.to_string());
        assert!(r.epoch_losses[1].is_finite(), "{precision}: {:?}", r.epoch_losses);
        losses.push(r.epoch_losses[0]);
    }
    for (loss, precision) in losses[1..].iter().zip(["bf16", "fp16"]) {
        assert!(
            // At initialisation all projections are nearly parallel and the temperature is 0.1,
            // so the loss magnifies bf16/fp16 rounding of the features: a few percent apart.
            loss.is_finite() && (loss - losses[0]).abs() < 0.1 * losses[0],
            "{precision} {loss} vs fp32 {}",
            losses[0]
        );
        assert_ne!(*loss, losses[0], "{precision} must actually run in low precision");
    }
}

/// A full disk while a checkpoint is written: one-line error, exit 2, the previous checkpoint
/// intact and no partial file left. The full disk is simulated with a file-size limit
/// (RLIMIT_FSIZE, writes fail with EFBIG), which needs no root and no special file system.
#[test]
fn disk_full_while_saving_keeps_the_last_good_checkpoint() {
    use std::os::unix::process::CommandExt;
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 12, 4);
    let save = tempfile::tempdir().unwrap();
    let args = |epochs: &'static str| {
        vec![
            "pretrain".to_string(),
            "--method".into(),
            "SupCon".into(),
            "--dataset".into(),
            "fashionmnist".into(),
            "--data_folder".into(),
            d.path().display().to_string(),
            "--save_dir".into(),
            save.path().display().to_string(),
            "--model".into(),
            "resnet18".into(),
            "--batch_size".into(),
            "12".into(),
            "--num_workers".into(),
            "1".into(),
            "--epochs".into(),
            epochs.into(),
        ]
    };
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_selfcon")).args(args("1")).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let last = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let before = std::fs::read(&last).unwrap();

    let mut resume = std::process::Command::new(env!("CARGO_BIN_EXE_selfcon"));
    resume.args(args("2")).args(["--resume", last.to_str().unwrap()]);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        resume.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit { rlim_cur: 1 << 20, rlim_max: 1 << 20 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = resume.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let message = err.lines().last().unwrap();
    assert!(message.starts_with("selfcon: error: ") && message.contains("cannot write checkpoint"), "{err}");
    assert_eq!(std::fs::read(&last).unwrap(), before, "the epoch-1 checkpoint is untouched");
    let leftovers: Vec<_> = std::fs::read_dir(last.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["last.safetensors", "config.json", "metrics.jsonl", "metrics.csv", selfcon::train::LOCK_FILE]
                .contains(&n.as_str())
        })
        .collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");
}

#[test]
fn channels_last_gives_the_same_training() {
    let (_d, data) = data(12);
    let mut losses = Vec::new();
    for channels_last in [false, true] {
        let save = tempfile::tempdir().unwrap();
        let mut c = config(save.path(), Method::SelfCon, [false, true, false], false, true, 0.0);
        c.optim.epochs = 2;
        c.optim.channels_last = channels_last;
        losses.push(pretrain(&c, &data, Device::Cpu, &Start::Fresh, &mut Quiet).unwrap().epoch_losses);
    }
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        // Same computation in another summation order: equal up to float rounding, which the
        // low temperature and the SGD step amplify a little by epoch 2.
        assert!((a - b).abs() < 1e-3 * a.abs(), "NCHW {:?} vs channels-last {:?}", losses[0], losses[1]);
    }
}

#[test]
fn the_crop_scale_reaches_the_augmentation_and_old_configs_read_the_official_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), Method::SelfCon, [false, true, false], false, true, 0.0);
    c.min_crop_scale = 0.6;
    match c.input_transform() {
        selfcon::data::Transform::Train { transform, views } => {
            assert_eq!((transform.scale, views), ((0.6, 1.0), 1));
        }
        other => panic!("a pre-training transform, got {other:?}"),
    }
    // A config.json written before the field existed reads as the official RandomResizedCrop.
    let mut json = serde_json::to_value(&c).unwrap();
    json.as_object_mut().unwrap().remove("min_crop_scale").unwrap();
    let old: PretrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old.min_crop_scale, 0.2);
}

#[test]
#[ignore = "heavy (several CLI runs with the kNN monitor): CI's extended set, cargo test -- --ignored"]
fn the_knn_monitor_logs_backbone_and_exit_accuracies() {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 24, 4);
    let save = tempfile::tempdir().unwrap();
    let (data, out) = (d.path().to_str().unwrap(), save.path().to_str().unwrap());
    let base = [
        "pretrain",
        "--dataset",
        "fashionmnist",
        "--data_folder",
        data,
        "--save_dir",
        out,
        "--model",
        "resnet18",
        "--method",
        "SelfCon",
        "--selfcon_pos",
        "[False,True,False]",
        "--selfcon_size",
        "fc",
        "--batch_size",
        "9",
        "--num_workers",
        "1",
    ];
    // 24 training images: 6 held out as the queries, the bank (and the training set) is the other 18.
    let knn = [
        "--epochs",
        "3",
        "--knn_every",
        "2",
        "--knn_k",
        "5",
        "--knn_t",
        "0.07",
        "--val_split",
        "0.25",
        "--print_freq",
        "1",
    ];
    let o = selfcon(&[&base[..], &knn].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let knn_lines = err.lines().filter(|l| l.contains("kNN ")).count();
    assert_eq!(knn_lines, 2, "epochs 2 and 3 (the last) report kNN: {err}");
    assert!(err.contains("(exit 1: "), "{err}");
    let last = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let run_dir = last.parent().unwrap();
    let epochs: Vec<serde_json::Value> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "epoch")
        .collect();
    assert_eq!(epochs.len(), 3);
    assert!(epochs[0].get("knn_top1").is_none());
    for r in &epochs[1..] {
        for key in ["knn_top1", "knn_top5", "knn_exit1_top1", "knn_exit1_top5", "knn_seconds"] {
            let v = r[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {r}"));
            assert!((0.0..=100.0).contains(&v), "{key} = {v}");
        }
        // 6 queries: accuracies are multiples of 1/6; top-5 of 10 classes ≥ top-1.
        let (top1, top5) = (r["knn_top1"].as_f64().unwrap(), r["knn_top5"].as_f64().unwrap());
        assert!(top5 >= top1 && ((top1 * 6.0 / 100.0) - (top1 * 6.0 / 100.0).round()).abs() < 1e-9, "{r}");
    }
    let csv = std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with("knn_top1,knn_top5,knn_exit1_top1,knn_exit1_top5"), "{csv}");
    // The held-out images are not trained on: 18 images, batch 9, two steps per epoch.
    let steps = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap().matches("\"kind\":\"step\"").count();
    assert_eq!(steps, 6, "3 epochs × 2 steps");

    let cases: [(&[&str], &str); 4] = [
        (&["--knn_every", "1", "--knn_k", "0"], "--knn_k: must be at least 1"),
        (&["--knn_every", "1", "--knn_t", "0"], "--knn_t: must be a positive number"),
        (&["--val_split", "0.2"], "--val_split: holds images out for the kNN monitor: give --knn_every too"),
        (&["--knn_every", "1", "--val_split", "1"], "--val_split: must be in [0, 1)"),
    ];
    for (extra, want) in cases {
        assert_usage_error(&[&base[..], &["--epochs", "1"], extra].concat(), want);
    }
}
