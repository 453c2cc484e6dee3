//! Reads what `torch.save` writes (the zip format of torch ≥ 1.6) without running Python:
//! `<prefix>/data.pkl` is parsed by the safe pickle reader in its torch dialect, and every tensor
//! is rebuilt from its `<prefix>/data/<key>` record by this module — nothing in the file is called.
//!
//! Accepted: storages of float16/bfloat16/float32/float64/int64/int32/uint8/bool, any storage
//! offset, contiguous strides (the only kind `state_dict()` and optimiser states hold). Anything
//! else is a one-line error naming the tensor's place in the file.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::pickle::{self, shorten, Dialect, Value};

/// The first bytes of a zip archive (and so of every `torch.save` file since torch 1.6).
pub const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";
/// The first bytes of the legacy `torch.save` format: protocol 2, then the start of its magic
/// number as a LONG1. (Not just the protocol byte: a safetensors file starts with its header
/// length, whose first byte is 0x80 once in 256 files; these four bytes as a length would be
/// 177 MB, beyond any safetensors header.)
const LEGACY_MAGIC: [u8; 4] = [0x80, 0x02, 0x8a, 0x0a];

/// An opened `torch.save` file: its pickled object and the raw storages it refers to.
pub struct TorchArchive {
    path: PathBuf,
    pub root: Value,
    /// Storage records by key (`<prefix>/data/<key>`).
    records: HashMap<String, Vec<u8>>,
    /// Storages already turned into tensors: every tensor of a storage is a view of it (as in
    /// torch), so a file that names one storage many times cannot multiply its size in memory.
    storages: std::cell::RefCell<HashMap<String, Tensor>>,
}

/// True when `bytes` start like a `torch.save` file (zip or legacy).
pub fn looks_like_torch_file(bytes: &[u8]) -> bool {
    bytes.starts_with(ZIP_MAGIC) || bytes.starts_with(&LEGACY_MAGIC)
}

impl TorchArchive {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        Self::from_bytes(path, bytes)
    }

    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let bad = |reason: String| Error::file(path, reason);
        if !bytes.starts_with(ZIP_MAGIC) {
            if bytes.starts_with(&LEGACY_MAGIC) {
                return Err(bad(
                    "is in the legacy torch.save format of torch < 1.6, which is not read; load and save it again with torch ≥ 1.6".into(),
                ));
            }
            return Err(bad("is not a torch.save file (no zip archive)".into()));
        }
        // torch.save stores records uncompressed: what they expand to is bounded by the file's size
        // (with room for a compressing re-packer), so a small "zip bomb" cannot exhaust memory.
        let archive_len = bytes.len() as u64;
        let mut budget = archive_len.saturating_mul(EXPANSION_LIMIT).saturating_add(1 << 20);
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| bad(format!("is not a readable zip archive: {e}")))?;
        let names: Vec<String> = zip.file_names().map(str::to_string).collect();
        // Every record lives under one folder named after the file at save time (any name).
        let pickles: Vec<&String> =
            names.iter().filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1).collect();
        let [pkl] = pickles.as_slice() else {
            return Err(bad(format!(
                "is not a torch.save archive: expected one <prefix>/data.pkl, found {}",
                pickles.len()
            )));
        };
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        if let Some(order) =
            read_record(&mut zip, &format!("{prefix}byteorder"), &mut budget, archive_len).map_err(&bad)?
        {
            if order != b"little" {
                return Err(bad(format!(
                    "stores tensors in {} byte order; only little-endian files are read",
                    String::from_utf8_lossy(&order)
                )));
            }
        }
        let data = read_record(&mut zip, pkl, &mut budget, archive_len).map_err(&bad)?.unwrap_or_default();
        let root = pickle::parse_as(&data, Dialect::TORCH).map_err(|e| bad(format!("{}: {e}", shorten(pkl, 60))))?;
        let data_prefix = format!("{prefix}data/");
        let mut records = HashMap::new();
        for name in names.iter().filter(|n| n.starts_with(&data_prefix)) {
            let key = name[data_prefix.len()..].to_string();
            if let Some(record) = read_record(&mut zip, name, &mut budget, archive_len).map_err(&bad)? {
                records.insert(key, record);
            }
        }
        Ok(TorchArchive { path: path.to_path_buf(), root, records, storages: Default::default() })
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::file(&self.path, reason.into())
    }

    /// Rebuilds the tensor `value` describes (`_rebuild_tensor_v2(storage, offset, size, stride, ...)`);
    /// `what` names it in errors.
    pub fn tensor(&self, value: &Value, what: &str) -> Result<Tensor> {
        let bad = |reason: String| self.error(format!("{what}: {reason}"));
        let Value::Reduce(f, args) = value else { return Err(bad("is not a tensor".into())) };
        if !pickle::is_global(f, "torch._utils", "_rebuild_tensor_v2") {
            return Err(bad("is not a plain tensor (_rebuild_tensor_v2)".into()));
        }
        let args = args.as_seq().ok_or_else(|| bad("tensor arguments are not a tuple".into()))?;
        let [storage, offset, size, stride, ..] = args else {
            return Err(bad(format!("_rebuild_tensor_v2 takes at least 4 arguments, got {}", args.len())));
        };
        let (kind, key, numel) = storage_id(storage).map_err(&bad)?;
        let ints = |v: &Value, name: &str| -> Result<Vec<i64>> {
            v.as_seq()
                .and_then(|s| s.iter().map(Value::as_int).collect::<Option<Vec<_>>>())
                .filter(|s| s.iter().all(|&d| d >= 0))
                .ok_or_else(|| bad(format!("tensor {name} is not a tuple of non-negative integers")))
        };
        let (size, stride) = (ints(size, "size")?, ints(stride, "stride")?);
        let offset =
            offset.as_int().filter(|&o| o >= 0).ok_or_else(|| bad("tensor offset is not an integer ≥ 0".into()))?;
        if size.len() != stride.len() {
            return Err(bad(format!("tensor size and stride differ in length ({} and {})", size.len(), stride.len())));
        }
        let n = size
            .iter()
            .try_fold(1i64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("tensor size overflows".into()))?;
        let mut expected = 1i64;
        for (d, (&len, &st)) in size.iter().zip(&stride).enumerate().rev() {
            if len > 1 && st != expected {
                return Err(bad(format!(
                    "tensor of size {} has non-contiguous strides {} (dimension {d}); only contiguous tensors are read",
                    shorten(&format!("{size:?}"), 40),
                    shorten(&format!("{stride:?}"), 40)
                )));
            }
            expected = expected.saturating_mul(len);
        }
        let end = offset.checked_add(n).filter(|&e| e <= numel).ok_or_else(|| {
            bad(format!("tensor of {n} elements at offset {offset} does not fit its storage of {numel}"))
        })?;
        let storage = self.storage(&key, kind, numel).map_err(&bad)?;
        Ok(storage.f_narrow(0, offset, end - offset)?.f_view(size.as_slice())?)
    }

    /// The whole storage `key` as a 1-D tensor of `numel` elements of `kind`, made once.
    fn storage(&self, key: &str, kind: Kind, numel: i64) -> std::result::Result<Tensor, String> {
        if let Some(t) = self.storages.borrow().get(key) {
            if t.kind() != kind || t.numel() as i64 != numel {
                return Err(format!("storage data/{} is named with two different types or sizes", shorten(key, 40)));
            }
            return Ok(t.shallow_clone());
        }
        let record = self
            .records
            .get(key)
            .ok_or_else(|| format!("storage record data/{} is missing from the archive", shorten(key, 40)))?;
        let item = kind.elt_size_in_bytes() as i64;
        let needed = numel.checked_mul(item).ok_or("storage size overflows")?;
        if (record.len() as i64) < needed {
            return Err(format!(
                "storage data/{} has {} bytes, its {numel} elements need {needed}",
                shorten(key, 40),
                record.len()
            ));
        }
        let t = Tensor::f_from_data_size(&record[..needed as usize], &[numel], kind).map_err(|e| e.to_string())?;
        self.storages.borrow_mut().insert(key.to_string(), t.shallow_clone());
        Ok(t)
    }
}

/// `('storage', torch.FloatStorage, key, location, numel)` → (kind, key, numel).
fn storage_id(value: &Value) -> std::result::Result<(Kind, String, i64), String> {
    let Value::PersistentId(id) = value else { return Err("tensor storage is not a storage reference".into()) };
    let fields = id.as_seq().ok_or("storage reference is not a tuple")?;
    let [tag, ty, key, _location, numel] = fields else {
        return Err(format!("storage reference has {} fields, expected 5", fields.len()));
    };
    if !tag.is_text("storage") {
        return Err("persistent id is not a storage".into());
    }
    let Value::Global(_, name) = ty else { return Err("storage type is not a torch storage class".into()) };
    let kind = match &**name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        other => return Err(format!("storages of type torch.{other} are not read")),
    };
    let key = key.as_key().map_err(|e| format!("storage key: {e}"))?;
    let numel = numel.as_int().filter(|&n| n >= 0).ok_or("storage size is not an integer ≥ 0")?;
    Ok((kind, key, numel))
}

/// How many times its own size a `torch.save` archive's records may expand to.
const EXPANSION_LIMIT: u64 = 4;

/// The bytes to reserve for a record: what the archive can hold, not what a header claims — a
/// stored record's bytes lie in the file (at most to its end); a compressed one grows as it
/// inflates.
fn reservation(file: &zip::read::ZipFile, archive_len: u64) -> u64 {
    let in_file = archive_len.saturating_sub(file.data_start());
    if file.compression() == zip::CompressionMethod::Stored {
        file.size().min(in_file)
    } else {
        0
    }
}

/// One record, within what is left of `budget` (bytes all records may expand to).
fn read_record<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    budget: &mut u64,
    archive_len: u64,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let mut file = match zip.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", shorten(name, 60))),
    };
    // The header's size bounds what is read, whatever the stream says; the budget bounds both.
    let size = file.size();
    if size > *budget {
        return Err(format!(
            "{} claims {size} bytes, more than {EXPANSION_LIMIT} times the file's size (torch.save stores records uncompressed)",
            shorten(name, 60)
        ));
    }
    let mut out = Vec::with_capacity(reservation(&file, archive_len) as usize);
    (&mut file).take(size).read_to_end(&mut out).map_err(|e| format!("{}: {e}", shorten(name, 60)))?;
    out.shrink_to_fit();
    *budget -= out.len() as u64;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A stored record whose headers claim 60 MB (the file holds 10 bytes) is read into a buffer
    /// sized from what the file holds, never from the claim (issue #31).
    #[test]
    fn a_record_claiming_a_size_reserves_only_what_the_file_holds() {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let stored = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("a/data/0", stored).unwrap();
        zip.write_all(b"0123456789").unwrap();
        let mut bytes = zip.finish().unwrap().into_inner();
        let claim = (60u32 << 20).to_le_bytes();
        for (magic, at) in [(&b"PK\x03\x04"[..], [18, 22]), (&b"PK\x01\x02"[..], [20, 24])] {
            let start = bytes.windows(4).position(|w| w == magic).unwrap();
            for offset in at {
                bytes[start + offset..start + offset + 4].copy_from_slice(&claim);
            }
        }
        let archive_len = bytes.len() as u64;
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let file = zip.by_name("a/data/0").unwrap();
        assert_eq!(file.size(), 60 << 20, "the forged claim is what the zip reader sees");
        let reserved = reservation(&file, archive_len);
        assert!(reserved <= archive_len && reserved >= 10, "{reserved} of {archive_len}");
    }
}
