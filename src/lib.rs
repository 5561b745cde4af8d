//! Strata: a Kafka-compatible, tiered-storage log service.
//!
//! The path of a record: `server` (framing, connections) -> `api` (one module per Kafka API
//! family) -> `storage` (hosted partitions, group commit) -> `log` (segments and indexes on
//! disk). Topics and their configs live in `cluster` (Raft metadata); `config` declares every
//! setting. `tier` archives sealed segments to an object store and serves them back.
//! `bufpool` keeps large buffers (request bodies, fetch reads, responses) for reuse.

pub mod api;
pub mod broker;
pub use bufpool;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod http;
pub mod log;
pub mod replication;
pub mod server;
pub mod storage;
pub mod tier;

/// Wall-clock milliseconds since the Unix epoch (Kafka timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
