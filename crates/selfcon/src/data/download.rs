//! `--download`: fetches an official archive when the data is absent, checks its MD5 against the
//! published checksum and unpacks it atomically (into a temporary folder that is renamed into
//! place), so an interrupted download never looks like a data set.
//!
//! Several processes may ask at once (the ranks of a `launch`, two runs): an exclusive lock on
//! `root/.{archive}.lock` lets one download while the others wait, then find the folder. A server
//! that stops sending for `read_timeout` fails the download with a message; more bytes than the
//! archive's published size stop it at once (before any MD5 check could).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use crate::error::{Error, Result};

/// Where an archive comes from and what it unpacks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSource {
    pub url: String,
    /// Published MD5 of the archive, lower-case hex.
    pub md5: String,
    /// File name the archive is kept under in the data folder.
    pub archive: String,
    /// The folder the archive unpacks to (its single top-level entry).
    pub folder: String,
    /// Published size of the archive in bytes: a server sending more is cut off.
    pub size: u64,
    /// How long the server may send nothing before the download fails.
    pub read_timeout: Duration,
}

impl ArchiveSource {
    fn official(name: &str, md5: &str, size: u64, folder: &str) -> Self {
        ArchiveSource {
            url: format!("https://www.cs.toronto.edu/~kriz/{name}"),
            md5: md5.into(),
            archive: name.into(),
            folder: folder.into(),
            size,
            read_timeout: Duration::from_secs(60),
        }
    }

    pub fn cifar10() -> Self {
        Self::official("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170_498_071, "cifar-10-batches-py")
    }

    pub fn cifar100() -> Self {
        Self::official("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169_001_437, "cifar-100-python")
    }
}

/// Makes sure `root/{source.folder}` exists, downloading and unpacking the archive if needed.
/// Returns the unpacked folder.
pub fn ensure_downloaded(root: &Path, source: &ArchiveSource, progress: bool) -> Result<PathBuf> {
    let target = root.join(&source.folder);
    if target.is_dir() {
        return Ok(target);
    }
    std::fs::create_dir_all(root).map_err(|e| Error::Io { path: root.to_path_buf(), source: e })?;
    // One process downloads; the others wait here and then find the folder.
    let lock_path = root.join(format!(".{}.lock", source.archive));
    let lock = File::create(&lock_path).map_err(|e| Error::Io { path: lock_path.clone(), source: e })?;
    lock.lock().map_err(|e| Error::Io { path: lock_path.clone(), source: e })?;
    if target.is_dir() {
        return Ok(target);
    }
    let archive = root.join(&source.archive);
    let have_valid_archive = archive.is_file() && md5_of_file(&archive)? == source.md5;
    if !have_valid_archive {
        download(source, &archive, progress)?;
    }
    unpack(&archive, root, &source.folder)?;
    Ok(target)
}

fn md5_of_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams the archive into `dest` (through a temporary file), checking size and MD5 on the way.
fn download(source: &ArchiveSource, dest: &Path, progress: bool) -> Result<()> {
    let (url, md5) = (&source.url, &source.md5);
    let failed = |why: String| Error::file(dest, format!("download from {url} failed: {why}"));
    let agent =
        ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(30)).timeout_read(source.read_timeout).build();
    let response = agent.get(url).call().map_err(|e| failed(first_line(&e.to_string())))?;
    let total = response.header("Content-Length").and_then(|v| v.parse::<u64>().ok());
    if let Some(total) = total.filter(|t| *t > source.size) {
        return Err(failed(format!("the server announces {total} bytes; the archive has {}", source.size)));
    }
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("downloading {}", dest.file_name().unwrap_or_default().to_string_lossy()));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    // Under the download lock: any `.part` of this archive is a killed process's leftover.
    remove_partial_downloads(dest);
    let partial = Partial(dest.with_extension(format!("{}.part", std::process::id())));
    let io = |e: std::io::Error| Error::Io { path: partial.0.clone(), source: e };
    let mut out = BufWriter::new(File::create(&partial.0).map_err(io)?);
    let mut reader = response.into_reader();
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let why = if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) {
                    format!(
                        "the server sent nothing for {} s after {received} bytes",
                        source.read_timeout.as_secs_f64()
                    )
                } else {
                    format!("connection broke after {received} bytes: {e}")
                };
                return Err(failed(why));
            }
        };
        if n == 0 {
            break;
        }
        if received + n as u64 > source.size {
            return Err(failed(format!("the server sent more than the archive's {} bytes", source.size)));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io)?;
        received += n as u64;
        bar.set_position(received);
    }
    out.flush().map_err(io)?;
    drop(out);
    bar.finish_and_clear();
    let got = hex(&hasher.finalize());
    if got != *md5 {
        return Err(failed(format!("MD5 {got} does not match the published {md5} ({received} bytes received)")));
    }
    std::fs::rename(&partial.0, dest).map_err(|e| Error::Io { path: dest.to_path_buf(), source: e })
}

/// A download in progress: removed however `download` ends (an error, a failed write, a panic);
/// after the rename into place there is nothing left to remove.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes `<dest>.<pid>.part` files that killed downloads left beside `dest`.
fn remove_partial_downloads(dest: &Path) {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_stem()) else { return };
    let prefix = format!("{}.", name.to_string_lossy());
    crate::files::remove_leftovers(dir, |file| {
        let pid = file.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".part"));
        pid.is_some_and(|pid| !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()))
    });
}

/// Unpacks the tar.gz into a temporary folder beside `folder`, then renames it into place.
fn unpack(archive: &Path, root: &Path, folder: &str) -> Result<()> {
    let staging = root.join(format!(".{folder}.unpacking.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| Error::Io { path: staging.clone(), source: e })?;
    let result = (|| {
        let file = File::open(archive).map_err(|e| Error::Io { path: archive.to_path_buf(), source: e })?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        // unpack_in refuses entries that would land outside the staging folder.
        for entry in tar.entries().map_err(|e| Error::file(archive, format!("not a tar.gz archive: {e}")))? {
            let mut entry = entry.map_err(|e| Error::file(archive, format!("corrupt archive: {e}")))?;
            entry.unpack_in(&staging).map_err(|e| Error::file(archive, format!("cannot unpack: {e}")))?;
        }
        let unpacked = staging.join(folder);
        if !unpacked.is_dir() {
            return Err(Error::file(archive, format!("does not contain {folder}/")));
        }
        std::fs::rename(&unpacked, root.join(folder)).map_err(|e| Error::Io { path: root.join(folder), source: e })
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
