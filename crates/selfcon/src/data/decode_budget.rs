//! One budget of decoding memory shared by every loader worker of the process. Each image may
//! have up to 64 megapixels, which is right for one image but not for sixteen workers decoding
//! sixteen such images at once (~11 GB from sixteen small files). A decode first takes its share
//! from this budget (waiting while others hold it) and gives it back when the decoded image is
//! dropped; an image larger than the whole budget decodes alone. Only the loader holds decoded
//! images, one per worker at a time, and every holder finishes without waiting on another, so
//! the waits always end.

use std::sync::{Condvar, LazyLock, Mutex};

/// What a decode may hold, all workers together: three of the largest images at once (3 × 704 MB).
pub const DECODE_BUDGET_BYTES: u64 = 2 << 30;

/// Bytes charged per pixel: the decoder's output at its widest (16-bit RGBA: 8) plus the 8-bit
/// RGB copy (3), held until the decoded image is dropped.
pub const BYTES_PER_PIXEL: u64 = 11;

/// A budget: bytes in use, and a limit.
#[derive(Debug)]
pub struct DecodeBudget {
    limit: u64,
    in_use: Mutex<u64>,
    freed: Condvar,
}

/// A share of a budget, given back when dropped.
#[derive(Debug)]
pub struct DecodeTicket {
    budget: &'static DecodeBudget,
    bytes: u64,
}

static GLOBAL: LazyLock<DecodeBudget> = LazyLock::new(|| DecodeBudget::new(DECODE_BUDGET_BYTES));

/// The process's budget, for decoding `pixels`: waits until it fits.
pub fn acquire(pixels: u64) -> DecodeTicket {
    GLOBAL.acquire(pixels.saturating_mul(BYTES_PER_PIXEL))
}

impl DecodeBudget {
    pub const fn new(limit: u64) -> Self {
        DecodeBudget { limit, in_use: Mutex::new(0), freed: Condvar::new() }
    }

    /// Takes `bytes`, waiting while they do not fit next to what others hold (alone, any size).
    pub fn acquire(&'static self, bytes: u64) -> DecodeTicket {
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        while *in_use > 0 && in_use.saturating_add(bytes) > self.limit {
            in_use = self.freed.wait(in_use).unwrap_or_else(|p| p.into_inner());
        }
        *in_use = in_use.saturating_add(bytes);
        DecodeTicket { budget: self, bytes }
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u64 {
        *self.in_use.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DecodeTicket {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for DecodeTicket {
    fn drop(&mut self) {
        let mut in_use = self.budget.in_use.lock().unwrap_or_else(|p| p.into_inner());
        *in_use -= self.bytes;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[test]
    fn holders_share_the_limit_and_an_oversized_share_goes_alone() {
        static BUDGET: DecodeBudget = DecodeBudget::new(100);
        static PEAK: AtomicU64 = AtomicU64::new(0);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        // Shares of 30–60: at most three fit at once; 250 exceeds the limit.
                        let bytes = if i == 7 { 250 } else { 30 + 10 * (i % 4) };
                        let ticket = BUDGET.acquire(bytes);
                        let held = BUDGET.in_use();
                        PEAK.fetch_max(if bytes > 100 { held.saturating_sub(bytes) } else { held }, Ordering::SeqCst);
                        assert!(bytes <= 100 || held == bytes, "an oversized share decodes alone: {held}");
                        std::thread::sleep(Duration::from_micros(200));
                        drop(ticket);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(PEAK.load(Ordering::SeqCst) <= 100, "{}", PEAK.load(Ordering::SeqCst));
        assert_eq!(BUDGET.in_use(), 0, "every share given back");
    }
}
