//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// An unsigned-byte IDX tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads a u8 IDX file with `expected_dims` dimensions (1 for labels, 3 for images).
pub fn read_idx(path: &Path, expected_dims: usize) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::file(path, "missing"),
        _ => Error::Io { path: path.to_path_buf(), source: e },
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::file(path, format!("corrupt gzip data: {e}")))?;
        out
    } else {
        raw
    };
    parse_idx(&bytes, expected_dims).map_err(|why| Error::file(path, why))
}

fn parse_idx(bytes: &[u8], expected_dims: usize) -> std::result::Result<IdxArray, String> {
    if bytes.len() < 4 {
        return Err("too short for an IDX header".into());
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!("wrong IDX magic {:02x}{:02x}{:02x}{:02x}", bytes[0], bytes[1], bytes[2], bytes[3]));
    }
    if bytes[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x} is not unsigned byte (0x08)", bytes[2]));
    }
    let n_dims = bytes[3] as usize;
    if n_dims != expected_dims {
        return Err(format!("IDX file has {n_dims} dimensions, expected {expected_dims}"));
    }
    let header = 4 + 4 * n_dims;
    if bytes.len() < header {
        return Err("truncated IDX header".into());
    }
    let dims: Vec<usize> =
        bytes[4..header].chunks_exact(4).map(|c| u32::from_be_bytes(c.try_into().unwrap()) as usize).collect();
    let expected = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or("IDX dimensions overflow")?;
    let body = bytes.len() - header;
    if body != expected {
        return Err(format!("IDX dimensions {dims:?} need {expected} bytes of data, found {body}"));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_and_checks_sizes() {
        let a = parse_idx(&idx(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]), 3).unwrap();
        assert_eq!(a.dims, [2, 2, 2]);
        assert_eq!(a.data[7], 8);
        assert!(parse_idx(&idx(&[2, 2, 2], &[1, 2, 3]), 3).unwrap_err().contains("need 8 bytes"));
        assert!(parse_idx(&idx(&[3], &[1, 2, 3]), 3).unwrap_err().contains("1 dimensions, expected 3"));
        let mut bad = idx(&[1], &[0]);
        bad[0] = 0x1f;
        assert!(parse_idx(&bad, 1).unwrap_err().contains("wrong IDX magic"));
        let mut float = idx(&[1], &[0]);
        float[2] = 0x0d;
        assert!(parse_idx(&float, 1).unwrap_err().contains("not unsigned byte"));
    }
}
