//! `selfcon demo` at a tiny scale: it pre-trains, probes both encoders and writes its results.

use std::process::Command;

use serde_json::Value;

use crate::common;

#[test]
#[ignore = "heavy (the whole demo path): CI's extended set, cargo test -- --ignored"]
fn demo_runs_end_to_end_and_reports_both_encoders() {
    let out = tempfile::tempdir().unwrap();
    let data = selfcon::data::bundled_fashion_mnist().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_selfcon"))
        .args([
            "demo",
            "--data_folder",
            data.to_str().unwrap(),
            "--save_dir",
            out.path().to_str().unwrap(),
            "--pretrain_images",
            "48",
            "--epochs",
            "1",
            "--batch_size",
            "16",
            "--probe_images",
            "64",
            "--test_images",
            "32",
            "--probe_epochs",
            "5",
            // A budget no step fits: the plan keeps its one pass, of one batch.
            "--pretrain_seconds",
            "1e-6",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // The precision is said once with its reason, and the budget's choice with the step time.
    assert_eq!(stderr.matches("precision: ").count(), 1, "{stderr}");
    assert!(stderr.contains("(auto: "), "{stderr}");
    assert!(
        stderr.contains("demo: 3 timed steps took ") && stderr.contains("1 epochs of 16 images instead of 48"),
        "{stderr}"
    );
    assert!(stderr.contains("1 pre-training steps of 16 images are too few"), "{stderr}");
    for line in [
        "backbone",
        "sub-network",
        "ensemble",
        "random init",
        "everything is in",
        "(the bundled subset at ",
        "pre-trained for 1 steps (1 epoch(s) of 16 images) on ",
        "; probes fitted on 64 training images, scored on 32 test images",
    ] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}");
    }
    let done = stdout.lines().find(|l| l.contains("everything is in ")).unwrap();
    let folder = done.rsplit("everything is in ").next().unwrap().trim();
    // The last line names the report, which shows the run's curves and maps.
    let index =
        stdout.lines().last().unwrap().strip_prefix("report: open ").unwrap().strip_suffix(" in a browser").unwrap();
    assert_eq!(std::path::Path::new(index), std::path::Path::new(folder).join("report").join("index.html"));
    let html = std::fs::read_to_string(index).unwrap();
    assert!(html.contains("map1_trained_backbone.png") && html.contains("Linear probe on frozen features"), "{html}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(std::path::Path::new(folder).join("demo_results.json")).unwrap())
            .unwrap();
    assert_eq!(results["pretrain_steps"], 1, "{results}");
    assert!(results["machine"]["isa"].as_str().is_some_and(|isa| !isa.is_empty()), "{results}");
    for key in ["selfcon", "random_init"] {
        for head in ["backbone", "sub", "ensemble"] {
            let top1 = results[key]["test"][head]["top1"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&top1), "{key} {head} {top1}");
        }
    }
    // The probe's settings come from the grid, chosen on held-out training images.
    let grid = results["probe_grid"].as_array().unwrap();
    for key in ["selfcon", "random_init"] {
        for head in ["backbone", "sub"] {
            assert!(grid.contains(&results[key][head]), "{key} {head}: {} not in {grid:?}", results[key][head]);
        }
    }
    assert!(stdout.contains("probe settings chosen on held-out training images: SelfCon backbone lr "), "{stdout}");
    let ckpt = std::path::Path::new(folder).join("last.safetensors");
    assert!(ckpt.is_file());

    // `--ckpt` probes a finished run again without pre-training: the same numbers.
    let again = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_selfcon"))
        .args(["demo", "--data_folder", data.to_str().unwrap(), "--save_dir", again.path().to_str().unwrap()])
        .args(["--ckpt", ckpt.to_str().unwrap()])
        .args(["--probe_images", "64", "--test_images", "32", "--probe_epochs", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains(&format!("checkpoint {}; probes fitted on 64", ckpt.display())), "{stdout}");
    let probed: Value =
        serde_json::from_str(&std::fs::read_to_string(again.path().join("demo_results.json")).unwrap()).unwrap();
    for key in ["selfcon", "random_init"] {
        assert_eq!(probed[key], results[key], "{key}");
    }
    assert_eq!(probed["epoch_losses"], serde_json::json!([]));

    // The demo run again into the same --save_dir keeps the first run and writes beside it.
    let kept = std::fs::read(&ckpt).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_selfcon"))
        .args(["demo", "--data_folder", data.to_str().unwrap(), "--save_dir", out.path().to_str().unwrap()])
        .args(["--pretrain_images", "16", "--epochs", "1", "--batch_size", "16", "--pretrain_seconds", "0"])
        .args(["--probe_images", "32", "--test_images", "16", "--probe_epochs", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("holds an earlier demo run (kept)"), "{stderr}");
    let second = stdout.lines().find_map(|l| l.split("everything is in ").nth(1)).unwrap().trim();
    assert!(second.ends_with("_demo_2") && second != folder, "{second}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), kept, "the first demo's checkpoint is untouched");
}

#[test]
fn demo_refuses_more_images_than_the_data_has() {
    let data = selfcon::data::bundled_fashion_mnist().unwrap();
    let data = data.to_str().unwrap();
    common::assert_usage_error(&["demo", "--data_folder", data, "--pretrain_images", "10001"], "pretrain_images");
    common::assert_usage_error(&["demo", "--data_folder", data, "--test_images", "2001"], "test_images");
    common::assert_usage_error(&["demo", "--data_folder", data, "--lars_eta", "-0.1"], "lars_eta");
    common::assert_usage_error(&["demo", "--data_folder", data, "--lars_eta", "NaN"], "lars_eta");
    common::assert_usage_error(&["demo", "--data_folder", data, "--pretrain_seconds", "NaN"], "pretrain_seconds");
    common::assert_usage_error(&["demo", "--data_folder", data, "--pretrain_seconds", "-1"], "pretrain_seconds");
    common::assert_usage_error(&["demo", "--data_folder", data, "--min_crop_scale", "0"], "min_crop_scale");
    common::assert_usage_error(&["demo", "--data_folder", data, "--min_crop_scale", "1.5"], "min_crop_scale");
    common::assert_usage_error(&["demo", "--data_folder", data, "--ckpt", "no/such/last.safetensors"], "no/such");
}
