//! The run's clock: monotonic nanoseconds since the run started, and their wall-clock (Unix)
//! equivalent for the send times written into record values.
//!
//! Everything in a run reads this one clock, so producer and consumer tasks agree on time to the
//! nanosecond; the Unix mapping is fixed at the start and never jumps with NTP.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_unix_ns: u64,
}

impl Clock {
    pub fn start() -> Self {
        let origin_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            origin: Instant::now(),
            origin_unix_ns,
        }
    }

    /// ns since the start of the run.
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// The instant `ns` after the start (for sleeping until a scheduled time).
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.origin + std::time::Duration::from_nanos(ns)
    }

    /// ns since the start at which `t` happened (0 if before the start).
    pub fn ns_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_nanos() as u64
    }

    /// Unix time (ns) of a point given in ns since the start.
    pub fn unix_ns(&self, ns: u64) -> u64 {
        self.origin_unix_ns + ns
    }

    pub fn unix_now_ms(&self) -> u64 {
        self.unix_ns(self.now_ns()) / 1_000_000
    }
}
