//! The `selfcon` binary as a user runs it.

use crate::common;

use std::process::Output;

use common::{assert_usage_error, selfcon};
use serde_json::Value;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn golden_entry(model: &str, dataset: &str, pos: &[bool], size: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden/param_counts.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["model"] == model
                && m["dataset"] == dataset
                && m["selfcon_pos"] == serde_json::json!(pos)
                && m["selfcon_size"] == size
        })
        .cloned()
        .expect("entry in param_counts.json")
}

#[test]
fn summary_json_matches_the_official_counts() {
    let o = selfcon(&[
        "summary",
        "--model",
        "resnet18",
        "--dataset",
        "cifar100",
        "--selfcon_pos",
        "[False,True,False]",
        "--selfcon_size",
        "fc",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let want = golden_entry("resnet18", "cifar100", &[false, true, false], "fc");
    for key in [
        "backbone_params",
        "subnetwork_params",
        "head_params",
        "sub_heads_params",
        "total_params",
        "bn_buffers_total",
        "linear_classifier_params",
        "encoder_out_dims",
        "head_out_dims",
    ] {
        assert_eq!(ours[key], want[key], "{key}");
    }
}

#[test]
fn summary_table_and_kebab_aliases() {
    let o = selfcon(&[
        "summary",
        "--model",
        "resnet50",
        "--dataset",
        "cifar10",
        "--selfcon-pos",
        "[False,True,False]",
        "--selfcon-size",
        "small",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let want = golden_entry("resnet50", "cifar10", &[false, true, false], "small");
    let total = want["total_params"].as_i64().unwrap();
    let with_commas = total
        .to_string()
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(",");
    assert!(text.contains(&with_commas), "total {with_commas} not in:\n{text}");
    assert!(text.contains("exit after layer2"), "{text}");
    assert!(text.contains("[2, 2048]"), "{text}");
}

#[test]
fn official_defaults_are_resnet50_on_cifar10_without_exits() {
    let o = selfcon(&["summary", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ours["model"], "resnet50");
    assert_eq!(ours["dataset"], "cifar10");
    assert_eq!(ours["selfcon_pos"], serde_json::json!([false, false, false]));
    assert_eq!(
        ours["total_params"],
        golden_entry("resnet50", "cifar10", &[false, false, false], "same")["total_params"]
    );
}

#[test]
fn bad_flags_give_one_line_and_exit_code_2() {
    let cases: [(&[&str], &str); 7] = [
        (&["summary", "--model", "resnet19"], "--model: unknown model 'resnet19'"),
        (&["summary", "--model", "vgg16_bn", "--selfcon_pos", "[True]"], "--selfcon_pos: vgg16_bn takes 4 booleans"),
        (&["summary", "--selfcon_pos", "[False,True]"], "--selfcon_pos: resnet50 takes 3 booleans"),
        (&["summary", "--selfcon_pos", "[False,Yes,False]"], "--selfcon_pos: 'Yes'"),
        (&["summary", "--selfcon_arch", "vgg"], "--selfcon_arch: resnet50 supports only 'resnet'"),
        (&["summary", "--dataset", "svhn"], "--dataset: unknown dataset 'svhn'"),
        (&["summary", "--feat_dim", "many"], "invalid value 'many'"),
    ];
    for (args, want) in cases {
        assert_usage_error(args, want);
    }
}

#[test]
fn help_documents_every_flag() {
    let o = selfcon(&["summary", "--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--model",
        "--dataset",
        "--selfcon_pos",
        "--selfcon-pos",
        "--selfcon_arch",
        "--selfcon_size",
        "--feat_dim",
        "--json",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
    // The reference's flag table (docs/command-line.md) and --help agree on every flag and default.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/command-line.md")).unwrap();
    let help = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let rows: Vec<(&str, &str)> = doc
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            (cells.len() > 3 && cells[1].starts_with("--") && !cells[1].starts_with("---"))
                .then(|| (cells[1], cells[2]))
        })
        .collect();
    assert!(rows.len() >= 6, "docs/command-line.md lost its flag table: {rows:?}");
    for (flag, default) in rows {
        assert!(help.contains(&format!("{flag} ")), "docs/command-line.md names {flag}, --help does not:\n{help}");
        assert!(help.contains(&format!("[default: {default}")), "{flag}: docs say default {default}, --help:\n{help}");
    }
}

#[test]
fn bench_loader_runs_and_reports_json() {
    let o = selfcon(&["bench", "loader", "--batch_size", "32", "--batches", "3", "--num_workers", "2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["batches"], 3);
    assert_eq!(v["images"], 96);
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0);
    // The host's CPU per image (every thread): positive, and at most the wall time of all cores.
    let (cpu, seconds) = (v["cpu_seconds"].as_f64().unwrap(), v["seconds"].as_f64().unwrap());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!(cpu > 0.0 && cpu <= seconds * cores * 1.05 + 0.05, "{v}");
    assert!((v["cpu_ms_per_image"].as_f64().unwrap() - 1000.0 * cpu / 96.0).abs() < 1e-9, "{v}");
    assert_eq!(v["batch_format"], "f32");
    let o = selfcon(&["bench", "loader", "--batches", "2", "--batch-format", "u8", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["batch_format"].as_str(), v["images"].as_u64()), (Some("u8"), Some(512)));
}

#[test]
fn data_flag_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["bench", "loader", "--dataset", "cifar10", "--data_folder", dir], "no CIFAR data"),
        (
            &["bench", "loader", "--dataset", "folder", "--data_folder", dir, "--std", "(1,1,1)", "--size", "8"],
            "--mean: --dataset folder needs it",
        ),
        (
            &[
                "bench",
                "loader",
                "--dataset",
                "folder",
                "--data_folder",
                dir,
                "--mean",
                "(0.5,0.5)",
                "--std",
                "(1,1,1)",
                "--size",
                "8",
            ],
            "--mean: '(0.5,0.5)' is not three numbers",
        ),
        (&["bench", "loader", "--dataset", "cifar10", "--size", "8"], "--size: only used with --dataset folder"),
        (&["bench", "loader", "--dataset", "svhn"], "--dataset: unknown dataset 'svhn'"),
    ];
    for (args, want) in cases {
        assert_usage_error(args, want);
    }
}

#[test]
fn bench_loader_on_an_image_folder() {
    let tmp = tempfile::tempdir().unwrap();
    for (class, shade) in [("a", 10u8), ("b", 200)] {
        for i in 0..3 {
            let path = tmp.path().join(class).join(format!("{i}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            image::RgbImage::from_pixel(12, 9, image::Rgb([shade, 0, i])).save(&path).unwrap();
        }
    }
    let dir = tmp.path().to_str().unwrap();
    let o = selfcon(&[
        "bench",
        "loader",
        "--dataset",
        "folder",
        "--data_folder",
        dir,
        "--mean",
        "(0.5, 0.5, 0.5)",
        "--std",
        "[0.2,0.2,0.2]",
        "--size",
        "8",
        "--batch_size",
        "2",
        "--batches",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["images"], 4);
}

#[test]
fn each_command_keeps_its_official_defaults() {
    let help = |cmd: &str| {
        String::from_utf8_lossy(&selfcon(&[cmd, "--help"]).stdout).split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let expect = [
        (
            "pretrain",
            &[
                "--epochs <EPOCHS> [default: 1000]",
                "[default: 0.05]",
                "[default: 700,800,900]",
                "[default: ./save/representation]",
                "[default: cifar10]",
            ][..],
        ),
        (
            "linear",
            &[
                "--epochs <EPOCHS> [default: 100]",
                "[default: 0.1]",
                "[default: 60,75,90]",
                "[default: 0.2]",
                "[default: the checkpoint's pre-training dataset, else imagenet (the official default)]",
            ][..],
        ),
        (
            "ce",
            &[
                "--epochs <EPOCHS> [default: 500]",
                "[default: 0.2]",
                "[default: 350,400,450]",
                "[default: ./save/distill]",
                "[default: 3]",
            ][..],
        ),
    ];
    for (cmd, wants) in expect {
        let text = help(cmd);
        for want in wants {
            assert!(text.contains(want), "{cmd} --help lacks {want}:\n{text}");
        }
    }
}

#[test]
fn every_model_flag_names_every_architecture() {
    for cmd in [&["pretrain"][..], &["linear"], &["ce"], &["summary"], &["bench", "train"]] {
        let args: Vec<&str> = cmd.iter().copied().chain(["--help"]).collect();
        let o = selfcon(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
        for arch in <selfcon::model::Architecture as strum::IntoEnumIterator>::iter() {
            assert!(text.contains(selfcon::names::Named::name(arch)), "{cmd:?} --help does not name {arch}:\n{text}");
        }
    }
}
