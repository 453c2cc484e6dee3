//! MNIST and Fashion-MNIST: grey 28×28 images zero-padded to 32×32 and repeated to 3 channels, so
//! every CIFAR recipe (crop size, stem) applies unchanged.

use std::path::{Path, PathBuf};

use super::idx::{read_idx, read_idx_limited, MAX_IDX_BYTES};
use super::images::InMemoryImages;
use crate::error::{Error, Result};

/// Where Debian's `dataset-fashion-mnist` package installs the full data set.
pub const SYSTEM_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

const SIDE: usize = 28;
const PADDED: usize = 32;

/// The file stem of a split, as published (`train-images-idx3-ubyte`, ...).
fn stems(train: bool) -> (&'static str, &'static str) {
    if train {
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    } else {
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    }
}

/// The folder holding the IDX files: `root` itself or torchvision's `root/{MNIST,FashionMNIST}/raw`.
pub fn find_idx_folder(root: &Path, torchvision_name: &str) -> Option<PathBuf> {
    let (images, _) = stems(true);
    [root.to_path_buf(), root.join(torchvision_name).join("raw")]
        .into_iter()
        .find(|dir| [images.to_string(), format!("{images}.gz")].iter().any(|f| dir.join(f).is_file()))
}

fn idx_file(dir: &Path, stem: &str) -> PathBuf {
    let raw = dir.join(stem);
    if raw.is_file() {
        raw
    } else {
        dir.join(format!("{stem}.gz"))
    }
}

/// Loads a split from the folder holding the IDX files.
pub fn load_mnist(dir: &Path, train: bool) -> Result<InMemoryImages> {
    let (image_stem, label_stem) = stems(train);
    let image_path = idx_file(dir, image_stem);
    let label_path = idx_file(dir, label_stem);
    // The cap counts the padded images, not the file's bytes: a header claiming 548 MB of 28×28
    // images would become 2 GiB of 32×32×3.
    let images = read_idx_limited(&image_path, 3, MAX_IDX_BYTES / (PADDED * PADDED * 3) * (SIDE * SIDE))?;
    let labels = read_idx(&label_path, 1)?;
    if images.dims[1..] != [SIDE, SIDE] {
        return Err(Error::file(&image_path, format!("images are {:?}, expected N×28×28", images.dims)));
    }
    if images.dims[0] != labels.dims[0] {
        return Err(Error::file(
            &label_path,
            format!("{} labels for {} images in {}", labels.dims[0], images.dims[0], image_path.display()),
        ));
    }
    if let Some(i) = labels.data.iter().position(|&l| l > 9) {
        return Err(Error::file(&label_path, format!("label {} of image {i} is outside 0..10", labels.data[i])));
    }
    let n = images.dims[0];
    let pad = (PADDED - SIDE) / 2;
    let mut pixels = vec![0u8; n * PADDED * PADDED * 3];
    for (src, dst) in images.data.chunks_exact(SIDE * SIDE).zip(pixels.chunks_exact_mut(PADDED * PADDED * 3)) {
        for y in 0..SIDE {
            for x in 0..SIDE {
                let v = src[y * SIDE + x];
                let o = ((y + pad) * PADDED + x + pad) * 3;
                dst[o..o + 3].fill(v);
            }
        }
    }
    Ok(InMemoryImages {
        pixels,
        height: PADDED,
        width: PADDED,
        channels: 3,
        labels: labels.data.iter().map(|&l| l as i64).collect(),
    })
}
