//! `selfcon` command-line interface: a thin layer over the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::install_panic_hook();
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("selfcon: error: {}", failure.message);
            ExitCode::from(failure.exit_code)
        }
    }
}
