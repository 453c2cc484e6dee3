//! The CLI's list and tuple parsers: `--selfcon_pos "[False,True,False]"`, `--mean "(0.5, 0.5, 0.5)"`,
//! and the other values given as text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfcon::model::{Architecture, ExitPositions, SubNetworkArch, SubNetworkSize};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = text.parse::<ExitPositions>();
    let _ = selfcon::data::parse_triple(text);
    let _ = text.parse::<Architecture>();
    let _ = text.parse::<SubNetworkArch>();
    let _ = text.parse::<SubNetworkSize>();
    let _ = text.parse::<selfcon::data::DatasetKind>();
});
