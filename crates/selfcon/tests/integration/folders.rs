//! Image-file datasets on small generated trees in each real layout, and their errors.

use crate::common;

use std::path::Path;

use common::user_error;

use selfcon::data::{
    image_folder, imagenet, imagenet100, open_dataset, open_image_folder, tiny_imagenet, Dataset, DatasetKind,
};

fn write_png(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([seed, (x * 10) as u8, (y * 20) as u8]));
    img.save(path).unwrap();
}

fn write_jpeg(path: &Path, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(8, 6, image::Rgb([seed, 100, 200]))
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

#[test]
fn image_folder_sorts_classes_and_decodes_png_and_jpeg() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_png(&root.join("zebra/b.png"), 4, 3, 1);
    write_png(&root.join("zebra/a.png"), 4, 3, 2);
    write_jpeg(&root.join("ant/nested/x.JPG"), 3);
    std::fs::write(root.join("ant/notes.txt"), "not an image").unwrap();
    let set = image_folder(root).unwrap();
    assert_eq!(set.classes, ["ant", "zebra"]);
    assert_eq!(set.labels, [0, 1, 1]);
    assert!(set.files[1].ends_with("zebra/a.png"), "{:?}", set.files);
    let png = set.image(1).unwrap();
    assert_eq!((png.width, png.height), (4, 3));
    assert_eq!(&png.data[..6], &[2, 0, 0, 2, 10, 0]);
    let jpeg = set.image(0).unwrap();
    assert_eq!((jpeg.width, jpeg.height), (8, 6));
    assert!((jpeg.data[0] as i32 - 3).abs() <= 3 && (jpeg.data[2] as i32 - 200).abs() <= 3, "{:?}", &jpeg.data[..3]);
}

#[test]
fn image_folder_errors_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    assert!(user_error(image_folder(&root.join("nope"))).ends_with("nope: missing folder"));
    assert!(user_error(image_folder(root)).contains("no class folders"));
    write_png(&root.join("cat/1.png"), 2, 2, 0);
    std::fs::create_dir_all(root.join("dog")).unwrap();
    std::fs::write(root.join("dog/readme.md"), "x").unwrap();
    let e = user_error(image_folder(root));
    assert!(e.ends_with("dog: class folder without images (jpg, jpeg, png, ppm, bmp, pgm, tif, tiff, webp)"), "{e}");
    std::fs::write(root.join("dog/broken.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let set = image_folder(root).unwrap();
    let e = user_error(set.image(1));
    assert!(e.contains("broken.png: corrupt or unsupported image"), "{e}");
}

#[test]
fn generic_folder_with_and_without_split() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_png(&root.join("a/1.png"), 5, 5, 0);
    write_png(&root.join("b/1.png"), 5, 5, 0);
    let plain = open_image_folder(root, [0.5; 3], [0.5; 3]).unwrap();
    assert_eq!((plain.train.len(), plain.train.num_classes()), (2, 2));
    assert!(plain.test.is_none());
    write_png(&root.join("train/a/1.png"), 5, 5, 0);
    write_png(&root.join("val/b/1.png"), 5, 5, 0);
    let e = user_error(open_image_folder(root, [0.5; 3], [0.5; 3]));
    assert!(e.contains("val: class folders differ from train/"), "{e}");
    write_png(&root.join("train/b/1.png"), 5, 5, 0);
    write_png(&root.join("val/a/1.png"), 5, 5, 0);
    let split = open_image_folder(root, [0.5; 3], [0.5; 3]).unwrap();
    assert_eq!(split.test.unwrap().len(), 2);
}

#[test]
fn tiny_imagenet_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let wnids: Vec<String> = (0..200).rev().map(|i| format!("n{i:08}")).collect();
    std::fs::write(root.join("wnids.txt"), wnids.join("\n")).unwrap();
    for (k, w) in ["n00000005", "n00000199"].iter().enumerate() {
        write_jpeg(&root.join(format!("train/{w}/images/{w}_{k}.JPEG")), k as u8);
        std::fs::write(root.join(format!("train/{w}/{w}_boxes.txt")), "").unwrap();
    }
    write_jpeg(&root.join("val/images/val_0.JPEG"), 0);
    write_jpeg(&root.join("val/images/val_1.JPEG"), 0);
    std::fs::write(
        root.join("val/val_annotations.txt"),
        "val_0.JPEG\tn00000199\t0\t0\t8\t6\nval_1.JPEG\tn00000003\t0\t0\t8\t6\n",
    )
    .unwrap();
    let train = tiny_imagenet(root, true).unwrap();
    assert_eq!(train.labels, [5, 199], "label = index in the sorted wnid list");
    let val = tiny_imagenet(root, false).unwrap();
    assert_eq!(val.labels, [199, 3]);
    let data = open_dataset(DatasetKind::TinyImageNet, Some(root)).unwrap();
    assert_eq!(data.train.num_classes(), 200);

    std::fs::write(root.join("val/val_annotations.txt"), "val_0.JPEG\tn00000199\n").unwrap();
    assert!(user_error(tiny_imagenet(root, false)).ends_with("val_1.JPEG: not listed in val/val_annotations.txt"));
    std::fs::write(root.join("val/val_annotations.txt"), "val_0.JPEG\tn99999999\n").unwrap();
    assert!(user_error(tiny_imagenet(root, false)).contains("line 1: class 'n99999999' is not in wnids.txt"));
    write_jpeg(&root.join("train/n77/images/n77_1.JPEG"), 0);
    assert!(user_error(tiny_imagenet(root, true)).contains("n77_1.JPEG: class 'n77' is not in wnids.txt"));
    std::fs::remove_file(root.join("wnids.txt")).unwrap();
    assert!(user_error(tiny_imagenet(root, true)).contains("wnids.txt: unreadable"));
}

#[test]
fn imagenet100_uses_the_official_list_order_and_resizes_to_256() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let list = include_str!("../../src/data/imagenet100.txt");
    let wnids: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(wnids.len(), 100);
    assert_eq!(&wnids[..3], &["n02869837", "n01749939", "n02488291"]);
    for split in ["train", "val"] {
        for w in &wnids {
            write_png(&root.join(format!("{split}/{w}/x.png")), 20, 10, 0);
        }
    }
    write_png(&root.join("train/n99999999/extra.png"), 20, 10, 0); // not in the list: ignored
    let train = imagenet100(root, true).unwrap();
    assert_eq!(train.len(), 100);
    assert!(train.files[0].to_string_lossy().contains("n02869837"), "file order of the list, not sorted");
    assert_eq!(train.labels[1], 1);
    let img = train.image(0).unwrap();
    assert_eq!((img.width, img.height), (512, 256));
    std::fs::remove_dir_all(root.join("val/n01749939")).unwrap();
    assert!(user_error(imagenet100(root, false)).ends_with("n01749939: missing folder"));
}

#[test]
fn imagenet_folders_and_class_count() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for split in ["train", "val"] {
        for c in 0..1000 {
            write_png(&root.join(format!("{split}/n{c:08}/0.png")), 2, 2, 0);
        }
    }
    let data = open_dataset(DatasetKind::ImageNet, Some(root)).unwrap();
    assert_eq!((data.train.len(), data.train.num_classes()), (1000, 1000));
    assert_eq!(imagenet(root, false).unwrap().labels[999], 999);
    // A subset (issue #33): fewer classes are read as they are, but val/ must match train/.
    std::fs::remove_dir_all(root.join("train/n00000999")).unwrap();
    let e = user_error(open_dataset(DatasetKind::ImageNet, Some(root)));
    assert!(e.contains("val: class folders differ from train/"), "{e}");
    std::fs::remove_dir_all(root.join("val/n00000999")).unwrap();
    let data = open_dataset(DatasetKind::ImageNet, Some(root)).unwrap();
    assert_eq!((data.train.num_classes(), data.test.as_ref().map(|t| t.len())), (999, Some(999)));
    // Without val/ (the official pre-training reads train/ only): no test split.
    std::fs::remove_dir_all(root.join("val")).unwrap();
    let data = open_dataset(DatasetKind::ImageNet, Some(root)).unwrap();
    assert!(data.test.is_none() && data.train.len() == 999);
}

/// `--dataset folder` through pre-training, linear evaluation and 1-stage CE, with the CIFAR stem
/// chosen for small images.
#[test]
fn folder_dataset_trains_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    for (split, n) in [("train", 6u8), ("val", 2)] {
        for class in ["ant", "bee"] {
            for i in 0..n {
                write_png(
                    &tmp.path().join(split).join(class).join(format!("{i}.png")),
                    20,
                    18,
                    i * 7 + class.len() as u8,
                );
            }
        }
    }
    let save = tempfile::tempdir().unwrap();
    let (root, out) = (tmp.path().to_str().unwrap(), save.path().to_str().unwrap());
    let data = [
        "--dataset",
        "folder",
        "--data_folder",
        root,
        "--size",
        "16",
        "--mean",
        "(0.5, 0.5, 0.5)",
        "--std",
        "0.25,0.25,0.25",
        "--num_workers",
        "1",
        "--epochs",
        "1",
        "--batch_size",
        "6",
        "--save_dir",
        out,
    ];
    let model = ["--model", "resnet18", "--selfcon_pos", "[False,True,False]", "--selfcon_size", "fc"];
    let o = common::selfcon(&[&["pretrain", "--method", "SelfCon"][..], &data, &model].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ckpt = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(ckpt.contains("SelfCon/folder_models/SelfCon_folder_resnet18_"), "{ckpt}");
    let o = common::selfcon(&[&["linear", "--ckpt", &ckpt, "--subnet"][..], &data, &model].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entry: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(entry["ensemble"][0].as_f64().is_some(), "{entry}");
    let o = common::selfcon(&[&["ce", "--method", "subnet_ce"][..], &data, &model].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Without --size the folder cannot be used.
    common::assert_usage_error(
        &["pretrain", "--method", "SupCon", "--dataset", "folder", "--data_folder", root],
        "--size: --dataset folder needs --size",
    );
}
