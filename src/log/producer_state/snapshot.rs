//! Producer state snapshot files: `<offset:020>.snapshot` in the partition directory, holding
//! the producer state as of `offset` (every batch below it applied, none at or above).
//!
//! Written when a segment rolls (at the new segment's base offset) and when the partition is
//! closed (at the log end), always through a temp file, fsync and rename, so a reader sees a
//! whole file or none. On open the newest snapshot at or below the recovered log end is
//! loaded and the log after it replayed; a file that fails its checks is skipped.
//!
//! Format, big-endian:
//! ```text
//! magic "STPS" | version u16 = 1 | crc32c u32 of everything after it |
//! offset i64 | producer count u32 |
//! per producer (ascending id): id i64 | epoch i16 | last_timestamp_ms i64 | batch count u8 |
//!   per batch (oldest first): first_seq i32 | last_seq i32 | first_offset i64 |
//!                             last_offset i64 | max_timestamp i64
//! ```
//! Unlike Kafka's snapshot, which keeps only each producer's latest batch, all retained
//! batches are kept, so a retry of any of them is still recognised after a restart.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{BatchMeta, ProducerEntry, ProducerStates, RETAINED_BATCHES};
use crate::log::checkpoint::{sync_dir, TEMP_SUFFIX};
use crate::log::segment::{file_name, parse_file_name};

pub const SNAPSHOT_SUFFIX: &str = "snapshot";
const MAGIC: &[u8; 4] = b"STPS";
const VERSION: u16 = 1;
/// magic + version + crc.
const PREAMBLE_LEN: usize = 4 + 2 + 4;
const PRODUCER_LEN: usize = 8 + 2 + 8 + 1;
const BATCH_LEN: usize = 4 + 4 + 8 + 8 + 8;
/// How many snapshots a partition keeps; older ones are deleted after each write.
pub const SNAPSHOTS_KEPT: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot I/O: {0}")]
    Io(#[from] io::Error),
    #[error("malformed snapshot: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> SnapshotError {
    SnapshotError::Malformed(what.into())
}

pub fn encode(offset: i64, states: &ProducerStates) -> Vec<u8> {
    let mut body = Vec::with_capacity(12 + states.len() * (PRODUCER_LEN + BATCH_LEN));
    body.extend_from_slice(&offset.to_be_bytes());
    body.extend_from_slice(&(states.len() as u32).to_be_bytes());
    for (pid, e) in states.iter() {
        body.extend_from_slice(&pid.to_be_bytes());
        body.extend_from_slice(&e.epoch.to_be_bytes());
        body.extend_from_slice(&e.last_timestamp_ms.to_be_bytes());
        body.push(e.batches.len() as u8);
        for b in &e.batches {
            body.extend_from_slice(&b.first_seq.to_be_bytes());
            body.extend_from_slice(&b.last_seq.to_be_bytes());
            body.extend_from_slice(&b.first_offset.to_be_bytes());
            body.extend_from_slice(&b.last_offset.to_be_bytes());
            body.extend_from_slice(&b.max_timestamp.to_be_bytes());
        }
    }
    let mut out = Vec::with_capacity(PREAMBLE_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A cursor over the snapshot body that reports a short read as malformed.
struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let (head, rest) = self
            .buf
            .split_at_checked(N)
            .ok_or_else(|| malformed("truncated"))?;
        self.buf = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }
    fn i16(&mut self) -> Result<i16, SnapshotError> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Result<i32, SnapshotError> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        self.take().map(i64::from_be_bytes)
    }
}

/// Decodes a snapshot into (offset, state), checking the CRC and the state's invariants.
pub fn decode(bytes: &[u8]) -> Result<(i64, ProducerStates), SnapshotError> {
    if bytes.len() < PREAMBLE_LEN || &bytes[..4] != MAGIC {
        return Err(malformed("bad magic"));
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(malformed(format!("unknown version {version}")));
    }
    let crc = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let body = &bytes[PREAMBLE_LEN..];
    if crc32c::crc32c(body) != crc {
        return Err(malformed("CRC mismatch"));
    }
    let mut r = Reader { buf: body };
    let offset = r.i64()?;
    let count = u32::from_be_bytes(r.take()?) as usize;
    // Each producer takes at least PRODUCER_LEN + one batch: refuse counts the bytes cannot
    // hold before trusting them.
    if count > r.buf.len() / (PRODUCER_LEN + BATCH_LEN) {
        return Err(malformed(format!(
            "{count} producers in {} bytes",
            r.buf.len()
        )));
    }
    let mut states = ProducerStates::new();
    let mut prev_pid = -1;
    for _ in 0..count {
        let pid = r.i64()?;
        if pid <= prev_pid {
            return Err(malformed(format!("producer id {pid} out of order")));
        }
        prev_pid = pid;
        let epoch = r.i16()?;
        let last_timestamp_ms = r.i64()?;
        let [n] = r.take::<1>()?;
        let n = usize::from(n);
        if !(1..=RETAINED_BATCHES).contains(&n) {
            return Err(malformed(format!("producer {pid} has {n} batches")));
        }
        let mut batches = VecDeque::with_capacity(n);
        for _ in 0..n {
            let b = BatchMeta {
                first_seq: r.i32()?,
                last_seq: r.i32()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
                max_timestamp: r.i64()?,
            };
            let ordered = batches
                .back()
                .is_none_or(|p: &BatchMeta| p.last_offset < b.first_offset);
            if b.first_offset > b.last_offset || b.last_offset >= offset || !ordered {
                return Err(malformed(format!("producer {pid}: batch {b:?}")));
            }
            batches.push_back(b);
        }
        states.insert(
            pid,
            ProducerEntry {
                epoch,
                batches,
                last_timestamp_ms,
            },
        );
    }
    if !r.buf.is_empty() {
        return Err(malformed(format!("{} trailing bytes", r.buf.len())));
    }
    Ok((offset, states))
}

pub fn path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(file_name(offset, SNAPSHOT_SUFFIX))
}

/// Offsets of the snapshot files in `dir`, ascending.
pub fn list(dir: &Path) -> io::Result<Vec<i64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some((offset, SNAPSHOT_SUFFIX)) = name.to_str().and_then(parse_file_name) {
            out.push(offset);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Durably writes the snapshot of `states` at `offset`, replacing any file of that name.
pub fn write(dir: &Path, offset: i64, states: &ProducerStates) -> io::Result<()> {
    let final_path = path(dir, offset);
    let tmp = dir.join(format!(
        "{}{TEMP_SUFFIX}",
        file_name(offset, SNAPSHOT_SUFFIX)
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&encode(offset, states))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &final_path)?;
    sync_dir(dir)
}

pub fn read(dir: &Path, offset: i64) -> Result<ProducerStates, SnapshotError> {
    let bytes = fs::read(path(dir, offset))?;
    let (stored, states) = decode(&bytes)?;
    if stored != offset {
        return Err(malformed(format!("file for offset {offset} says {stored}")));
    }
    Ok(states)
}

/// Removes the snapshot at `offset`; a file already gone is fine.
pub fn delete(dir: &Path, offset: i64) -> io::Result<()> {
    match fs::remove_file(path(dir, offset)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
