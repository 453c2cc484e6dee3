//! `selfcon` command-line interface: a thin layer over the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
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
