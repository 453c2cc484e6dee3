//! A training run's folder: one process writes it for the whole run (an exclusive lock on
//! `.selfcon.lock`, naming the holder's PID), and a run never starts over the checkpoint the
//! folder already holds unless the user asked: no `--resume` with an existing `last` is refused,
//! `--resume auto` continues it when it exists and starts afresh otherwise (the idiom of a
//! requeued preempted job, which reruns one command line).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the lock file inside a run folder.
pub const LOCK_FILE: &str = ".selfcon.lock";

/// How a training command begins: the value of its `--resume` flag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Start {
    /// No `--resume`: a new run; refused when the run folder already holds a checkpoint.
    #[default]
    Fresh,
    /// `--resume PATH`: continue from that checkpoint (ours or the official code's).
    Resume(PathBuf),
    /// `--resume auto`: continue from the run folder's `last.safetensors` when there is one,
    /// else start afresh.
    Auto,
}

impl Start {
    /// The meaning of a `--resume` value: `auto` (a file of that name is `./auto`) or a path.
    pub fn from_flag(resume: Option<&Path>) -> Start {
        match resume {
            None => Start::Fresh,
            Some(p) if p.as_os_str() == "auto" => Start::Auto,
            Some(p) => Start::Resume(p.to_path_buf()),
        }
    }

    /// The checkpoint this start continues from, given the run's own `last` checkpoint. A run
    /// whose folder holds `last` continues only from it: starting afresh, or from another
    /// checkpoint (an official `.pth`, an older snapshot), would replace it — the requeued job
    /// whose command names the checkpoint it first started from would lose its progress each time.
    pub fn checkpoint(&self, last: &Path) -> Result<Option<PathBuf>> {
        let exists = last.symlink_metadata().is_ok();
        match self {
            Start::Fresh if exists => Err(Error::RunExists { last: last.to_path_buf() }),
            Start::Fresh => Ok(None),
            Start::Auto => Ok(exists.then(|| last.to_path_buf())),
            Start::Resume(path) if exists && !crate::files::same_file(path, last) => {
                Err(Error::RunExists { last: last.to_path_buf() })
            }
            Start::Resume(path) => Ok(Some(path.clone())),
        }
    }

    /// Whether a run that already covers every epoch is done rather than an error: with `auto`
    /// (a requeued job that had finished), yes.
    pub fn finished_is_done(&self) -> bool {
        *self == Start::Auto
    }

    /// The path named by `--resume PATH` (not `auto`).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Start::Resume(p) => Some(p),
            _ => None,
        }
    }
}

/// A run folder claimed by this process until dropped. Only the primary process of a
/// distributed run (the one that writes) claims it; the others hold nothing.
#[derive(Debug)]
pub struct RunFolder {
    pub path: PathBuf,
    _lock: Option<File>,
}

impl RunFolder {
    /// Creates `path` if needed and takes its lock; refused, naming the holder's PID, while
    /// another process runs in it. A file system without locks (some network mounts) runs
    /// unlocked after a warning rather than not at all.
    pub fn claim(path: &Path) -> Result<RunFolder> {
        if !crate::distributed::is_primary() {
            return Ok(RunFolder { path: path.to_path_buf(), _lock: None });
        }
        std::fs::create_dir_all(path).map_err(|e| Error::file(path, format!("cannot create the run folder: {e}")))?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::file(&lock_path, format!("cannot open the run folder's lock: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = Read::by_ref(&mut lock).take(64).read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
                return Err(Error::file(
                    path,
                    format!("is in use by another selfcon run ({who}); wait for it to end, or give another --exp_name/--save_dir"),
                ));
            }
            Err(TryLockError::Error(e)) => {
                eprintln!(
                    "selfcon: warning: {}: cannot lock the run folder ({e}); running without the lock",
                    path.display()
                );
                return Ok(RunFolder { path: path.to_path_buf(), _lock: None });
            }
        }
        // The holder's PID, for the message a second run prints; the lock itself is the flock.
        let _ = lock.set_len(0).and_then(|_| lock.rewind()).and_then(|_| write!(lock, "{}", std::process::id()));
        Ok(RunFolder { path: path.to_path_buf(), _lock: Some(lock) })
    }

    /// The run's `last.safetensors`.
    pub fn last(&self) -> PathBuf {
        self.path.join("last.safetensors")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_values_mean_what_the_help_says() {
        assert_eq!(Start::from_flag(None), Start::Fresh);
        assert_eq!(Start::from_flag(Some(Path::new("auto"))), Start::Auto);
        assert_eq!(Start::from_flag(Some(Path::new("./auto"))), Start::Resume("./auto".into()));
        let dir = tempfile::tempdir().unwrap();
        let last = dir.path().join("last.safetensors");
        assert_eq!(Start::Fresh.checkpoint(&last).unwrap(), None);
        assert_eq!(Start::Auto.checkpoint(&last).unwrap(), None);
        std::fs::write(&last, b"x").unwrap();
        assert_eq!(Start::Auto.checkpoint(&last).unwrap(), Some(last.clone()));
        let refused = Start::Fresh.checkpoint(&last).unwrap_err();
        assert!(matches!(&refused, Error::RunExists { last: l } if *l == last), "{refused}");
        assert!(refused.to_string().contains("--resume auto"), "{refused}");
        // Another checkpoint would replace this run's own: refused; the own one (any name) is fine.
        let other = dir.path().join("official.pth");
        std::fs::write(&other, b"y").unwrap();
        let refused = Start::Resume(other.clone()).checkpoint(&last).unwrap_err();
        assert!(matches!(&refused, Error::RunExists { last: l } if *l == last), "{refused}");
        let linked = dir.path().join("linked.safetensors");
        std::os::unix::fs::symlink(&last, &linked).unwrap();
        assert_eq!(Start::Resume(linked.clone()).checkpoint(&last).unwrap(), Some(linked));
        std::fs::remove_file(&last).unwrap();
        assert_eq!(Start::Resume(other.clone()).checkpoint(&last).unwrap(), Some(other), "nothing to replace");
    }

    #[test]
    fn a_second_claim_is_refused_naming_the_first_pid_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = RunFolder::claim(&run).unwrap();
        // flock locks belong to the open file description: a second open in this process
        // conflicts as one in another process would.
        let second = RunFolder::claim(&run).unwrap_err().to_string();
        assert!(second.contains(&format!("process {}", std::process::id())), "{second}");
        assert!(second.contains("in use by another selfcon run"), "{second}");
        drop(first);
        RunFolder::claim(&run).unwrap();
    }
}
