//! Latency distribution in microseconds, on HdrHistogram (3 significant digits, so every
//! percentile is within 0.1% of the true value), with the summaries the reports print.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds. Values above the range (an hour) are clamped, not dropped.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

/// The upper bound of what is tracked: an hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds");
        Self { hist }
    }

    pub fn record(&mut self, us: u64) {
        self.record_n(us, 1);
    }

    /// `count` samples of the same value (records acknowledged together that were enqueued
    /// together).
    pub fn record_n(&mut self, us: u64, count: u64) {
        if count == 0 {
            return;
        }
        self.hist
            .record_n(us.min(MAX_US), count)
            .expect("value clamped into range");
    }

    pub fn add(&mut self, other: &Latency) {
        self.hist.add(&other.hist).expect("same bounds");
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn mean_us(&self) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.mean()
        }
    }

    pub fn max_us(&self) -> u64 {
        self.hist.max()
    }

    /// The value at quantile `q` in [0, 1] (0.999 = p99.9): the smallest recorded value that
    /// at least `q` of all samples are at or below. 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            return 0;
        }
        self.hist.value_at_quantile(q)
    }

    /// The usual summary, in milliseconds.
    pub fn summary_ms(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: self.count(),
            avg: self.mean_us() / 1000.0,
            max: ms(self.max_us()),
            p50: ms(self.quantile_us(0.50)),
            p90: ms(self.quantile_us(0.90)),
            p95: ms(self.quantile_us(0.95)),
            p99: ms(self.quantile_us(0.99)),
            p999: ms(self.quantile_us(0.999)),
            p9999: ms(self.quantile_us(0.9999)),
        }
    }
}

/// Percentiles of a latency distribution, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub avg: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within_tenth_of_a_percent(got: u64, want: u64) -> bool {
        (got as f64 - want as f64).abs() <= want as f64 * 0.001 + 1.0
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = Latency::new();
        for us in 1..=100_000u64 {
            h.record(us);
        }
        assert_eq!(h.count(), 100_000);
        for (q, want) in [
            (0.5, 50_000),
            (0.95, 95_000),
            (0.99, 99_000),
            (0.999, 99_900),
        ] {
            let got = h.quantile_us(q);
            assert!(
                within_tenth_of_a_percent(got, want),
                "q={q}: {got} vs {want}"
            );
        }
        assert!(within_tenth_of_a_percent(h.max_us(), 100_000));
        assert!((h.mean_us() - 50_000.5).abs() < 50.0, "{}", h.mean_us());
    }

    #[test]
    fn a_rare_outlier_shows_only_in_the_high_percentiles() {
        let mut h = Latency::new();
        h.record_n(1_000, 9_990);
        h.record_n(250_000, 10);
        assert!(within_tenth_of_a_percent(h.quantile_us(0.5), 1_000));
        assert!(within_tenth_of_a_percent(h.quantile_us(0.99), 1_000));
        assert!(within_tenth_of_a_percent(h.quantile_us(0.9995), 250_000));
        let s = h.summary_ms();
        assert!((s.p50 - 1.0).abs() < 0.01);
        assert!((s.p9999 - 250.0).abs() < 0.5);
        assert!((s.max - 250.0).abs() < 0.5);
    }

    #[test]
    fn record_n_is_record_repeated_and_merge_adds() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        a.record_n(700, 3);
        for _ in 0..3 {
            b.record(700);
        }
        assert_eq!(a.summary_ms(), b.summary_ms());
        a.add(&b);
        assert_eq!(a.count(), 6);
        a.record_n(5, 0);
        assert_eq!(a.count(), 6);
    }

    #[test]
    fn empty_and_out_of_range() {
        let mut h = Latency::new();
        assert_eq!(h.summary_ms(), LatencySummary::default());
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
        assert!(h.max_us() >= MAX_US);
    }
}
