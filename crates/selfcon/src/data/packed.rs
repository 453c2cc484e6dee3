//! The packed dataset: every image of a dataset (both splits) in one memory-mapped file, stored
//! as JPEG or raw RGB and optionally pre-resized, with an index of offsets and labels — one file
//! to copy to a training host, no per-image open or directory walk, and (raw, or pre-resized)
//! far less decoding per sample. Written by `selfcon prepare`; read wherever `--data_folder` names
//! such a file.
//!
//! Layout (little-endian):
//! - `MAGIC` (16 bytes), then the 8-byte fingerprint of what is being packed (a resumed
//!   `prepare` checks it);
//! - records, one per image in listing order: a 24-byte header (payload length u32, width u16,
//!   height u16, label u32, split u8, storage u8, 2 bytes zero, CRC-32C of the payload u32,
//!   4 bytes zero) and the payload;
//! - the index: per record its offset u64 and label u32, split u8, 3 bytes zero (16 bytes);
//! - the metadata JSON ([`PackInfo`]);
//! - the trailer: index offset u64, record count u64, JSON offset u64, JSON length u64, `MAGIC`.
//!
//! A `prepare` appends records to `FILE.partial` and renames it to `FILE` only once the index and
//! metadata are written and synced: a killed run leaves no `FILE`, and the next run keeps the
//! partial file's records up to the last whole one whose CRC matches.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::augment::CropBox;
use super::crop_source::{CropSource, DecodeRequest};
use super::dataset::Dataset;
use super::image::Image;
use crate::error::{Error, Result};

pub const MAGIC: &[u8; 16] = b"SELFCON-PACK\0\0\0\x01";
const RECORD_HEADER: usize = 24;
const INDEX_ENTRY: usize = 16;
const TRAILER: usize = 32 + MAGIC.len();
/// The metadata is a few hundred bytes plus the class names.
const MAX_INFO_BYTES: u64 = 64 << 20;

/// How a record's pixels are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// JPEG: the source file's own bytes when it is a JPEG that needs no resizing, else
    /// re-encoded at `--quality`.
    Jpeg,
    /// Raw 8-bit RGB: no decoding at all when read, ~10× the bytes of a JPEG.
    Raw,
}

impl Storage {
    fn code(self) -> u8 {
        match self {
            Storage::Jpeg => 0,
            Storage::Raw => 1,
        }
    }
}

/// What a packed file holds besides the pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackInfo {
    /// The `--dataset` it was packed from (the same name reads it).
    pub dataset: String,
    pub classes: Vec<String>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub train: usize,
    pub test: usize,
    pub storage: Storage,
    /// Longer sides above this were resized down to it (Pillow's bilinear, antialiased).
    pub max_side: Option<usize>,
    pub quality: u8,
    /// Where the images came from (informational).
    pub source: PathBuf,
}

/// An open packed file, shared by its two splits.
pub struct Pack {
    map: memmap2::Mmap,
    path: PathBuf,
    pub info: PackInfo,
    /// (record offset, label, split) per record.
    index: Vec<(u64, u32, u8)>,
    /// Where the records end (the index starts).
    records_end: usize,
}

/// Whether `path` is a packed file (a regular file starting with [`MAGIC`]).
pub fn is_pack(path: &Path) -> bool {
    let mut head = [0u8; 16];
    path.is_file() && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == MAGIC
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

/// One record's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecordHeader {
    length: u32,
    width: u16,
    height: u16,
    label: u32,
    split: u8,
    storage: u8,
    crc: u32,
}

impl RecordHeader {
    fn encode(&self) -> [u8; RECORD_HEADER] {
        let mut out = [0u8; RECORD_HEADER];
        out[0..4].copy_from_slice(&self.length.to_le_bytes());
        out[4..6].copy_from_slice(&self.width.to_le_bytes());
        out[6..8].copy_from_slice(&self.height.to_le_bytes());
        out[8..12].copy_from_slice(&self.label.to_le_bytes());
        out[12] = self.split;
        out[13] = self.storage;
        out[16..20].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> RecordHeader {
        RecordHeader {
            length: u32_at(bytes, 0),
            width: u16_at(bytes, 4),
            height: u16_at(bytes, 6),
            label: u32_at(bytes, 8),
            split: bytes[12],
            storage: bytes[13],
            crc: u32_at(bytes, 16),
        }
    }
}

impl Pack {
    /// Opens and checks a packed file: the trailer, index and metadata must lie inside it and
    /// agree; records are checked when read.
    pub fn open(path: &Path) -> Result<Arc<Pack>> {
        let bad = |why: String| Error::file(path, format!("not a usable packed dataset: {why}"));
        let file = std::fs::File::open(path).map_err(|e| Error::file(path, format!("unreadable: {e}")))?;
        // SAFETY: the file is mapped read-only; like every reader of a memory-mapped file, this
        // one assumes nobody truncates it meanwhile (`prepare` never rewrites a finished file).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::file(path, format!("cannot map: {e}")))?;
        let len = map.len();
        if len < MAGIC.len() + 8 + TRAILER || &map[..16] != MAGIC || &map[len - 16..] != MAGIC {
            return Err(bad("no pack header or trailer (a partial file? run `selfcon prepare` again)".into()));
        }
        let t = len - TRAILER;
        let (index_at, count, info_at, info_len) =
            (u64_at(&map, t), u64_at(&map, t + 8), u64_at(&map, t + 16), u64_at(&map, t + 24));
        // Checked arithmetic throughout: the numbers come from the file. Once these hold, the
        // index and the metadata lie between the records and the trailer.
        let index_end = count.checked_mul(INDEX_ENTRY as u64).and_then(|n| n.checked_add(index_at));
        if index_at < 24
            || index_end != Some(info_at)
            || info_len > MAX_INFO_BYTES
            || info_at.checked_add(info_len) != Some(t as u64)
        {
            return Err(bad("its trailer does not describe the file".into()));
        }
        let info: PackInfo =
            serde_json::from_slice(&map[info_at as usize..t]).map_err(|e| bad(format!("metadata: {e}")))?;
        let mut index = Vec::with_capacity(count as usize);
        for k in 0..count as usize {
            let at = index_at as usize + k * INDEX_ENTRY;
            let (offset, label, split) = (u64_at(&map, at), u32_at(&map, at + 8), map[at + 12]);
            if offset < 24
                || offset > index_at - RECORD_HEADER as u64
                || split > 1
                || label as usize >= info.classes.len()
            {
                return Err(bad(format!("index entry {k} is out of range")));
            }
            index.push((offset, label, split));
        }
        let splits = index.iter().filter(|e| e.2 == 0).count();
        if (splits, index.len() - splits) != (info.train, info.test) {
            return Err(bad("the index and the metadata disagree on the split sizes".into()));
        }
        Ok(Arc::new(Pack { map, path: path.to_path_buf(), info, index, records_end: index_at as usize }))
    }

    /// The training split and (when packed) the test split.
    pub fn splits(self: &Arc<Pack>) -> (PackedDataset, Option<PackedDataset>) {
        let split = |s: u8| PackedDataset {
            pack: self.clone(),
            records: self.index.iter().enumerate().filter(|(_, e)| e.2 == s).map(|(k, _)| k).collect(),
        };
        let test = (self.info.test > 0).then(|| split(1));
        (split(0), test)
    }

    /// Record `k`'s header and payload, checked against the file and the index.
    fn record(&self, k: usize) -> Result<(RecordHeader, &[u8])> {
        let (offset, label, split) = self.index[k];
        let at = offset as usize;
        let header = RecordHeader::decode(&self.map[at..at + RECORD_HEADER]);
        // `at + RECORD_HEADER <= records_end` was checked at open.
        let start = at + RECORD_HEADER;
        let end = start.checked_add(header.length as usize).filter(|&end| end <= self.records_end);
        let Some(end) = end else {
            return Err(Error::file(&self.path, format!("record {k} is damaged (its length runs past the records)")));
        };
        if header.label != label || header.split != split || header.width == 0 || header.height == 0 {
            return Err(Error::file(
                &self.path,
                format!("record {k} is damaged (its header disagrees with the index)"),
            ));
        }
        Ok((header, &self.map[start..end]))
    }
}

/// One split of a packed file.
pub struct PackedDataset {
    pack: Arc<Pack>,
    /// Record numbers of this split, in listing order.
    records: Vec<usize>,
}

impl PackedDataset {
    fn decode(&self, index: usize, plan: Option<&mut dyn FnMut(usize, usize) -> DecodeRequest>) -> Result<CropSource> {
        let k = self.records[index];
        let (header, payload) = self.pack.record(k)?;
        let (w, h) = (header.width as usize, header.height as usize);
        let damaged = |why: String| Error::file(&self.pack.path, format!("record {k}: {why}"));
        let image = match header.storage {
            1 => {
                if payload.len() != w * h * 3 {
                    return Err(damaged(format!("{} bytes of raw pixels for {w} × {h}", payload.len())));
                }
                let region = plan.and_then(|plan| plan(w, h).region);
                raw_region(payload, (w, h), region)
            }
            0 => match plan {
                Some(plan) => super::folder::decode_for_crops(payload, plan).map_err(damaged)?,
                None => CropSource::whole(super::folder::decode_image_bytes(payload).map_err(damaged)?),
            },
            other => return Err(damaged(format!("unknown storage {other}"))),
        };
        if image.full != (w, h) {
            return Err(damaged(format!("decoded {} × {}, recorded {w} × {h}", image.full.0, image.full.1)));
        }
        Ok(image)
    }
}

/// The `region` of a raw `w × h` record (all of it when `None` or out of bounds): only those
/// bytes are copied out of the mapped file.
fn raw_region(payload: &[u8], (w, h): (usize, usize), region: Option<CropBox>) -> CropSource {
    match region {
        Some(r) if r.width > 0 && r.height > 0 && r.left + r.width <= w && r.top + r.height <= h => {
            let mut data = Vec::with_capacity(r.width * r.height * 3);
            for y in r.top..r.top + r.height {
                let row = (y * w + r.left) * 3;
                data.extend_from_slice(&payload[row..row + r.width * 3]);
            }
            CropSource {
                image: Image::new(r.width, r.height, data),
                full: (w, h),
                scaled: (w, h),
                reduction: 1,
                origin: (r.left, r.top),
            }
        }
        _ => CropSource::whole(Image::new(w, h, payload.to_vec())),
    }
}

impl Dataset for PackedDataset {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn num_classes(&self) -> i64 {
        self.pack.info.classes.len() as i64
    }

    fn label(&self, index: usize) -> i64 {
        self.pack.index[self.records[index]].1 as i64
    }

    fn class_names(&self) -> Vec<String> {
        self.pack.info.classes.clone()
    }

    fn image(&self, index: usize) -> Result<Image> {
        Ok(self.decode(index, None)?.image)
    }

    fn image_for_crops(&self, index: usize, plan: &mut dyn FnMut(usize, usize) -> DecodeRequest) -> Result<CropSource> {
        self.decode(index, Some(plan))
    }
}

/// What `selfcon prepare` packs and how.
#[derive(Clone, Debug)]
pub struct PackOptions {
    pub storage: Storage,
    pub max_side: Option<usize>,
    pub quality: u8,
    pub threads: usize,
}

/// One split to pack: the dataset and its split number (0 train, 1 test).
pub struct PackSource<'a> {
    pub train: &'a dyn Dataset,
    pub test: Option<&'a dyn Dataset>,
    pub info: PackInfo,
}

/// The bytes of one record: header and payload.
fn make_record(dataset: &dyn Dataset, index: usize, split: u8, options: &PackOptions) -> Result<Vec<u8>> {
    let label = dataset.label(index) as u32;
    let bytes = dataset.file_bytes(index).transpose()?;
    // A JPEG that needs no resizing is stored as it is: no generation loss, no encoding time.
    if let (Storage::Jpeg, Some(bytes)) = (options.storage, &bytes) {
        if let Some((w, h)) = super::jpeg_reduced::jpeg_size(bytes) {
            let fits = split == 1 || options.max_side.is_none_or(|m| w.max(h) <= m);
            if fits && w <= u16::MAX as usize && h <= u16::MAX as usize {
                return Ok(record_bytes(bytes, w, h, label, split, Storage::Jpeg));
            }
        }
    }
    // Decoded from the bytes already read; the dataset reads the file again only to name it in
    // an error.
    let decoded = bytes.as_deref().and_then(|b| super::folder::decode_image_bytes(b).ok());
    let mut image = match decoded {
        Some(image) => image,
        None => dataset.image(index)?,
    };
    // The test split keeps its size: the evaluation transform (Resize(256), CenterCrop(224)) must
    // not enlarge what packing shrank.
    if let Some(max) = options.max_side.filter(|_| split == 0) {
        let longer = image.width.max(image.height);
        if longer > max {
            let scale = max as f64 / longer as f64;
            let w = ((image.width as f64 * scale).round() as usize).max(1);
            let h = ((image.height as f64 * scale).round() as usize).max(1);
            image = super::augment::resize_bilinear(&image, w, h);
        }
    }
    if image.width > u16::MAX as usize || image.height > u16::MAX as usize {
        return Err(Error::input(format!("image {index} is {} × {}: give --max_side", image.width, image.height)));
    }
    let (w, h) = (image.width, image.height);
    let payload = match options.storage {
        Storage::Raw => image.data,
        Storage::Jpeg => {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, options.quality)
                .encode(&image.data, w as u32, h as u32, image::ExtendedColorType::Rgb8)
                .map_err(|e| Error::input(format!("encoding image {index} as JPEG: {e}")))?;
            out
        }
    };
    Ok(record_bytes(&payload, w, h, label, split, options.storage))
}

fn record_bytes(payload: &[u8], w: usize, h: usize, label: u32, split: u8, storage: Storage) -> Vec<u8> {
    let header = RecordHeader {
        length: payload.len() as u32,
        width: w as u16,
        height: h as u16,
        label,
        split,
        storage: storage.code(),
        crc: crc32c::crc32c(payload),
    };
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    out
}

/// What a finished or resumed `prepare` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackReport {
    pub records: usize,
    /// Records kept from an earlier, interrupted run.
    pub resumed: usize,
    pub bytes: u64,
}

/// The partial file next to `out`.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// Packs `source` into `out` (see the module's notes): resumes a partial file of the same
/// fingerprint, calls `progress(done, total)` now and then and stops early (leaving the partial
/// file) when `stop()` says so. Refuses an existing `out`.
pub fn write_pack(
    source: &PackSource,
    out: &Path,
    options: &PackOptions,
    progress: &mut dyn FnMut(usize, usize),
    stop: &dyn Fn() -> bool,
) -> Result<Option<PackReport>> {
    if out.exists() {
        // A run killed between linking the finished pack into place and removing its partial
        // name leaves both names on one file: the partial one is dropped.
        let partial = partial_path(out);
        if partial.exists() && crate::files::same_file(out, &partial) {
            let _ = std::fs::remove_file(&partial);
        }
        return Err(Error::file(
            out,
            "already exists (a finished pack is never replaced: remove it or choose another --out)",
        ));
    }
    let splits: Vec<(&dyn Dataset, u8)> =
        std::iter::once((source.train, 0)).chain(source.test.map(|t| (t, 1))).collect();
    let total: usize = splits.iter().map(|(d, _)| d.len()).sum();
    let fingerprint = fingerprint(source, options);
    let partial = partial_path(out);
    let io = |e: std::io::Error| Error::file(&partial, format!("cannot write: {e}"));
    let (mut file, mut offsets, resumed) = resume_or_start(&partial, fingerprint, total, stop)?;
    let resumed_records = offsets.len();
    let mut end = file.seek(SeekFrom::End(0)).map_err(io)?;
    // (dataset, split, index) of every record, in order.
    let items: Vec<(usize, usize)> =
        splits.iter().enumerate().flat_map(|(s, (d, _))| (0..d.len()).map(move |i| (s, i))).collect();
    let threads = options.threads.max(1);
    let chunk = 16 * threads;
    let mut next = offsets.len();
    progress(next, total);
    while next < total {
        if stop() {
            file.sync_all().map_err(io)?;
            return Ok(None);
        }
        let batch = &items[next..(next + chunk).min(total)];
        let made: Vec<Result<Vec<u8>>> = {
            let slots: Vec<std::sync::Mutex<Option<Result<Vec<u8>>>>> =
                batch.iter().map(|_| Default::default()).collect();
            let cursor = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| loop {
                        let j = cursor.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(s, i)) = batch.get(j) else { break };
                        let (dataset, split) = splits[s];
                        *slots[j].lock().expect("unpoisoned") = Some(make_record(dataset, i, split, options));
                    });
                }
            });
            slots.into_iter().map(|m| m.into_inner().expect("unpoisoned").expect("every slot filled")).collect()
        };
        for record in made {
            let record = record?;
            file.write_all(&record).map_err(io)?;
            offsets.push(end);
            end += record.len() as u64;
        }
        next += batch.len();
        progress(next, total);
    }
    // The index, metadata and trailer; then synced and renamed into place.
    let mut tail = Vec::with_capacity(offsets.len() * INDEX_ENTRY + 4096);
    let index_at = end;
    for (k, &offset) in offsets.iter().enumerate() {
        let (s, i) = items[k];
        let (dataset, split) = splits[s];
        tail.extend_from_slice(&offset.to_le_bytes());
        tail.extend_from_slice(&(dataset.label(i) as u32).to_le_bytes());
        tail.extend_from_slice(&[split, 0, 0, 0]);
    }
    let info = serde_json::to_vec(&source.info).map_err(|e| Error::input(format!("pack metadata: {e}")))?;
    let info_at = index_at + tail.len() as u64;
    tail.extend_from_slice(&info);
    for v in [index_at, offsets.len() as u64, info_at, info.len() as u64] {
        tail.extend_from_slice(&v.to_le_bytes());
    }
    tail.extend_from_slice(MAGIC);
    file.write_all(&tail).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    // A hard link cannot replace a file that appeared meanwhile (a rename would).
    let linked = std::fs::hard_link(&partial, out);
    match linked {
        Ok(()) => std::fs::remove_file(&partial).map_err(io)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::file(out, "appeared while packing: left as it is; the pack stays in its .partial file"))
        }
        // File systems without hard links.
        Err(_) => std::fs::rename(&partial, out)
            .map_err(|e| Error::file(out, format!("cannot move the finished pack into place: {e}")))?,
    }
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::checkpoint::sync_folder(dir).map_err(io)?;
    let bytes = index_at + tail.len() as u64;
    Ok(Some(PackReport { records: offsets.len(), resumed: if resumed { resumed_records } else { 0 }, bytes }))
}

/// What identifies a packing job: options, metadata and every label (a changed listing or
/// option makes a partial file useless).
fn fingerprint(source: &PackSource, options: &PackOptions) -> u64 {
    let mut text = serde_json::to_vec(&source.info).unwrap_or_default();
    text.extend_from_slice(format!("{:?}|{:?}|{}", options.storage, options.max_side, options.quality).as_bytes());
    for dataset in std::iter::once(source.train).chain(source.test) {
        text.extend_from_slice(&(dataset.len() as u64).to_le_bytes());
        for i in 0..dataset.len() {
            text.extend_from_slice(&(dataset.label(i) as u32).to_le_bytes());
        }
    }
    let lo = crc32c::crc32c(&text) as u64;
    let hi = crc32c::crc32c_append(0x5EED, &text) as u64;
    (hi << 32) | lo
}

/// Opens `partial` for appending: its whole, CRC-checked records are kept when its fingerprint
/// matches (the file is cut after the last one), else it is started afresh. Returns the file,
/// the kept records' offsets and whether any were kept. The partial file is streamed (a pack can
/// be hundreds of gigabytes); `stop()` ends the scan early, keeping what was checked.
fn resume_or_start(
    partial: &Path,
    fingerprint: u64,
    total: usize,
    stop: &dyn Fn() -> bool,
) -> Result<(std::fs::File, Vec<u64>, bool)> {
    let io = |e: std::io::Error| Error::file(partial, format!("cannot write: {e}"));
    let mut head = Vec::with_capacity(24);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&fingerprint.to_le_bytes());
    if let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(partial) {
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
        let mut start = [0u8; 24];
        if reader.read_exact(&mut start).is_ok() && start[..] == head[..] {
            let mut offsets = Vec::new();
            let mut at = 24u64;
            let mut header = [0u8; RECORD_HEADER];
            let mut payload = Vec::new();
            let size = file.metadata().map_err(io)?.len();
            while offsets.len() < total && !stop() && reader.read_exact(&mut header).is_ok() {
                let record = RecordHeader::decode(&header);
                // A whole record: a plausible header (zeros, as a crash can leave, are not one),
                // a payload inside the file, its CRC.
                let plausible = record.length > 0
                    && record.width > 0
                    && record.height > 0
                    && record.split <= 1
                    && record.storage <= 1
                    && at + (RECORD_HEADER as u64) + record.length as u64 <= size;
                if !plausible {
                    break;
                }
                payload.resize(record.length as usize, 0);
                if reader.read_exact(&mut payload).is_err() || crc32c::crc32c(&payload) != record.crc {
                    break;
                }
                offsets.push(at);
                at += (RECORD_HEADER + payload.len()) as u64;
            }
            drop(reader);
            file.set_len(at).map_err(io)?;
            let kept = !offsets.is_empty();
            return Ok((file, offsets, kept));
        }
    }
    let mut file = std::fs::File::create(partial).map_err(io)?;
    file.write_all(&head).map_err(io)?;
    Ok((file, Vec::new(), false))
}
