//! Counters and latency histograms shared by a run's tasks, and the 5-second progress report.
//!
//! Tasks update the stats once per response (never per record under the lock), so one mutex
//! per side is cheap. The windows feed the progress lines; the totals feed the final report.

pub mod histogram;
pub mod report;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use histogram::{Latency, LatencySummary};
use report::Window;

/// How often progress is printed.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct WindowAcc {
    records: u64,
    bytes: u64,
    latency_sum_us: u64,
    latency_max_us: u64,
}

impl WindowAcc {
    fn add(&mut self, us: u64, count: u64, bytes: u64) {
        self.records += count;
        self.bytes += bytes;
        self.latency_sum_us += us * count;
        self.latency_max_us = self.latency_max_us.max(us);
    }
}

#[derive(Debug)]
struct Side {
    latency: Latency,
    records: u64,
    bytes: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    window: WindowAcc,
    window_start: Instant,
    last_ns: u64,
    /// Records counted since the start, warm-up included (never reset).
    seen: u64,
}

/// One side's (producing or consuming) counters, shared between tasks.
#[derive(Debug, Clone)]
pub struct Stats(Arc<Mutex<Side>>);

/// A snapshot of a side at the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct SideTotal {
    pub records: u64,
    pub bytes: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency_ms: LatencySummary,
    /// When the last record was counted, ns since the start.
    #[serde(skip)]
    pub last_ns: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Side {
            latency: Latency::new(),
            records: 0,
            bytes: 0,
            failed: 0,
            errors: BTreeMap::new(),
            window: WindowAcc::default(),
            window_start: Instant::now(),
            last_ns: 0,
            seen: 0,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Side> {
        self.0.lock().expect("stats lock poisoned")
    }

    /// Records done at `done_ns`, given as runs of (start ns, count), all times since the run's
    /// start; `bytes` is their total payload.
    pub fn record(&self, done_ns: u64, runs: &[(u64, u32)], bytes: u64) {
        let mut s = self.lock();
        let mut n = 0u64;
        for &(start_ns, count) in runs {
            let us = done_ns.saturating_sub(start_ns) / 1000;
            s.latency.record_n(us, u64::from(count));
            s.window.add(us, u64::from(count), 0);
            n += u64::from(count);
        }
        s.records += n;
        s.seen += n;
        s.bytes += bytes;
        s.window.bytes += bytes;
        s.last_ns = s.last_ns.max(done_ns);
    }

    /// Records counted without a latency (consuming without send stamps).
    pub fn record_count(&self, done_ns: u64, records: u64, bytes: u64) {
        let mut s = self.lock();
        s.records += records;
        s.seen += records;
        s.bytes += bytes;
        s.window.records += records;
        s.window.bytes += bytes;
        s.last_ns = s.last_ns.max(done_ns);
    }

    /// Records counted with one latency each, in µs.
    pub fn record_latencies(&self, done_ns: u64, latencies_us: &[u64], bytes: u64) {
        let mut s = self.lock();
        for &us in latencies_us {
            s.latency.record(us);
            s.window.add(us, 1, 0);
        }
        s.records += latencies_us.len() as u64;
        s.seen += latencies_us.len() as u64;
        s.bytes += bytes;
        s.window.bytes += bytes;
        s.last_ns = s.last_ns.max(done_ns);
    }

    /// Records that failed; each distinct error is kept with its count.
    pub fn record_failed(&self, records: u64, error: String) {
        let mut s = self.lock();
        s.failed += records;
        *s.errors.entry(error).or_default() += records;
    }

    pub fn records(&self) -> u64 {
        self.lock().records
    }

    /// Records counted since the start, including any before a `reset`.
    pub fn seen(&self) -> u64 {
        self.lock().seen
    }

    /// Forgets everything counted so far (the end of a warm-up).
    pub fn reset(&self) {
        let mut s = self.lock();
        s.latency = Latency::new();
        s.records = 0;
        s.bytes = 0;
        s.failed = 0;
        s.errors.clear();
        s.window = WindowAcc::default();
        s.window_start = Instant::now();
        s.last_ns = 0;
    }

    /// The window since the last call (or the start), and a new window begun.
    pub fn take_window(&self) -> Window {
        let mut s = self.lock();
        let w = std::mem::take(&mut s.window);
        let elapsed = s.window_start.elapsed();
        s.window_start = Instant::now();
        Window {
            records: w.records,
            bytes: w.bytes,
            elapsed,
            avg_latency_ms: if w.records == 0 {
                0.0
            } else {
                w.latency_sum_us as f64 / w.records as f64 / 1000.0
            },
            max_latency_ms: w.latency_max_us as f64 / 1000.0,
        }
    }

    pub fn total(&self) -> SideTotal {
        let s = self.lock();
        SideTotal {
            records: s.records,
            bytes: s.bytes,
            failed: s.failed,
            errors: s.errors.clone(),
            latency_ms: s.latency.summary_ms(),
            last_ns: s.last_ns,
        }
    }
}

/// What the progress report prints about each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `kafka-producer-perf-test`'s window line.
    Produced,
    /// Records consumed, with end-to-end latency when the values carry send stamps.
    Consumed { latency: bool },
}

fn progress_line(kind: Progress, w: &Window) -> String {
    match kind {
        Progress::Produced => report::window_line(w),
        Progress::Consumed { latency } => {
            let secs = w.elapsed.as_secs_f64().max(1e-9);
            let mut line = format!(
                "{} records received, {:.1} records/sec ({:.2} MB/sec)",
                w.records,
                w.records as f64 / secs,
                w.bytes as f64 / secs / (1024.0 * 1024.0)
            );
            if latency {
                line += &format!(
                    ", {:.1} ms avg e2e latency, {:.1} ms max e2e latency",
                    w.avg_latency_ms, w.max_latency_ms
                );
            }
            line + "."
        }
    }
}

/// Prints each side's window every `REPORT_INTERVAL` until `stop` changes. Producer windows go
/// to stdout like Kafka's tool (stderr with `--json`, whose stdout is the JSON alone); consumer
/// windows go to stderr, keeping stdout to the consumer tool's CSV.
pub fn spawn_reporter(
    sides: Vec<(Progress, Stats)>,
    json: bool,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        tick.tick().await;
        for (_, s) in &sides {
            s.take_window();
        }
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            for (kind, s) in &sides {
                let w = s.take_window();
                // Kafka prints a window when a record completes in it; an empty one never prints.
                if w.records == 0 {
                    continue;
                }
                let line = progress_line(*kind, &w);
                if json || *kind != Progress::Produced {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_record_one_latency_per_record() {
        let s = Stats::new();
        s.record(10_000_000, &[(1_000_000, 3), (9_000_000, 1)], 400);
        let t = s.total();
        assert_eq!((t.records, t.bytes), (4, 400));
        assert_eq!(t.latency_ms.count, 4);
        assert!((t.latency_ms.max - 9.0).abs() < 0.01);
        assert!(
            (t.latency_ms.avg - 7.0).abs() < 0.01,
            "{}",
            t.latency_ms.avg
        );
        let w = s.take_window();
        assert_eq!((w.records, w.bytes), (4, 400));
        assert!((w.avg_latency_ms - 7.0).abs() < 1e-9);
        assert_eq!(w.max_latency_ms, 9.0);
        assert_eq!(s.take_window().records, 0, "a new window starts empty");
        assert_eq!(s.total().records, 4, "totals survive windows");
        assert_eq!(s.total().last_ns, 10_000_000);
    }

    #[test]
    fn failures_are_counted_by_cause() {
        let s = Stats::new();
        s.record_failed(10, "NotLeaderOrFollower (6)".into());
        s.record_failed(5, "NotLeaderOrFollower (6)".into());
        s.record_failed(1, "timeout".into());
        let t = s.total();
        assert_eq!(t.failed, 16);
        assert_eq!(t.errors["NotLeaderOrFollower (6)"], 15);
        assert_eq!(t.records, 0);
    }

    #[test]
    fn consumer_progress_lines() {
        let w = Window {
            records: 5000,
            bytes: 5000 * 1024,
            elapsed: Duration::from_secs(5),
            avg_latency_ms: 1.24,
            max_latency_ms: 7.0,
        };
        assert_eq!(
            progress_line(Progress::Consumed { latency: false }, &w),
            "5000 records received, 1000.0 records/sec (0.98 MB/sec)."
        );
        assert_eq!(
            progress_line(Progress::Consumed { latency: true }, &w),
            "5000 records received, 1000.0 records/sec (0.98 MB/sec), 1.2 ms avg e2e latency, 7.0 ms max e2e latency."
        );
    }
}
