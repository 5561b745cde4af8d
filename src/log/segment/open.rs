//! Opening a segment from disk: recovering the active one (full CRC scan, torn tail cut
//! off) and loading or rebuilding a sealed one's indexes.
//!
//! Invariant on return: the segment's size, next offset, max timestamp and in-memory
//! indexes all describe the intact batches in its file, and its index files match the
//! in-memory indexes. Index files are never trusted without checks: size, order, bounds,
//! and a scan from the last entry to the end of the log.

use std::fs::OpenOptions;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{file_name, Segment, LOG_SUFFIX};
use crate::log::index::{IndexError, OffsetIndex, TimeIndex};
use crate::log::scan::scan;
use crate::log::LogError;

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Segment {
    /// Opens a sealed segment, trusting its index files if they pass every check and
    /// rebuilding them from the log otherwise. A sealed segment was fsynced when it was
    /// sealed, so damage to its log is not a torn write and is reported, not truncated.
    pub fn open_sealed(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<Segment, LogError> {
        let mut seg = Segment::open_file(dir, base_offset, index_interval_bytes)?;
        if let Err(reason) = seg.load_indexes() {
            tracing::warn!(path = %seg.log_path.display(), %reason, "rebuilding segment indexes");
            seg.rebuild_sealed()?;
        }
        Ok(seg)
    }

    /// Opens the active segment and recovers it; returns it and the bytes truncated.
    pub fn open_active(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<(Segment, u64), LogError> {
        let mut seg = Segment::open_file(dir, base_offset, index_interval_bytes)?;
        let truncated = seg.recover()?;
        Ok((seg, truncated))
    }

    fn open_file(dir: &Path, base_offset: i64, interval: u32) -> Result<Segment, LogError> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let ctx = |what: &str| format!("{what} {}", log_path.display());
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| LogError::io(ctx("open"), e))?;
        let meta = log.metadata().map_err(|e| LogError::io(ctx("stat"), e))?;
        let modified = meta.modified().map_or(0, millis);
        // Birth time where the filesystem records it, else the last write as a lower bound
        // on age; `segment.ms` rolls are approximate across restarts either way.
        let created = meta.created().map_or(modified, millis);
        let mut seg = Segment::with_file(dir, base_offset, interval, log, log_path);
        seg.size_bytes = meta.len();
        seg.created_at_ms = created;
        seg.last_modified_ms = modified;
        Ok(seg)
    }

    /// Scans the whole log checking every CRC, cuts it after the last intact batch and
    /// rebuilds the indexes. Returns how many bytes were cut.
    pub fn recover(&mut self) -> Result<u64, LogError> {
        let file_len = self.log.metadata().map_err(self.io_err("stat"))?.len();
        self.indexes.reset();
        let indexes = &mut self.indexes;
        let end = scan(&self.log, 0, file_len, self.base_offset, true, |h, pos| {
            indexes.track(h, pos)
        })
        .map_err(self.io_err("recover"))?;
        let truncated = file_len - end.end;
        if let Some(reason) = &end.stopped {
            tracing::warn!(
                path = %self.log_path.display(),
                truncated_bytes = truncated,
                %reason,
                "truncating segment after its last intact batch"
            );
            self.log.set_len(end.end).map_err(self.io_err("truncate"))?;
        }
        self.size_bytes = end.end;
        self.next_offset = end.next_offset;
        self.rewrite_indexes()?;
        Ok(truncated)
    }

    fn rebuild_sealed(&mut self) -> Result<(), LogError> {
        self.indexes.reset();
        let indexes = &mut self.indexes;
        let end = scan(
            &self.log,
            0,
            self.size_bytes,
            self.base_offset,
            true,
            |h, pos| indexes.track(h, pos),
        )
        .map_err(self.io_err("scan"))?;
        if let Some(reason) = end.stopped {
            return Err(self.corrupt(reason));
        }
        self.next_offset = end.next_offset;
        self.indexes.push_time_entry();
        self.rewrite_indexes()
    }

    /// Loads and checks the index files of a sealed segment, then scans the batches after
    /// the last offset index entry to learn the next offset and any newer max timestamp.
    fn load_indexes(&mut self) -> Result<(), IndexError> {
        let size = self.size_bytes;
        let offset = OffsetIndex::load(&self.index_path, size)?;
        offset.check_positions(size)?;
        let time = TimeIndex::load(&self.time_index_path, size)?;
        let (start_pos, start_offset) = offset.last().map_or((0, self.base_offset), |e| {
            (
                u64::from(e.position),
                self.base_offset + i64::from(e.relative_offset),
            )
        });
        let mut tail_max = None;
        let end = scan(&self.log, start_pos, size, start_offset, false, |h, _| {
            if tail_max.is_none_or(|(ts, _)| h.max_timestamp > ts) {
                tail_max = Some((h.max_timestamp, h.base_offset));
            }
        })
        .map_err(IndexError::Io)?;
        if let Some(reason) = end.stopped {
            return Err(IndexError::TailMismatch(reason));
        }
        let limit = (end.next_offset - self.base_offset) as u64;
        offset.check_offsets_below(limit)?;
        time.check_offsets_below(limit)?;
        let indexed_max = time
            .last()
            .map(|e| (e.timestamp, self.base_offset + i64::from(e.relative_offset)));
        if size > 0 && indexed_max.is_none() {
            // Sealing always leaves a final time entry in a non-empty segment.
            return Err(IndexError::MissingTimeEntries);
        }
        self.indexes.max_timestamp = match (indexed_max, tail_max) {
            (Some(a), Some(b)) if b.0 > a.0 => Some(b),
            (a, b) => a.or(b),
        };
        self.indexes.offset = offset;
        self.indexes.time = time;
        self.next_offset = end.next_offset;
        Ok(())
    }

    pub(super) fn rewrite_indexes(&mut self) -> Result<(), LogError> {
        let ctx = |p: &Path| format!("write {}", p.display());
        self.indexes
            .offset
            .rewrite(&self.index_path)
            .map_err(|e| LogError::io(ctx(&self.index_path), e))?;
        self.indexes
            .time
            .rewrite(&self.time_index_path)
            .map_err(|e| LogError::io(ctx(&self.time_index_path), e))
    }
}
