//! `selfcon bench train` on CPU: it runs, reports what it measured, and refuses bad input.

mod common;

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
}

#[test]
fn bench_train_bad_input() {
    let base = [&["bench", "train", "--method", "SelfCon", "--device", "cpu"][..], &MODEL].concat();
    assert_usage_error(&[&base[..], &["--steps", "0"]].concat(), "--steps: must be at least 1");
    assert_usage_error(&[&base[..], &["--precision", "int8"]].concat(), "--precision: unknown precision 'int8'");
    assert_usage_error(&["bench", "train", "--method", "SelfCon", "--device", "cpu"], "--selfcon_pos: ");
}
