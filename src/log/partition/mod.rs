//! One partition's log: an ordered run of segments plus the log start offset.
//!
//! Owns the partition directory: opening it (recovering the active segment, sweeping
//! leftovers of interrupted deletions), assigning offsets on append, rolling segments,
//! serving reads, and moving the log start by DeleteRecords or retention.
//!
//! Invariants (checked by [`PartitionLog::validate`] after every change in debug builds):
//! `log_start_offset <= log_end_offset`; segments are keyed by base offset and contiguous;
//! the last segment is the active one and ends at `log_end_offset`; the first segment
//! contains `log_start_offset` unless it is also the active one.
//!
//! The high watermark is not known here: callers pass it to [`PartitionLog::read`] and
//! [`PartitionLog::apply_retention`], and must check DeleteRecords offsets against it.
//!
//! Idempotent producers are checked here, before anything is written: a request whose batches
//! break a producer's epoch or sequence rules is refused whole, and a retried batch is
//! answered with where its original went instead of being appended twice. The producer state
//! always describes exactly the batches in the log: it changes only after a successful write,
//! and on open it is rebuilt from the newest snapshot plus the log after it (see
//! [`crate::log::producer_state`]).
//!
//! Replication: every batch carries the leader epoch it was written in, and the leader
//! epoch cache (`epochs`) records where each epoch starts, so a follower can find where its
//! log diverged from the leader's. `replica` appends batches exactly as a leader sent them
//! and truncates a diverged tail.
//!
//! `open` loads a directory; `retention` moves the log start and deletes segments;
//! `producers` loads, snapshots and expires the producer state; `epochs` keeps the leader
//! epoch cache; `replica` does follower appends and truncation.

mod epochs;
mod open;
mod producers;
mod replica;
mod retention;
pub use retention::Retired;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::IoSlice;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::batch::{patch_header, validate_produce_batches, BatchHeader, HEADER_LEN};
use super::checkpoint;
use super::policy::{should_roll, RollInput};
use super::producer_state::{AppendCheck, ProducerStates};
use super::segment::Segment;
use super::{LogConfig, LogError, TimestampType};
use epochs::LeaderEpochCache;
pub use replica::ReplicaAppend;

/// `<data_dir>/<topic>-<partition>`, Kafka's directory layout.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker time stamped on the batches, for `LogAppendTime` topics.
    pub log_append_time: Option<i64>,
    pub log_start_offset: i64,
    /// The request was a producer's retry of batches already in the log: nothing was
    /// appended, and the offsets are those of the original.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole record batches; the first may start before the offset asked for.
    pub records: Bytes,
    /// Offset just past the last batch returned (the offset asked for if none).
    pub next_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// A located read of a partition log; [`PlannedRead::read`] copies the data.
#[derive(Debug)]
pub struct PlannedRead {
    plan: Option<super::segment::ReadPlan>,
    offset: i64,
    log_start_offset: i64,
    log_end_offset: i64,
}

impl PlannedRead {
    /// See [`ReadPlan::release_behind`](super::segment::ReadPlan::release_behind).
    pub fn release_behind(mut self, window: u64, active: (i64, u64)) -> Self {
        if let Some(plan) = &mut self.plan {
            plan.release_behind(window, active);
        }
        self
    }

    /// The located range to send unread (see [`ReadPlan::into_region`]): `Ok(None)` when
    /// there is nothing to read, the plan back when it must be read.
    ///
    /// [`ReadPlan::into_region`]: super::segment::ReadPlan::into_region
    pub fn into_region(mut self) -> Result<Option<super::segment::FileRegion>, Self> {
        match self.plan.take().map(|p| p.into_region()) {
            None => Ok(None),
            Some(Ok(region)) => Ok(Some(region)),
            Some(Err(plan)) => {
                self.plan = Some(plan);
                Err(self)
            }
        }
    }

    pub fn read(self) -> Result<ReadResult, LogError> {
        let mut result = ReadResult {
            records: Bytes::new(),
            next_offset: self.offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        };
        if let Some(plan) = self.plan {
            let slice = plan.read()?;
            // Empty if a follower truncated the data away after the plan was made.
            if !slice.bytes.is_empty() {
                result.records = slice.bytes;
                result.next_offset = slice.next_offset;
            }
        }
        Ok(result)
    }
}

pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    /// Idempotent producers' state as of `log_end_offset`.
    producers: ProducerStates,
    /// Where each leader epoch's batches start.
    epochs: LeaderEpochCache,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.log_end_offset)
            .field("segments", &self.segments.len())
            .field("producers", &self.producers.len())
            .finish_non_exhaustive()
    }
}

impl PartitionLog {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Applies new settings; a changed index interval takes effect from the next segment.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size_bytes).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offset of the active segment: every offset below it is in a sealed segment.
    pub fn active_base_offset(&self) -> i64 {
        self.active().base_offset()
    }

    /// `(base offset, next offset, size in bytes)` of every segment, oldest first.
    pub fn segment_spans(&self) -> Vec<(i64, i64, u64)> {
        self.segments
            .values()
            .map(|s| (s.base_offset(), s.next_offset(), s.size_bytes()))
            .collect()
    }

    fn active(&self) -> &Segment {
        // open() always leaves at least one segment and nothing removes the last one.
        match self.segments.values().next_back() {
            Some(s) => s,
            None => unreachable!("a partition log always has an active segment"),
        }
    }

    fn active_mut(&mut self) -> &mut Segment {
        match self.segments.values_mut().next_back() {
            Some(s) => s,
            None => unreachable!("a partition log always has an active segment"),
        }
    }

    /// Validates a produce request's batches, gives them consecutive offsets from the log
    /// end, stamps them (in place, in `records`) and appends them, rolling first if due.
    /// A retry of an idempotent producer's batch is not appended again: the result points at
    /// the original (`duplicate`).
    pub fn append(
        &mut self,
        records: &[u8],
        now_ms: i64,
        leader_epoch: i32,
    ) -> Result<AppendResult, LogError> {
        let infos = validate_produce_batches(records, self.config.max_message_bytes)?;
        if infos.is_empty() {
            return Err(LogError::InvalidRecord(
                "no record batches to append".into(),
            ));
        }
        let sent: Vec<BatchHeader> = infos.iter().map(|i| i.header).collect();
        let append_time = self.config.message_timestamp_type == TimestampType::LogAppendTime;
        if let AppendCheck::Duplicate(original) = self.producers.check(&sent)? {
            return Ok(AppendResult {
                base_offset: original.first_offset,
                last_offset: original.last_offset,
                // The original's max timestamp is the broker's clock at its append.
                log_append_time: append_time.then_some(original.max_timestamp),
                log_start_offset: self.log_start_offset,
                duplicate: true,
            });
        }
        let log_append_time = append_time.then_some(now_ms);
        let mut headers = Vec::with_capacity(infos.len());
        let mut heads = Vec::with_capacity(infos.len());
        let mut next = self.log_end_offset;
        for info in &infos {
            let (head, h) = patch_header(
                &records[info.range.clone()],
                next,
                leader_epoch,
                log_append_time,
            )?;
            next = h
                .last_offset()
                .checked_add(1)
                .ok_or_else(|| LogError::InvalidRecord("offsets overflow".into()))?;
            headers.push(h);
            heads.push(head);
        }
        // Each batch is written as its patched header and the rest of it as it came.
        let pieces: Vec<IoSlice<'_>> = infos
            .iter()
            .zip(&heads)
            .flat_map(|(info, head)| {
                [
                    IoSlice::new(head),
                    IoSlice::new(&records[info.range.start + HEADER_LEN..info.range.end]),
                ]
            })
            .collect();
        let base_offset = self.log_end_offset;
        let last_offset = next - 1;
        self.roll_if_due(records.len() as u64, last_offset, now_ms)?;
        self.note_epochs(&headers)?;
        self.active_mut().append(pieces, &headers, now_ms)?;
        self.log_end_offset = next;
        for h in &headers {
            self.producers.apply(h, now_ms);
        }
        self.check();
        Ok(AppendResult {
            base_offset,
            last_offset,
            log_append_time,
            log_start_offset: self.log_start_offset,
            duplicate: false,
        })
    }

    /// Rolls first if appending `incoming_bytes` of batches ending at `incoming_last_offset`
    /// to the active segment breaks the roll policy ([`should_roll`]).
    fn roll_if_due(
        &mut self,
        incoming_bytes: u64,
        incoming_last_offset: i64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let active = self.active();
        let roll = RollInput {
            segment_base_offset: active.base_offset(),
            segment_size_bytes: active.size_bytes(),
            segment_created_at_ms: active.created_at_ms(),
            index_entries: active.index_entries(),
            incoming_bytes,
            incoming_last_offset,
            now_ms,
        };
        if should_roll(&roll, self.config.segment_bytes, self.config.segment_ms) {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Seals the active segment (fsyncing it, which is rare enough to do under the lock)
    /// and starts a new one at the log end, with a producer state snapshot at its base.
    /// Does nothing if the active segment is empty.
    pub fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        if self.active().is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.active_mut().seal()?;
        let base = self.log_end_offset;
        let seg = Segment::create(&self.dir, base, self.config.index_interval_bytes, now_ms)?;
        self.segments.insert(base, seg);
        self.sync_dir()?;
        self.write_producer_snapshot();
        tracing::debug!(dir = %self.dir.display(), base_offset = base,
            took_ms = started.elapsed().as_secs_f64() * 1e3, "rolled segment");
        self.check();
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), LogError> {
        checkpoint::sync_dir(&self.dir)
            .map_err(|e| LogError::io(format!("sync {}", self.dir.display()), e))
    }

    /// Reads whole batches from the one containing `offset`, up to `max_bytes` (at least
    /// one batch), never including a batch whose base offset is `max_offset_exclusive` (the
    /// high watermark) or more. Batches come from one segment; the next segment is read
    /// only if the containing one has nothing at or after `offset`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<ReadResult, LogError> {
        self.plan_read(offset, max_bytes, max_offset_exclusive)?
            .read()
    }

    /// Locates a [`PartitionLog::read`] without copying the data: the copy
    /// ([`PlannedRead::read`]) needs no access to the log, so a caller holding a lock over it
    /// can release the lock first and let appends go on.
    pub fn plan_read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<PlannedRead, LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(self.out_of_range(offset));
        }
        let limit = max_offset_exclusive.min(self.log_end_offset);
        let mut planned = PlannedRead {
            plan: None,
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        };
        if offset >= limit {
            return Ok(planned);
        }
        let start = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(i64::MIN, |(base, _)| *base);
        for seg in self.segments.range(start..).map(|(_, s)| s) {
            if seg.base_offset() >= limit {
                break;
            }
            if let Some(plan) = seg.plan_read(offset, max_bytes, limit)? {
                planned.plan = Some(plan);
                break;
            }
        }
        Ok(planned)
    }

    fn out_of_range(&self, offset: i64) -> LogError {
        LogError::OffsetOutOfRange {
            offset,
            log_start: self.log_start_offset,
            log_end: self.log_end_offset,
        }
    }

    /// ListOffsets by timestamp: (offset, timestamp) of the first batch at or after the
    /// log start whose max timestamp is at least `ts`; see
    /// [`Segment::find_offset_by_timestamp`] for why it is a batch, not a record. The
    /// caller bounds the answer by the high watermark.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for seg in self.segments.values() {
            if let Some(found) = seg.find_offset_by_timestamp(ts, self.log_start_offset)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: (offset, timestamp) for the batch with the largest max
    /// timestamp, the earliest on ties. The offset is that batch's base offset (raised to
    /// the log start), so a consumer seeking there is sure to see the record.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let mut best: Option<(i64, i64)> = None;
        for (offset, ts) in self.segments.values().filter_map(Segment::max_timestamp) {
            if best.is_none_or(|(_, b)| ts > b) {
                best = Some((offset.max(self.log_start_offset), ts));
            }
        }
        best
    }

    /// Makes everything appended so far durable, under the caller's lock.
    pub fn flush(&self) -> Result<(), LogError> {
        self.active().flush()
    }

    /// The active segment's base offset and size in bytes (where the next append lands).
    pub fn active_extent(&self) -> (i64, u64) {
        let active = self.active();
        (active.base_offset(), active.size_bytes())
    }

    /// Starts writing bytes `from..to` of the active segment back to disk (no waiting).
    pub fn start_writeback(&self, from: u64, to: u64) -> Result<(), LogError> {
        let active = self.active();
        active
            .start_writeback(from, to)
            .map_err(|e| LogError::io(format!("writeback {}", active.log_path().display()), e))
    }

    /// A handle on the active segment's file for fsyncing outside the partition lock.
    /// Sealed segments need none: rolling fsyncs them.
    pub fn flush_handle(&self) -> Result<File, LogError> {
        let active = self.active();
        active
            .sync_handle()
            .map_err(|e| LogError::io(format!("dup {}", active.log_path().display()), e))
    }

    /// Flushes the active segment, writes out its indexes and snapshots the producer state
    /// at the log end, so the next open replays nothing. The log stays usable.
    pub fn close(&mut self) -> Result<(), LogError> {
        self.active_mut().seal()?;
        self.write_producer_snapshot();
        Ok(())
    }

    fn check(&self) {
        if cfg!(debug_assertions) {
            self.validate();
        }
    }

    /// Asserts the invariants in the module doc. A failure is a bug in this module.
    pub fn validate(&self) {
        assert!(
            self.log_start_offset <= self.log_end_offset,
            "{self:?}: start past end"
        );
        let first = self.segments.values().next();
        let active = self.active();
        assert_eq!(
            active.next_offset(),
            self.log_end_offset,
            "{self:?}: active segment end"
        );
        if let Some(first) = first {
            assert!(
                first.base_offset() <= self.log_start_offset,
                "{self:?}: start before data"
            );
            assert!(
                first.base_offset() == active.base_offset()
                    || self.log_start_offset < first.next_offset(),
                "{self:?}: first segment wholly below the log start"
            );
        }
        let mut expected = None;
        for (base, seg) in &self.segments {
            assert_eq!(*base, seg.base_offset(), "{self:?}: segment key");
            assert!(
                seg.next_offset() >= *base,
                "{self:?}: segment {base} ends before it starts"
            );
            if let Some(expected) = expected {
                assert_eq!(
                    *base, expected,
                    "{self:?}: gap or overlap at segment {base}"
                );
            }
            expected = Some(seg.next_offset());
        }
        self.epochs.validate(self.log_end_offset);
        self.producers.validate();
        for (pid, e) in self.producers.iter() {
            assert!(
                e.batches
                    .iter()
                    .all(|b| b.last_offset < self.log_end_offset),
                "{self:?}: producer {pid} has batches past the log end"
            );
        }
    }
}

#[cfg(test)]
mod producer_tests;
#[cfg(test)]
mod replica_tests;
#[cfg(test)]
mod tests;
