//! `selfcon launch`: starts one process per device on this machine with the torchrun
//! environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT`, `GROUP_RANK`) and supervises them. When a rank fails, the others get
//! `grace` to notice it through their collectives and stop with their own message naming it;
//! whatever still runs then is killed, so the launch never hangs on a dead rank. SIGINT/SIGTERM
//! sent to the launcher (Ctrl-C, a batch scheduler's cancel) are passed on to every rank, and a
//! launcher that dies takes its ranks with it (the kernel's parent-death signal).

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct LaunchConfig {
    pub nproc_per_node: usize,
    pub nnodes: usize,
    pub node_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// How long the other ranks may take to stop by themselves after one failed.
    pub grace: Duration,
    /// The program every rank runs (this executable) and its arguments (`pretrain ...`).
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// Why a launch failed: one line, and the exit code the launcher should end with.
#[derive(Debug)]
pub struct LaunchFailure {
    pub message: String,
    pub exit_code: i32,
}

impl LaunchConfig {
    pub fn validate(&self) -> Result<()> {
        if self.nproc_per_node == 0 {
            return Err(Error::option("nproc_per_node", "must be at least 1"));
        }
        if self.nnodes == 0 {
            return Err(Error::option("nnodes", "must be at least 1"));
        }
        if self.node_rank >= self.nnodes {
            return Err(Error::option(
                "node_rank",
                format!("{} is not below --nnodes {}", self.node_rank, self.nnodes),
            ));
        }
        match self.args.first().and_then(|a| a.to_str()) {
            Some("pretrain" | "linear" | "ce") => Ok(()),
            Some("bench") if self.args.get(1).and_then(|a| a.to_str()) == Some("train") => Ok(()),
            Some(other) => Err(Error::input(format!(
                "launch runs pretrain, linear, ce or bench train on every rank, not '{other}' (selfcon launch --nproc_per_node N -- pretrain ...)"
            ))),
            None => Err(Error::input("launch needs a command after '--' (selfcon launch --nproc_per_node N -- pretrain ...)")),
        }
    }

    pub fn world_size(&self) -> usize {
        self.nproc_per_node * self.nnodes
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "stopped".into(),
    }
}

/// How many SIGTERMs and SIGINTs the launcher received.
static SIGTERMS: AtomicUsize = AtomicUsize::new(0);
static SIGINTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn remember_signal(signal: libc::c_int) {
    let count = if signal == libc::SIGTERM { &SIGTERMS } else { &SIGINTS };
    count.fetch_add(1, Ordering::SeqCst);
}

/// Runs the ranks of this node to completion.
pub fn launch(config: &LaunchConfig) -> std::result::Result<(), LaunchFailure> {
    config.validate().map_err(|e| LaunchFailure { message: e.to_string(), exit_code: 2 })?;
    let world = config.world_size();
    let threads = std::env::var_os("OMP_NUM_THREADS").is_none().then(|| {
        // As torchrun: ranks sharing a machine share its cores instead of oversubscribing them.
        let cores = crate::hardware::CpuBudget::detect().cpus;
        (cores / config.nproc_per_node).max(1)
    });
    let mut children: Vec<(usize, Child)> = Vec::new();
    for local in 0..config.nproc_per_node {
        let rank = config.node_rank * config.nproc_per_node + local;
        let mut command = Command::new(&config.program);
        command
            .args(&config.args)
            .stdin(Stdio::null())
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("LOCAL_WORLD_SIZE", config.nproc_per_node.to_string())
            .env("GROUP_RANK", config.node_rank.to_string())
            .env("MASTER_ADDR", &config.master_addr)
            .env("MASTER_PORT", config.master_port.to_string());
        if let Some(t) = threads {
            command.env("OMP_NUM_THREADS", t.to_string());
        }
        // SAFETY: prctl and setpgid are async-signal-safe. PDEATHSIG: SIGKILL when the launcher
        // dies. Own process group: Ctrl-C in the terminal reaches the launcher alone, which passes
        // each one on exactly once (a rank that got it twice would take the second as "stop now").
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        match command.spawn() {
            Ok(child) => children.push((rank, child)),
            Err(e) => {
                for (_, c) in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(LaunchFailure {
                    message: format!("launch: cannot start rank {rank} ({}): {e}", config.program.display()),
                    exit_code: 1,
                });
            }
        }
    }

    // Signals counted from this launch on (the counters are process-wide and a library caller may
    // launch twice); read before the handler is installed, so that none is missed.
    let mut passed_on = [SIGTERMS.load(Ordering::SeqCst), SIGINTS.load(Ordering::SeqCst)];
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, remember_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, remember_signal as *const () as libc::sighandler_t);
    }
    // The signal the ranks were asked to stop with (SIGTERM wins), and how many of each were
    // passed on: each one once, however close together they came (a second SIGINT means "now").
    let mut forwarded = 0;
    let mut first_failure: Option<(usize, ExitStatus)> = None;
    let mut deadline: Option<Instant> = None;
    let mut killed: Vec<usize> = Vec::new();
    // A rank ended by the passed-on signal itself (it had not started training: nothing to
    // save) breaks its peers' collectives; their failures are then the stop's doing, even the
    // one of a peer whose own copy of the signal arrived a moment after its collective failed.
    let mut ended_by_signal = false;
    // Whether the first failure came after a stop signal was passed on (only such a failure can
    // be the stop's doing).
    let mut failed_after_signal = false;
    while !children.is_empty() {
        for (k, (signal, count)) in [(libc::SIGTERM, &SIGTERMS), (libc::SIGINT, &SIGINTS)].into_iter().enumerate() {
            let received = count.load(Ordering::SeqCst);
            while passed_on[k] < received {
                for (_, child) in &children {
                    // SAFETY: signals a child we started and have not reaped.
                    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
                }
                passed_on[k] += 1;
                if forwarded != libc::SIGTERM {
                    forwarded = signal;
                }
                // Signals of one kind still pending at a rank merge into one: space them out.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (rank, _) = children.remove(i);
                    // Asked to stop, a rank ends with 143 / 130 once it saved (130 also for a
                    // second Ctrl-C), is ended by the signal itself before training started
                    // (nothing to save), or 0 if it had finished; anything else is a failure.
                    let by_stop_signal = |s: i32| s == libc::SIGTERM || s == libc::SIGINT;
                    let stopped = forwarded != 0
                        && (status.code().is_some_and(|c| by_stop_signal(c - 128))
                            || status.signal().is_some_and(by_stop_signal));
                    ended_by_signal |= forwarded != 0 && status.signal().is_some_and(by_stop_signal);
                    if !status.success() && !stopped && first_failure.is_none() {
                        first_failure = Some((rank, status));
                        failed_after_signal = forwarded != 0;
                        deadline = Some(Instant::now() + config.grace);
                    }
                }
                Ok(None) => i += 1,
                Err(_) => i += 1,
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            for (rank, child) in &mut children {
                let _ = child.kill();
                let _ = child.wait();
                killed.push(*rank);
            }
            children.clear();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Ranks asked to stop get the time they need to finish their step and save (the scheduler's
    // SIGKILL bounds it); only a failure starts the grace period.
    if forwarded != 0 && (first_failure.is_none() || (ended_by_signal && failed_after_signal)) {
        return Err(LaunchFailure {
            message: format!("launch: stopped by signal {forwarded}, passed on to every rank"),
            exit_code: 128 + forwarded,
        });
    }
    match first_failure {
        None => Ok(()),
        Some((rank, status)) => {
            let after = if killed.is_empty() {
                String::new()
            } else {
                format!(
                    "; rank(s) {} were still running {} s later and were killed",
                    killed.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
                    config.grace.as_secs()
                )
            };
            Err(LaunchFailure {
                message: format!("launch: rank {rank} {} (the first rank to fail){after}", describe(status)),
                exit_code: match status.code() {
                    Some(2) => 2,
                    _ => 1,
                },
            })
        }
    }
}
