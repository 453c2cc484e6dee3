//! Linear evaluation end to end on tiny data: strict loading, backbone/sub/ensemble accuracies,
//! the official results.json entry, --val_split.

use crate::common;

use common::{assert_usage_error, selfcon};

use serde_json::Value;

#[test]
fn pretrain_then_linear_with_subnet_writes_official_results() {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 24, 12);
    let save = tempfile::tempdir().unwrap();
    let (data, out) = (d.path().to_str().unwrap(), save.path().to_str().unwrap());
    let model = ["--model", "resnet18", "--selfcon_pos", "[False,True,False]", "--selfcon_size", "fc"];
    let common_flags = [
        "--dataset",
        "fashionmnist",
        "--data_folder",
        data,
        "--save_dir",
        out,
        "--num_workers",
        "2",
        "--batch_size",
        "12",
    ];
    let o = selfcon(&[&["pretrain", "--method", "SelfCon", "--epochs", "1"][..], &common_flags, &model].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ckpt = String::from_utf8_lossy(&o.stdout).trim().to_string();

    let o = selfcon(
        &[&["linear", "--ckpt", &ckpt, "--subnet", "--epochs", "2", "--exp_name", "t"][..], &common_flags, &model]
            .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(save.path().join("results.json")).unwrap()).unwrap();
    let entry = &results[format!("{ckpt}_t")];
    assert_eq!(entry["backbone"].as_array().unwrap().len(), 3, "[top1, top5, last train acc]: {entry}");
    assert_eq!(entry["sub"].as_array().unwrap().len(), 3);
    assert_eq!(entry["ensemble"].as_array().unwrap().len(), 2);
    for v in [&entry["backbone"][0], &entry["sub"][1], &entry["ensemble"][0], &entry["final"]["backbone"][0]] {
        let x = v.as_f64().unwrap();
        assert!(
            (0.0..=100.0).contains(&x) && (x * 100.0 - (x * 100.0).round()).abs() < 1e-6,
            "{x} rounded to 2 decimals"
        );
    }
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.matches("linear epoch").count(), 2, "{stderr}");
    assert!(stderr.contains("ensemble"));

    // With a validation split the entry says how the epoch was chosen; a second key is added.
    let o = selfcon(
        &[&["linear", "--ckpt", &ckpt, "--epochs", "1", "--val_split", "0.25"][..], &common_flags, &model].concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(save.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(results.as_object().unwrap().len(), 2);
    assert_eq!(results[&ckpt]["selection"]["by"], "validation top-1");
    assert!(results[&ckpt].get("sub").is_none());

    // The checkpoint records its model: a flag that contradicts it names both values.
    let wrong = ["--model", "resnet18", "--selfcon_pos", "[False,True,False]", "--selfcon_size", "small"];
    let o = selfcon(&[&["linear", "--ckpt", &ckpt, "--epochs", "1"][..], &common_flags, &wrong].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("--selfcon_size: small contradicts the checkpoint's fc"), "{err}");

    for (extra, want) in [
        (&["--ckpt", "/nonexistent.safetensors"][..], "--ckpt: /nonexistent.safetensors does not exist"),
        (&["--ckpt", &ckpt, "--val_split", "1.5"][..], "--val_split: must be in [0, 1)"),
    ] {
        assert_usage_error(&[&["linear", "--epochs", "1"][..], extra, &common_flags, &model].concat(), want);
    }
}

#[test]
fn linear_resume_continues_where_it_stopped() {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 24, 12);
    let save = tempfile::tempdir().unwrap();
    let (data, out) = (d.path().to_str().unwrap(), save.path().to_str().unwrap());
    let model = ["--model", "resnet18", "--selfcon_pos", "[False,True,False]", "--selfcon_size", "fc"];
    let flags = ["--dataset", "fashionmnist", "--data_folder", data, "--num_workers", "2", "--batch_size", "12"];
    let o = selfcon(
        &[&["pretrain", "--method", "SelfCon", "--epochs", "1", "--save_dir", out][..], &flags, &model].concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ckpt = String::from_utf8_lossy(&o.stdout).trim().to_string();

    let run = |save_dir: &str, extra: &[&str]| {
        let o = selfcon(
            &[&["linear", "--ckpt", &ckpt, "--subnet", "--save_dir", save_dir][..], extra, &flags, &model].concat(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = run(straight_dir.path().to_str().unwrap(), &["--epochs", "2"]);

    let split_dir = tempfile::tempdir().unwrap();
    let split = split_dir.path().to_str().unwrap();
    run(split, &["--epochs", "1", "--exp_name", "first"]);
    let last = std::fs::read_dir(split_dir.path().join("linear"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("last.safetensors");
    assert!(last.is_file());
    let again = [&["linear", "--ckpt", &ckpt, "--subnet", "--save_dir", split, "--epochs", "2"][..], &flags, &model];
    let o = selfcon(&[&again[..], &[&["--exp_name", "first"][..]]].concat().concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(2) && err.contains("already exists") && err.contains("--resume auto"), "{err}");
    let resumed = run(split, &["--epochs", "2", "--exp_name", "first", "--resume", "auto"]);
    assert_eq!(straight, resumed, "resumed linear evaluation reproduces the uninterrupted one");

    let o = selfcon(
        &[&["linear", "--ckpt", &ckpt, "--save_dir", split, "--epochs", "2", "--resume", &ckpt][..], &flags, &model]
            .concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is a pretrain checkpoint, not a selfcon linear checkpoint"), "{err}");
}
