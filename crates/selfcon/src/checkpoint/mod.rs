//! Checkpoints. Ours: one safetensors file holding the model under its official state-dict keys
//! (`encoder.layer1.0.conv1.weight`, ...), the optimizer's momentum buffers
//! (`optimizer.momentum_buffer.<key>`), and JSON metadata (epoch, config, ...). Written to a
//! temporary file in the same folder, synced, then renamed over the target, so a crash never
//! leaves a broken or half-written checkpoint.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, View};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::ModelConfig;

pub mod export;
pub mod official;
pub mod torch_archive;
pub mod torch_writer;

pub use export::{export, ExportFormat};
pub use official::OfficialCheckpoint;

pub const OPTIMIZER_PREFIX: &str = "optimizer.momentum_buffer.";

/// The model weights of a loaded checkpoint (optimiser state left out).
pub fn model_weights(tensors: BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    tensors.into_iter().filter(|(k, _)| !k.starts_with(OPTIMIZER_PREFIX)).collect()
}

/// A tensor copied to host memory in safetensors' terms.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        other => return Err(Error::input(format!("cannot checkpoint a tensor of kind {other:?}"))),
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        _ => return None,
    })
}

fn to_host(t: &Tensor) -> Result<HostTensor> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let dtype = dtype_of(t.kind())?;
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut bytes, numel)?;
    Ok(HostTensor { dtype, shape: t.size().iter().map(|&d| d as usize).collect(), bytes })
}

/// What a checkpoint holds besides tensors.
pub type Metadata = BTreeMap<String, String>;

/// Writes `tensors` and `metadata` to `path` atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: &Metadata) -> Result<()> {
    let host: Vec<(String, HostTensor)> =
        tensors.iter().map(|(n, t)| Ok((n.clone(), to_host(t)?))).collect::<Result<_>>()?;
    let meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let bytes = safetensors::tensor::serialize(host.iter().map(|(n, t)| (n.as_str(), t)), &Some(meta))
        .map_err(|e| Error::file(path, format!("cannot serialise checkpoint: {e}")))?;
    write_atomically(path, &bytes, "checkpoint")
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`, so that
/// a crash never leaves a half-written file; `what` names the file in errors.
pub fn write_atomically(path: &Path, bytes: &[u8], what: &str) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let io = |e: std::io::Error| Error::file(path, format!("cannot write {what}: {e}"));
    // `.last.safetensors.<random>.tmp`: a process killed while writing leaves one behind, which the
    // next write of the same file removes (one writer per file: rank 0 of a run).
    let mut tmp = temporary_for(path).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    sync_folder(dir).map_err(io)
}

/// A new temporary file beside `path`, to be renamed onto it once written: named
/// `.<file name>.<random>.tmp` (the leftovers of a killed writer are removed here first), with the
/// mode any program's new file gets (0666 less the umask), not tempfile's private 0600.
pub fn temporary_for(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let prefix = temporary_prefix(path);
    remove_stale_temporaries(dir, &prefix);
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder.tempfile_in(dir)
}

/// `.last.safetensors.`: temporary files for `path` are `<prefix><random>.tmp` beside it.
fn temporary_prefix(path: &Path) -> String {
    format!(".{}.", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

/// Removes the temporary files a process killed while writing left behind (one writer per file:
/// rank 0 of a run).
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    crate::files::remove_leftovers(dir, |name| name.starts_with(prefix) && name.ends_with(".tmp"));
}

/// Makes the renames in `dir` durable: a rename is on disk only once the folder's entry is (a
/// crash right after could otherwise bring back the old file, or none). Some file systems
/// (network ones, FUSE) cannot sync a folder (EINVAL, ENOTSUP): the file itself is synced and
/// renamed, which is all they offer.
pub(crate) fn sync_folder(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | libc::EBADF)) => {}
        other => other?,
    }
    Ok(())
}

/// Makes `copy` hold what the finished file `path` holds now, atomically (a temporary name
/// renamed over `copy`) and durably: a hard link where the file system has them, else a byte copy.
/// A link is safe because every write here replaces a file by renaming a new one over it, never
/// in place: when `path` is next written, `copy` keeps the old contents. Saves serialising and
/// writing the same checkpoint twice (`last` and `ckpt_epoch_N` at the end of an epoch).
pub fn snapshot(path: &Path, copy: &Path, what: &str) -> Result<()> {
    let dir = copy.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let io = |e: std::io::Error| Error::file(copy, format!("cannot write {what}: {e}"));
    if crate::files::same_file(path, copy) {
        // Renaming a link over its own file does nothing (POSIX) and would leave the link behind.
        return Ok(());
    }
    let prefix = temporary_prefix(copy);
    remove_stale_temporaries(dir, &prefix);
    let linked =
        tempfile::Builder::new().prefix(&prefix).suffix(".tmp").make_in(dir, |tmp| std::fs::hard_link(path, tmp));
    let Ok(linked) = linked else {
        // No hard links here (FAT, some network file systems): copy the bytes.
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read {what}: {e}")))?;
        return write_atomically(copy, &bytes, what);
    };
    // `path` was synced when it was written; the new name is made durable with the folder.
    linked.persist(copy).map_err(|e| io(e.error))?;
    sync_folder(dir).map_err(io)
}

/// A loaded checkpoint.
pub struct Loaded {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: Metadata,
}

pub fn load(path: &Path) -> Result<Loaded> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read checkpoint: {e}")))?;
    load_bytes(path, &bytes)
}

/// A checkpoint held in memory (`path` names it in errors).
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<Loaded> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::file(path, format!("not a selfcon checkpoint (safetensors): {e}")))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::file(path, format!("corrupt checkpoint: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            Error::file(path, format!("tensor {} has unsupported dtype", crate::pickle::shorten(&name, 60)))
        })?;
        // A dimension past i64 (a hostile header: [0, 2^64 - 1] holds no bytes, so safetensors
        // accepts it) would reach libtorch as a negative size.
        let shape: Vec<i64> =
            view.shape().iter().map(|&d| i64::try_from(d)).collect::<std::result::Result<_, _>>().map_err(|_| {
                let shape = crate::pickle::shorten(&format!("{:?}", view.shape()), 60);
                Error::file(
                    path,
                    format!("tensor {} has an impossible shape {shape}", crate::pickle::shorten(&name, 60)),
                )
            })?;
        let tensor = Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|e| {
            let first = e.to_string().lines().next().unwrap_or_default().chars().take(120).collect::<String>();
            Error::file(path, format!("tensor {}: {first}", crate::pickle::shorten(&name, 60)))
        })?;
        tensors.insert(name, tensor);
    }
    let metadata = header.metadata().clone().unwrap_or_default().into_iter().collect();
    Ok(Loaded { tensors, metadata })
}

/// Copies `tensors` into the variables of `vs` strictly: every variable must be present with its
/// shape and no tensor may be left over; the error lists every mismatch.
pub fn load_into_var_store(path: &Path, vs: &tch::nn::VarStore, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let vars = vs.variables();
    let mut missing: Vec<&str> = vars.keys().filter(|k| !tensors.contains_key(*k)).map(String::as_str).collect();
    missing.sort();
    let unexpected: Vec<&str> = tensors.keys().filter(|k| !vars.contains_key(*k)).map(String::as_str).collect();
    let mut shapes: Vec<String> = vars
        .iter()
        .filter_map(|(k, v)| {
            tensors
                .get(k)
                .filter(|t| t.size() != v.size())
                .map(|t| format!("{k} {:?} vs model {:?}", t.size(), v.size()))
        })
        .collect();
    shapes.sort();
    if !missing.is_empty() || !unexpected.is_empty() || !shapes.is_empty() {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("missing {}", summarise(&missing)));
        }
        if !unexpected.is_empty() {
            parts.push(format!("unexpected {}", summarise(&unexpected)));
        }
        if !shapes.is_empty() {
            let s: Vec<&str> = shapes.iter().map(String::as_str).collect();
            parts.push(format!("mis-shaped {}", summarise(&s)));
        }
        return Err(Error::file(
            path,
            format!(
                "does not fit this model ({}): check --model/--selfcon_pos/--selfcon_size/--dataset",
                parts.join("; ")
            ),
        ));
    }
    tch::no_grad(|| {
        for (k, mut v) in vars {
            v.copy_(&tensors[&k].to_device(v.device()).to_kind(v.kind()));
        }
    });
    Ok(())
}

fn summarise(names: &[&str]) -> String {
    const SHOWN: usize = 6;
    let head = names.iter().take(SHOWN).map(|n| crate::pickle::shorten(n, 60)).collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        format!("{} keys: {head}, …", names.len())
    } else {
        head
    }
}

/// True when `path` starts like a `torch.save` file rather than one of our safetensors files.
pub fn is_torch_file(path: &Path) -> Result<bool> {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| Error::file(path, format!("cannot read checkpoint: {e}")))?;
    Ok(torch_archive::looks_like_torch_file(&head[..n]))
}

/// Where a model checkpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// Our safetensors checkpoint (`last.safetensors`).
    Selfcon,
    /// `torch.save` of the official code: `{'opt', 'model', 'optimizer', 'epoch'}`.
    Official,
    /// `torch.save(model.state_dict())`.
    StateDict,
}

/// A pre-trained encoder's checkpoint of any kind, read: its weights under our (= the official)
/// state-dict names and, when the file says, the model it belongs to.
pub struct ModelCheckpoint {
    pub path: std::path::PathBuf,
    pub format: CheckpointFormat,
    /// The model the file describes (None for a bare state dict).
    pub model: Option<ModelConfig>,
    pub weights: BTreeMap<String, Tensor>,
    /// The last finished epoch, when recorded.
    pub epoch: Option<usize>,
}

impl ModelCheckpoint {
    /// Opens a pre-training checkpoint: ours, an official `last.pth`, or a bare state dict.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read checkpoint: {e}")))?;
        Self::from_bytes(path, bytes)
    }

    /// A checkpoint held in memory (`path` names it in errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        if torch_archive::looks_like_torch_file(&bytes) {
            let official =
                OfficialCheckpoint::from_archive(torch_archive::TorchArchive::from_bytes(path, bytes)?, path)?;
            let model = official.model_config()?;
            let format = if official.options.is_some() || official.epoch.is_some() {
                CheckpointFormat::Official
            } else {
                CheckpointFormat::StateDict
            };
            return Ok(ModelCheckpoint {
                path: path.to_path_buf(),
                format,
                model,
                epoch: official.epoch,
                weights: official.weights.into_iter().collect(),
            });
        }
        let loaded = load_bytes(path, &bytes)?;
        let stage = loaded.metadata.get("stage").map(String::as_str);
        if let Some(stage @ ("linear" | "ce")) = stage {
            return Err(Error::file(path, format!("is a selfcon {stage} checkpoint, not a pre-trained encoder")));
        }
        let model = match loaded.metadata.get("config") {
            // `selfcon export --format safetensors` records the model alone.
            None if loaded.metadata.contains_key("model") => Some(
                serde_json::from_str::<ModelConfig>(&loaded.metadata["model"])
                    .map_err(|e| Error::file(path, format!("has an unreadable model config: {e}")))?,
            ),
            Some(config) => {
                let config: serde_json::Value = serde_json::from_str(config)
                    .map_err(|e| Error::file(path, format!("has an unreadable config: {e}")))?;
                match config.get("model") {
                    Some(model) => Some(
                        serde_json::from_value::<ModelConfig>(model.clone())
                            .map_err(|e| Error::file(path, format!("has an unreadable model config: {e}")))?,
                    ),
                    None => None,
                }
            }
            None => None,
        };
        let epoch = loaded.metadata.get("epoch").and_then(|e| e.parse().ok());
        Ok(ModelCheckpoint {
            path: path.to_path_buf(),
            format: CheckpointFormat::Selfcon,
            model,
            epoch,
            weights: model_weights(loaded.tensors),
        })
    }

    /// Copies the weights strictly into `vs` (see [`load_into_var_store`]).
    pub fn load_into(&self, vs: &tch::nn::VarStore) -> Result<()> {
        load_into_var_store(&self.path, vs, &self.weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_keeps_the_contents_of_its_moment() {
        let dir = tempfile::tempdir().unwrap();
        let (last, kept) = (dir.path().join("last.safetensors"), dir.path().join("ckpt_epoch_1.safetensors"));
        write_atomically(&last, b"epoch 1", "checkpoint").unwrap();
        std::fs::write(&kept, b"an older epoch 1").unwrap();
        snapshot(&last, &kept, "checkpoint").unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"epoch 1", "replaced");
        let listing = || -> Vec<String> {
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect()
        };
        // The next write of `last` replaces its file, never the snapshot's contents.
        write_atomically(&last, b"epoch 2", "checkpoint").unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"epoch 1");
        assert_eq!(std::fs::read(&last).unwrap(), b"epoch 2");
        let names = listing();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        // A stale temporary of a killed snapshot is removed; a snapshot of a file onto itself (a
        // link to it) changes nothing and leaves nothing.
        std::fs::write(dir.path().join(".ckpt_epoch_1.safetensors.x1y2.tmp"), b"stale").unwrap();
        snapshot(&last, &kept, "checkpoint").unwrap();
        snapshot(&last, &kept, "checkpoint").unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"epoch 2");
        let names = listing();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        write_atomically(&last, b"epoch 3", "checkpoint").unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"epoch 2");
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::PermissionsExt;
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let umask = status.lines().find_map(|l| l.strip_prefix("Umask:")).map(|v| u32::from_str_radix(v.trim(), 8));
            if let Some(Ok(umask)) = umask {
                let mode = std::fs::metadata(&last).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o666 & !umask, "a checkpoint gets the umask's mode");
            }
        }
        let e = snapshot(&dir.path().join("missing"), &kept, "checkpoint").unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("cannot read checkpoint"), "{e}");
        assert_eq!(std::fs::read(&kept).unwrap(), b"epoch 2", "a failed snapshot leaves the old one");
    }
}
