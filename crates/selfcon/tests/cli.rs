//! The `selfcon` binary as a user runs it.

use std::process::{Command, Output};

use serde_json::Value;

fn selfcon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfcon")).args(args).output().expect("run selfcon")
}

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
        (&["summary", "--model", "vgg16_bn"], "not implemented yet"),
        (&["summary", "--selfcon_pos", "[False,True]"], "--selfcon_pos: resnet50 takes 3 booleans"),
        (&["summary", "--selfcon_pos", "[False,Yes,False]"], "--selfcon_pos: 'Yes'"),
        (&["summary", "--selfcon_arch", "vgg"], "--selfcon_arch: resnet50 supports only 'resnet'"),
        (&["summary", "--dataset", "svhn"], "--dataset: unknown dataset 'svhn'"),
        (&["summary", "--feat_dim", "many"], "invalid value 'many'"),
    ];
    for (args, want) in cases {
        let o = selfcon(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.starts_with("selfcon: error: ") && err.contains(want), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
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
}
