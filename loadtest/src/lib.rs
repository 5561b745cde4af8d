//! strata-loadtest: a Kafka-protocol load generator that works against any Kafka-compatible
//! broker. It speaks the wire protocol through the `kafka-protocol` codecs (requests, responses
//! and record batches are never hand-encoded) on tokio.
//!
//! ```text
//! commands/   produce, consume, e2e, workload: set up topics and offsets, run, report
//! produce/    producer task, per-partition batching (pure), per-broker pipelined senders
//! consume/    group-less fetch loops; batch headers counted without decompression (pure)
//! client/     pipelined connection, version negotiation (pure), metadata/topics/offsets
//! stats/      HdrHistogram latencies, shared counters, Kafka-tool-compatible output (pure)
//! schedule.rs intended-send-time schedule (pure): the rate limiter, free of coordinated omission
//! workload.rs OpenMessaging Benchmark workload files (pure)
//! ```
//!
//! The tool must never be what limits a benchmark: payloads are built before the run, records
//! are batched per partition, each producer keeps several requests in flight on one connection
//! per broker, and shared state is touched once per response, not per record.
//!
//! As a tool, errors are `anyhow` throughout: every failure ends the run with its context.

pub mod client;
pub mod clock;
pub mod commands;
pub mod consume;
pub mod produce;
pub mod schedule;
pub mod stats;
pub mod workload;
