//! Failure handling. A rank that exits breaks its TCP connections, so the others' collectives
//! fail at once; a rank that hangs makes them time out (`--dist_timeout`). Either way the
//! surviving ranks then need to say *which* rank failed: every rank bumps a heartbeat counter in
//! the rendezvous store once per second from its own thread and connection, and a rank whose
//! collective failed reads the counters twice, a few beats apart — the ranks whose counter stood
//! still are the ones that died or hang.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use torch_shim::distributed::TcpStore;

use super::Distributed;
use crate::error::{Error, Result};

const BEAT: Duration = Duration::from_secs(1);
/// How long a diagnosis watches the counters: long enough for a live rank to beat twice.
const WATCH: Duration = Duration::from_millis(3200);

fn key(rank: usize) -> String {
    format!("selfcon/heartbeat/{rank}")
}

/// The heartbeat thread of this rank; dropping it stops the beats.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
}

impl Heartbeat {
    pub fn start(master_addr: &str, master_port: u16, rank: usize, timeout: Duration) -> Result<Self> {
        // Its own connection: a beat must not wait behind a blocking store call of the trainer.
        let store = TcpStore::connect(master_addr, master_port, false, None, timeout).map_err(|e| {
            Error::Distributed(format!("rank {rank}: heartbeat connection to the store failed: {}", e.0))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name(format!("heartbeat-{rank}"))
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if store.add(&key(rank), 1).is_err() {
                        return; // the store (rank 0) is gone; the trainer finds out on its own
                    }
                    std::thread::sleep(BEAT);
                }
            })
            .map_err(|e| Error::Distributed(format!("cannot start the heartbeat thread: {e}")))?;
        Ok(Heartbeat { stop })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One line for a failed collective: what failed, which rank is to blame, libtorch's reason.
pub fn diagnose(d: &Distributed, what: &str, cause: &str) -> String {
    let read = || -> std::result::Result<Vec<i64>, String> {
        (0..d.world_size).map(|r| d.store.add(&key(r), 0).map_err(|e| e.0)).collect()
    };
    let _ = d.store.set(&format!("selfcon/failed/{}", d.rank), cause.as_bytes());
    let before = match read() {
        Ok(counts) => counts,
        Err(_) if d.rank != 0 => {
            return format!(
                "{what} failed: rank 0, which hosts the rendezvous store at {}, is gone (exited or unreachable); libtorch: {cause}",
                d.master
            )
        }
        Err(e) => return format!("{what} failed: libtorch: {cause} (the rendezvous store is unreachable too: {e})"),
    };
    std::thread::sleep(WATCH);
    let after = match read() {
        Ok(counts) => counts,
        Err(_) => {
            return format!("{what} failed: rank 0 (the rendezvous store at {}) went away; libtorch: {cause}", d.master)
        }
    };
    let silent: Vec<String> =
        (0..d.world_size).filter(|&r| r != d.rank && after[r] == before[r]).map(|r| r.to_string()).collect();
    match silent.len() {
        0 => format!("{what} failed; every other rank still has a heartbeat; libtorch: {cause}"),
        1 => format!(
            "{what} failed: rank {} stopped responding (it exited or hangs: no heartbeat for {:.0} s); libtorch: {cause}",
            silent[0],
            WATCH.as_secs_f64()
        ),
        _ => format!(
            "{what} failed: ranks {} stopped responding (they exited or hang: no heartbeat for {:.0} s); libtorch: {cause}",
            silent.join(", "),
            WATCH.as_secs_f64()
        ),
    }
}
