//! `selfcon report`: a pre-training run (kNN monitor on) and a linear evaluation of it, reported
//! together — files exist, pictures decode and are not blank, index.html shows each of them.

use crate::common;

use std::path::{Path, PathBuf};

use common::{assert_usage_error, selfcon};

fn not_blank(path: &Path) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    assert!(img.width() >= 400 && img.height() >= 400, "{}", path.display());
    let distinct: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(distinct.len() > 20, "{}: only {} colours", path.display(), distinct.len());
    let white = img.pixels().filter(|p| p.0 == [255, 255, 255]).count();
    assert!(white < img.pixels().count(), "{} is all white", path.display());
}

#[test]
fn report_of_a_pretraining_and_its_linear_evaluation() {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 16, 12);
    let save = tempfile::tempdir().unwrap();
    let (data, out) = (d.path().to_str().unwrap(), save.path().to_str().unwrap());
    let model = ["--model", "resnet18", "--selfcon_pos", "[False,True,False]", "--selfcon_size", "fc"];
    let common_flags = ["--dataset", "fashionmnist", "--data_folder", data, "--save_dir", out, "--num_workers", "1"];
    let o = selfcon(
        &[
            &["pretrain", "--method", "SelfCon", "--batch_size", "8", "--epochs", "2", "--print_freq", "1"][..],
            &["--knn_every", "1", "--knn_k", "3"],
            &model,
            &common_flags,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ckpt = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let pretrain_dir = ckpt.parent().unwrap().to_path_buf();
    let o = selfcon(
        &[
            &["linear", "--ckpt", ckpt.to_str().unwrap(), "--subnet", "--batch_size", "8", "--epochs", "2"][..],
            &model,
            &common_flags,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let linear_dir = common::walk_files(save.path())
        .into_iter()
        .find(|p| p.ends_with("metrics.jsonl") && !p.starts_with(&pretrain_dir))
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .expect("the linear run folder");

    let report_dir = save.path().join("report");
    let o = selfcon(&[
        "report",
        pretrain_dir.to_str().unwrap(),
        linear_dir.to_str().unwrap(),
        "--out",
        report_dir.to_str().unwrap(),
        "--data_folder",
        data,
        "--map_images",
        "12",
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let index = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert_eq!(index, report_dir.join("index.html"));
    let html = std::fs::read_to_string(&index).unwrap();
    let pictures: Vec<PathBuf> =
        common::walk_files(&report_dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "png")).collect();
    let names: Vec<String> = pictures.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for want in [
        "loss.png",
        "lr.png",
        "throughput.png",
        "knn.png",
        "accuracy.png",
        "map1_trained_backbone.png",
        "map1_trained_exit1.png",
        "map1_init_backbone.png",
        "map1_init_exit1.png",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for (picture, name) in pictures.iter().zip(&names) {
        not_blank(picture);
        assert!(html.contains(&format!("<img src=\"{name}\"")), "index.html does not show {name}");
    }
    // The runs' settings and final numbers; the linear run is labelled after its pre-training.
    for text in [
        "SelfCon resnet18",
        "linear of SelfCon resnet18",
        "kNN top-1 (backbone)",
        "ensemble top-1",
        "[false,true,false]",
    ] {
        assert!(html.contains(text), "index.html lacks '{text}'");
    }
    assert!(err.contains("5 plots and 4 feature maps of 2 run(s)"), "{err}");

    // Without maps no data is needed; bad input is one line with exit code 2.
    let o = selfcon(&[
        "report",
        pretrain_dir.to_str().unwrap(),
        "--out",
        report_dir.to_str().unwrap(),
        "--map_images",
        "0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_usage_error(
        &["report", "/nonexistent/run", "--out", report_dir.to_str().unwrap()],
        "/nonexistent/run/config.json",
    );
    assert_usage_error(
        &["report", pretrain_dir.to_str().unwrap(), "--out", report_dir.to_str().unwrap(), "--map", "umap"],
        "--map: unknown map 'umap' (choose from tsne, pca)",
    );
}
