//! Graceful stop on SIGTERM (a batch scheduler's preemption) and SIGINT (Ctrl-C): the handler
//! only records the signal; the training loop asks [`requested`] after every step, finishes that
//! step, writes `last` and stops (see `TrainLoop::run_pass`). A SIGINT while the first signal is
//! being honoured ends the process at once, as Ctrl-C twice does in most tools; a repeated
//! SIGTERM does not (schedulers may deliver it twice: to every process of the job and through
//! `selfcon launch`, and follow it with SIGKILL anyway).
//!
//! The state is process-wide because signals are; the library reads it only through
//! [`Progress::stop_requested`](super::Progress::stop_requested), which the CLI answers from here
//! and tests answer from their own flag.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first SIGINT/SIGTERM received since [`install`] (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    if RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst).is_err() && signal == libc::SIGINT {
        // Ctrl-C again: leave now. `_exit` is async-signal-safe (no destructors, no flush).
        // SAFETY: terminates the process; nothing else runs in the handler.
        unsafe { libc::_exit(128 + signal) };
    }
}

/// Routes SIGINT and SIGTERM to the graceful stop. SA_RESTART keeps interrupted system calls
/// (file reads, the distributed store's sockets) going instead of failing with EINTR.
pub fn install() -> std::io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only touches an atomic and `_exit`.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The signal that asked the run to stop, if one arrived.
pub fn requested() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// "SIGTERM", "SIGINT", or "signal N".
pub fn name(signal: i32) -> String {
    match signal {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        other => format!("signal {other}"),
    }
}
