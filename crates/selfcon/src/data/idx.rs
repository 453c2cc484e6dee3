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

/// The most data one IDX file may hold (the largest real ones, MNIST-style training images, hold
/// 47 MB): a header claiming more is refused before anything is allocated.
pub const MAX_IDX_BYTES: usize = 1 << 31;

/// Reads a u8 IDX file with `expected_dims` dimensions (1 for labels, 3 for images). A gzip file
/// is decompressed only as far as its header says (a "gzip bomb" stops at that size).
pub fn read_idx(path: &Path, expected_dims: usize) -> Result<IdxArray> {
    read_idx_limited(path, expected_dims, MAX_IDX_BYTES)
}

/// [`read_idx`] refusing a header that claims more than `max_bytes` of data, for a caller that
/// makes more of each byte (MNIST pads 28×28 grey to 32×32×3: 3.9 bytes per byte read).
pub fn read_idx_limited(path: &Path, expected_dims: usize, max_bytes: usize) -> Result<IdxArray> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::file(path, "missing"),
        _ => Error::Io { path: path.to_path_buf(), source: e },
    })?;
    let mut file = std::io::BufReader::new(file);
    let gzip = std::io::BufRead::fill_buf(&mut file)
        .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    read_idx_from(reader, expected_dims, gzip, max_bytes).map_err(|why| Error::file(path, why))
}

fn read_idx_from(
    mut r: impl Read,
    expected_dims: usize,
    gzip: bool,
    max_bytes: usize,
) -> std::result::Result<IdxArray, String> {
    let io = |e: std::io::Error| if gzip { format!("corrupt gzip data: {e}") } else { format!("cannot read: {e}") };
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut r, &mut magic).map_err(io)?;
    if got < 4 {
        return Err("too short for an IDX header".into());
    }
    let n_dims = check_magic(&magic, expected_dims)?;
    let mut dims_raw = vec![0u8; 4 * n_dims];
    if read_up_to(&mut r, &mut dims_raw).map_err(io)? < dims_raw.len() {
        return Err("truncated IDX header".into());
    }
    let dims: Vec<usize> =
        dims_raw.chunks_exact(4).map(|c| u32::from_be_bytes(c.try_into().unwrap()) as usize).collect();
    let expected = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or("IDX dimensions overflow")?;
    if expected > max_bytes {
        return Err(format!("IDX dimensions {dims:?} claim {expected} bytes, more than the {max_bytes}-byte limit"));
    }
    // One byte more than the header says tells a longer file apart without reading all of it.
    let mut data = Vec::with_capacity(expected.min(64 << 20));
    (&mut r).take(expected as u64 + 1).read_to_end(&mut data).map_err(io)?;
    match data.len().cmp(&expected) {
        std::cmp::Ordering::Less => {
            Err(format!("IDX dimensions {dims:?} need {expected} bytes of data, found {}", data.len()))
        }
        std::cmp::Ordering::Greater => {
            Err(format!("file is larger than its header says (IDX dimensions {dims:?} need {expected} bytes of data)"))
        }
        std::cmp::Ordering::Equal => Ok(IdxArray { dims, data }),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Checks the 4-byte IDX magic; returns the number of dimensions.
fn check_magic(m: &[u8; 4], expected_dims: usize) -> std::result::Result<usize, String> {
    if m[0] != 0 || m[1] != 0 {
        return Err(format!("wrong IDX magic {:02x}{:02x}{:02x}{:02x}", m[0], m[1], m[2], m[3]));
    }
    if m[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x} is not unsigned byte (0x08)", m[2]));
    }
    let n_dims = m[3] as usize;
    if n_dims != expected_dims {
        return Err(format!("IDX file has {n_dims} dimensions, expected {expected_dims}"));
    }
    Ok(n_dims)
}

/// Parses a whole IDX file held in memory, raw or gzip-compressed.
pub fn parse_idx(bytes: &[u8], expected_dims: usize) -> std::result::Result<IdxArray, String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        read_idx_from(flate2::read::GzDecoder::new(bytes), expected_dims, true, MAX_IDX_BYTES)
    } else {
        read_idx_from(bytes, expected_dims, false, MAX_IDX_BYTES)
    }
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
        assert!(parse_idx(&idx(&[2], &[1, 2, 3]), 1).unwrap_err().contains("larger than its header says"));
        let huge = parse_idx(&idx(&[65535, 65535, 65535], &[]), 3).unwrap_err();
        assert!(huge.contains("more than the 2147483648-byte limit"), "{huge}");
        let overflow = parse_idx(&idx(&[u32::MAX, u32::MAX, u32::MAX], &[]), 3).unwrap_err();
        assert!(overflow.contains("overflow"), "{overflow}");
        assert!(parse_idx(&idx(&[3], &[1, 2, 3]), 3).unwrap_err().contains("1 dimensions, expected 3"));
        let mut bad = idx(&[1], &[0]);
        bad[0] = 0x1f;
        assert!(parse_idx(&bad, 1).unwrap_err().contains("wrong IDX magic"));
        let mut float = idx(&[1], &[0]);
        float[2] = 0x0d;
        assert!(parse_idx(&float, 1).unwrap_err().contains("not unsigned byte"));
    }
}

#[cfg(test)]
mod gzip_tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_gzip_bomb_stops_at_the_size_its_header_says() {
        // Header for 10 bytes, then 8 MiB of zeros: decompression stops after 11 bytes.
        let mut raw = vec![0, 0, 8, 1, 0, 0, 0, 10];
        raw.resize(8 + (8 << 20), 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb-idx1-ubyte.gz");
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let e = read_idx(&path, 1).unwrap_err().to_string();
        assert!(e.contains("larger than its header says") && e.contains("bomb-idx1-ubyte.gz"), "{e}");
    }
}
