//! Cutting the tail off a segment, for a follower whose log diverged from its leader's.
//!
//! Invariant on return: the file ends at a batch boundary, is fsynced at that length, and
//! the in-memory indexes, next offset and max timestamp describe exactly what is left (they
//! are rebuilt by the same indexer an append uses, so they match what appending the kept
//! batches would have built). The index files are rewritten but, as always, only a cache.

use super::Segment;
use crate::log::scan::scan;
use crate::log::LogError;

impl Segment {
    /// Removes the first batch whose last offset is `offset` or more, and every batch after
    /// it; the segment then ends below `offset` if a batch straddled it. Returns whether
    /// anything was cut.
    pub fn truncate_to(&mut self, offset: i64) -> Result<bool, LogError> {
        if offset >= self.next_offset {
            return Ok(false);
        }
        let from = self.indexes.offset.lookup(self.relative_or_zero(offset));
        let Some((_, pos)) = self.find_batch(u64::from(from), |h| h.last_offset() >= offset)?
        else {
            return Ok(false);
        };
        self.log.set_len(pos).map_err(self.io_err("truncate"))?;
        // Bookkeeping follows the file at once, so an fsync failure below leaves the segment
        // describing what the file now holds.
        self.size_bytes = pos;
        self.indexes.reset();
        let indexes = &mut self.indexes;
        let end = scan(&self.log, 0, pos, self.base_offset, false, |h, at| {
            indexes.track(h, at)
        })
        .map_err(self.io_err("rescan"))?;
        if let Some(reason) = end.stopped {
            return Err(self.corrupt(reason));
        }
        self.next_offset = end.next_offset;
        self.log.sync_all().map_err(self.io_err("sync"))?;
        self.rewrite_indexes()?;
        Ok(true)
    }
}
