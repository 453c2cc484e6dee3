//! Dataset readers on small files in each real layout, on the bundled Fashion-MNIST subset, and
//! on broken input (each a one-line error naming the file).

use crate::common;

use std::path::{Path, PathBuf};

use common::user_error;
use selfcon::data::{find_idx_folder, load_cifar, load_mnist, CifarVariant, InMemoryImages};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cifar")
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fashion-mnist-demo")
}

/// Pixel k (CHW order) of image i and its label, as scripts/make_pickle_fixtures.py writes them.
fn fixture_pixel(i: usize, k: usize) -> u8 {
    ((7 * i + 13 * k) % 256) as u8
}

fn check_fixture(set: &InMemoryImages, n: usize, classes: i64) {
    assert_eq!(set.len(), n);
    assert_eq!((set.height, set.width, set.channels), (32, 32, 3));
    for i in 0..n {
        assert_eq!(set.labels[i], (3 * i as i64 + 1) % classes, "label {i}");
        let img = set.image(i);
        for (y, x, c) in [(0, 0, 0), (5, 17, 1), (31, 31, 2), (12, 3, 0)] {
            let k = c * 1024 + y * 32 + x;
            assert_eq!(img[(y * 32 + x) * 3 + c], fixture_pixel(i, k), "image {i} ({y},{x},{c})");
        }
    }
}

#[test]
fn cifar_pickles_of_every_dialect() {
    for dialect in ["py2", "np1_p2", "np1_p4", "np2_p2", "np2_p5"] {
        let root = fixtures().join(dialect);
        let train = load_cifar(&root, CifarVariant::Cifar10, true).unwrap_or_else(|e| panic!("{dialect}: {e}"));
        check_fixture(&train, 10, 10);
        check_fixture(&load_cifar(&root, CifarVariant::Cifar10, false).unwrap(), 2, 10);
        check_fixture(&load_cifar(&root, CifarVariant::Cifar100, true).unwrap(), 2, 100);
        check_fixture(&load_cifar(&root, CifarVariant::Cifar100, false).unwrap(), 2, 100);
    }
}

fn write_binary(root: &Path, variant: CifarVariant, labels: &[u8]) {
    let (dir, files): (&str, Vec<String>) = match variant {
        CifarVariant::Cifar10 => (
            "cifar-10-batches-bin",
            (1..=5).map(|b| format!("data_batch_{b}.bin")).chain(["test_batch.bin".into()]).collect(),
        ),
        CifarVariant::Cifar100 => ("cifar-100-binary", vec!["train.bin".into(), "test.bin".into()]),
    };
    std::fs::create_dir_all(root.join(dir)).unwrap();
    for name in files {
        let mut bytes = Vec::new();
        for (i, &l) in labels.iter().enumerate() {
            if variant == CifarVariant::Cifar100 {
                bytes.push(l / 5); // coarse label, ignored
            }
            bytes.push(l);
            bytes.extend((0..3072).map(|k| fixture_pixel(i, k)));
        }
        std::fs::write(root.join(dir).join(name), bytes).unwrap();
    }
}

#[test]
fn cifar_binary_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    write_binary(tmp.path(), CifarVariant::Cifar10, &[1, 4]);
    let train = load_cifar(tmp.path(), CifarVariant::Cifar10, true).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(&train.labels[..2], &[1, 4]);
    assert_eq!(train.image(1)[3 * 33 + 2], fixture_pixel(1, 2048 + 33));
    write_binary(tmp.path(), CifarVariant::Cifar100, &[1, 4]);
    let test = load_cifar(tmp.path(), CifarVariant::Cifar100, false).unwrap();
    check_fixture(&test, 2, 100); // labels 1, 4 = (3i+1) for i = 0, 1
}

#[test]
fn broken_cifar_input_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let e = user_error(load_cifar(root, CifarVariant::Cifar10, true));
    assert!(e.contains("no CIFAR data: expected cifar-10-batches-py/"), "{e}");

    // Wrong layout: the folder exists but a batch is missing.
    let dir = root.join("cifar-10-batches-py");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"] {
        std::fs::copy(fixtures().join("py2/cifar-10-batches-py").join(f), dir.join(f)).unwrap();
    }
    let e = user_error(load_cifar(root, CifarVariant::Cifar10, false));
    assert!(e.contains("test_batch: missing"), "{e}");

    // Truncated pickle.
    let good = std::fs::read(dir.join("data_batch_1")).unwrap();
    std::fs::write(dir.join("data_batch_2"), &good[..good.len() / 2]).unwrap();
    let e = user_error(load_cifar(root, CifarVariant::Cifar10, true));
    assert!(e.contains("data_batch_2: truncated pickle"), "{e}");

    // Not a pickle at all.
    std::fs::write(dir.join("data_batch_2"), b"<html>not found</html>").unwrap();
    let e = user_error(load_cifar(root, CifarVariant::Cifar10, true));
    assert!(e.contains("data_batch_2: not a Python pickle"), "{e}");

    // A pickle that would run code is refused, not executed.
    std::fs::write(dir.join("data_batch_2"), b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueR.").unwrap();
    let e = user_error(load_cifar(root, CifarVariant::Cifar10, true));
    assert!(e.contains("refusing pickle global os.system"), "{e}");

    // A CIFAR-100 file where CIFAR-10 is expected.
    std::fs::copy(fixtures().join("np2_p2/cifar-100-python/train"), dir.join("data_batch_2")).unwrap();
    let e = user_error(load_cifar(root, CifarVariant::Cifar10, true));
    assert!(e.contains("data_batch_2: no 'labels' entry"), "{e}");

    // Binary layout: truncated record and label out of range.
    let bin = tempfile::tempdir().unwrap();
    write_binary(bin.path(), CifarVariant::Cifar10, &[1, 11]);
    let e = user_error(load_cifar(bin.path(), CifarVariant::Cifar10, true));
    assert!(e.contains("data_batch_1.bin: label 11 of image 1 is outside 0..10"), "{e}");
    let f = bin.path().join("cifar-10-batches-bin/data_batch_1.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..3000]).unwrap();
    let e = user_error(load_cifar(bin.path(), CifarVariant::Cifar10, true));
    assert!(e.contains("data_batch_1.bin: size 3000 is not a multiple of the 3073-byte CIFAR record"), "{e}");
}

#[test]
fn bundled_fashion_mnist_subset() {
    let train = load_mnist(&demo(), true).unwrap();
    let test = load_mnist(&demo(), false).unwrap();
    assert_eq!((train.len(), test.len()), (10_000, 2_000));
    assert_eq!((train.height, train.width, train.channels), (32, 32, 3));
    for c in 0..10 {
        assert_eq!(train.labels.iter().filter(|l| **l == c).count(), 1000);
        assert_eq!(test.labels.iter().filter(|l| **l == c).count(), 200);
    }
    let img = train.image(0);
    assert!(img[..32 * 2 * 3].iter().all(|&v| v == 0), "2-pixel zero border");
    assert!(img.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]), "grey repeated to 3 channels");
    assert!(img.iter().any(|&v| v > 0));
    let (mean, std) = train.channel_stats();
    // Fashion-MNIST's 28×28 mean is ≈ 0.286; the zero border lowers it by 784/1024.
    assert!((mean[0] - 0.286 * 784.0 / 1024.0).abs() < 0.01, "{mean:?}");
    assert!(std[0] > 0.25 && std[0] < 0.4, "{std:?}");
}

#[test]
fn full_fashion_mnist_when_installed() {
    let Some(dir) = find_idx_folder(Path::new(selfcon::data::SYSTEM_FASHION_MNIST), "FashionMNIST") else {
        eprintln!(
            "skipped: {} not installed (Debian package dataset-fashion-mnist)",
            selfcon::data::SYSTEM_FASHION_MNIST
        );
        return;
    };
    let train = load_mnist(&dir, true).unwrap();
    assert_eq!(train.len(), 60_000);
    assert_eq!(load_mnist(&dir, false).unwrap().len(), 10_000);
    // The bundled subset is the first 1,000 of each class: its first image is the full set's first.
    let subset = load_mnist(&demo(), true).unwrap();
    assert_eq!(subset.image(0), train.image(0));
}

fn write_idx(path: &Path, magic3: u8, dims: &[u32], body: &[u8]) {
    let mut v = vec![0, 0, 8, magic3];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(body);
    std::fs::write(path, v).unwrap();
}

#[test]
fn raw_idx_in_torchvision_layout_and_broken_idx() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("MNIST/raw");
    std::fs::create_dir_all(&raw).unwrap();
    let images: Vec<u8> = (0..3 * 784).map(|i| (i % 251) as u8).collect();
    write_idx(&raw.join("t10k-images-idx3-ubyte"), 3, &[3, 28, 28], &images);
    write_idx(&raw.join("t10k-labels-idx1-ubyte"), 1, &[3], &[3, 1, 4]);
    write_idx(&raw.join("train-images-idx3-ubyte"), 3, &[3, 28, 28], &images);
    write_idx(&raw.join("train-labels-idx1-ubyte"), 1, &[2], &[3, 1]);
    let dir = find_idx_folder(tmp.path(), "MNIST").expect("found under MNIST/raw");
    let test = load_mnist(&dir, false).unwrap();
    assert_eq!(test.labels, [3, 1, 4]);
    assert_eq!(test.image(2)[(2 * 32 + 2) * 3], images[2 * 784]);

    let e = user_error(load_mnist(&dir, true));
    assert!(e.contains("train-labels-idx1-ubyte: 2 labels for 3 images"), "{e}");
    write_idx(&raw.join("train-labels-idx1-ubyte"), 1, &[3], &[3, 1, 10]);
    let e = user_error(load_mnist(&dir, true));
    assert!(e.contains("label 10 of image 2 is outside 0..10"), "{e}");
    write_idx(&raw.join("train-images-idx3-ubyte"), 3, &[3, 28, 28], &images[..100]);
    let e = user_error(load_mnist(&dir, true));
    assert!(
        e.contains("train-images-idx3-ubyte: IDX dimensions [3, 28, 28] need 2352 bytes of data, found 100"),
        "{e}"
    );
    std::fs::write(raw.join("train-images-idx3-ubyte"), b"\x1f\x8b\x08\x00garbage").unwrap();
    let e = user_error(load_mnist(&dir, true));
    assert!(e.contains("train-images-idx3-ubyte: corrupt gzip data"), "{e}");
    std::fs::write(raw.join("train-images-idx3-ubyte"), b"PK\x03\x04zip").unwrap();
    let e = user_error(load_mnist(&dir, true));
    assert!(e.contains("wrong IDX magic"), "{e}");
    std::fs::remove_file(raw.join("train-images-idx3-ubyte")).unwrap();
    let e = user_error(load_mnist(&dir, true));
    assert!(e.contains("train-images-idx3-ubyte.gz: missing"), "{e}");
}
