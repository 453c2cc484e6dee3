//! Command-line parsing and dispatch. Flags keep the official spellings (`--selfcon_pos`,
//! `--batch_size`, ...) with the same defaults, and accept kebab-case aliases.

mod bench;
mod bench_decode;
mod bench_train;
mod ce;
mod data_args;
mod demo;
mod export;
mod features;
mod launch;
mod linear;
mod model_args;
mod official_options;
mod optim_args;
mod prepare;
mod pretrain;
mod progress;
mod report;
mod summary;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use model_args::ModelArgs;

#[derive(Parser, Debug)]
#[command(name = "selfcon", version, about = "Self-Contrastive learning (SelfCon, AAAI 2023) on libtorch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The demo: pre-train SelfCon on Fashion-MNIST, then linear-probe it against its random init.
    Demo(Box<demo::DemoArgs>),
    /// Print a model's parameter counts per part and its output shapes.
    Summary(summary::SummaryArgs),
    /// Contrastive pre-training (main_represent.py): Con, SupCon, SelfCon and their variants.
    Pretrain(Box<pretrain::PretrainArgs>),
    /// 1-stage training with cross-entropy (main_ce.py): ce, subnet_ce, kd, selfcon.
    #[command(
        mut_arg("epochs", |a| a.default_value("500")),
        mut_arg("learning_rate", |a| a.default_value("0.2")),
        mut_arg("lr_decay_epochs", |a| a.default_value("350,400,450")),
        mut_arg("save_dir", |a| a.default_value("./save/distill"))
    )]
    Ce(Box<ce::CeArgs>),
    /// Linear evaluation of a pre-trained encoder (main_linear.py).
    #[command(
        mut_arg("epochs", |a| a.default_value("100")),
        mut_arg("learning_rate", |a| a.default_value("0.1")),
        mut_arg("lr_decay_epochs", |a| a.default_value("60,75,90")),
        mut_arg("lr_decay_rate", |a| a.default_value("0.2")),
        mut_arg("weight_decay", |a| a.default_value("0"))
    )]
    Linear(Box<linear::LinearArgs>),
    /// Features of a pre-trained encoder (backbone and every exit) for one split, as safetensors.
    Features(Box<features::FeaturesArgs>),
    /// Export a pre-trained encoder: PyTorch .pth, TorchScript, ONNX, safetensors.
    Export(Box<export::ExportArgs>),
    /// Measure throughput (input pipeline).
    Bench(bench::BenchArgs),
    /// Pack a dataset into one memory-mapped file (JPEG or raw, optionally pre-resized) that
    /// `--data_folder FILE` reads in place of the image tree.
    Prepare(Box<prepare::PrepareArgs>),
    /// Plots, feature maps and an index.html of one or several runs (pretrain, linear, ce).
    Report(Box<report::ReportArgs>),
    /// Run pretrain, linear or ce on several processes (GPUs, machines), like torchrun:
    /// `selfcon launch --nproc_per_node N -- pretrain ...`.
    Launch(launch::LaunchArgs),
}

/// Why the command failed: one line for the user and the process exit code.
pub struct Failure {
    pub message: String,
    pub exit_code: u8,
    /// A stop every rank agreed on and saved after (SIGTERM/SIGINT): nothing is left pending
    /// between the ranks, so NCCL may shut down gracefully rather than abort.
    pub agreed_stop: bool,
}

/// Exit code for bad input (flags, files), as argparse and clap use.
const EXIT_USAGE: u8 = 2;
const EXIT_FAILURE: u8 = 1;

pub fn run() -> Result<(), Failure> {
    // The matches say which flags were given (an official --resume fills in the others).
    let parsed = Cli::command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return Ok(());
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            let message = line.trim_start_matches("error: ").to_string();
            return Err(Failure {
                message: format!("{message} (see --help)"),
                exit_code: EXIT_USAGE,
                agreed_stop: false,
            });
        }
    };
    if !matches!(cli.command, Command::Launch(_)) {
        // libtorch's compute threads bounded by the CPUs this process may use (affinity, cgroup
        // quota) unless OMP_NUM_THREADS names a count; `launch` leaves them to its ranks.
        selfcon::hardware::apply_thread_budget();
    }
    let result = match cli.command {
        Command::Launch(args) => return launch::run(args),
        Command::Demo(args) => demo::run(*args),
        Command::Summary(args) => summary::run(args),
        Command::Pretrain(args) => {
            let given = matches.subcommand_matches("pretrain").expect("pretrain matches");
            pretrain::run(*args, given)
        }
        Command::Linear(args) => linear::run(*args),
        Command::Ce(args) => {
            let given = matches.subcommand_matches("ce").expect("ce matches");
            ce::run(*args, given)
        }
        Command::Features(args) => features::run(*args),
        Command::Export(args) => export::run(*args),
        Command::Bench(args) => bench::run(args),
        Command::Prepare(args) => prepare::run(*args),
        Command::Report(args) => report::run(*args),
    };
    result.map_err(|e| {
        if let Some(selfcon::Error::Interrupted { signal, message, saved }) = e.downcast_ref::<selfcon::Error>() {
            return interrupted(*signal, message, saved.as_deref());
        }
        if let Some(selfcon::Error::RunExists { last }) = e.downcast_ref::<selfcon::Error>() {
            let (command, _) = resume_command(&last.to_string_lossy());
            return Failure {
                message: format!(
                    "{}: this run's checkpoint already exists and starting again would replace it; continue it with: {command} (or --resume auto), or give another --exp_name/--save_dir",
                    last.display()
                ),
                exit_code: EXIT_USAGE,
                agreed_stop: false,
            };
        }
        let user = e.chain().any(|c| c.downcast_ref::<selfcon::Error>().is_some_and(selfcon::Error::is_user_error));
        // In a distributed run every rank prints its own errors: say which one speaks.
        let rank = selfcon::distributed::current().map(|d| format!("rank {}: ", d.rank)).unwrap_or_default();
        // A collective that failed while this rank was being stopped: a peer that got the same
        // signal before training started (nothing to save) ended at once and took the collective
        // with it. That is the stop, not a failure: exit 128 + signal as the peer did.
        let collective =
            e.chain().any(|c| matches!(c.downcast_ref::<selfcon::Error>(), Some(selfcon::Error::Distributed(_))));
        if let (true, Some(signal)) = (collective, selfcon::train::stop_signals::requested()) {
            return Failure {
                message: format!(
                    "{rank}stopped by {}; a collective failed meanwhile (another rank may have ended on the signal first): {}",
                    selfcon::train::stop_signals::name(signal),
                    one_line(&format!("{e:#}"))
                ),
                exit_code: u8::try_from(128 + signal).unwrap_or(EXIT_FAILURE),
                agreed_stop: false,
            };
        }
        Failure {
            message: format!("{rank}{}", one_line(&format!("{e:#}"))),
            exit_code: if user { EXIT_USAGE } else { EXIT_FAILURE },
            agreed_stop: false,
        }
    })
}

/// A run stopped by SIGTERM/SIGINT after saving: where it stopped and the command that continues
/// it (rank 0 speaks for a distributed run); exit status 128 + signal, as shells report it.
fn interrupted(signal: i32, message: &str, saved: Option<&std::path::Path>) -> Failure {
    let exit_code = u8::try_from(128 + signal).unwrap_or(EXIT_FAILURE);
    if !selfcon::distributed::is_primary() {
        return Failure { message: String::new(), exit_code, agreed_stop: true };
    }
    let mut text = message.to_string();
    // A rank of `launch` does not know the launcher's command line.
    if let (Some(saved), None) = (saved, selfcon::distributed::current()) {
        let (command, official) = resume_command(&saved.to_string_lossy());
        text.push_str(&format!("\nto continue: {command}"));
        if official {
            text.push_str(" plus the flags taken from the official options (listed when the run started)");
        }
    }
    Failure { message: text, exit_code, agreed_stop: true }
}

/// This process's command line with `--resume PATH` in place of any earlier one, shell-quoted,
/// and whether the earlier one was an official checkpoint (whose options filled in flags).
fn resume_command(path: &str) -> (String, bool) {
    let mut args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let official = args
        .iter()
        .position(|a| a == "--resume")
        .and_then(|i| args.get(i + 1))
        .map(|p| p.to_string())
        .or_else(|| args.iter().find_map(|a| a.strip_prefix("--resume=").map(str::to_string)))
        .is_some_and(|p| selfcon::checkpoint::is_torch_file(std::path::Path::new(&p)).unwrap_or(false));
    if let Some(first) = args.first_mut() {
        *first = "selfcon".into();
    }
    let mut kept = Vec::with_capacity(args.len() + 2);
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if arg == "--resume" {
            skip_value = true;
        } else if !arg.starts_with("--resume=") {
            kept.push(arg);
        }
    }
    kept.push("--resume".into());
    kept.push(path.into());
    (kept.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "), official)
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The error as one line, cut at 1,000 characters: the readers quote a file's text shortened
/// already; this keeps any text they missed from flooding a terminal or a job log.
fn one_line(s: &str) -> String {
    let line = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    selfcon::pickle::shorten(&line, 1000)
}

/// Panics become one line on stderr rather than a backtrace (set RUST_BACKTRACE for one).
pub fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        let first = payload.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or(payload);
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("selfcon: internal error: {first}{place} (please report it; RUST_BACKTRACE=1 shows more)");
    }));
}
