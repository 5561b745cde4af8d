//! Sparse offset and time indexes for one segment, in the layout Kafka uses.
//!
//! Owns the in-memory entry vectors, their lookups, and their encoding to `.index` (8-byte
//! entries: relative offset u32, file position u32) and `.timeindex` (12-byte entries:
//! timestamp i64, relative offset u32) files, all big-endian. Offsets are relative to the
//! segment's base offset.
//!
//! Invariants: offset index entries strictly increase in both offset and position, and each
//! names the start of a batch (the segment checks that when it builds them); time index
//! entries strictly increase in timestamp and never decrease in offset, each recording the
//! largest timestamp seen so far in the segment and the base offset of the batch carrying
//! it. The files are a cache: the log is the truth, so a file that fails any check is
//! rebuilt from the log rather than trusted. Only appends and whole rewrites touch the files.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use super::batch::HEADER_LEN;

/// Cap on entries per index, as Kafka's default `segment.index.bytes` (10 MiB) gives; the
/// segment rolls when an index reaches it so memory per segment stays bounded.
pub const MAX_INDEX_ENTRIES: usize = 10 * 1024 * 1024 / OFFSET_ENTRY_LEN;
pub const OFFSET_ENTRY_LEN: usize = 8;
pub const TIME_ENTRY_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index I/O: {0}")]
    Io(#[source] std::io::Error),
    #[error("index file is {len} bytes, not a multiple of {entry_len}")]
    BadLength { len: u64, entry_len: usize },
    #[error("index file of {len} bytes is larger than a {log_size}-byte log can need")]
    TooLarge { len: u64, log_size: u64 },
    #[error("entry {at} does not increase over the one before it")]
    NotMonotonic { at: usize },
    #[error("entry {at} points at byte {position}, past the log end {log_size}")]
    PositionOutOfRange {
        at: usize,
        position: u32,
        log_size: u64,
    },
    #[error("entry names relative offset {relative_offset}, past the segment end {limit}")]
    OffsetOutOfRange { relative_offset: u32, limit: u64 },
    #[error("the log does not continue from the last index entry: {0}")]
    TailMismatch(String),
    #[error("time index has no entries for a non-empty segment")]
    MissingTimeEntries,
}

/// One fixed-size index entry.
pub trait IndexEntry: Copy + std::fmt::Debug {
    const LEN: usize;
    fn encode(&self, out: &mut Vec<u8>);
    /// `bytes` is exactly `LEN` long.
    fn decode(bytes: &[u8]) -> Self;
    /// Whether `self` may follow `prev` in the index.
    fn follows(&self, prev: &Self) -> bool;
    fn relative_offset(&self) -> u32;
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const LEN: usize = OFFSET_ENTRY_LEN;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: be_u32(&b[0..4]),
            position: be_u32(&b[4..8]),
        }
    }
    fn follows(&self, prev: &Self) -> bool {
        self.relative_offset > prev.relative_offset && self.position > prev.position
    }
    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const LEN: usize = TIME_ENTRY_LEN;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[0..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: be_u32(&b[8..12]),
        }
    }
    fn follows(&self, prev: &Self) -> bool {
        self.timestamp > prev.timestamp && self.relative_offset >= prev.relative_offset
    }
    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }
}

/// An index held in memory, remembering how many entries its file already has so that
/// persisting appends only the new ones.
#[derive(Debug, Clone)]
pub struct SparseIndex<E> {
    entries: Vec<E>,
    persisted: usize,
}

pub type OffsetIndex = SparseIndex<OffsetEntry>;
pub type TimeIndex = SparseIndex<TimeEntry>;

impl<E: IndexEntry> Default for SparseIndex<E> {
    fn default() -> Self {
        SparseIndex {
            entries: Vec::new(),
            persisted: 0,
        }
    }
}

impl<E: IndexEntry> SparseIndex<E> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes and checks index file contents for a log of `log_size` bytes. Each entry
    /// marks a distinct batch, so a file with more entries than the log has room for
    /// batches is rejected before it is trusted.
    pub fn decode(bytes: &[u8], log_size: u64) -> Result<Self, IndexError> {
        let len = bytes.len() as u64;
        if !bytes.len().is_multiple_of(E::LEN) {
            return Err(IndexError::BadLength {
                len,
                entry_len: E::LEN,
            });
        }
        if len > Self::max_file_len(log_size) {
            return Err(IndexError::TooLarge { len, log_size });
        }
        let entries: Vec<E> = bytes.chunks_exact(E::LEN).map(E::decode).collect();
        for (at, pair) in entries.windows(2).enumerate() {
            if !pair[1].follows(&pair[0]) {
                return Err(IndexError::NotMonotonic { at: at + 1 });
            }
        }
        let persisted = entries.len();
        Ok(SparseIndex { entries, persisted })
    }

    /// Reads and decodes an index file; a missing file is an empty index.
    pub fn load(path: &Path, log_size: u64) -> Result<Self, IndexError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new()),
            Err(e) => return Err(IndexError::Io(e)),
        };
        let len = file.metadata().map_err(IndexError::Io)?.len();
        // Checked before reading so a garbage file cannot make us allocate its size.
        if len > Self::max_file_len(log_size) {
            return Err(IndexError::TooLarge { len, log_size });
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.read_to_end(&mut bytes).map_err(IndexError::Io)?;
        Self::decode(&bytes, log_size)
    }

    fn max_file_len(log_size: u64) -> u64 {
        let max_entries = (log_size / HEADER_LEN as u64 + 1).min(MAX_INDEX_ENTRIES as u64);
        max_entries * E::LEN as u64
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    /// Rejects an index naming offsets at or past `limit` (the segment's next relative offset).
    pub fn check_offsets_below(&self, limit: u64) -> Result<(), IndexError> {
        match self.entries.last() {
            Some(e) if u64::from(e.relative_offset()) >= limit => {
                Err(IndexError::OffsetOutOfRange {
                    relative_offset: e.relative_offset(),
                    limit,
                })
            }
            _ => Ok(()),
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.persisted = 0;
    }

    fn encode(entries: &[E]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entries.len() * E::LEN);
        for e in entries {
            e.encode(&mut out);
        }
        out
    }

    /// Appends the entries the file does not have yet.
    pub fn persist(&mut self, path: &Path, sync: bool) -> std::io::Result<()> {
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        let pending = &self.entries[self.persisted..];
        if !pending.is_empty() {
            file.write_all(&Self::encode(pending))?;
            self.persisted = self.entries.len();
        }
        if sync {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Replaces the file's contents with the whole in-memory index.
    pub fn rewrite(&mut self, path: &Path) -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        file.write_all(&Self::encode(&self.entries))?;
        self.persisted = self.entries.len();
        Ok(())
    }
}

impl OffsetIndex {
    pub fn push(&mut self, entry: OffsetEntry) {
        debug_assert!(self.entries.last().is_none_or(|p| entry.follows(p)));
        self.entries.push(entry);
    }

    /// File position to start scanning from for `relative_offset`: that of the greatest
    /// entry at or below it, or the start of the segment.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        let idx = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        idx.checked_sub(1).map_or(0, |i| self.entries[i].position)
    }

    /// Rejects entries pointing at or past the end of a `log_size`-byte log.
    pub fn check_positions(&self, log_size: u64) -> Result<(), IndexError> {
        match self.entries.last() {
            Some(e) if u64::from(e.position) >= log_size => Err(IndexError::PositionOutOfRange {
                at: self.entries.len() - 1,
                position: e.position,
                log_size,
            }),
            _ => Ok(()),
        }
    }
}

impl TimeIndex {
    /// Records the segment's running max timestamp, if it grew since the last entry.
    pub fn maybe_push(&mut self, timestamp: i64, relative_offset: u32) {
        let entry = TimeEntry {
            timestamp,
            relative_offset,
        };
        if self.entries.last().is_none_or(|p| entry.follows(p)) {
            self.entries.push(entry);
        }
    }

    /// Relative offset to start scanning from when looking for the first batch with a
    /// timestamp at or after `timestamp`. Every batch before the returned offset has a
    /// max timestamp below the target, because the entry chosen records the running max
    /// up to there and it is strictly below the target.
    pub fn scan_start(&self, timestamp: i64) -> u32 {
        let idx = self.entries.partition_point(|e| e.timestamp < timestamp);
        idx.checked_sub(1)
            .map_or(0, |i| self.entries[i].relative_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pairs: &[(u32, u32)]) -> OffsetIndex {
        let mut idx = OffsetIndex::new();
        for &(relative_offset, position) in pairs {
            idx.push(OffsetEntry {
                relative_offset,
                position,
            });
        }
        idx
    }

    #[test]
    fn offset_lookup_finds_greatest_lower_entry() {
        let idx = offsets(&[(10, 4100), (25, 8300), (40, 12500)]);
        assert_eq!(idx.lookup(0), 0);
        assert_eq!(idx.lookup(9), 0);
        assert_eq!(idx.lookup(10), 4100);
        assert_eq!(idx.lookup(24), 4100);
        assert_eq!(idx.lookup(25), 8300);
        assert_eq!(idx.lookup(u32::MAX), 12500);
        assert_eq!(OffsetIndex::new().lookup(5), 0);
    }

    #[test]
    fn time_scan_start_stays_before_target() {
        let mut idx = TimeIndex::new();
        idx.maybe_push(100, 0);
        idx.maybe_push(100, 5); // not an increase: skipped
        idx.maybe_push(200, 7);
        idx.maybe_push(300, 12);
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.scan_start(50), 0);
        assert_eq!(idx.scan_start(100), 0);
        assert_eq!(idx.scan_start(150), 0);
        assert_eq!(idx.scan_start(201), 7);
        assert_eq!(idx.scan_start(i64::MAX), 12);
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let mut idx = offsets(&[(1, 100), (2, 200)]);
        idx.persist(&path, false).unwrap();
        idx.push(OffsetEntry {
            relative_offset: 3,
            position: 300,
        });
        idx.persist(&path, true).unwrap();
        let loaded = OffsetIndex::load(&path, 1_000).unwrap();
        assert_eq!(loaded.entries(), idx.entries());
        idx.rewrite(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
        assert!(OffsetIndex::load(&dir.path().join("missing"), 0)
            .unwrap()
            .is_empty());
    }

    proptest::proptest! {
        #[test]
        fn encode_decode_round_trips(
            steps in proptest::collection::vec((1u32..1000, 61u32..10_000, 0i64..1000), 0..200),
        ) {
            let (mut offsets, mut times) = (OffsetIndex::new(), TimeIndex::new());
            let (mut rel, mut pos, mut ts) = (0u32, 0u32, -1i64);
            for (d_rel, d_pos, d_ts) in steps {
                rel += d_rel;
                pos += d_pos;
                ts += d_ts;
                offsets.push(OffsetEntry { relative_offset: rel, position: pos });
                times.maybe_push(ts, rel);
            }
            let log_size = u64::from(pos) + 1;
            let enc = SparseIndex::encode(offsets.entries());
            let dec = OffsetIndex::decode(&enc, log_size).unwrap();
            proptest::prop_assert_eq!(dec.entries(), offsets.entries());
            proptest::prop_assert!(dec.check_positions(log_size).is_ok());
            let enc = SparseIndex::encode(times.entries());
            let dec = TimeIndex::decode(&enc, log_size).unwrap();
            proptest::prop_assert_eq!(dec.entries(), times.entries());
        }
    }

    #[test]
    fn rejects_bad_files() {
        let mut enc = Vec::new();
        for e in [(5u32, 100u32), (3, 200)] {
            OffsetEntry {
                relative_offset: e.0,
                position: e.1,
            }
            .encode(&mut enc);
        }
        assert!(matches!(
            OffsetIndex::decode(&enc, 10_000),
            Err(IndexError::NotMonotonic { at: 1 })
        ));
        assert!(matches!(
            OffsetIndex::decode(&enc[..7], 10_000),
            Err(IndexError::BadLength { .. })
        ));
        assert!(matches!(
            OffsetIndex::decode(&enc, 10),
            Err(IndexError::TooLarge { .. })
        ));
        let idx = offsets(&[(1, 100), (2, 5_000)]);
        assert!(idx.check_positions(5_000).is_err());
        assert!(idx.check_positions(5_001).is_ok());
        assert!(idx.check_offsets_below(2).is_err());
        assert!(idx.check_offsets_below(3).is_ok());
    }
}
