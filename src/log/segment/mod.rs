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
//!
//! `open` holds opening and recovery; `indexer` turns the stream of batches into index
//! entries.

mod indexer;
mod open;
mod truncate;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::batch::{BatchHeader, BatchIter, HEADER_LEN};
use super::scan::scan;
use super::LogError;
use indexer::Indexes;

/// Bytes read at a time while walking batch headers in search of an offset or timestamp;
/// a few index intervals' worth at the default interval.
const HEADER_WINDOW_BYTES: u64 = 16 * 1024;

pub const LOG_SUFFIX: &str = "log";
pub const INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Appended to the names of a retired segment's files until they are removed.
pub const DELETED_SUFFIX: &str = ".deleted";

/// Unlinks files of retired segments ([`Segment::retire`]); all are tried, the first error
/// is returned.
pub fn remove_retired(files: &[PathBuf]) -> Result<(), LogError> {
    let mut first_error = None;
    for path in files {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "failed to delete segment file");
                first_error.get_or_insert(LogError::io(format!("delete {}", path.display()), e));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Bytes cut off a file per step by [`cut_down`].
const CUT_STEP: u64 = 8 << 20;
/// After each step [`cut_down`] pauses this many times as long as the step took (so the
/// discards take at most a quarter of the device's time), within [`CUT_PAUSE_MIN`] and
/// [`CUT_PAUSE_MAX`].
const CUT_PAUSE_FACTOR: u32 = 3;
const CUT_PAUSE_MIN: Duration = Duration::from_millis(1);
/// Keeps a slow device's deletion rate up: 8 MiB per 20 ms plus the step is at least
/// ~300 MiB/s whatever the step costs up to 10 ms, so retention keeps pace with writers.
const CUT_PAUSE_MAX: Duration = Duration::from_millis(20);

/// Empties a retired segment's log file a step at a time before it is unlinked, if nothing
/// reads it any more (`log` is the last handle; a fetch still sending from it keeps it whole,
/// and its blocks are then freed at once, as before, when that fetch lets go of it).
///
/// Freeing a large file at once frees (and, on a file system mounted with `discard`,
/// discards) all its blocks in one go, and other files' fsyncs queue behind that: on the
/// benchmark machine unlinking a 1 GiB segment stalled a concurrent 1 MiB write + fdatasync
/// loop for 60-90 ms, against 8-15 ms in 32 MiB steps, and every durable partition's appends
/// wait on such fsyncs. Steps of 32 MiB a millisecond apart still left durable writers at
/// 300 MiB/s with 100-230 ms latency maxima while retention ran; 8 MiB steps paced by
/// `CUT_PAUSE_FACTOR` kept them at 12-60 ms. Best effort: the unlink that follows is what
/// must succeed. Blocks for about 1.5 s per GiB on that machine (~680 MiB/s).
pub fn cut_down(log: Arc<File>, path: &Path) {
    let Some(file) = Arc::into_inner(log) else {
        return;
    };
    let mut len = file.metadata().map(|m| m.len()).unwrap_or(0);
    while len > CUT_STEP {
        len -= CUT_STEP;
        let started = Instant::now();
        if let Err(e) = file.set_len(len) {
            tracing::debug!(path = %path.display(), error = %e, "cutting down a retired segment");
            return;
        }
        // Lets I/O queued behind this step go first.
        let pause = (started.elapsed() * CUT_PAUSE_FACTOR).clamp(CUT_PAUSE_MIN, CUT_PAUSE_MAX);
        std::thread::sleep(pause);
    }
}

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

/// A read located in a segment file, not yet done.
#[derive(Debug)]
pub struct ReadPlan {
    file: Arc<File>,
    path: PathBuf,
    pos: u64,
    len: usize,
    first_offset: i64,
    max_offset_exclusive: i64,
    /// Base offset of the segment read from.
    segment: i64,
    /// Drop what was read from the page cache afterwards (see [`crate::log::pagecache`]).
    release: bool,
    /// Every batch the plan starts lies below its offset limit: the range may be sent as it
    /// is (see [`ReadPlan::into_region`]).
    below_limit: bool,
}

/// A range of a segment file to be sent to a client as it is on disk, never read into the
/// broker's memory (the socket takes it from the page cache: `sendfile`). The range starts at
/// a batch; the last batch may be cut short by the fetch's size limit, as in Kafka's own
/// fetch responses, and clients leave such a partial batch for their next fetch.
#[derive(Debug)]
pub struct FileRegion {
    pub file: Arc<File>,
    pub pos: u64,
    pub len: usize,
    path: PathBuf,
    release: bool,
}

impl FileRegion {
    /// The segment file the range is in, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Once the range is sent: a reader behind the page-cache window drops it from the
    /// cache, as a copied read does (pages the socket still holds stay until it lets go).
    pub fn sent(&self) {
        if self.release {
            // From the start of the previous fetch of a reader going forward: pages the
            // socket held when that one was sent could not be dropped then.
            let from = self.pos.saturating_sub(self.len as u64);
            let end = self.pos + self.len as u64;
            if let Err(e) = crate::log::pagecache::release(&self.file, from, end) {
                tracing::debug!(path = %self.path.display(), error = %e, "page cache advice");
            }
        }
    }
}

/// A region of `file` that is not behind the page-cache window (tests of its senders).
#[cfg(test)]
pub fn test_region(file: Arc<File>, pos: u64, len: usize) -> FileRegion {
    FileRegion {
        file,
        pos,
        len,
        path: PathBuf::from("test"),
        release: false,
    }
}

impl ReadPlan {
    /// The plan as a range to send unread, when all of it may go to a client: every batch
    /// in it below the offset limit (the high watermark). Otherwise the plan back, to be read
    /// and cut at the limit ([`ReadPlan::read`]).
    pub fn into_region(self) -> Result<FileRegion, ReadPlan> {
        if !self.below_limit {
            return Err(self);
        }
        Ok(FileRegion {
            file: self.file,
            pos: self.pos,
            len: self.len,
            path: self.path,
            release: self.release,
        })
    }

    /// Releases the data read from the page cache afterwards when it lies more than `window`
    /// bytes behind the end of the active segment (`active`: its base offset and size), or in
    /// an older segment. `window` 0 never releases.
    pub fn release_behind(&mut self, window: u64, active: (i64, u64)) {
        let (base, size) = active;
        self.release =
            window > 0 && (self.segment != base || self.pos + self.len as u64 + window <= size);
    }

    /// Copies the whole batches the plan covers that start below its offset limit. A
    /// follower may have cut the file's tail ([`Segment::truncate_to`]) since the plan was
    /// made: the read then stops at the new end, and if even the first batch is gone it
    /// returns nothing (`next_offset` is then `first_offset`).
    pub fn read(self) -> Result<ReadSlice, LogError> {
        let mut buf = crate::bufpool::take_filled(self.len);
        let got = read_up_to(&self.file, &mut buf, self.pos)
            .map_err(|e| LogError::io(format!("read {}", self.path.display()), e))?;
        if self.release {
            // A reader behind the window: drop what it read.
            let end = self.pos + got as u64;
            if let Err(e) = crate::log::pagecache::release(&self.file, self.pos, end) {
                tracing::debug!(path = %self.path.display(), error = %e, "page cache advice");
            }
        }
        buf.truncate(got);
        let mut end = 0;
        let mut next_offset = self.first_offset;
        for item in BatchIter::new(&buf) {
            let (h, range) = item.map_err(|e| LogError::CorruptSegment {
                path: self.path.clone(),
                detail: format!("bad batch after {}: {e}", self.pos),
            })?;
            if h.base_offset >= self.max_offset_exclusive {
                break;
            }
            end = range.end;
            next_offset = h.next_offset();
        }
        buf.truncate(end);
        Ok(ReadSlice {
            bytes: crate::bufpool::freeze(buf),
            first_offset: self.first_offset,
            next_offset,
        })
    }
}

/// Most pieces one `pwritev` takes (Linux's `IOV_MAX`).
const MAX_PIECES: usize = 1024;

/// Writes all of `pieces` at `pos` with as few `pwritev` calls as the kernel allows.
fn write_all_vectored_at(
    file: &File,
    pieces: &mut [io::IoSlice<'_>],
    mut pos: u64,
) -> io::Result<()> {
    let mut rest = pieces;
    while !rest.is_empty() {
        let n = rest.len().min(MAX_PIECES);
        match rustix::io::pwritev(file, &rest[..n], pos) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                pos += written as u64;
                io::IoSlice::advance_slices(&mut rest, written);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads into `buf` from `pos` until it is full or the file ends; returns the bytes read.
fn read_up_to(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

pub struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    index_path: PathBuf,
    time_index_path: PathBuf,
    /// Shared so reads can copy data outside the partition lock (the file only grows,
    /// except when a follower truncates it, which reads tolerate; a deleted segment's open
    /// handle still reads).
    log: Arc<File>,
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

    fn with_file(dir: &Path, base: i64, interval: u32, log: File, log_path: PathBuf) -> Segment {
        Segment {
            base_offset: base,
            log_path,
            index_path: dir.join(file_name(base, INDEX_SUFFIX)),
            time_index_path: dir.join(file_name(base, TIME_INDEX_SUFFIX)),
            log: Arc::new(log),
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

    /// Appends already validated and patched batches, given as the pieces that make them up
    /// in order (a patched header, then the rest of its batch, and so on). `batches` are
    /// their headers, the first starting at this segment's next offset.
    pub fn append(
        &mut self,
        mut pieces: Vec<io::IoSlice<'_>>,
        batches: &[BatchHeader],
        now_ms: i64,
    ) -> Result<(), LogError> {
        debug_assert_eq!(
            batches.iter().map(BatchHeader::total_size).sum::<usize>(),
            pieces.iter().map(|p| p.len()).sum::<usize>()
        );
        debug_assert!(batches
            .first()
            .is_none_or(|b| b.base_offset == self.next_offset));
        let Some(last) = batches.last() else {
            return Ok(());
        };
        if let Err(e) = write_all_vectored_at(&self.log, &mut pieces, self.size_bytes) {
            // Cut off whatever part landed so the file still ends where the bookkeeping
            // says; if even that fails, recovery on the next open removes it.
            if let Err(trunc) = self.log.set_len(self.size_bytes) {
                tracing::warn!(
                    path = %self.log_path.display(),
                    error = %trunc,
                    "failed to cut a partial write"
                );
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

    /// Walks batch headers from byte `pos` to the first batch satisfying `pred`. Reads the
    /// file a window at a time, so stepping over the small batches between an index entry
    /// and the target costs one read rather than one per batch.
    fn find_batch(
        &self,
        mut pos: u64,
        pred: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(BatchHeader, u64)>, LogError> {
        let mut window = Vec::new();
        let mut window_start = pos;
        while pos < self.size_bytes {
            if pos + HEADER_LEN as u64 > window_start + window.len() as u64 {
                let len = (self.size_bytes - pos).min(HEADER_WINDOW_BYTES);
                window.resize(len as usize, 0);
                self.log
                    .read_exact_at(&mut window, pos)
                    .map_err(self.io_err("read"))?;
                window_start = pos;
            }
            let at = (pos - window_start) as usize;
            let h = BatchHeader::parse(&window[at..])
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
        self.plan_read(start_offset, max_bytes, max_offset_exclusive)?
            .map(ReadPlan::read)
            .transpose()
    }

    /// Where [`Segment::read`] would read, found from the index and batch headers; the
    /// copy itself is [`ReadPlan::read`], which needs no access to the segment, so a caller
    /// holding a lock over the log can release it first.
    pub fn plan_read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<Option<ReadPlan>, LogError> {
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
        Ok(Some(ReadPlan {
            file: self.log.clone(),
            path: self.log_path.clone(),
            pos,
            len: want as usize,
            first_offset: first.base_offset,
            max_offset_exclusive,
            segment: self.base_offset,
            release: false,
            below_limit: max_offset_exclusive >= self.next_offset,
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

    /// Calls `visit` with the header of every batch that ends at or after `from_offset`, in
    /// order: how producer state is rebuilt from the log. Reads headers only (records may be
    /// compressed and are never looked at), one positioned read per batch.
    pub fn visit_headers_from(
        &self,
        from_offset: i64,
        mut visit: impl FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        if from_offset >= self.next_offset {
            return Ok(());
        }
        let from = self
            .indexes
            .offset
            .lookup(self.relative_or_zero(from_offset));
        let Some((first, pos)) =
            self.find_batch(u64::from(from), |h| h.last_offset() >= from_offset)?
        else {
            return Ok(());
        };
        let end = scan(
            &self.log,
            pos,
            self.size_bytes,
            first.base_offset,
            false,
            |h, _| visit(h),
        )
        .map_err(self.io_err("scan"))?;
        match end.stopped {
            None => Ok(()),
            Some(why) => Err(self.corrupt(why)),
        }
    }

    /// Makes appended data durable.
    pub fn flush(&self) -> Result<(), LogError> {
        self.log.sync_data().map_err(self.io_err("sync"))
    }

    /// Starts writing bytes `from..to` of the log file back to disk (no waiting).
    pub fn start_writeback(&self, from: u64, to: u64) -> io::Result<()> {
        crate::log::pagecache::start_writeback(&self.log, from, to)
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

    /// Takes the segment's files out of the log by renaming them `<name>.deleted`, which is
    /// quick whatever their size; returns the new paths (the log's first), for
    /// [`remove_retired`] to unlink later, and the log file, for [`cut_down`]. The log goes
    /// first: leftover index files without a log, and `.deleted` files, are swept up when the
    /// partition is next opened.
    pub fn retire(self) -> Result<(Vec<PathBuf>, Arc<File>), LogError> {
        let mut retired = Vec::with_capacity(3);
        for (i, path) in [&self.log_path, &self.index_path, &self.time_index_path]
            .into_iter()
            .enumerate()
        {
            let mut to = path.clone().into_os_string();
            to.push(DELETED_SUFFIX);
            let to = PathBuf::from(to);
            match std::fs::rename(path, &to) {
                Ok(()) => retired.push(to),
                Err(e) if i == 0 => {
                    return Err(LogError::io(format!("retire {}", path.display()), e))
                }
                // Index files are written when a segment is sealed. One left in place once
                // its log is renamed is swept on the next open, as an index without a log.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "retiring index file"),
            }
        }
        Ok((retired, self.log.clone()))
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
mod tests;
