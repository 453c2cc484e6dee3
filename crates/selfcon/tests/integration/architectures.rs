//! VGG, WRN and EfficientNet encoders end to end on CPU (tiny data): pre-training with an exit,
//! linear evaluation with --subnet, 1-stage `ce`, the official per-family defaults, and the refused
//! WRN stem.

use crate::common;

use common::{assert_usage_error, selfcon};
use serde_json::Value;

fn train_and_evaluate(model: &[&str]) {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 12, 6);
    let save = tempfile::tempdir().unwrap();
    let (data, out) = (d.path().to_str().unwrap(), save.path().to_str().unwrap());
    let flags = [
        "--dataset",
        "fashionmnist",
        "--data_folder",
        data,
        "--num_workers",
        "1",
        "--batch_size",
        "6",
        "--epochs",
        "1",
        "--save_dir",
        out,
    ];
    let o = selfcon(&[&["pretrain", "--method", "SelfCon", "--temp", "0.1"][..], &flags, model].concat());
    assert!(o.status.success(), "{model:?}: {}", String::from_utf8_lossy(&o.stderr));
    let ckpt = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = selfcon(&[&["linear", "--ckpt", &ckpt, "--subnet"][..], &flags, model].concat());
    assert!(o.status.success(), "{model:?}: {}", String::from_utf8_lossy(&o.stderr));
    let entry: Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["backbone", "sub", "ensemble"] {
        assert!(entry[key][0].as_f64().is_some(), "{model:?}: {entry}");
    }
    let o = selfcon(&[&["ce", "--method", "selfcon", "--temperature", "0.1"][..], &flags, model].concat());
    assert!(o.status.success(), "{model:?}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn vgg_trains_and_evaluates() {
    train_and_evaluate(&[
        "--model",
        "vgg13_bn",
        "--selfcon_pos",
        "[False,True,False,False]",
        "--selfcon_size",
        "small",
    ]);
}

#[test]
fn wrn_trains_and_evaluates() {
    train_and_evaluate(&["--model", "wrn_16_8", "--selfcon_pos", "[True,False]", "--selfcon_size", "fc"]);
}

#[test]
fn efficientnet_trains_and_evaluates() {
    train_and_evaluate(&["--model", "efficientnet", "--selfcon_pos", "[True]"]);
}

#[test]
fn official_family_defaults_and_refusals() {
    let summary = |args: &[&str]| {
        let o = selfcon(&[&["summary", "--json", "--dataset", "cifar100"][..], args].concat());
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    // VGG and WRN replace the default three-False --selfcon_pos and force their sub-network family.
    let vgg = summary(&["--model", "vgg16"]);
    assert_eq!(vgg["selfcon_pos"], serde_json::json!([false, false, false, false]), "{vgg}");
    assert_eq!(vgg["selfcon_arch"], "vgg");
    assert_eq!(vgg["linear_classifier_params"], 512 * 512 + 512 + 512 * 100 + 100, "VGG's MLP classifier");
    let wrn = summary(&["--model", "wrn_16_8", "--selfcon_arch", "resnet"]);
    assert_eq!(wrn["selfcon_pos"], serde_json::json!([false, false]));
    assert_eq!(wrn["selfcon_arch"], "wrn");
    // EfficientNet reads only the first entry.
    let eff = summary(&["--model", "efficientnet", "--selfcon_pos", "[True,False,False]"]);
    assert_eq!(eff["selfcon_pos"], serde_json::json!([true]));
    assert_eq!(eff["subnetwork_params"], 304_640);

    assert_usage_error(
        &["summary", "--model", "wrn_16_8", "--dataset", "imagenet"],
        "--model: wrn_16_8 has no working ImageNet stem in the official code",
    );
    assert_usage_error(
        &["summary", "--model", "vgg16_bn", "--selfcon_pos", "[False,True,False]"],
        "--selfcon_pos: vgg16_bn takes 4 booleans (exits after block1, block2, block3, block4), got 3",
    );
    assert_usage_error(
        &["summary", "--model", "resnet18", "--selfcon_arch", "vgg"],
        "--selfcon_arch: resnet18 supports only 'resnet'",
    );
    assert_usage_error(&["summary", "--model", "vgg19"], "--model: unknown model 'vgg19'");
}
