//! Datasets: what the model needs to know about each one (classes, image size, stem).
//! Reading and augmenting the images lives beside this in later modules.

mod dataset_kind;

pub use dataset_kind::DatasetKind;
