//! The producer state's life on disk: rebuilt on open from the newest usable snapshot plus
//! the log after it, snapshotted on roll and close, pruned with the segments, and expired.
//!
//! Invariant: a snapshot at offset `o` describes exactly the batches below `o`, so loading
//! it and replaying the log from `o` gives the state of the whole log. Snapshots past the
//! log end (the log lost its tail after the snapshot was taken) would describe batches that
//! are gone and are deleted on open. A snapshot is a cache: failing to write one costs a
//! longer replay on the next open, never correctness, so write errors are logged, not
//! returned.

use super::PartitionLog;
use crate::log::producer_state::snapshot::{self, SnapshotError, SNAPSHOTS_KEPT};
use crate::log::producer_state::ProducerStates;
use crate::log::LogError;

impl PartitionLog {
    /// Rebuilds `self.producers` for the log as opened: the newest snapshot at or below the
    /// log end, then every batch after it, then expiry as of `now_ms`.
    pub(super) fn load_producer_state(&mut self, now_ms: i64) -> Result<(), LogError> {
        let io = |what: &str, e| LogError::io(format!("{what} {}", self.dir.display()), e);
        let offsets = snapshot::list(&self.dir).map_err(|e| io("list snapshots in", e))?;
        let mut loaded = None;
        for &offset in offsets.iter().rev() {
            if offset > self.log_end_offset {
                tracing::warn!(
                    dir = %self.dir.display(),
                    offset,
                    log_end_offset = self.log_end_offset,
                    "deleting producer snapshot past the log end"
                );
                snapshot::delete(&self.dir, offset).map_err(|e| io("delete snapshot in", e))?;
                continue;
            }
            match snapshot::read(&self.dir, offset) {
                Ok(states) => {
                    loaded = Some((offset, states));
                    break;
                }
                // A disk that cannot be read fails the partition, as it would for a segment.
                Err(SnapshotError::Io(e)) => return Err(io("read snapshot in", e)),
                Err(e @ SnapshotError::Malformed(_)) => {
                    tracing::warn!(dir = %self.dir.display(), offset, error = %e,
                        "skipping unreadable producer snapshot");
                    snapshot::delete(&self.dir, offset).map_err(|e| io("delete snapshot in", e))?;
                }
            }
        }
        let (from, mut states) = loaded.unwrap_or((i64::MIN, ProducerStates::new()));
        let mut replayed = 0usize;
        for seg in self.segments.values() {
            if seg.next_offset() <= from {
                continue;
            }
            // The log does not record when a batch was appended; the segment's last write is
            // no earlier, so expiry measured from it never comes early.
            let appended_by_ms = seg.last_modified_ms();
            seg.visit_headers_from(from, |h| {
                states.apply(h, appended_by_ms);
                replayed += 1;
            })?;
        }
        let expired = states.remove_expired(now_ms, self.config.producer_id_expiration_ms);
        if replayed > 0 || !states.is_empty() {
            tracing::debug!(
                dir = %self.dir.display(),
                snapshot = from,
                replayed,
                expired,
                producers = states.len(),
                "loaded producer state"
            );
        }
        self.producers = states;
        Ok(())
    }

    /// Snapshots the producer state at the log end and keeps only the newest
    /// [`SNAPSHOTS_KEPT`] snapshots. Nothing to do if a snapshot at the log end exists: no
    /// batch has been appended since (expiry alone is redone on open).
    pub(super) fn write_producer_snapshot(&self) {
        let offset = self.log_end_offset;
        if snapshot::path(&self.dir, offset).exists() {
            return;
        }
        if let Err(e) = snapshot::write(&self.dir, offset, &self.producers) {
            tracing::warn!(dir = %self.dir.display(), offset, error = %e,
                "could not write producer snapshot; the next open replays more of the log");
            return;
        }
        match snapshot::list(&self.dir) {
            Ok(offsets) => {
                let excess = offsets.len().saturating_sub(SNAPSHOTS_KEPT);
                self.delete_snapshots(&offsets[..excess]);
            }
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "listing snapshots"),
        }
    }

    /// Deletes the snapshots of segments that are gone (below the first segment), always
    /// keeping the newest snapshot.
    pub(super) fn delete_snapshots_of_deleted_segments(&self) {
        let Some(first) = self.segments.keys().next().copied() else {
            return;
        };
        match snapshot::list(&self.dir) {
            Ok(offsets) => {
                let Some((_newest, older)) = offsets.split_last() else {
                    return;
                };
                let below = older.partition_point(|o| *o < first);
                self.delete_snapshots(&older[..below]);
            }
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "listing snapshots"),
        }
    }

    fn delete_snapshots(&self, offsets: &[i64]) {
        for &offset in offsets {
            if let Err(e) = snapshot::delete(&self.dir, offset) {
                tracing::warn!(dir = %self.dir.display(), offset, error = %e,
                    "could not delete producer snapshot");
            }
        }
    }

    /// Forgets producers idle for `producer_id_expiration_ms`; returns how many.
    pub fn remove_expired_producers(&mut self, now_ms: i64) -> usize {
        let n = self
            .producers
            .remove_expired(now_ms, self.config.producer_id_expiration_ms);
        self.check();
        n
    }

    /// The idempotent producers' state (for inspection and tests).
    pub fn producer_states(&self) -> &ProducerStates {
        &self.producers
    }
}
