//! `selfcon` command-line interface: a thin layer over the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::install_panic_hook();
    let outcome = cli::run();
    // NCCL's communicators and watchdog threads stop before the process does (no-op otherwise).
    if let Err(e) = selfcon::distributed::shutdown() {
        eprintln!("selfcon: warning: {e}");
    }
    match outcome {
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
    }
}
