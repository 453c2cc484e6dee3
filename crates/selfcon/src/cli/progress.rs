//! Training progress on the terminal: a bar per pass (loss, lr, images/s, ETA) when stderr is a
//! terminal, a plain line every `--print_freq` steps otherwise; one summary line per epoch.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use selfcon::train::Progress;

pub struct TerminalProgress {
    /// Printed once training starts.
    pub banner: String,
    bar: Option<ProgressBar>,
    print_freq: usize,
    tty: bool,
    /// Ranks other than 0 of a distributed run show nothing.
    silent: bool,
    /// SIGTERM/SIGINT save and stop once training starts (commands that can `--resume`).
    pub graceful_stop: bool,
}

impl TerminalProgress {
    pub fn new(print_freq: usize) -> Self {
        TerminalProgress {
            banner: String::new(),
            bar: None,
            print_freq,
            tty: std::io::stderr().is_terminal(),
            silent: !selfcon::distributed::is_primary(),
            graceful_stop: true,
        }
    }
}

impl Progress for TerminalProgress {
    fn run_started(&mut self, stage: &str, run_dir: &Path, first_epoch: usize, train_images: usize) {
        // From here on SIGTERM/SIGINT finish the step, save and stop (see train::stop_signals);
        // before, while data and checkpoints load, they end the process at once as usual.
        if self.graceful_stop {
            if let Err(e) = selfcon::train::stop_signals::install() {
                eprintln!("warning: SIGTERM/SIGINT will not save before stopping: {e}");
            }
        }
        if self.silent {
            return;
        }
        let banner = if self.banner.is_empty() { stage } else { &self.banner };
        let ranks = selfcon::distributed::current()
            .map(|d| format!(" · {} ranks, global batch = {} × --batch_size", d.world_size, d.world_size))
            .unwrap_or_default();
        eprintln!(
            "{banner} · {train_images} training images · from epoch {first_epoch}{ranks} · run folder {}",
            run_dir.display()
        );
    }

    fn pass_started(&mut self, what: &str, batches: usize) {
        if self.silent {
            return;
        }
        if self.tty {
            let bar = ProgressBar::new(batches as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(what.to_string());
            self.bar = Some(bar);
        }
    }

    fn step(&mut self, epoch: usize, step: usize, loss: f64, lr: f64, images_per_s: f64) {
        if self.silent {
            return;
        }
        match &self.bar {
            Some(bar) => {
                // NaN until the loop first reads the losses (every --print_freq steps).
                let loss = if loss.is_nan() { "-".to_string() } else { format!("{loss:.4}") };
                bar.set_message(format!("loss {loss} lr {lr:.5} {images_per_s:.0} img/s"));
                bar.inc(1);
            }
            None if self.print_freq > 0 && (step + 1).is_multiple_of(self.print_freq) => {
                eprintln!("epoch {epoch} step {} loss {loss:.4} lr {lr:.5} {images_per_s:.0} img/s", step + 1)
            }
            None => {}
        }
    }

    fn stop_requested(&mut self) -> Option<i32> {
        selfcon::train::stop_signals::requested()
    }

    fn pass_finished(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn epoch_finished(&mut self, summary: &str) {
        if self.silent {
            return;
        }
        eprintln!("{summary}");
    }
}
