//! One log segment: a `<base_offset:020>.log` file of whole record batches plus its
//! `.index` and `.timeindex` files.
//!
//! Owns the segment's bytes and bookkeeping: size, next offset, largest timestamp, and the
//! in-memory sparse indexes. Invariants: the file holds exactly `size_bytes` of intact,
//! offset-contiguous batches starting at `base_offset`; every index entry names the start
//! of one of them. Index files are only a cache of the in-memory indexes: the active
//! segment's are rebuilt from the log on every open and written out when the segment is
//! sealed or closed, so the append path does no index I/O at all.
//!
//! Does not decide when to roll or delete (see `policy`), and never fsyncs on append:
//! durability is the caller's flush, possibly through [`Segment::sync_handle`] without
//! holding the partition lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::batch::{BatchHeader, BatchIter};
use super::index::{IndexError, OffsetEntry, OffsetIndex, TimeIndex, MAX_INDEX_ENTRIES};
use super::scan::{read_header_at, scan};
use super::LogError;

pub const LOG_SUFFIX: &str = "log";
pub const INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

/// `<base_offset:020>.<suffix>`, the name Kafka gives segment files.
pub fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}.{suffix}")
}

/// Splits a segment file name into base offset and suffix.
pub fn parse_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, suffix))
}

/// Whole batches read from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSlice {
    pub bytes: Bytes,
    /// Base offset of the first batch (may be below the offset asked for).
    pub first_offset: i64,
    /// Offset just past the last batch returned.
    pub next_offset: i64,
}

/// The running state from which index entries are made as batches go by, whether they
/// are being appended or rescanned from disk.
#[derive(Debug)]
struct Indexes {
    base_offset: i64,
    interval_bytes: u64,
    offset: OffsetIndex,
    time: TimeIndex,
    /// Largest batch max timestamp so far, with that batch's base offset.
    max_timestamp: Option<(i64, i64)>,
    bytes_since_last_entry: u64,
}

impl Indexes {
    fn new(base_offset: i64, interval_bytes: u32) -> Self {
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
    fn track(&mut self, h: &BatchHeader, pos: u64) {
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

    fn push_time_entry(&mut self) {
        if let Some((ts, offset)) = self.max_timestamp {
            if let Some(rel) = self.relative(offset) {
                self.time.maybe_push(ts, rel);
            }
        }
    }

    fn reset(&mut self) {
        self.offset.clear();
        self.time.clear();
        self.max_timestamp = None;
        self.bytes_since_last_entry = 0;
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    index_path: PathBuf,
    time_index_path: PathBuf,
    log: File,
    indexes: Indexes,
    size_bytes: u64,
    next_offset: i64,
    created_at_ms: i64,
    last_modified_ms: i64,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.log_path)
            .field("base_offset", &self.base_offset)
            .field("next_offset", &self.next_offset)
            .field("size_bytes", &self.size_bytes)
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// Creates a new, empty segment starting at `base_offset`.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&log_path)
            .map_err(|e| LogError::io(format!("create {}", log_path.display()), e))?;
        let mut seg = Segment::with_file(dir, base_offset, index_interval_bytes, log, log_path);
        seg.created_at_ms = now_ms;
        seg.last_modified_ms = now_ms;
        // Index files left behind by an older segment of the same name must not survive.
        seg.rewrite_indexes()?;
        Ok(seg)
    }

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

    fn with_file(dir: &Path, base: i64, interval: u32, log: File, log_path: PathBuf) -> Segment {
        Segment {
            base_offset: base,
            log_path,
            index_path: dir.join(file_name(base, INDEX_SUFFIX)),
            time_index_path: dir.join(file_name(base, TIME_INDEX_SUFFIX)),
            log,
            indexes: Indexes::new(base, interval),
            size_bytes: 0,
            next_offset: base,
            created_at_ms: 0,
            last_modified_ms: 0,
        }
    }

    fn io_err(&self, what: &'static str) -> impl FnOnce(io::Error) -> LogError + '_ {
        move |e| LogError::io(format!("{what} {}", self.log_path.display()), e)
    }

    fn corrupt(&self, detail: String) -> LogError {
        LogError::CorruptSegment {
            path: self.log_path.clone(),
            detail,
        }
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
            return Err(IndexError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                reason,
            )));
        }
        let limit = (end.next_offset - self.base_offset) as u64;
        offset.check_offsets_below(limit)?;
        time.check_offsets_below(limit)?;
        let indexed_max = time
            .last()
            .map(|e| (e.timestamp, self.base_offset + i64::from(e.relative_offset)));
        if size > 0 && indexed_max.is_none() {
            // Sealing always leaves a final time entry in a non-empty segment.
            return Err(IndexError::BadLength {
                len: 0,
                entry_len: 12,
            });
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

    fn rewrite_indexes(&mut self) -> Result<(), LogError> {
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

    /// Appends already validated and patched batches. `batches` are the headers of the
    /// batches in `bytes`, in order, the first starting at this segment's next offset.
    pub fn append(
        &mut self,
        bytes: &[u8],
        batches: &[BatchHeader],
        now_ms: i64,
    ) -> Result<(), LogError> {
        debug_assert_eq!(
            batches.iter().map(BatchHeader::total_size).sum::<usize>(),
            bytes.len()
        );
        debug_assert!(batches
            .first()
            .is_none_or(|b| b.base_offset == self.next_offset));
        let Some(last) = batches.last() else {
            return Ok(());
        };
        if let Err(e) = self.log.write_all_at(bytes, self.size_bytes) {
            // Cut off whatever part landed so the file still ends where the bookkeeping
            // says; if even that fails, recovery on the next open removes it.
            if let Err(trunc) = self.log.set_len(self.size_bytes) {
                tracing::warn!(path = %self.log_path.display(), error = %trunc, "failed to cut a partial write");
            }
            return Err(self.io_err("append to")(e));
        }
        let mut pos = self.size_bytes;
        for h in batches {
            self.indexes.track(h, pos);
            pos += h.total_size() as u64;
        }
        self.size_bytes = pos;
        self.next_offset = last.next_offset();
        self.last_modified_ms = now_ms;
        Ok(())
    }

    /// Walks batch headers from byte `pos` to the first batch satisfying `pred`.
    fn find_batch(
        &self,
        mut pos: u64,
        pred: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(BatchHeader, u64)>, LogError> {
        while pos < self.size_bytes {
            let raw = read_header_at(&self.log, pos).map_err(self.io_err("read"))?;
            let h = BatchHeader::parse(&raw)
                .map_err(|e| self.corrupt(format!("bad header at {pos}: {e}")))?;
            let size = h.total_size() as u64;
            if size > self.size_bytes - pos {
                return Err(self.corrupt(format!("batch at {pos} runs past the segment end")));
            }
            if pred(&h) {
                return Ok(Some((h, pos)));
            }
            pos += size;
        }
        Ok(None)
    }

    fn relative_or_zero(&self, offset: i64) -> u32 {
        u32::try_from(offset.saturating_sub(self.base_offset).max(0)).unwrap_or(u32::MAX)
    }

    /// Reads whole batches starting with the one that contains `start_offset`, up to
    /// `max_bytes`, leaving out batches whose base offset is `max_offset_exclusive` or more.
    /// The first batch is returned whole even when it is larger than `max_bytes` (KIP-74),
    /// so a consumer can always make progress. `None` if no batch qualifies.
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<Option<ReadSlice>, LogError> {
        if start_offset >= self.next_offset || start_offset >= max_offset_exclusive {
            return Ok(None);
        }
        let from = self
            .indexes
            .offset
            .lookup(self.relative_or_zero(start_offset));
        let Some((first, pos)) =
            self.find_batch(u64::from(from), |h| h.last_offset() >= start_offset)?
        else {
            return Ok(None);
        };
        if first.base_offset >= max_offset_exclusive {
            return Ok(None);
        }
        let available = self.size_bytes - pos;
        let want = (first.total_size() as u64).max(available.min(max_bytes as u64));
        let mut buf = vec![0u8; want as usize];
        self.log
            .read_exact_at(&mut buf, pos)
            .map_err(self.io_err("read"))?;
        let mut end = 0;
        let mut next_offset = first.next_offset();
        for item in BatchIter::new(&buf) {
            let (h, range) =
                item.map_err(|e| self.corrupt(format!("bad batch after {pos}: {e}")))?;
            if h.base_offset >= max_offset_exclusive {
                break;
            }
            end = range.end;
            next_offset = h.next_offset();
        }
        buf.truncate(end);
        Ok(Some(ReadSlice {
            bytes: Bytes::from(buf),
            first_offset: first.base_offset,
            next_offset,
        }))
    }

    /// The first batch at or after `min_offset` whose max timestamp is at least `ts`, as
    /// (offset, that batch's max timestamp). The offset is the batch's base offset, raised
    /// to `min_offset` if the batch straddles it: Kafka answers with the first *record* at
    /// or after `ts`, but records inside a compressed batch cannot be seen without
    /// decompressing it, and consumers skip records before the offset they asked for.
    pub fn find_offset_by_timestamp(
        &self,
        ts: i64,
        min_offset: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        if self.indexes.max_timestamp.is_none_or(|(max, _)| max < ts) {
            return Ok(None);
        }
        let rel = self
            .indexes
            .time
            .scan_start(ts)
            .max(self.relative_or_zero(min_offset));
        let from = u64::from(self.indexes.offset.lookup(rel));
        let found = self.find_batch(from, |h| {
            h.last_offset() >= min_offset && h.max_timestamp >= ts
        })?;
        Ok(found.map(|(h, _)| (h.base_offset.max(min_offset), h.max_timestamp)))
    }

    /// Makes appended data durable.
    pub fn flush(&self) -> Result<(), LogError> {
        self.log.sync_data().map_err(self.io_err("sync"))
    }

    /// A second handle on the log file, so a caller can fsync without holding the lock
    /// that guards this segment.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.log.try_clone()
    }

    /// Makes the segment durable and its index files complete, with a final time index
    /// entry for its largest timestamp. Called when the segment stops being active and on
    /// close; appending afterwards is still allowed.
    pub fn seal(&mut self) -> Result<(), LogError> {
        self.indexes.push_time_entry();
        let ctx = |p: &Path| format!("write {}", p.display());
        self.indexes
            .offset
            .persist(&self.index_path, true)
            .map_err(|e| LogError::io(ctx(&self.index_path), e))?;
        self.indexes
            .time
            .persist(&self.time_index_path, true)
            .map_err(|e| LogError::io(ctx(&self.time_index_path), e))?;
        self.flush()
    }

    /// Removes the segment's files. The log goes first: leftover index files without a
    /// log are swept up when the partition is next opened.
    pub fn delete(self) -> Result<(), LogError> {
        std::fs::remove_file(&self.log_path).map_err(self.io_err("delete"))?;
        for path in [&self.index_path, &self.time_index_path] {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(LogError::io(format!("delete {}", path.display()), e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Offset the next appended batch will get.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// (base offset of the batch with the largest max timestamp, that timestamp).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.indexes.max_timestamp.map(|(ts, offset)| (offset, ts))
    }

    pub fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    pub fn last_modified_ms(&self) -> i64 {
        self.last_modified_ms
    }

    /// Entries in the offset index (the time index never has more).
    pub fn index_entries(&self) -> usize {
        self.indexes.offset.len()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
