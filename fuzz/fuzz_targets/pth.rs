//! Official `.pth` checkpoints (zip + pickle + tensor records) as every command opens them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfcon::checkpoint::ModelCheckpoint;

fuzz_target!(|data: &[u8]| {
    // Through ModelCheckpoint: zip archive, data.pkl, tensors, 'opt', momentum by index.
    let mut bytes = data.to_vec();
    if !bytes.starts_with(b"PK") {
        // Most inputs should reach the zip reader; the legacy and safetensors paths get the rest.
        bytes.splice(0..0, *b"PK\x03\x04");
    }
    if let Ok(ckpt) = ModelCheckpoint::from_bytes(std::path::Path::new("fuzz.pth"), bytes) {
        let _ = ckpt.model;
    }
    let _ = ModelCheckpoint::from_bytes(std::path::Path::new("fuzz.pth"), data.to_vec());
});
