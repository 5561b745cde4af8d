//! The send schedule: record `i` of a throttled run is *intended* to be sent at
//! `i / rate` seconds after the start, whatever happened to the records before it.
//!
//! Latency measured from the intended time rather than from the moment a stalled sender got
//! round to the record is what keeps a benchmark free of coordinated omission: when the broker
//! stalls, every record that should have gone out meanwhile is charged the wait. The schedule is
//! pure arithmetic on nanoseconds since the start of the run, so it is tested without a clock.

/// A fixed-rate schedule. `None` rate (unthrottled) is represented by not having a `Schedule`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    records_per_sec: f64,
}

impl Schedule {
    /// A schedule of `records_per_sec` (> 0) records per second.
    pub fn new(records_per_sec: f64) -> Self {
        assert!(
            records_per_sec.is_finite() && records_per_sec > 0.0,
            "rate must be positive, got {records_per_sec}"
        );
        Self { records_per_sec }
    }

    /// From a `--throughput`-style argument: any value <= 0 means unthrottled.
    pub fn from_rate(records_per_sec: f64) -> Option<Self> {
        (records_per_sec > 0.0).then(|| Self::new(records_per_sec))
    }

    pub fn records_per_sec(&self) -> f64 {
        self.records_per_sec
    }

    /// Intended send time of record `index`, in ns after the start.
    pub fn intended_ns(&self, index: u64) -> u64 {
        // f64 holds integers exactly up to 2^53 ns (104 days), far beyond any run.
        (index as f64 * 1e9 / self.records_per_sec).round() as u64
    }

    /// How many records are due by `elapsed_ns`: those whose intended time is `<= elapsed_ns`.
    pub fn due_by(&self, elapsed_ns: u64) -> u64 {
        // Start from the float estimate, then correct it against `intended_ns` so the two
        // functions agree exactly at every boundary (no record is ever due twice or never).
        let mut n = (elapsed_ns as f64 * self.records_per_sec / 1e9).floor() as u64 + 1;
        while n > 0 && self.intended_ns(n - 1) > elapsed_ns {
            n -= 1;
        }
        while self.intended_ns(n) <= elapsed_ns {
            n += 1;
        }
        n
    }

    /// Records in a run of `duration_ns` at this rate (those intended strictly before its end).
    pub fn records_in(&self, duration_ns: u64) -> u64 {
        if duration_ns == 0 {
            return 0;
        }
        self.due_by(duration_ns - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_evenly_spaced() {
        let s = Schedule::new(1000.0);
        assert_eq!(s.intended_ns(0), 0);
        assert_eq!(s.intended_ns(1), 1_000_000);
        assert_eq!(s.intended_ns(1500), 1_500_000_000);
    }

    #[test]
    fn due_by_counts_records_at_or_before_now() {
        let s = Schedule::new(1000.0);
        assert_eq!(s.due_by(0), 1, "record 0 is due at the start");
        assert_eq!(s.due_by(999_999), 1);
        assert_eq!(s.due_by(1_000_000), 2);
        assert_eq!(s.due_by(10_500_000), 11);
    }

    #[test]
    fn due_by_agrees_with_intended_at_every_boundary() {
        for rate in [1.0, 3.0, 7.0, 333.3, 50_000.0, 1_234_567.0] {
            let s = Schedule::new(rate);
            for i in 0..2000u64 {
                let t = s.intended_ns(i);
                assert_eq!(s.due_by(t), i + 1, "rate {rate}, record {i}");
                if t > 0 {
                    assert!(s.due_by(t - 1) <= i, "rate {rate}, record {i}");
                }
            }
        }
    }

    #[test]
    fn a_stalled_sender_owes_everything_that_fell_due() {
        // A sender that wakes late after 250 ms at 10k/s owes 2,501 records (0..=2500): the
        // schedule, not the sender, decides what was intended.
        let s = Schedule::new(10_000.0);
        assert_eq!(s.due_by(250_000_000), 2501);
        assert_eq!(s.intended_ns(2500), 250_000_000);
    }

    #[test]
    fn records_in_a_run() {
        let s = Schedule::new(1000.0);
        assert_eq!(s.records_in(1_000_000_000), 1000);
        assert_eq!(s.records_in(1), 1);
        assert_eq!(s.records_in(0), 0);
        assert_eq!(Schedule::new(0.5).records_in(10_000_000_000), 5);
    }

    #[test]
    fn non_positive_rate_is_unthrottled() {
        assert!(Schedule::from_rate(-1.0).is_none());
        assert!(Schedule::from_rate(0.0).is_none());
        assert_eq!(Schedule::from_rate(5.0).unwrap().records_per_sec(), 5.0);
    }
}
