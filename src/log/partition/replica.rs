//! The follower's side of replication: appending batches exactly as the partition leader
//! sent them, and cutting off a tail that diverged from the leader's log.
//!
//! Invariants: a replica append changes no byte of the batches (offsets, leader epochs and
//! CRCs are the leader's) and lands exactly at the log end. Truncation is crash-safe: files
//! are removed and cut in an order that leaves, at every instant, a contiguous log on disk
//! that [`PartitionLog::open`] accepts, and once a truncation returns, everything it removed
//! is durably gone (segment files deleted with a directory fsync, the cut file fsynced at its
//! new length). Caches that outlive a crash are fitted to the log on open: producer
//! snapshots past the log end and epoch entries at or past it are dropped there.

use std::io::IoSlice;

use super::open::wall_clock_ms;
use super::{epochs, PartitionLog};
use crate::log::batch::{validate_replica_batches, BatchHeader};
use crate::log::checkpoint;
use crate::log::producer_state::snapshot;
use crate::log::LogError;

/// What [`PartitionLog::append_replica`] appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAppend {
    /// Base offset of the first batch appended; the log end if nothing was.
    pub first_offset: i64,
    /// Last offset appended; `first_offset - 1` if nothing was.
    pub last_offset: i64,
    /// Bytes of the input that were appended: whole batches only. A batch cut short at the
    /// end of the input is left for the next fetch.
    pub bytes_used: usize,
    pub batches: usize,
}

impl PartitionLog {
    /// Appends record batches as the leader sent them in a Fetch response: offsets and leader
    /// epochs already assigned, bytes unchanged. Each batch must be complete, magic 2 and
    /// CRC-correct (a partial final batch is ignored), the first must start at the log end
    /// and the rest must follow on. Control and transactional batches are accepted and
    /// sequences are not checked for duplicates, but the producer state is updated, so this
    /// replica can take over as leader with the right idempotence state. Rolls segments as
    /// [`PartitionLog::append`] does and records new leader epochs.
    ///
    /// A wrong first offset is [`LogError::OffsetOutOfRange`] with `log_start` and `log_end`
    /// both the log end, the one offset a replica append may start at. The exception is
    /// Kafka's: an empty log whose start falls inside the first batch (the leader's log start
    /// was moved into the middle of a batch) restarts at that batch's base offset.
    pub fn append_replica(
        &mut self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<ReplicaAppend, LogError> {
        let infos = validate_replica_batches(records)?;
        let first_offset = self.log_end_offset;
        let Some(last) = infos.last() else {
            return Ok(ReplicaAppend {
                first_offset,
                last_offset: first_offset - 1,
                bytes_used: 0,
                batches: 0,
            });
        };
        let first = infos[0].header;
        if first.base_offset != first_offset {
            let empty = self.log_start_offset == self.log_end_offset;
            if empty && first.base_offset < first_offset && first.last_offset() >= first_offset {
                tracing::info!(dir = %self.dir.display(), log_start_offset = first_offset,
                    batch_base_offset = first.base_offset,
                    "log start falls inside the first replicated batch; restarting the log at its base");
                self.truncate_fully_and_start_at(first.base_offset)?;
                return self.append_replica(records, now_ms);
            }
            return Err(LogError::OffsetOutOfRange {
                offset: first.base_offset,
                log_start: first_offset,
                log_end: first_offset,
            });
        }
        let mut headers: Vec<BatchHeader> = Vec::with_capacity(infos.len());
        let mut next = first_offset;
        for info in &infos {
            let h = info.header;
            if h.base_offset != next {
                return Err(LogError::CorruptBatch(format!(
                    "replicated batch at byte {} starts at offset {}, expected {next}",
                    info.range.start, h.base_offset
                )));
            }
            next = h
                .last_offset()
                .checked_add(1)
                .ok_or_else(|| LogError::CorruptBatch("offsets overflow".into()))?;
            headers.push(h);
        }
        let bytes = &records[..last.range.end];
        self.roll_if_due(bytes.len() as u64, next - 1, now_ms)?;
        self.note_epochs(&headers)?;
        self.active_mut()
            .append(vec![IoSlice::new(bytes)], &headers, now_ms)?;
        self.log_end_offset = next;
        for h in &headers {
            self.producers.apply(h, now_ms);
        }
        self.check();
        Ok(ReplicaAppend {
            first_offset,
            last_offset: next - 1,
            bytes_used: bytes.len(),
            batches: headers.len(),
        })
    }

    /// Removes every batch whose last offset is `offset` or more: a batch straddling
    /// `offset` goes whole, so the log may end below it. Nothing happens if `offset` is at or
    /// past the log end; below the log start is an error. Segments wholly above the cut are
    /// deleted, the one holding it is cut (and becomes the active segment), producer state is
    /// rebuilt for the new end and epoch entries from the new end on are dropped.
    ///
    /// If the batch straddling the log start goes, the log start comes down to the new end,
    /// as Kafka does (`logStartOffset = min(target, logStartOffset)`), so the follower can
    /// fetch that batch again.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < self.log_start_offset {
            return Err(self.out_of_range(offset));
        }
        if offset >= self.log_end_offset {
            // No data goes, but an epoch this replica began as leader without writing to it
            // starts at the log end and must go (Kafka does the same): left in place it stays
            // the replica's latest epoch, the leader answers every fetch with the same
            // diverging epoch, and the truncation it asks for changes nothing, forever.
            if self.epochs.truncate_from_end(self.log_end_offset) {
                self.persist_epochs()?;
            }
            return Ok(());
        }
        let old_end = self.log_end_offset;
        // Whatever fails, the in-memory log is brought in line with what is on disk before
        // the first error is returned.
        let cut = self.cut_segments(offset);
        self.log_end_offset = self.active().next_offset();
        let producers = self.load_producer_state(wall_clock_ms());
        if producers.is_err() {
            self.producers = Default::default();
        }
        let epochs_changed = self.epochs.truncate_from_end(self.log_end_offset);
        let lowered_start = self.log_end_offset < self.log_start_offset;
        if lowered_start {
            self.log_start_offset = self.log_end_offset;
        }
        self.check();
        cut?;
        producers?;
        if lowered_start {
            // Open clamps a checkpoint past the log end, so a crash before this write
            // already gives the same start.
            checkpoint::write(&self.dir, self.log_start_offset)
                .map_err(|e| LogError::io(format!("checkpoint {}", self.dir.display()), e))?;
        }
        if epochs_changed {
            self.persist_epochs()?;
        }
        tracing::info!(dir = %self.dir.display(), offset, old_end,
            new_end = self.log_end_offset, "truncated log");
        Ok(())
    }

    /// Deletes the segments above the one holding `offset`, newest first, then cuts that
    /// one. Each step leaves a contiguous log on disk, and `self.segments` follows the disk
    /// step by step.
    fn cut_segments(&mut self, offset: i64) -> Result<(), LogError> {
        let Some(cut_base) = self.segments.range(..=offset).next_back().map(|(b, _)| *b) else {
            unreachable!("offset {offset} is at or above the log start, so in a segment");
        };
        let above: Vec<i64> = self
            .segments
            .range(cut_base + 1..)
            .map(|(b, _)| *b)
            .rev()
            .collect();
        for base in above {
            if let Some(seg) = self.segments.remove(&base) {
                tracing::info!(path = %seg.log_path().display(), "deleting truncated segment");
                seg.delete()?;
                self.sync_dir()?;
            }
        }
        match self.segments.get_mut(&cut_base) {
            Some(seg) => seg.truncate_to(offset).map(|_| ()),
            None => unreachable!("segment {cut_base} was just found"),
        }
    }

    /// Deletes the whole log and starts it empty at `offset`: log start and log end both
    /// `offset`, no producer state, no epoch entries. For a follower whose log ends below
    /// the leader's log start, or is otherwise of no use.
    ///
    /// Order, for crashes: producer snapshots and the epoch checkpoint go first (open
    /// rebuilds both from whatever log is left), then the segments oldest first (each step
    /// leaves a contiguous suffix above the old log start), then the log start checkpoint
    /// is written, and the log is reopened, which creates the empty segment at the
    /// checkpoint. Deleting before checkpointing means a crash never exposes old data below
    /// the old log start, whichever side of it `offset` lies.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        let emptied = self.delete_everything(offset);
        // Reopening builds the new state through the same code as a restart; it is cheap
        // here, with one empty segment at most.
        let reopened = PartitionLog::open(self.dir.clone(), self.config.clone());
        let log = match (emptied, reopened) {
            (Ok(()), Ok(log)) => log,
            (Err(e), Ok(log)) => {
                *self = log;
                return Err(e);
            }
            (Ok(()), Err(e)) | (Err(e), Err(_)) => return Err(e),
        };
        *self = log;
        if self.log_start_offset != offset || self.log_end_offset != offset {
            return Err(LogError::CorruptSegment {
                path: self.dir.clone(),
                detail: format!(
                    "reopened at [{}, {}] after starting over at {offset}",
                    self.log_start_offset, self.log_end_offset
                ),
            });
        }
        tracing::info!(dir = %self.dir.display(), offset, "log truncated fully");
        self.check();
        Ok(())
    }

    fn delete_everything(&mut self, offset: i64) -> Result<(), LogError> {
        let io = |what: &str, e| LogError::io(format!("{what} {}", self.dir.display()), e);
        for snap in snapshot::list(&self.dir).map_err(|e| io("list snapshots in", e))? {
            snapshot::delete(&self.dir, snap).map_err(|e| io("delete snapshot in", e))?;
        }
        epochs::remove(&self.dir).map_err(|e| io("remove epoch checkpoint in", e))?;
        while let Some((_, seg)) = self.segments.pop_first() {
            tracing::info!(path = %seg.log_path().display(), "deleting segment");
            seg.delete()?;
            self.sync_dir()?;
        }
        checkpoint::write(&self.dir, offset)
            .map_err(|e| LogError::io(format!("checkpoint {}", self.dir.display()), e))
    }
}
