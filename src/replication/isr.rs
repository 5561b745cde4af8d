//! ISR maintenance on partition leaders (Kafka's `replica.lag.time.max.ms` rule): a follower
//! that has not caught up to the leader's log end for that long leaves the ISR; one whose
//! fetch offset reached the high watermark joins it again. Changes go to the controller as
//! `AlterPartition` at the leader's epoch, so a deposed leader's proposal is refused.
//!
//! Must not touch: partition data; the leader acts on the committed ISR only once the image
//! carries it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Metadata, MetadataCommand};
use crate::replication::IsrProposal;
use crate::storage::{LogManager, Role};

/// Checks every led partition each `lag_max / 4` (at most every 100 ms) until the process
/// ends.
pub async fn run(metadata: Metadata, logs: Arc<LogManager>, lag_max: Duration) {
    let tick = (lag_max / 4).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(tick).await;
        let image = metadata.image();
        let live = image.live_brokers();
        for p in logs.all_partitions() {
            let (role, since, epoch_start, followers) = p.leadership();
            let Role::Leader {
                node,
                epoch,
                replicas,
                isr,
            } = role
            else {
                continue;
            };
            if replicas.len() < 2 {
                continue;
            }
            let now = Instant::now();
            let hw = p.high_watermark();
            let in_sync = |r: &i32| {
                if *r == node {
                    return true;
                }
                match followers.get(r) {
                    Some(f) => now.duration_since(f.caught_up_at) < lag_max,
                    // Not heard from since this leadership began.
                    None => now.duration_since(since) < lag_max,
                }
            };
            let mut next: BTreeSet<i32> = isr.iter().copied().filter(in_sync).collect();
            // Kafka's rule for joining: the follower holds everything up to the high
            // watermark and this epoch's start (so nothing the previous leader committed is
            // missing from it), and is caught up now.
            let mut additions = BTreeSet::new();
            for r in &replicas {
                let caught_up = followers.get(r).is_some_and(|f| {
                    f.log_end >= hw.max(epoch_start) && now.duration_since(f.caught_up_at) < lag_max
                });
                if !isr.contains(r) && caught_up && live.contains(r) {
                    next.insert(*r);
                    additions.insert(*r);
                }
            }
            if next == isr {
                continue;
            }
            let Some(topic_id) = image.topic(p.topic()).map(|t| t.id) else {
                continue;
            };
            tracing::info!(
                partition = %p.name(),
                epoch,
                from = ?isr,
                to = ?next,
                "changing the ISR"
            );
            let cmd = MetadataCommand::AlterPartition {
                topic_id,
                partition: p.index(),
                leader: node,
                proposal: IsrProposal {
                    leader_epoch: epoch,
                    isr: next,
                },
            };
            // Joining followers count for the high watermark from now on, before the
            // controller commits them: a write acknowledged meanwhile is on them too.
            p.expect_isr_additions(&additions);
            if let Err(e) = metadata.propose(cmd).await {
                p.forget_isr_additions();
                tracing::warn!(partition = %p.name(), error = %e, "ISR change refused");
            }
        }
    }
}
