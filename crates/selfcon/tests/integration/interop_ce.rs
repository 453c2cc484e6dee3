//! Official `main_ce.py` checkpoints in: the CEResNet (`--method selfcon`) saved by PyTorch's own
//! `torch.save` loads strictly under our 1-stage model's keys, gives PyTorch's logits, continues
//! with the official momentum, and `ce --resume` continues the run from its options.

use crate::common;

use std::path::PathBuf;

use serde_json::Value;
use tch::{nn, Device};

use common::official::{assert_close_to, assert_official_sgd_step, expected, fixture, inputs};
use selfcon::checkpoint::OfficialCheckpoint;
use selfcon::data::DatasetKind;
use selfcon::model::{Architecture, CeModel, ExitPositions, ModelConfig, SubNetworkArch, SubNetworkSize};

/// What the fixture's `opt` describes: ResNet-18 on CIFAR-10 with an `fc` exit after layer2.
fn cifar10_fc_exit() -> ModelConfig {
    ModelConfig::new(
        Architecture::ResNet18,
        DatasetKind::Cifar10,
        ExitPositions::new(vec![false, true, false]),
        SubNetworkArch::Resnet,
        SubNetworkSize::Fc,
        128,
    )
    .unwrap()
}

fn ce_model(with_projections: bool) -> (nn::VarStore, CeModel) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model =
        CeModel::new(&vs.root(), &cifar10_fc_exit(), 10, 128, with_projections, selfcon::model::BatchNormKind::Local)
            .unwrap();
    (vs, model)
}

#[test]
fn the_official_ce_model_loads_strictly_and_gives_pytorch_logits() {
    let dir = tempfile::tempdir().unwrap();
    let official = OfficialCheckpoint::open(&fixture(dir.path(), "ce_selfcon_r18.pth")).unwrap();
    assert_eq!(official.epoch, Some(2));
    assert_eq!(official.model_config().unwrap(), Some(cifar10_fc_exit()), "configured from 'opt'");
    let (vs, model) = ce_model(true);
    let weights = official.weights.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    // Strict: every key of the file is one of ours and the other way round, shapes equal.
    selfcon::checkpoint::load_into_var_store(&official.path, &vs, &weights).unwrap();
    let out = tch::no_grad(|| model.forward_t(&inputs(), false)).unwrap();
    let want = &expected()["ce"];
    assert_close_to(&out.logits, &want["logits"], 1e-4, "l_fc logits");
    assert_close_to(&out.exit_logits[0], &want["sub_logits.0"], 1e-4, "logit_fc.0 logits");
}

#[test]
fn only_method_selfcon_has_the_auxiliary_projections() {
    let dir = tempfile::tempdir().unwrap();
    let official = OfficialCheckpoint::open(&fixture(dir.path(), "ce_selfcon_r18.pth")).unwrap();
    let official_keys: Vec<&str> = official.weights.iter().map(|(k, _)| k.as_str()).collect();
    let keys = |vs: &nn::VarStore| {
        let mut k: Vec<String> = vs.variables().into_keys().collect();
        k.sort();
        k
    };
    let mut want: Vec<String> = official_keys.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(keys(&ce_model(true).0), want, "--method selfcon: CEResNet's keys");
    // The other methods' CEResNet never creates feat_fc / f_fc.
    want.retain(|k| !k.starts_with("feat_fc.") && !k.starts_with("f_fc."));
    assert_eq!(keys(&ce_model(false).0), want, "--method ce / subnet_ce / kd");
}

#[test]
fn official_ce_momentum_continues_as_the_official_sgd_step() {
    let dir = tempfile::tempdir().unwrap();
    let official = OfficialCheckpoint::open(&fixture(dir.path(), "ce_selfcon_r18.pth")).unwrap();
    let want = &expected()["ce"]["sgd_step"];
    // The frozen f_fc has no buffer but still counts in the parameter order (index after feat_fc).
    let with_buffer: Vec<&String> = official.momentum.iter().map(|(k, _)| k).collect();
    assert_eq!(with_buffer.len(), want["momentum_first"].as_object().unwrap().len());
    assert!(!with_buffer.iter().any(|k| k.starts_with("f_fc.")));
    let (vs, _model) = ce_model(true);
    assert_official_sgd_step(&official, &vs, want);
}

#[test]
#[ignore = "heavy (CE resume of an official run; the fast set resumes an official pre-training): CI's extended set, cargo test -- --ignored"]
fn ce_resumes_an_official_main_ce_run_with_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, data, save) = common::official::resume_fixture(dir.path(), "ce_selfcon_r18.pth");
    let run_from = |resume: &std::path::Path, extra: &[&str]| {
        let mut v: Vec<&str> = vec![
            "ce",
            "--resume",
            resume.to_str().unwrap(),
            "--dataset",
            "fashionmnist",
            "--data_folder",
            data.to_str().unwrap(),
            "--save_dir",
            save.to_str().unwrap(),
            "--batch_size",
            "12",
            "--num_workers",
            "2",
        ];
        v.extend(extra);
        common::selfcon(&v)
    };
    let run = |extra: &[&str]| run_from(&ckpt, extra);
    // No --method, no model flags: selfcon, resnet18, fc exit after layer2, cosine, lr 0.2 come
    // from 'opt'; the dataset (same stem and classes), epochs and batch are overridden.
    let o = run(&["--epochs", "3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    for taken in
        ["--method \"selfcon\"", "--model \"resnet18\"", "--selfcon_size \"fc\"", "--cosine true", "--dim_out 128"]
    {
        assert!(err.contains(taken), "{taken} not taken from opt: {err}");
    }
    assert!(!err.contains("--epochs") && !err.contains("--batch_size"), "given flags must win: {err}");
    assert!(!err.contains("ce epoch 2:") && err.contains("ce epoch 3:"), "continues at epoch 2 + 1: {err}");
    let run_dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert!(
        run_dir.ends_with("selfcon_fashionmnist_resnet18_lr_0.2_decay_0.0001_bsz_12_seed_0_cosine"),
        "{}",
        run_dir.display()
    );
    assert_eq!(common::official::logged_epochs(&run_dir), [3]);
    let results: Value = serde_json::from_slice(&std::fs::read(save.join("results.json")).unwrap()).unwrap();
    assert_eq!(results.to_string().matches("\"epoch\":3").count(), 1, "best epoch is epoch 3: {results}");

    // Our own checkpoint of the continued run continues too (epoch 3 + 1; flags as for any run of ours).
    let last = run_dir.join("last.safetensors");
    let model = ["--model", "resnet18", "--selfcon_pos", "[False,True,False]", "--selfcon_size", "fc", "--cosine"];
    let o = run_from(&last, &[&["--epochs", "4", "--method", "selfcon"][..], &model].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("ce epoch 4:") && !err.contains("ce epoch 3:"), "{err}");

    // Another --method would need other modules: refused naming both, nothing trained, and the
    // run folder left as it was.
    let config_before = std::fs::read(run_dir.join("config.json")).unwrap();
    let o = run(&["--epochs", "3", "--method", "ce"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("was trained with --method selfcon, not ce"), "{err}");
    // The official checkpoint again over the run folder that went on from it (a requeued job's
    // command): refused with the command that continues the folder's own checkpoint.
    let o = run(&["--epochs", "5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("already exists") && err.contains(&format!("--resume {}", last.display())), "{err}");
    // A run that already covers --epochs is a clear error, not an empty run.
    let o = run_from(&last, &[&["--epochs", "2", "--method", "selfcon"][..], &model].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("already covers all 2 epochs"), "{err}");
    assert_eq!(std::fs::read(run_dir.join("config.json")).unwrap(), config_before, "refused runs write nothing");
}
