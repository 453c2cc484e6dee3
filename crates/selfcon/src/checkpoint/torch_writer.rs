//! Writes `{'model': OrderedDict(state dict), 'epoch': int, 'selfcon_model': {name: str | int}}` in
//! `torch.save`'s zip format, so
//! that `torch.load(path, weights_only=True)` (the default since torch 2.6) and the official
//! `main_linear.py` read it. The pickle uses only what the weights-only unpickler allows:
//! `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and `torch.*Storage`.
//!
//! Layout as torch writes it: `<name>/data.pkl` (protocol 2), `<name>/byteorder`,
//! `<name>/data/<i>` (one storage per tensor, 64-byte aligned, stored uncompressed) and
//! `<name>/version`.

use std::io::Write;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Pickle opcodes (protocol 2).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const SETITEMS: u8 = b'u';
    pub const GLOBAL: u8 = b'c';
    pub const REDUCE: u8 = b'R';
    pub const BINPERSID: u8 = b'Q';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const LONG1: u8 = 0x8a;
    pub const NEWFALSE: u8 = 0x89;
    pub const STOP: u8 = b'.';
}

struct Pickler {
    out: Vec<u8>,
}

impl Pickler {
    fn op(&mut self, code: u8) {
        self.out.push(code);
    }
    fn str(&mut self, s: &str) {
        self.op(op::BINUNICODE);
        self.out.extend((s.len() as u32).to_le_bytes());
        self.out.extend(s.as_bytes());
    }
    fn int(&mut self, v: i64) {
        if let Ok(small) = i32::try_from(v) {
            self.op(op::BININT);
            self.out.extend(small.to_le_bytes());
        } else {
            self.op(op::LONG1);
            self.out.push(8);
            self.out.extend(v.to_le_bytes());
        }
    }
    fn global(&mut self, module: &str, name: &str) {
        self.op(op::GLOBAL);
        self.out.extend(format!("{module}\n{name}\n").as_bytes());
    }
    fn int_tuple(&mut self, values: &[i64]) {
        self.op(op::MARK);
        for &v in values {
            self.int(v);
        }
        self.op(op::TUPLE);
    }
    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(op::EMPTY_TUPLE);
        self.op(op::REDUCE);
    }
    /// `_rebuild_tensor_v2(storage, 0, size, contiguous stride, False, OrderedDict())`.
    fn tensor(&mut self, storage_type: &str, key: &str, size: &[i64]) {
        let numel: i64 = size.iter().product();
        let mut stride = vec![1i64; size.len()];
        for d in (0..size.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * size[d + 1];
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(op::MARK);
        self.op(op::MARK);
        self.str("storage");
        self.global("torch", storage_type);
        self.str(key);
        self.str("cpu");
        self.int(numel);
        self.op(op::TUPLE);
        self.op(op::BINPERSID);
        self.int(0);
        self.int_tuple(size);
        self.int_tuple(&stride);
        self.op(op::NEWFALSE);
        self.empty_ordered_dict();
        self.op(op::TUPLE);
        self.op(op::REDUCE);
    }
}

fn storage_type(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Float => "FloatStorage",
        Kind::Double => "DoubleStorage",
        Kind::Half => "HalfStorage",
        Kind::BFloat16 => "BFloat16Storage",
        Kind::Int64 => "LongStorage",
        Kind::Int => "IntStorage",
        Kind::Uint8 => "ByteStorage",
        Kind::Bool => "BoolStorage",
        _ => return None,
    })
}

/// A plain value of the `selfcon_model` dict.
pub enum Plain {
    Str(String),
    Int(i64),
}

/// Writes `{'model': OrderedDict(weights), 'epoch': epoch, 'selfcon_model': model}` to `path`
/// atomically. `model` describes the encoder with the official option names (plain strings and
/// integers, which the weights-only unpickler accepts and the official loader ignores).
pub fn save_state_dict(path: &Path, weights: &[(String, Tensor)], epoch: i64, model: &[(&str, Plain)]) -> Result<()> {
    let io = |e: std::io::Error| Error::file(path, format!("cannot write: {e}"));
    let zerr = |e: zip::result::ZipError| Error::file(path, format!("cannot write: {e}"));
    // The folder name inside the archive: torch uses the file's stem; any name is read back.
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
        .unwrap_or("archive")
        .to_string();
    let mut p = Pickler { out: vec![op::PROTO, 2] };
    p.op(op::EMPTY_DICT);
    p.op(op::MARK);
    p.str("model");
    p.empty_ordered_dict();
    let mut storages = Vec::with_capacity(weights.len());
    if !weights.is_empty() {
        p.op(op::MARK);
        for (i, (key, t)) in weights.iter().enumerate() {
            let t = t.detach().to_device(Device::Cpu).contiguous();
            let ty = storage_type(t.kind())
                .ok_or_else(|| Error::input(format!("{key}: tensors of kind {:?} cannot be exported", t.kind())))?;
            p.str(key);
            p.tensor(ty, &i.to_string(), &t.size());
            let numel = t.numel();
            let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
            t.f_copy_data_u8(&mut bytes, numel)?;
            storages.push(bytes);
        }
        p.op(op::SETITEMS);
    }
    p.str("epoch");
    p.int(epoch);
    p.str("selfcon_model");
    p.op(op::EMPTY_DICT);
    if !model.is_empty() {
        p.op(op::MARK);
        for (k, v) in model {
            p.str(k);
            match v {
                Plain::Str(s) => p.str(s),
                Plain::Int(i) => p.int(*i),
            }
        }
        p.op(op::SETITEMS);
    }
    p.op(op::SETITEMS);
    p.op(op::STOP);

    let tmp = super::temporary_for(path).map_err(io)?;
    let mut zip = zip::ZipWriter::new(tmp.reopen().map_err(io)?);
    let stored = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let record = |zip: &mut zip::ZipWriter<std::fs::File>, rec: &str, bytes: &[u8]| -> Result<()> {
        zip.start_file_aligned(format!("{name}/{rec}"), stored, 64).map_err(zerr)?;
        zip.write_all(bytes).map_err(io)
    };
    record(&mut zip, "data.pkl", &p.out)?;
    record(&mut zip, "byteorder", b"little")?;
    for (i, bytes) in storages.iter().enumerate() {
        record(&mut zip, &format!("data/{i}"), bytes)?;
    }
    record(&mut zip, "version", b"3\n")?;
    zip.finish().map_err(zerr)?.sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
