//! Turning the batches of a segment, in file order, into sparse index entries.
//!
//! Owns the rule for when an entry is made: once more than `interval_bytes` of log has gone
//! by since the last one, the next batch gets an offset index entry (its base offset and
//! position) and the time index gets the running max timestamp. The same code runs on
//! append and on rebuild, so rebuilt indexes are byte-identical to the originals.

use crate::log::batch::BatchHeader;
use crate::log::index::{OffsetEntry, OffsetIndex, TimeIndex, MAX_INDEX_ENTRIES};

/// The running state from which index entries are made as batches go by, whether they
/// are being appended or rescanned from disk.
#[derive(Debug)]
pub(super) struct Indexes {
    base_offset: i64,
    interval_bytes: u64,
    pub(super) offset: OffsetIndex,
    pub(super) time: TimeIndex,
    /// Largest batch max timestamp so far, with that batch's base offset.
    pub(super) max_timestamp: Option<(i64, i64)>,
    bytes_since_last_entry: u64,
}

impl Indexes {
    pub(super) fn new(base_offset: i64, interval_bytes: u32) -> Self {
        Indexes {
            base_offset,
            interval_bytes: u64::from(interval_bytes),
            offset: OffsetIndex::new(),
            time: TimeIndex::new(),
            max_timestamp: None,
            bytes_since_last_entry: 0,
        }
    }

    fn relative(&self, offset: i64) -> Option<u32> {
        u32::try_from(offset.checked_sub(self.base_offset)?).ok()
    }

    fn note_timestamp(&mut self, h: &BatchHeader) {
        if self
            .max_timestamp
            .is_none_or(|(ts, _)| h.max_timestamp > ts)
        {
            self.max_timestamp = Some((h.max_timestamp, h.base_offset));
        }
    }

    /// Accounts for the batch `h` stored at byte `pos`.
    pub(super) fn track(&mut self, h: &BatchHeader, pos: u64) {
        self.note_timestamp(h);
        if self.bytes_since_last_entry > self.interval_bytes
            && self.offset.len() < MAX_INDEX_ENTRIES
        {
            // Entries that cannot be represented are skipped: lookups stay correct, only
            // the scan from the previous entry gets longer. The roll policy keeps this
            // from happening to segments we write.
            if let (Some(rel), Ok(position)) = (self.relative(h.base_offset), u32::try_from(pos)) {
                self.offset.push(OffsetEntry {
                    relative_offset: rel,
                    position,
                });
                self.push_time_entry();
                self.bytes_since_last_entry = 0;
            }
        }
        self.bytes_since_last_entry += h.total_size() as u64;
    }

    pub(super) fn push_time_entry(&mut self) {
        if let Some((ts, offset)) = self.max_timestamp {
            if let Some(rel) = self.relative(offset) {
                self.time.maybe_push(ts, rel);
            }
        }
    }

    pub(super) fn reset(&mut self) {
        self.offset.clear();
        self.time.clear();
        self.max_timestamp = None;
        self.bytes_since_last_entry = 0;
    }
}
