//! 1-stage training (`selfcon ce`) end to end on tiny data, every method.

use crate::common;

use common::{assert_usage_error, selfcon};

use serde_json::Value;
use tch::{Kind, Tensor};

use selfcon::train::kd_loss;

#[test]
fn kd_is_soft_target_cross_entropy_times_t_squared() {
    let s = Tensor::from_slice(&[1.0f32, 2.0, 0.5, -1.0, 0.0, 3.0]).view([2, 3]);
    let t = Tensor::from_slice(&[0.5f32, 0.1, 2.0, 1.0, 1.0, 1.0]).view([2, 3]);
    let temp = 3.0;
    let p = (&t / temp).softmax(1, Kind::Float);
    let want = -(p * (&s / temp).log_softmax(1, Kind::Float)).sum(Kind::Float).double_value(&[]) / 2.0 * temp * temp;
    assert!((kd_loss(&s, &t, temp).double_value(&[]) - want).abs() < 1e-5);
}

#[test]
fn every_ce_method_trains_and_reports() {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 24, 12);
    let save = tempfile::tempdir().unwrap();
    let (data, out) = (d.path().to_str().unwrap(), save.path().to_str().unwrap());
    for method in ["ce", "subnet_ce", "kd", "selfcon"] {
        let o = selfcon(&[
            "ce",
            "--method",
            method,
            "--dataset",
            "fashionmnist",
            "--data_folder",
            data,
            "--save_dir",
            out,
            "--model",
            "resnet18",
            "--selfcon_pos",
            "[False,True,False]",
            "--selfcon_size",
            "fc",
            "--epochs",
            "1",
            "--batch_size",
            "12",
            "--num_workers",
            "2",
            "--warm",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{method}: {err}");
        assert!(err.contains("ce epoch 1: loss") && err.contains("exit"), "{method}: {err}");
        assert_eq!(err.contains("warning: --method selfcon uses --temperature 3"), method == "selfcon", "{err}");
        let run_dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(
            run_dir.ends_with(&format!("{method}_fashionmnist_resnet18_lr_0.2_decay_0.0001_bsz_12_seed_0")),
            "no _warm suffix: {run_dir}"
        );
        assert!(std::path::Path::new(&run_dir).join("last.safetensors").is_file());
    }
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(save.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(results.as_object().unwrap().len(), 4);
    let entry = &results["kd_fashionmnist_resnet18_lr_0.2_decay_0.0001_bsz_12_seed_0"];
    assert!(entry["backbone"].as_f64().is_some() && entry["sub"].as_f64().is_some(), "{entry}");

    for (args, want) in [
        (&["--method", "mixup"][..], "--method: unknown method 'mixup'"),
        (
            &["--method", "kd", "--selfcon_pos", "[False,False,False]"][..],
            "--selfcon_pos: --method kd needs a sub-network exit",
        ),
    ] {
        assert_usage_error(
            &[
                &[
                    "ce",
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
                ][..],
                args,
            ]
            .concat(),
            want,
        );
    }
}

#[test]
fn ce_resume_reproduces_the_uninterrupted_run() {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 24, 12);
    let data = d.path().to_str().unwrap();
    let run = |save: &str, extra: &[&str]| {
        let o = selfcon(
            &[
                &[
                    "ce",
                    "--method",
                    "subnet_ce",
                    "--dataset",
                    "fashionmnist",
                    "--data_folder",
                    data,
                    "--save_dir",
                    save,
                    "--model",
                    "resnet18",
                ][..],
                &[
                    "--selfcon_pos",
                    "[False,True,False]",
                    "--selfcon_size",
                    "fc",
                    "--batch_size",
                    "12",
                    "--num_workers",
                    "2",
                ],
                extra,
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let run_dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let results: Value =
            serde_json::from_str(&std::fs::read_to_string(std::path::Path::new(save).join("results.json")).unwrap())
                .unwrap();
        (run_dir, results)
    };
    let a = tempfile::tempdir().unwrap();
    let (_, straight) = run(a.path().to_str().unwrap(), &["--epochs", "2"]);
    let b = tempfile::tempdir().unwrap();
    let b_path = b.path().to_str().unwrap();
    let (dir, _) = run(b_path, &["--epochs", "1"]);
    let mut again = vec!["ce", "--method", "subnet_ce", "--dataset", "fashionmnist", "--data_folder", data];
    again.extend(["--save_dir", b_path, "--model", "resnet18", "--selfcon_pos", "[False,True,False]"]);
    again.extend(["--selfcon_size", "fc", "--batch_size", "12", "--num_workers", "2", "--epochs", "2"]);
    let o = selfcon(&again);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(2) && err.contains("already exists") && err.contains("--resume auto"), "{err}");
    let (_, resumed) = run(b_path, &["--epochs", "2", "--resume", "auto"]);
    assert!(std::path::Path::new(&dir).join("last.safetensors").is_file());
    let key = "subnet_ce_fashionmnist_resnet18_lr_0.2_decay_0.0001_bsz_12_seed_0";
    assert_eq!(straight[key], resumed[key]);
}
