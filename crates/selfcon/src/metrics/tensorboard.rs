//! TensorBoard event files (`--tensorboard`): `events.out.tfevents.*` in the run folder, which
//! TensorBoard (or any tfevents reader) shows as scalar curves.
//!
//! The format is TensorFlow's record file holding `Event` protocol buffers:
//! - a record is `length: u64 LE`, `masked_crc32c(length bytes): u32 LE`, the data,
//!   `masked_crc32c(data): u32 LE`, where `masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`;
//! - `Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }`,
//!   the first event of a file carrying `file_version: "brain.Event:2"`;
//! - `Summary { repeated Value value = 1; }`, `Value { string tag = 1; float simple_value = 2; }`.
//!
//! Only these few fields are written, so the protobuf encoding is done here (a varint, a key per
//! field) rather than through a protobuf code generator.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Appends scalar events to one new event file.
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// A new `events.out.tfevents.{seconds}.{host}.{pid}` in `dir`, starting with the version event.
    pub fn create(dir: &Path) -> Result<Self> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        let stem = format!("events.out.tfevents.{}.{}.{}", now() as u64, host, std::process::id());
        // A second writer in the same second and process (library use) gets its own file.
        let (file, path) = (0..)
            .map(|n| if n == 0 { dir.join(&stem) } else { dir.join(format!("{stem}.{n}")) })
            .find_map(|path| match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                result => Some(
                    result.map(|f| (f, path.clone())).map_err(|e| Error::file(&path, format!("cannot write: {e}"))),
                ),
            })
            .expect("an unused file name")?;
        let mut writer = EventWriter { file: BufWriter::new(file), path };
        let mut event = Vec::new();
        field_double(&mut event, 1, now());
        field_bytes(&mut event, 3, b"brain.Event:2");
        writer.write_record(&event)?;
        writer.flush()?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One scalar: `tag` at `step`.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<()> {
        let mut summary_value = Vec::new();
        field_bytes(&mut summary_value, 1, tag.as_bytes());
        key(&mut summary_value, 2, 5);
        summary_value.extend_from_slice(&value.to_le_bytes());
        let mut summary = Vec::new();
        field_bytes(&mut summary, 1, &summary_value);
        let mut event = Vec::new();
        field_double(&mut event, 1, now());
        key(&mut event, 2, 0);
        varint(&mut event, step as u64);
        field_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    /// Makes everything written so far visible to readers.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::file(&self.path, e.to_string()))
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(&record(data)).map_err(|e| Error::file(&self.path, e.to_string()))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.file.flush();
    }
}

/// One record of a TFRecord file around `data`.
pub fn record(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// TFRecord's checksum: CRC-32C, rotated and offset (so that a CRC of CRCs is not trivial).
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A protobuf field key: field number and wire type (0 varint, 1 fixed64, 2 bytes, 5 fixed32).
fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn field_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn field_double(out: &mut Vec<u8>, field: u32, v: f64) {
    key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_its_mask_match_known_values() {
        // CRC-32C check value of "123456789" (RFC 3720's polynomial).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc32c(b"123456789"), 0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn varints_encode_as_protobuf_does() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, vec![0xac, 0x02]);
        let mut out = Vec::new();
        varint(&mut out, 1);
        assert_eq!(out, vec![0x01]);
    }
}
