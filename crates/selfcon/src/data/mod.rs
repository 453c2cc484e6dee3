//! Datasets: what the model needs to know about each one (classes, image size, stem), and the
//! readers for every on-disk format.

pub mod augment;
mod batch_pool;
mod cifar;
mod crop_source;
mod dataset;
mod dataset_kind;
pub mod decode_budget;
mod download;
mod folder;
mod idx;
mod image;
mod images;
pub mod jpeg_reduced;
mod loader;
mod mnist;
pub mod packed;
mod registry;
mod shard;
mod subset;
mod triple;

pub use cifar::{load_cifar, parse_binary_batch, parse_python_batch, CifarVariant};
pub use crop_source::{CropSource, DecodeRequest};
pub use dataset::{Dataset, MemoryDataset};
pub use dataset_kind::DatasetKind;
pub use download::{ensure_downloaded, ArchiveSource};
pub use folder::{
    decode_for_crops, decode_image, decode_image_bytes, image_folder, imagenet, imagenet100, read_image_file,
    tiny_imagenet, FileDataset, MAX_IMAGE_PIXELS,
};
pub use idx::{parse_idx, read_idx, IdxArray};
pub use image::Image;
pub use images::{chw_to_hwc, InMemoryImages};
pub use loader::{
    Batch, BatchFormat, DataLoader, EpochBatches, LoaderConfig, Normalization, OrderKey, Transform, Waited,
    STOP_AFTER_WAIT,
};
pub use mnist::{find_idx_folder, load_mnist, SYSTEM_FASHION_MNIST};
pub use registry::{bundled_fashion_mnist, open_dataset, open_image_folder, OpenedDataset, BUNDLED_FASHION_MNIST};
pub use shard::{Shard, ShardMode};
pub use subset::Subset;
pub use triple::parse_triple;
