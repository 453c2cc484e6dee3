//! File-system helpers shared by the readers and the writers: which file a name is, and removing
//! what a killed process left behind.

use std::path::Path;

/// Device and inode of `path`, links followed: two names with the same id are one file.
pub fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Whether both names are one file (symbolic links followed). False when either does not exist.
pub fn same_file(a: &Path, b: &Path) -> bool {
    matches!((file_id(a), file_id(b)), (Ok(a), Ok(b)) if a == b)
}

/// Removes the files in `dir` whose names `leftover` recognises (temporary files of a killed
/// write or download); what cannot be read or removed is left alone.
pub fn remove_leftovers(dir: &Path, leftover: impl Fn(&str) -> bool) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if leftover(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
