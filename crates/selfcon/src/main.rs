//! `selfcon` command-line interface: a thin layer over the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::install_panic_hook();
    match cli::run() {
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
