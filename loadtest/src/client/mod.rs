//! Talking to brokers: one pipelined connection per broker per user, API version negotiation,
//! and the cluster-level requests (Metadata, CreateTopics, ListOffsets).

pub mod cluster;
pub mod connection;
pub mod splice;
pub mod versions;
