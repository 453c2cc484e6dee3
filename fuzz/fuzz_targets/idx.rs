//! IDX files, raw and gzip-compressed (the reader tells them apart by the gzip magic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfcon::data::parse_idx;

fuzz_target!(|data: &[u8]| {
    for dims in [1, 3] {
        let _ = parse_idx(data, dims);
    }
});
