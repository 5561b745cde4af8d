//! Kafka's replication protocol as pure state machines: the partition leader (ISR, follower
//! progress, high watermark, min.insync.replicas), the follower (truncation by leader epoch,
//! then fetching), and the controller's election rules. No I/O, no clocks, no sockets: the
//! caller passes time and messages in and acts on what comes out, so the same code runs in
//! the broker and in the deterministic simulation (`sim`, tests only) that checks it against
//! thousands of random crash and partition schedules.
//!
//! The broker runs these rules in `storage::Partition` (high watermark, roles), the Fetch
//! handler (followers' reads), [`isr`] (ISR changes) and [`fetcher`] (followers); the pure
//! state machines here are what the simulation checks.
//!
//! Rules (Kafka's, with KRaft and KIP-966):
//! - Every leadership change bumps the partition's leader epoch; a replica accepts fetches,
//!   and a follower accepts data, only for the epoch it knows.
//! - The ISR lives in the controller. A leader may only shrink or expand it through the
//!   controller, which refuses requests from a stale epoch; the leader computes its high
//!   watermark from the committed ISR (plus pending additions: Kafka's "maximal ISR").
//! - The high watermark is the smallest log end offset in the ISR, and does not advance while
//!   the ISR is smaller than `min.insync.replicas`; produce with acks=all is then refused with
//!   NOT_ENOUGH_REPLICAS, and an append is acknowledged only once the high watermark passes it.
//! - A new leader is chosen from the live ISR only (unclean election off). The ISR never
//!   becomes empty: the last member stays, so the partition waits for it.
//! - A follower that becomes one (or learns of a new epoch) first truncates its log to where
//!   it agrees with the leader (OffsetsForLeaderEpoch), then fetches.

pub mod client;
pub mod fetcher;
pub mod isr;
pub mod log;

#[cfg(test)]
mod sim;

pub use log::ReplicaLog;

use std::collections::{BTreeMap, BTreeSet};

pub type NodeId = i32;

/// A leader's view of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FollowerProgress {
    /// The follower's log end offset, as its last fetch told.
    log_end: i64,
    /// When the follower was last caught up to the leader's log end.
    caught_up_at: i64,
}

/// Why a leader refused an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    /// The ISR is below min.insync.replicas (acks=all).
    NotEnoughReplicas,
}

/// What a leader answers a follower's fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAnswer {
    /// Entries from the fetch offset (possibly none), and the leader's high watermark.
    Records {
        from: i64,
        entries: Vec<(i32, u64)>,
        high_watermark: i64,
    },
    /// The follower's log diverges from the leader's: truncate to `end_offset` (the end of
    /// the largest epoch at or below the follower's last epoch, on the leader) and retry.
    Diverging { epoch: i32, end_offset: i64 },
    /// The fetch names another epoch than the leader's: the follower must refresh its
    /// metadata (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH).
    WrongEpoch,
}

/// An ISR change the leader asks the controller for (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub isr: BTreeSet<NodeId>,
}

/// A partition's replication settings (`min.insync.replicas`, `replica.lag.time.max.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderConfig {
    pub min_insync: usize,
    pub lag_time_max_ms: i64,
}

/// The leader of one partition.
#[derive(Debug, Clone)]
pub struct Leader {
    pub node: NodeId,
    pub epoch: i32,
    pub replicas: Vec<NodeId>,
    /// The ISR as the controller last committed it.
    pub isr: BTreeSet<NodeId>,
    /// Followers proposed for the ISR and not yet committed (count for the high watermark).
    pending_add: BTreeSet<NodeId>,
    followers: BTreeMap<NodeId, FollowerProgress>,
    pub high_watermark: i64,
    pub min_insync: usize,
    pub lag_time_max_ms: i64,
}

impl Leader {
    /// Becomes leader as the controller's `record` says (its epoch, replicas and ISR); `log`
    /// is the leader's own log, to which the epoch's first offset is recorded.
    pub fn new(
        node: NodeId,
        record: &PartitionRecord,
        log: &mut ReplicaLog,
        high_watermark: i64,
        config: LeaderConfig,
        now: i64,
    ) -> Leader {
        let (epoch, replicas, isr) = (record.epoch, record.replicas.clone(), record.isr.clone());
        let LeaderConfig {
            min_insync,
            lag_time_max_ms,
        } = config;
        log.start_epoch(epoch);
        let followers = replicas
            .iter()
            .filter(|r| **r != node)
            .map(|r| {
                (
                    *r,
                    FollowerProgress {
                        // Unknown until the follower fetches: never counts as caught up.
                        log_end: -1,
                        caught_up_at: now,
                    },
                )
            })
            .collect();
        Leader {
            node,
            epoch,
            replicas,
            isr,
            pending_add: BTreeSet::new(),
            followers,
            // A new leader's high watermark may lag what the old one exposed; it never
            // moves backwards from what this replica already knew.
            high_watermark: high_watermark.min(log.end()),
            min_insync,
            lag_time_max_ms,
        }
    }

    /// acks=all: appends `payloads` at the leader's epoch unless the ISR is too small.
    /// Returns the offset of the first; each is acknowledged once the high watermark passes
    /// it.
    pub fn append(&self, log: &mut ReplicaLog, payloads: &[u64]) -> Result<i64, AppendError> {
        if self.isr.len() < self.min_insync {
            return Err(AppendError::NotEnoughReplicas);
        }
        let first = log.end();
        for p in payloads {
            log.append(self.epoch, *p);
        }
        Ok(first)
    }

    /// A follower's fetch (at its log end, whose last entry has `req.last_epoch`).
    pub fn on_fetch(
        &mut self,
        log: &ReplicaLog,
        follower: NodeId,
        req: FetchRequest,
        max_entries: usize,
        now: i64,
    ) -> FetchAnswer {
        let FetchRequest {
            epoch: follower_epoch,
            fetch_offset,
            last_epoch,
        } = req;
        if follower_epoch != self.epoch || !self.followers.contains_key(&follower) {
            return FetchAnswer::WrongEpoch;
        }
        // The follower's log must agree with ours up to its end: its last epoch must end on
        // our log at or after its fetch offset.
        if fetch_offset > 0 {
            let (epoch, end) = log.end_offset_for_epoch(last_epoch);
            if epoch != last_epoch || end < fetch_offset || fetch_offset > log.end() {
                return FetchAnswer::Diverging {
                    epoch,
                    end_offset: end.min(fetch_offset),
                };
            }
        }
        let progress = self.followers.get_mut(&follower).expect("checked above");
        progress.log_end = fetch_offset;
        if fetch_offset >= log.end() {
            progress.caught_up_at = now;
        }
        self.update_high_watermark(log);
        FetchAnswer::Records {
            from: fetch_offset,
            entries: log.entries_from(fetch_offset, max_entries),
            high_watermark: self.high_watermark,
        }
    }

    /// The ISR the high watermark is computed over: committed plus pending additions.
    fn maximal_isr(&self) -> BTreeSet<NodeId> {
        self.isr.union(&self.pending_add).copied().collect()
    }

    /// The high watermark advances to the smallest log end offset in the (maximal) ISR, only
    /// while the committed ISR meets min.insync.replicas (KIP-966), and never backwards.
    pub fn update_high_watermark(&mut self, log: &ReplicaLog) {
        if self.isr.len() < self.min_insync {
            return;
        }
        let mut hw = log.end();
        for r in self.maximal_isr() {
            if r == self.node {
                continue;
            }
            let end = self.followers.get(&r).map_or(-1, |f| f.log_end);
            hw = hw.min(end);
        }
        // Safe for entries of earlier epochs too: a leader comes only from the ISR, and every
        // ISR member holds everything below the high watermark (members join caught up).
        self.high_watermark = self.high_watermark.max(hw);
    }

    /// ISR changes to ask the controller for: followers out of sync for longer than
    /// `lag_time_max_ms` leave, caught-up ones join.
    pub fn isr_proposal(&mut self, log: &ReplicaLog, now: i64) -> Option<IsrProposal> {
        let mut isr = self.isr.clone();
        for (r, f) in &self.followers {
            if isr.contains(r) && now - f.caught_up_at > self.lag_time_max_ms {
                isr.remove(r);
            }
            // Joins once it holds everything up to the high watermark and some of this
            // epoch (KIP-966's rule, simplified: caught up to the log end).
            if !isr.contains(r) && f.log_end >= log.end() && f.log_end >= self.high_watermark {
                isr.insert(*r);
                self.pending_add.insert(*r);
            }
        }
        (isr != self.isr).then_some(IsrProposal {
            leader_epoch: self.epoch,
            isr,
        })
    }

    /// The controller committed (or refused, `None`) the last proposal.
    pub fn on_isr_committed(&mut self, isr: Option<BTreeSet<NodeId>>, log: &ReplicaLog) {
        if let Some(isr) = isr {
            self.isr = isr;
        }
        self.pending_add.clear();
        self.update_high_watermark(log);
    }
}

/// The controller's record of one partition, and its election rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionRecord {
    pub replicas: Vec<NodeId>,
    pub leader: Option<NodeId>,
    pub epoch: i32,
    pub isr: BTreeSet<NodeId>,
    /// An ongoing reassignment (KIP-455): replicas being added (they catch up as followers
    /// and join the ISR) and replicas to remove once every target replica is in sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<NodeId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<NodeId>,
}

impl PartitionRecord {
    pub fn new(replicas: Vec<NodeId>) -> PartitionRecord {
        let isr = replicas.iter().copied().collect();
        PartitionRecord {
            leader: replicas.first().copied(),
            replicas,
            epoch: 0,
            isr,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// The replica set a reassignment is moving to (the current one when none is ongoing).
    pub fn target(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }

    /// Starts moving the partition to `target` (or, with `None`, cancels an ongoing move):
    /// the replica set becomes target plus the replicas to remove, which stay until every
    /// target replica is in the ISR. Completes at once when it already is.
    pub fn reassign(&mut self, target: Option<&[NodeId]>, live: &BTreeSet<NodeId>) {
        let original: Vec<NodeId> = self
            .replicas
            .iter()
            .copied()
            .filter(|r| !self.adding.contains(r))
            .collect();
        let target: Vec<NodeId> = target.map_or(original.clone(), <[NodeId]>::to_vec);
        self.adding = target
            .iter()
            .copied()
            .filter(|r| !original.contains(r))
            .collect();
        self.removing = original
            .iter()
            .copied()
            .filter(|r| !target.contains(r))
            .collect();
        self.replicas = target.iter().chain(&self.removing).copied().collect();
        // Replicas of a cancelled addition leave the ISR with it, and lead no more.
        self.isr.retain(|r| self.replicas.contains(r));
        if self.leader.is_some_and(|l| !self.replicas.contains(&l)) {
            self.elect(live);
        }
        self.complete_reassignment(live);
    }

    /// Finishes a reassignment once every target replica is in the ISR: the replicas to
    /// remove leave (the ISR too), and leadership moves into the target if it was outside.
    pub fn complete_reassignment(&mut self, live: &BTreeSet<NodeId>) -> bool {
        if self.adding.is_empty() && self.removing.is_empty() {
            return false;
        }
        let target = self.target();
        if !target.iter().all(|r| self.isr.contains(r)) {
            return false;
        }
        self.replicas = target;
        self.isr.retain(|r| self.replicas.contains(r));
        self.adding.clear();
        self.removing.clear();
        if self.leader.is_none_or(|l| !self.replicas.contains(&l)) {
            self.elect(live);
        }
        true
    }

    /// AlterPartition from the leader at `leader_epoch`: refused from a stale epoch, and an
    /// ISR must keep the leader and never be empty.
    pub fn alter_isr(&mut self, from: NodeId, p: &IsrProposal) -> Option<BTreeSet<NodeId>> {
        if self.leader != Some(from) || p.leader_epoch != self.epoch || !p.isr.contains(&from) {
            return None;
        }
        self.isr = p.isr.clone();
        Some(self.isr.clone())
    }

    /// AlterPartition, and the reassignment it may complete.
    pub fn alter_isr_and_reassign(
        &mut self,
        from: NodeId,
        p: &IsrProposal,
        live: &BTreeSet<NodeId>,
    ) -> Option<BTreeSet<NodeId>> {
        let isr = self.alter_isr(from, p)?;
        self.complete_reassignment(live);
        Some(isr)
    }

    /// A broker's lease expired: it leaves the ISR (unless it is the last member) and, if it
    /// led, a live ISR member takes over at the next epoch. Returns true when leadership
    /// changed.
    pub fn on_broker_fenced(&mut self, broker: NodeId, live: &BTreeSet<NodeId>) -> bool {
        if self.isr.len() > 1 {
            self.isr.remove(&broker);
        }
        if self.leader == Some(broker) || self.leader.is_none() {
            return self.elect(live);
        }
        false
    }

    /// A broker came back: if the partition has no leader, it may lead again when it is in
    /// the ISR.
    pub fn on_broker_unfenced(&mut self, live: &BTreeSet<NodeId>) -> bool {
        if self.leader.is_none() {
            return self.elect(live);
        }
        false
    }

    /// Preferred leader election: hands leadership to the first replica when it is live, in
    /// the ISR and not already leading. Returns true when leadership changed.
    pub fn elect_preferred(&mut self, live: &BTreeSet<NodeId>) -> bool {
        let Some(&preferred) = self.replicas.first() else {
            return false;
        };
        if self.leader == Some(preferred)
            || !self.isr.contains(&preferred)
            || !live.contains(&preferred)
        {
            return false;
        }
        self.leader = Some(preferred);
        self.epoch += 1;
        true
    }

    /// Picks a live ISR member (the first in replica order: the preferred leader), bumping
    /// the epoch; no live ISR member leaves the partition offline.
    fn elect(&mut self, live: &BTreeSet<NodeId>) -> bool {
        let candidate = self
            .replicas
            .iter()
            .copied()
            .find(|r| self.isr.contains(r) && live.contains(r));
        let changed = candidate != self.leader || candidate.is_some();
        self.leader = candidate;
        if changed {
            self.epoch += 1;
        }
        changed
    }
}

/// A follower of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    pub node: NodeId,
    pub leader: NodeId,
    pub epoch: i32,
    pub high_watermark: i64,
}

/// A follower's fetch: (leader epoch, fetch offset, epoch of the last entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    pub epoch: i32,
    pub fetch_offset: i64,
    pub last_epoch: i32,
}

impl Follower {
    pub fn new(node: NodeId, leader: NodeId, epoch: i32, high_watermark: i64) -> Follower {
        Follower {
            node,
            leader,
            epoch,
            high_watermark,
        }
    }

    pub fn fetch_request(&self, log: &ReplicaLog) -> FetchRequest {
        FetchRequest {
            epoch: self.epoch,
            fetch_offset: log.end(),
            last_epoch: log.last_epoch(),
        }
    }

    /// Applies the leader's answer: appends fetched entries, or truncates where the logs
    /// diverge (the next fetch then continues from there).
    pub fn on_answer(&mut self, log: &mut ReplicaLog, answer: &FetchAnswer) {
        match answer {
            FetchAnswer::Records {
                from,
                entries,
                high_watermark,
            } => {
                if log.append_fetched(*from, entries) {
                    self.high_watermark = self.high_watermark.max((*high_watermark).min(log.end()));
                }
            }
            FetchAnswer::Diverging { epoch, end_offset } => {
                // KIP-279: the logs agree at most up to where the leader's epoch ends and
                // where this log's copy of that epoch ends, whichever is first.
                let (_, own_end) = log.end_offset_for_epoch(*epoch);
                log.truncate_to((*end_offset).min(own_end));
                self.high_watermark = self.high_watermark.min(log.end());
            }
            FetchAnswer::WrongEpoch => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn acks_all_needs_min_insync_and_the_high_watermark_waits_for_the_isr() {
        let mut log = ReplicaLog::default();
        let mut record = PartitionRecord::new(vec![0, 1, 2]);
        record.epoch = 1;
        let config = LeaderConfig {
            min_insync: 2,
            lag_time_max_ms: 1_000,
        };
        let mut leader = Leader::new(0, &record, &mut log, 0, config, 0);
        let fetch = |fetch_offset, epoch| FetchRequest {
            epoch,
            fetch_offset,
            last_epoch: 1,
        };
        assert_eq!(leader.append(&mut log, &[7, 8]), Ok(0));
        // Nothing is committed until every ISR member has it.
        let answer = leader.on_fetch(&log, 1, fetch(2, 1), 10, 5);
        assert!(matches!(
            answer,
            FetchAnswer::Records {
                high_watermark: 0,
                ..
            }
        ));
        leader.on_fetch(&log, 2, fetch(1, 1), 10, 5);
        assert_eq!(leader.high_watermark, 1);
        leader.on_fetch(&log, 2, fetch(2, 1), 10, 5);
        assert_eq!(leader.high_watermark, 2);
        // A stale epoch is fenced.
        assert_eq!(
            leader.on_fetch(&log, 1, fetch(2, 0), 10, 5),
            FetchAnswer::WrongEpoch
        );
        // Below min.insync.replicas: appends are refused and the high watermark stays.
        leader.on_isr_committed(Some(set(&[0])), &log);
        assert_eq!(
            leader.append(&mut log, &[9]),
            Err(AppendError::NotEnoughReplicas)
        );
    }

    #[test]
    fn laggards_leave_the_isr_and_the_controller_fences_stale_leaders() {
        let mut log = ReplicaLog::default();
        let mut record = PartitionRecord::new(vec![0, 1]);
        record.epoch = 3;
        let config = LeaderConfig {
            min_insync: 1,
            lag_time_max_ms: 1_000,
        };
        let mut leader = Leader::new(0, &record, &mut log, 0, config, 0);
        leader.append(&mut log, &[1]).unwrap();
        let p = leader
            .isr_proposal(&log, 2_000)
            .expect("1 lags past the max lag time");
        assert_eq!(p.isr, set(&[0]));
        assert_eq!(record.alter_isr(0, &p), Some(set(&[0])));
        let stale = IsrProposal {
            leader_epoch: 2,
            isr: set(&[0, 1]),
        };
        assert_eq!(record.alter_isr(0, &stale), None);
        // The leader's loss elects nobody outside the ISR, and the ISR is never emptied.
        assert!(record.on_broker_fenced(0, &set(&[1])));
        assert_eq!((record.leader, record.isr.clone()), (None, set(&[0])));
        assert!(record.on_broker_unfenced(&set(&[0, 1])));
        assert_eq!(record.leader, Some(0));
    }
}
