//! CIFAR batches, pickled and binary, both variants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfcon::data::{parse_binary_batch, parse_python_batch, CifarVariant};

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz_batch");
    for variant in [CifarVariant::Cifar10, CifarVariant::Cifar100] {
        let _ = parse_python_batch(path, data, variant);
        let _ = parse_binary_batch(path, data, variant);
    }
});
