//! The text the tool prints, byte for byte in the forms of Kafka's own perf tools so existing
//! scripts that parse `kafka-producer-perf-test` / `kafka-consumer-perf-test` output read ours.
//!
//! Pure functions of the numbers; "MB" is MiB (2^20 bytes), as in those tools.

use std::time::Duration;

use super::histogram::LatencySummary;

const MIB: f64 = 1024.0 * 1024.0;

/// One 5-second window of acknowledged records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub avg_latency_ms: f64,
    pub max_latency_ms: f64,
}

/// `kafka-producer-perf-test`'s progress line.
pub fn window_line(w: &Window) -> String {
    let secs = w.elapsed.as_secs_f64().max(1e-9);
    format!(
        "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency.",
        w.records,
        w.records as f64 / secs,
        w.bytes as f64 / secs / MIB,
        w.avg_latency_ms,
        w.max_latency_ms,
    )
}

/// Totals of a produce run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Total {
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub latency: LatencySummary,
}

/// `kafka-producer-perf-test`'s final line. As there, the percentiles are whole milliseconds
/// (truncated); `--json` has them to the microsecond.
pub fn total_line(t: &Total) -> String {
    let secs = t.elapsed.as_secs_f64().max(1e-9);
    let whole_ms = |ms: f64| ms.floor() as u64;
    format!(
        "{} records sent, {:.6} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, \
         {} ms 50th, {} ms 95th, {} ms 99th, {} ms 99.9th.",
        t.records,
        t.records as f64 / secs,
        t.bytes as f64 / secs / MIB,
        t.latency.avg,
        t.latency.max,
        whole_ms(t.latency.p50),
        whole_ms(t.latency.p95),
        whole_ms(t.latency.p99),
        whole_ms(t.latency.p999),
    )
}

/// `kafka-consumer-perf-test`'s header line.
pub const CONSUMER_HEADER: &str = "start.time, end.time, data.consumed.in.MB, MB.sec, \
     data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec";

/// A consume run, timestamps in ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Consumed {
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    pub bytes: u64,
    pub records: u64,
    /// Time before the first fetch (metadata, offsets); Kafka's tool puts the group join here.
    pub rebalance_ms: u64,
}

/// `kafka-consumer-perf-test`'s result row.
pub fn consumer_row(c: &Consumed) -> String {
    let elapsed_ms = c.end_unix_ms.saturating_sub(c.start_unix_ms);
    let secs = (elapsed_ms as f64 / 1000.0).max(1e-9);
    let fetch_ms = elapsed_ms.saturating_sub(c.rebalance_ms);
    let fetch_secs = (fetch_ms as f64 / 1000.0).max(1e-9);
    let mb = c.bytes as f64 / MIB;
    format!(
        "{}, {}, {:.4}, {:.4}, {}, {:.4}, {}, {}, {:.4}, {:.4}",
        timestamp(c.start_unix_ms),
        timestamp(c.end_unix_ms),
        mb,
        mb / secs,
        c.records,
        c.records as f64 / secs,
        c.rebalance_ms,
        fetch_ms,
        mb / fetch_secs,
        c.records as f64 / fetch_secs,
    )
}

/// End-to-end latency of a run (no Kafka tool prints this; same shape as the producer line).
pub fn e2e_line(records: u64, bytes: u64, elapsed: Duration, l: &LatencySummary) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    format!(
        "{} records received, {:.1} records/sec ({:.2} MB/sec), {:.3} ms avg e2e latency, \
         {:.3} ms max e2e latency, {:.3} ms 50th, {:.3} ms 90th, {:.3} ms 99th, {:.3} ms 99.9th, \
         {:.3} ms 99.99th.",
        records,
        records as f64 / secs,
        bytes as f64 / secs / MIB,
        l.avg,
        l.max,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.p9999,
    )
}

/// `yyyy-MM-dd HH:mm:ss:SSS` (the consumer tool's default date format), in UTC.
pub fn timestamp(unix_ms: u64) -> String {
    let days = (unix_ms / 86_400_000) as i64;
    let ms_of_day = unix_ms % 86_400_000;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}:{:03}",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day): H. Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(avg: f64, max: f64, p50: f64, p95: f64, p99: f64, p999: f64) -> LatencySummary {
        LatencySummary {
            count: 1,
            avg,
            max,
            p50,
            p90: p95,
            p95,
            p99,
            p999,
            p9999: p999,
        }
    }

    #[test]
    fn window_line_matches_kafka() {
        let w = Window {
            records: 10002,
            bytes: 10002 * 1000,
            elapsed: Duration::from_millis(5000),
            avg_latency_ms: 0.3,
            max_latency_ms: 4.0,
        };
        assert_eq!(
            window_line(&w),
            "10002 records sent, 2000.4 records/sec (1.91 MB/sec), 0.3 ms avg latency, 4.0 ms max latency."
        );
    }

    #[test]
    fn total_line_matches_kafka() {
        let t = Total {
            records: 1_000_000,
            bytes: 1_000_000 * 100,
            elapsed: Duration::from_millis(5015),
            latency: summary(10.34, 490.0, 1.7, 77.2, 87.9, 94.0),
        };
        assert_eq!(
            total_line(&t),
            "1000000 records sent, 199401.794616 records/sec (19.02 MB/sec), 10.34 ms avg latency, \
             490.00 ms max latency, 1 ms 50th, 77 ms 95th, 87 ms 99th, 94 ms 99.9th."
        );
    }

    #[test]
    fn consumer_output_matches_kafka() {
        assert_eq!(
            CONSUMER_HEADER,
            "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, \
             rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
        );
        // 2019-06-26 15:24:18.138 UTC, 5.667 s, 16 ms before the first fetch.
        let start = 1_561_562_658_138;
        let c = Consumed {
            start_unix_ms: start,
            end_unix_ms: start + 5667,
            bytes: 10_240_000_000,
            records: 10_000_000,
            rebalance_ms: 16,
        };
        assert_eq!(
            consumer_row(&c),
            "2019-06-26 15:24:18:138, 2019-06-26 15:24:23:805, 9765.6250, 1723.2442, 10000000, \
             1764602.0822, 16, 5651, 1728.1233, 1769598.3012"
        );
    }

    #[test]
    fn e2e_line_shape() {
        let l = LatencySummary {
            count: 5000,
            avg: 1.2345,
            max: 20.0,
            p50: 1.0,
            p90: 1.5,
            p95: 2.0,
            p99: 3.25,
            p999: 10.0,
            p9999: 19.5,
        };
        assert_eq!(
            e2e_line(5000, 5_120_000, Duration::from_secs(5), &l),
            "5000 records received, 1000.0 records/sec (0.98 MB/sec), 1.234 ms avg e2e latency, \
             20.000 ms max e2e latency, 1.000 ms 50th, 1.500 ms 90th, 3.250 ms 99th, 10.000 ms 99.9th, \
             19.500 ms 99.99th."
        );
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00:000");
        assert_eq!(timestamp(951_782_400_000 + 1), "2000-02-29 00:00:00:001");
        assert_eq!(timestamp(1_704_067_199_999), "2023-12-31 23:59:59:999");
        assert_eq!(timestamp(4_107_542_400_000), "2100-03-01 00:00:00:000");
    }
}
