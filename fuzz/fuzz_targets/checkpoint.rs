//! Our safetensors checkpoints as `--resume` and `--ckpt` read them: the safetensors crate's
//! parsing, then our schema checks (stage, epoch, config JSON, history, weight names and shapes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfcon::checkpoint::ModelCheckpoint;
use selfcon::train::{PretrainConfig, Resumed};
use tch::{nn, Device};

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.safetensors");
    let _ = ModelCheckpoint::from_bytes(path, data.to_vec());
    if let Ok(resumed) = Resumed::from_bytes(path, data, "pretrain") {
        let _ = resumed.config::<PretrainConfig>();
        let _ = resumed.history::<Vec<f64>>();
        // A small model: the strict name/shape check and the optimiser state restore.
        let vs = nn::VarStore::new(Device::Cpu);
        let head = vs.root() / "head" / 0;
        let _w = head.var("weight", &[4, 3], nn::Init::Const(0.0));
        let _b = head.var("bias", &[4], nn::Init::Const(0.0));
        let _ = resumed.restore_weights("", &vs);
        let mut sgd = selfcon::train::Sgd::new(&vs, 0.9, 1e-4);
        let _ = resumed.restore_optimizer("", &mut sgd);
    }
});
