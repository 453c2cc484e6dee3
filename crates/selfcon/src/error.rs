//! The library's error type. Every variant renders as one line; `is_user_error` tells the CLI
//! whether the input was at fault (exit code 2) or something else went wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line option (or the equivalent config field) has a value that cannot be used.
    #[error("--{flag}: {reason}")]
    InvalidOption { flag: String, reason: String },

    /// A file exists but its content is not what it should be.
    #[error("{}: {reason}", path.display())]
    InvalidFile { path: PathBuf, reason: String },

    /// Tensors or arguments handed to a library function do not fit together.
    #[error("{0}")]
    InvalidInput(String),

    /// A feature that is recognised but not built yet.
    #[error("{0} is not implemented yet")]
    NotImplemented(String),

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// A distributed run cannot go on: another rank failed, hangs or disagrees.
    #[error("{0}")]
    Distributed(String),

    /// Training stopped on SIGTERM/SIGINT after saving where it stood; `message` says where and
    /// which checkpoint continues it (`saved`, unless saving failed). The process should exit
    /// with 128 + `signal`.
    #[error("{message}")]
    Interrupted { signal: i32, message: String, saved: Option<PathBuf> },

    /// A run would start over the checkpoint its folder already holds (`last`) without
    /// `--resume`: refused, so a requeued job never replaces its own progress.
    #[error("{}: this run's checkpoint already exists; starting again would replace it (continue with --resume {} or --resume auto, or give another --exp_name/--save_dir)", last.display(), last.display())]
    RunExists { last: PathBuf },

    /// libtorch reported an error; only its first line is kept (the rest is a C++ backtrace).
    #[error("libtorch: {}", first_line(&.0.to_string()))]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn option(flag: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOption { flag: flag.into(), reason: reason.into() }
    }

    pub fn file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::InvalidFile { path: path.into(), reason: reason.into() }
    }

    pub fn input(reason: impl Into<String>) -> Self {
        Error::InvalidInput(reason.into())
    }

    /// True when the user's input (flags, files) caused the error rather than the machine.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidOption { .. }
                | Error::InvalidFile { .. }
                | Error::InvalidInput(_)
                | Error::NotImplemented(_)
                | Error::RunExists { .. }
        )
    }
}

fn first_line(s: &str) -> &str {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("")
}
