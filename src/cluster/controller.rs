//! Broker leases: every broker heartbeats through the metadata quorum, and the controller (the
//! broker whose Raft node currently leads the quorum) fences brokers whose heartbeats stopped.
//!
//! A heartbeat is a `BrokerHeartbeat` command in the Raft log, so a broker proves both that it
//! runs and that it reaches the quorum. The controller keeps when it last saw each broker's
//! heartbeat count move in memory only: a newly elected controller starts every lease afresh
//! (as Kafka's does), so a change of controller never fences a live broker.
//!
//! Must not touch: partition logs (leadership changes reach them through the image).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{BrokerRegistration, ClusterError, Metadata, MetadataCommand, MetadataError};

/// Lease settings (`broker_heartbeat_interval_ms`, `broker_session_timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub struct Leases {
    pub heartbeat_interval: Duration,
    pub session_timeout: Duration,
}

/// Registers this broker, then heartbeats forever; registers again when the quorum says the
/// registration is stale (another incarnation replaced it, or it was lost with a snapshot).
pub async fn heartbeat(metadata: Metadata, registration: BrokerRegistration, leases: Leases) {
    let (id, incarnation) = (registration.id, registration.incarnation);
    // One attempt may not outlast a quarter of a lease. A heartbeat forwarded to a quorum
    // leader that has just been cut off would wait out the forwarding RPC's timeout (5 s)
    // while the newly elected controller's lease on this broker, started afresh, runs out
    // and fences a live broker: give up and send the next one, which goes to the leader this
    // node knows by then.
    let attempt_timeout = leases.session_timeout / 4;
    let mut failing = false;
    loop {
        tokio::time::sleep(leases.heartbeat_interval).await;
        let attempt = async {
            match metadata
                .propose(MetadataCommand::BrokerHeartbeat { id, incarnation })
                .await
            {
                Err(ClusterError::Rejected(MetadataError::StaleBroker(_))) => {
                    tracing::warn!(
                        node_id = id,
                        "registration no longer current; registering again"
                    );
                    metadata
                        .propose(MetadataCommand::RegisterBroker(registration.clone()))
                        .await
                }
                other => other,
            }
        };
        let result = match tokio::time::timeout(attempt_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ClusterError::Raft(format!(
                "no answer from the metadata quorum within {attempt_timeout:?}"
            ))),
        };
        match result {
            Ok(()) if failing => {
                tracing::info!(node_id = id, "heartbeats reach the metadata quorum again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(
                    node_id = id,
                    error = %e,
                    "heartbeat failed; the controller fences this broker if it cannot reach \
                     the metadata quorum within broker_session_timeout_ms"
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Runs on every broker; acts only while this broker's Raft node leads the quorum.
pub async fn run(metadata: Metadata, leases: Leases) {
    let tick =
        (leases.session_timeout / 4).clamp(Duration::from_millis(50), leases.heartbeat_interval);
    let mut seen: HashMap<i32, (Uuid, u64, Instant)> = HashMap::new();
    let mut leading = false;
    loop {
        tokio::time::sleep(tick).await;
        if !metadata.is_leader() {
            leading = false;
            continue;
        }
        if !leading {
            // A new controller: every lease starts now.
            seen.clear();
            leading = true;
        }
        let image = metadata.image();
        let now = Instant::now();
        seen.retain(|id, _| image.brokers.contains_key(id));
        let own = metadata.node_id() as i32;
        for b in image.brokers.values() {
            if b.id == own {
                continue; // leading the quorum is proof of life enough
            }
            let entry = seen
                .entry(b.id)
                .or_insert((b.incarnation, b.heartbeats, now));
            if entry.0 != b.incarnation || entry.1 != b.heartbeats || b.fenced {
                *entry = (b.incarnation, b.heartbeats, now);
                continue;
            }
            let silent = now.duration_since(entry.2);
            if silent < leases.session_timeout {
                continue;
            }
            tracing::warn!(
                node_id = b.id,
                silent_ms = silent.as_millis() as u64,
                "broker lease expired; fencing it and moving its partition leadership"
            );
            let fence = MetadataCommand::FenceBroker {
                id: b.id,
                incarnation: b.incarnation,
            };
            if let Err(e) = metadata.propose(fence).await {
                tracing::warn!(node_id = b.id, error = %e, "fencing failed; will retry");
            }
        }
    }
}
