//! Official checkpoints in: files written by PyTorch's own `torch.save` (made by
//! scripts/make_official_checkpoints.py from the SPEC's model definition) are read without running
//! anything, mapped to our model, and give PyTorch's features; a forbidden global is refused.

use crate::common;

use common::official::{expected, fixture, inputs, pattern};

use std::path::{Path, PathBuf};

use serde_json::Value;
use tch::{Device, Kind, Tensor};

use selfcon::checkpoint::{CheckpointFormat, ModelCheckpoint, OfficialCheckpoint};
use selfcon::data::DatasetKind;
use selfcon::model::{Architecture, ConModel, ExitPositions, ModelConfig, SubNetworkArch, SubNetworkSize};

fn readme_cifar100() -> ModelConfig {
    ModelConfig::new(
        Architecture::ResNet18,
        DatasetKind::Cifar100,
        ExitPositions::new(vec![false, true, false]),
        SubNetworkArch::Resnet,
        SubNetworkSize::Fc,
        128,
    )
    .unwrap()
}

/// Loads `ckpt` into the README model and checks its eval features against PyTorch's.
fn assert_pytorch_features(ckpt: &ModelCheckpoint) {
    assert_pytorch_features_within(ckpt, 1e-4)
}

fn assert_pytorch_features_within(ckpt: &ModelCheckpoint, relative: f64) {
    let (vs, model) = ConModel::build(&readme_cifar100(), Device::Cpu, selfcon::model::BatchNormKind::Local).unwrap();
    ckpt.load_into(&vs).unwrap();
    let out = tch::no_grad(|| model.encode(&inputs(), false)).unwrap();
    let want = expected();
    common::official::assert_close_to(&out.backbone, &want["backbone"], relative, "backbone");
    common::official::assert_close_to(&out.exits[0], &want["sub_network.0"], relative, "sub_network.0");
}

#[test]
fn official_checkpoint_configures_the_model_and_gives_pytorch_features() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = ModelCheckpoint::open(&fixture(dir.path(), "selfcon_r18.pth")).unwrap();
    assert_eq!(ckpt.format, CheckpointFormat::Official);
    assert_eq!(ckpt.epoch, Some(3));
    assert_eq!(ckpt.model.as_ref(), Some(&readme_cifar100()), "configured from 'opt'");
    assert_eq!(ckpt.weights["encoder.bn1.num_batches_tracked"].kind(), Kind::Int64);
    assert_pytorch_features(&ckpt);
}

#[test]
fn dataparallel_prefix_and_downsample_names_are_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "module_prefix.pth");
    let official = OfficialCheckpoint::open(&path).unwrap();
    assert!(official.weights.iter().any(|(k, _)| k == "encoder.layer2.0.shortcut.0.weight"));
    assert!(official.weights.iter().all(|(k, _)| !k.contains("module.") && !k.contains("downsample")));
    assert_pytorch_features(&ModelCheckpoint::open(&path).unwrap());
}

#[test]
fn bare_state_dict_loads_with_the_model_from_flags() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = ModelCheckpoint::open(&fixture(dir.path(), "state_dict.pth")).unwrap();
    assert_eq!(ckpt.format, CheckpointFormat::StateDict);
    assert_eq!(ckpt.model, None);
    assert_eq!(ckpt.epoch, None);
    assert_pytorch_features(&ckpt);
}

#[test]
fn a_forbidden_global_is_refused_and_nothing_runs() {
    let marker = Path::new("/tmp/selfcon_forbidden_global_ran");
    let _ = std::fs::remove_file(marker);
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "forbidden.pth");
    let e = common::user_error(ModelCheckpoint::open(&path));
    assert!(e.contains("refusing pickle global posix.system") || e.contains("refusing pickle global os.system"), "{e}");
    assert!(e.contains("forbidden.pth"), "{e}");
    assert!(!marker.exists(), "the pickle's os.system call ran");
}

#[test]
fn momentum_buffers_follow_the_official_parameter_order() {
    let dir = tempfile::tempdir().unwrap();
    let official = OfficialCheckpoint::open(&fixture(dir.path(), "selfcon_r18.pth")).unwrap();
    let step = &expected()["sgd_step"];
    let params = step["momentum_first"].as_object().unwrap();
    assert_eq!(official.momentum.len(), params.len(), "one buffer per parameter");
    for (j, (name, _)) in
        official.weights.iter().filter(|(k, _)| !selfcon::checkpoint::official::is_buffer(k)).enumerate()
    {
        let (got_name, buffer) = &official.momentum[j];
        assert_eq!(got_name, name);
        // The script filled parameter j's buffer with 0.01 · pattern(numel, 500 + j).
        let want = pattern(buffer.numel() as i64, 500 + j as i64, 29) * 0.01;
        assert!(buffer.flatten(0, -1).allclose(&want, 0.0, 1e-7, false), "{name}");
    }
}

#[test]
fn legacy_and_non_torch_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("legacy.pth");
    std::fs::write(&legacy, [0x80u8, 0x02, 0x8a, 0x0a, 0x6c, 0xfc]).unwrap();
    let e = common::user_error(ModelCheckpoint::open(&legacy));
    assert!(e.contains("legacy torch.save format"), "{e}");
    let zip = dir.path().join("other.zip");
    std::fs::write(&zip, b"PK\x03\x04 not really a zip").unwrap();
    let e = common::user_error(ModelCheckpoint::open(&zip));
    assert!(e.contains("other.zip") && e.contains("zip"), "{e}");
}

fn read_safetensors(path: &Path) -> std::collections::BTreeMap<String, Tensor> {
    selfcon::checkpoint::load(path).unwrap().tensors
}

#[test]
fn linear_and_features_take_the_model_from_an_official_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = fixture(dir.path(), "selfcon_r18.pth");
    let data = dir.path().join("fmnist");
    std::fs::create_dir_all(&data).unwrap();
    common::tiny_fashion_mnist(&data, 24, 12);
    let (ckpt, data) = (ckpt.to_str().unwrap(), data.to_str().unwrap());
    let save = dir.path().join("save");
    let save = save.to_str().unwrap();

    // No model flags: the model comes from 'opt' (its CIFAR stem fits Fashion-MNIST's 32×32).
    let flags = ["--dataset", "fashionmnist", "--data_folder", data, "--num_workers", "2"];
    let o = common::selfcon(
        &[
            &["linear", "--ckpt", ckpt, "--subnet", "--epochs", "1", "--batch_size", "12", "--save_dir", save][..],
            &flags,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entry: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(entry["sub"].is_array() && entry["ensemble"].is_array(), "{entry}");

    // Features: dataset order, every exit, labels; a prefix of the split gives the same rows.
    let out8 = dir.path().join("f8.safetensors");
    let out4 = dir.path().join("f4.safetensors");
    for (out, n) in [(&out8, "8"), (&out4, "4")] {
        let o = common::selfcon(
            &[
                &["features", "--ckpt", ckpt, "--split", "test", "--limit", n, "--out", out.to_str().unwrap()][..],
                &flags,
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (f8, f4) = (read_safetensors(&out8), read_safetensors(&out4));
    assert_eq!(f8.keys().cloned().collect::<Vec<_>>(), ["backbone", "labels", "sub_network.0"]);
    assert_eq!(f8["backbone"].size(), [8, 512]);
    assert_eq!(f8["sub_network.0"].size(), [8, 512]);
    assert_eq!(f8["labels"].kind(), Kind::Int64);
    assert!(f8["backbone"].narrow(0, 0, 4).allclose(&f4["backbone"], 1e-5, 1e-5, false));
    let test_labels = selfcon::data::read_idx(&Path::new(data).join("t10k-labels-idx1-ubyte"), 1).unwrap();
    let want: Vec<i64> = test_labels.data[..8].iter().map(|&l| l as i64).collect();
    assert_eq!(Vec::<i64>::try_from(&f8["labels"]).unwrap(), want);

    // A model flag that contradicts the checkpoint names both values.
    let out = dir.path().join("x.safetensors");
    common::assert_usage_error(
        &[&["features", "--ckpt", ckpt, "--selfcon_size", "same", "--out", out.to_str().unwrap()][..], &flags].concat(),
        "--selfcon_size: same contradicts the checkpoint's fc",
    );
    // The forbidden checkpoint through the CLI: exit 2, one line, nothing ran.
    let marker = Path::new("/tmp/selfcon_forbidden_global_ran");
    let _ = std::fs::remove_file(marker);
    let forbidden = fixture(dir.path(), "forbidden.pth");
    common::assert_usage_error(
        &[&["linear", "--ckpt", forbidden.to_str().unwrap(), "--save_dir", save][..], &flags].concat(),
        "system: only tensors, state dicts and argparse options and plain data are read",
    );
    assert!(!marker.exists());
}

/// Our forward pass of the fixture's inputs through `ckpt`.
/// The checkpoint's model (the README's CIFAR-100 one when it names none) with its weights.
fn model_of(ckpt: &ModelCheckpoint) -> (tch::nn::VarStore, ConModel) {
    let (vs, model) = ConModel::build(
        ckpt.model.as_ref().unwrap_or(&readme_cifar100()),
        Device::Cpu,
        selfcon::model::BatchNormKind::Local,
    )
    .unwrap();
    ckpt.load_into(&vs).unwrap();
    (vs, model)
}

fn our_features(ckpt: &ModelCheckpoint) -> (Tensor, Tensor) {
    let (_vs, model) = model_of(ckpt);
    let images = pattern(4 * 3 * 32 * 32, 7, 31).view([4, 3, 32, 32]);
    let out = tch::no_grad(|| model.encode(&images, false)).unwrap();
    (out.backbone, out.exits[0].shallow_clone())
}

#[test]
fn exports_load_back_with_the_same_model_and_features() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(dir.path(), "selfcon_r18.pth");
    let source = ModelCheckpoint::open(&src).unwrap();
    let (backbone, sub) = our_features(&source);
    let export = |format: &str, name: &str| {
        let out = dir.path().join(name);
        let o = common::selfcon(&[
            "export",
            "--ckpt",
            src.to_str().unwrap(),
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{format}: {}", String::from_utf8_lossy(&o.stderr));
        // The mode any new file gets (0666 less the umask), as the checkpoints' (#31).
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let umask = status.lines().find_map(|l| l.strip_prefix("Umask:")).map(|v| u32::from_str_radix(v.trim(), 8));
        if let Some(Ok(umask)) = umask {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o666 & !umask, "{format}");
        }
        out
    };
    let golden: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/state_dict_resnet18_cifar100_pos_FTF.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut official_keys: Vec<&String> = golden["fc"].as_object().unwrap().keys().collect();
    official_keys.sort();

    // pth: torch.save layout our reader (and torch.load, scripts/check_exports.py) reads; official
    // keys, fp32, the epoch, and the model description so that no flags are needed.
    let pth = ModelCheckpoint::open(&export("pth", "r18.pth")).unwrap();
    assert_eq!(pth.model, source.model);
    assert_eq!(pth.epoch, Some(3));
    assert_eq!(pth.weights.keys().collect::<Vec<_>>(), official_keys);
    for (k, t) in &pth.weights {
        assert!(t.equal(&source.weights[k]), "{k}");
    }
    let (b, s) = our_features(&pth);
    assert!(b.equal(&backbone) && s.equal(&sub));

    // safetensors: the weights alone, official keys, model in the metadata.
    let st = ModelCheckpoint::open(&export("safetensors", "r18.safetensors")).unwrap();
    assert_eq!(st.model, source.model);
    assert_eq!(st.weights.keys().collect::<Vec<_>>(), official_keys);
    assert_eq!(
        selfcon::checkpoint::load(&dir.path().join("r18.safetensors")).unwrap().tensors.len(),
        official_keys.len()
    );

    // torchscript: forward(x) → (backbone, sub-network), any batch size, through libtorch's JIT.
    let module = tch::CModule::load(export("torchscript", "r18.pt")).unwrap();
    for batch in [4i64, 9] {
        let images = pattern(batch * 3 * 32 * 32, 7, 31).view([batch, 3, 32, 32]);
        let out = tch::no_grad(|| module.forward_is(&[tch::IValue::Tensor(images)])).unwrap();
        let tch::IValue::Tuple(items) = out else { panic!("forward returned {out:?}, not a tuple") };
        assert_eq!(items.len(), 2);
        let (tch::IValue::Tensor(b), tch::IValue::Tensor(s)) = (&items[0], &items[1]) else { panic!("not tensors") };
        if batch == 4 {
            assert!(b.allclose(&backbone, 1e-5, 1e-5, false) && s.allclose(&sub, 1e-5, 1e-5, false));
        } else {
            assert_eq!(b.size(), [9, 512]);
        }
    }

    let out = dir.path().join("r18.tflite");
    common::assert_usage_error(
        &["export", "--ckpt", src.to_str().unwrap(), "--format", "tflite", "--out", out.to_str().unwrap()],
        "--format: unknown format 'tflite' (choose from pth, torchscript, onnx, safetensors)",
    );
}

#[test]
fn official_momentum_continues_as_the_official_sgd_step() {
    // The script took one torch.optim.SGD step (lr 0.05, momentum 0.9, wd 1e-4) from the saved
    // momentum with gradient 0.001 · pattern(numel, 900 + index); ours must land on the same weights.
    let dir = tempfile::tempdir().unwrap();
    let official = OfficialCheckpoint::open(&fixture(dir.path(), "selfcon_r18.pth")).unwrap();
    let (vs, _model) = ConModel::build(&readme_cifar100(), Device::Cpu, selfcon::model::BatchNormKind::Local).unwrap();
    common::official::assert_official_sgd_step(&official, &vs, &expected()["sgd_step"]);
}

#[test]
fn pretrain_resumes_an_official_run_with_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, data, save) = common::official::resume_fixture(dir.path(), "selfcon_r18.pth");
    // No --method, no model flags: SelfCon, resnet18, fc exit after layer2, temp 0.1, cosine...
    // come from 'opt'; the dataset, epochs, batch and precision are overridden.
    let o = common::selfcon(&[
        "pretrain",
        "--resume",
        ckpt.to_str().unwrap(),
        "--dataset",
        "fashionmnist",
        "--data_folder",
        data.to_str().unwrap(),
        "--epochs",
        "4",
        "--batch_size",
        "12",
        "--precision",
        "fp32",
        "--num_workers",
        "2",
        "--save_dir",
        save.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    for taken in
        ["--method \"SelfCon\"", "--model \"resnet18\"", "--selfcon_size \"fc\"", "--temp 0.1", "--cosine true"]
    {
        assert!(err.contains(taken), "{taken} not taken from opt: {err}");
    }
    assert!(!err.contains("--epochs") && !err.contains("--batch_size"), "given flags must win: {err}");
    let last = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert!(last.to_string_lossy().contains("SelfCon_fashionmnist_resnet18_lr_0.5"), "{}", last.display());
    let resumed = selfcon::train::Resumed::open(&last, "pretrain").unwrap();
    assert_eq!(resumed.epoch, 4, "continued at the official epoch 3 + 1");
    assert_eq!(common::official::logged_epochs(last.parent().unwrap()), [4]);

    // A contradicting model flag is refused before anything is trained.
    let o = common::selfcon(&[
        "pretrain",
        "--resume",
        ckpt.to_str().unwrap(),
        "--dataset",
        "fashionmnist",
        "--data_folder",
        data.to_str().unwrap(),
        "--selfcon_size",
        "same",
        "--save_dir",
        save.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("another model"));
}

#[test]
fn a_bare_state_dict_is_checked_strictly_against_the_model_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "state_dict.pth");
    let out = dir.path().join("f.safetensors");
    // The official defaults (resnet50, no exits) do not fit a ResNet-18 with an exit: every problem is named.
    common::assert_usage_error(
        &["features", "--ckpt", path.to_str().unwrap(), "--dataset", "cifar10", "--out", out.to_str().unwrap()],
        "does not fit this model (missing",
    );
    let o = common::selfcon(&[
        "features",
        "--ckpt",
        path.to_str().unwrap(),
        "--dataset",
        "cifar10",
        "--model",
        "resnet18",
        "--selfcon_pos",
        "[False,True,False]",
        "--selfcon_size",
        "small",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unexpected encoder.selfcon_layer.1.bias"), "{err}");
    assert!(!out.exists());
}

/// `export --out` naming the checkpoint `--ckpt` reads (by its name or through a link) is refused
/// before anything is written: the training state would be lost (issue #31).
#[test]
fn export_refuses_to_write_over_the_checkpoint_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(dir.path(), "selfcon_r18.pth");
    let before = std::fs::read(&src).unwrap();
    let alias = dir.path().join("alias.pth");
    std::os::unix::fs::symlink(&src, &alias).unwrap();
    for out in [&src, &alias] {
        let args =
            ["export", "--ckpt", src.to_str().unwrap(), "--format", "safetensors", "--out", out.to_str().unwrap()];
        common::assert_usage_error(&args, "--out: ");
        common::assert_usage_error(&args, "is the file --ckpt reads");
    }
    assert!(std::fs::read(&src).unwrap() == before, "the checkpoint is unchanged");
}

/// The CLI's ONNX file is the library's `ConModel::to_onnx` of the checkpoint's model, which
/// crates/onnx-check runs in an independent runtime (tract) against our forward pass for every
/// ResNet configuration (CI's extended set: it builds tract).
#[test]
fn onnx_export_writes_the_models_onnx_graph() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(dir.path(), "selfcon_r18.pth");
    let (vs, model) = model_of(&ModelCheckpoint::open(&src).unwrap());
    let out = dir.path().join("r18.onnx");
    let o = common::selfcon(&[
        "export",
        "--ckpt",
        src.to_str().unwrap(),
        "--format",
        "onnx",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let written = std::fs::read(&out).unwrap();
    assert!(written == model.to_onnx(&vs.variables()).unwrap(), "the CLI wrote another graph");
    // Outputs named as documented: the backbone and one exit.
    let text = String::from_utf8_lossy(&written);
    assert!(text.contains("backbone") && text.contains("sub_network.0"));
    // Other families: a clear error.
    let vgg = ModelConfig::new(
        Architecture::Vgg13,
        DatasetKind::Cifar10,
        ExitPositions::new(vec![false; 4]),
        SubNetworkArch::Vgg,
        SubNetworkSize::Fc,
        128,
    )
    .unwrap();
    let (vs, model) = ConModel::build(&vgg, Device::Cpu, selfcon::model::BatchNormKind::Local).unwrap();
    let e = common::user_error(model.to_onnx(&vs.variables()));
    assert!(e.contains("ONNX export of VGG encoders"), "{e}");
}

#[test]
fn every_storage_dtype_and_pickle_protocol_torch_writes_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let reference = ModelCheckpoint::open(&fixture(dir.path(), "state_dict.pth")).unwrap();
    for (name, tolerance) in [("state_dict_f16_p5.pth", 1e-3), ("state_dict_f64_p4.pth", 0.0)] {
        let ckpt = ModelCheckpoint::open(&fixture(dir.path(), name)).unwrap();
        assert_eq!(ckpt.weights.len(), reference.weights.len(), "{name}");
        for (k, t) in &ckpt.weights {
            let want = &reference.weights[k];
            let got = t.to_kind(want.kind());
            assert!(got.allclose(want, tolerance, tolerance, false), "{name}: {k}");
        }
        assert_pytorch_features_within(&ckpt, if tolerance == 0.0 { 1e-4 } else { 2e-2 });
    }
    // Views into one storage: offsets are honoured.
    let views = OfficialCheckpoint::open(&fixture(dir.path(), "views.pth")).unwrap();
    let get = |k: &str| views.weights.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
    assert_eq!(Vec::<f32>::try_from(&get("first")).unwrap(), (10..20).map(|v| v as f32).collect::<Vec<_>>());
    assert_eq!(get("matrix").size(), [4, 5]);
    assert_eq!(get("matrix").double_value(&[3, 4]), 59.0);
    assert_eq!(get("scalar").size(), Vec::<i64>::new());
    assert_eq!(get("scalar").double_value(&[]), 99.0);
    // A transposed (non-contiguous) tensor: a clear error naming it.
    let e = common::user_error(OfficialCheckpoint::open(&fixture(dir.path(), "transposed.pth")).map(|_| ()));
    assert!(e.contains("['t']") && e.contains("non-contiguous strides"), "{e}");
}
