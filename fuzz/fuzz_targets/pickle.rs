//! The safe pickle reader, both dialects: any bytes give a value or an error, quickly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfcon::pickle::{parse_as, Dialect, NdArray};

fuzz_target!(|data: &[u8]| {
    for dialect in [Dialect::NUMPY, Dialect::TORCH] {
        if let Ok(value) = parse_as(data, dialect) {
            // What the CIFAR reader does with a parsed batch.
            let _ = NdArray::from_value(&value).and_then(|a| a.to_i64());
            for key in ["data", "labels", "fine_labels"] {
                if let Some(v) = value.get(key) {
                    let _ = NdArray::from_value(v).and_then(|a| a.to_u8());
                    let _ = v.as_seq().map(|s| s.iter().filter_map(|x| x.as_int()).count());
                }
            }
        }
    }
});
