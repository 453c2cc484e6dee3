//! `selfcon` command-line interface: a thin layer over the library.

mod cli;

use std::process::ExitCode;

/// libtorch's CPU allocator backs allocations of 2 MB and more with transparent huge pages when
/// `THP_MEM_ALLOC_ENABLE` is set (PyTorch's CPU tuning guide recommends it). Every batch is a fresh
/// multi-megabyte tensor (64 ImageNet crops: 38 MB) that the loader then writes page by page: with
/// 4 KB pages that is ~9,000 page faults and zeroings per batch, about a sixth of the ImageNet
/// loader's CPU time (`bench loader`: +8–18 % images/s). Set here, before libtorch's first
/// allocation (it reads the variable once) and before any thread exists; a value the user set wins.
/// Effective where the kernel's THP mode is `madvise` or `always`.
fn use_huge_pages_for_large_tensors() {
    if std::env::var_os("THP_MEM_ALLOC_ENABLE").is_none() {
        std::env::set_var("THP_MEM_ALLOC_ENABLE", "1");
    }
}

fn main() -> ExitCode {
    use_huge_pages_for_large_tensors();
    cli::install_panic_hook();
    let outcome = cli::run();
    // The outcome is said first: ending NCCL below may take a while, or be cut short by its
    // watchdog, and the message must not be lost.
    let code = match &outcome {
        Ok(()) => ExitCode::SUCCESS,
        // Stopped by a signal (exit status > 128): not an error, the message says where it saved.
        Err(failure) if failure.exit_code > 128 => {
            if !failure.message.is_empty() {
                eprintln!("selfcon: {}", failure.message);
            }
            ExitCode::from(failure.exit_code)
        }
        Err(failure) => {
            eprintln!("selfcon: error: {}", failure.message);
            ExitCode::from(failure.exit_code)
        }
    };
    // NCCL's communicators and watchdog threads stop before the process does (no-op otherwise):
    // gracefully after a clean run or a stop every rank agreed on (their last collectives must
    // reach the slower peers), aborted after a failure (a pending collective may never finish).
    let clean = outcome.as_ref().map_or_else(|failure| failure.agreed_stop, |()| true);
    if let Err(e) = selfcon::distributed::shutdown(clean) {
        eprintln!("selfcon: warning: {e}");
    }
    code
}
