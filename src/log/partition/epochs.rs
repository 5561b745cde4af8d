//! The leader epoch cache of one partition (Kafka's `LeaderEpochFileCache`): for every
//! leader epoch that wrote to the log, the offset of its first batch. Followers use it to
//! answer OffsetsForLeaderEpoch and to find where their log diverges from the leader's.
//!
//! Owns the pure cache ([`LeaderEpochCache`]), its `leader-epoch-checkpoint` file (Kafka's
//! text format: a version line `0`, a count line, then one `epoch start_offset` line per
//! entry), and the partition log's handling of both: loading (or rebuilding from the batch
//! headers) on open, and persisting when an entry is added or removed, which happens once
//! per leader change, never per append.
//!
//! Invariants: epochs and start offsets both strictly increase; no epoch is negative; the
//! last entry starts at or below the log end. Ordering on disk: an entry is written before
//! the first batch of its epoch, and dropped after the batches it covers are cut off, so
//! the file never lacks an entry for data in the log; entries past the data (a crash came
//! between) are dropped on open.

use std::fs;
use std::io;
use std::path::Path;

use super::PartitionLog;
use crate::log::batch::BatchHeader;
use crate::log::checkpoint;
use crate::log::LogError;

pub(crate) const FILE_NAME: &str = "leader-epoch-checkpoint";
const VERSION: &str = "0";
/// A line is at most 11 + 1 + 20 + 1 bytes; one entry per leader change, so this is far
/// beyond any real file and only bounds what a corrupt one makes us read.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// `(epoch, start offset)` entries, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// A cache holding `entries`, which must satisfy the module invariants.
    pub fn from_entries(entries: Vec<(i32, i64)>) -> Result<Self, String> {
        if let Some((e, s)) = entries.iter().find(|(e, s)| *e < 0 || *s < 0) {
            return Err(format!("negative entry ({e}, {s})"));
        }
        if let Some(pair) = entries
            .windows(2)
            .find(|p| p[1].0 <= p[0].0 || p[1].1 <= p[0].1)
        {
            return Err(format!(
                "entry {:?} does not increase over {:?}",
                pair[1], pair[0]
            ));
        }
        Ok(LeaderEpochCache { entries })
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|(e, _)| *e)
    }

    /// Whether a batch stamped `epoch` would add an entry (cheap; no allocation).
    pub fn is_new_epoch(&self, epoch: i32) -> bool {
        epoch >= 0 && self.latest_epoch().is_none_or(|latest| epoch > latest)
    }

    /// Notes that a batch of `epoch` starts at `start_offset`; adds an entry when the epoch
    /// is newer than the latest. An older or equal epoch changes nothing (Kafka logs and
    /// ignores it), nor does a negative one (a batch written without a leader epoch).
    /// Returns whether an entry was added.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if !self.is_new_epoch(epoch) {
            return false;
        }
        // Offsets only grow on append, so nothing should conflict; if an entry somehow
        // starts at or past the new one, the newer epoch's view wins, as in Kafka.
        self.entries.retain(|(_, s)| *s < start_offset);
        self.entries.push((epoch, start_offset));
        true
    }

    /// Drops entries starting at or after `end_offset` (the log was cut there). Returns
    /// whether any went.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let keep = self.entries.partition_point(|(_, s)| *s < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Kafka's `truncateFromStart`: of the entries starting at or below `start_offset`,
    /// keeps only the last, moved up to start there. Returns whether anything changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let at_or_below = self.entries.partition_point(|(_, s)| *s <= start_offset);
        let Some(last) = at_or_below.checked_sub(1) else {
            return false;
        };
        let changed = last > 0 || self.entries[last].1 != start_offset;
        self.entries.drain(..last);
        self.entries[0].1 = start_offset;
        changed
    }

    /// The OffsetsForLeaderEpoch answer for `epoch`, as Kafka's LeaderEpochFileCache gives
    /// it: the latest epoch ends at `log_end`; an earlier one is answered with the largest
    /// cached epoch at or below it and the start of the next cached epoch; one below every
    /// cached epoch with itself and the first epoch's start (its data is gone: the follower
    /// restarts from there). `None` (UNDEFINED) for a negative epoch, one above the latest,
    /// or an empty cache.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> Option<(i32, i64)> {
        let &(latest, _) = self.entries.last()?;
        if epoch < 0 || epoch > latest {
            return None;
        }
        if epoch == latest {
            return Some((epoch, log_end));
        }
        let at_or_below = self.entries.partition_point(|(e, _)| *e <= epoch);
        let next_start = self.entries[at_or_below].1;
        match at_or_below.checked_sub(1) {
            Some(i) => Some((self.entries[i].0, next_start)),
            None => Some((epoch, next_start)),
        }
    }

    /// Asserts the module invariants against a log ending at `log_end`.
    pub fn validate(&self, log_end: i64) {
        if let Err(e) = LeaderEpochCache::from_entries(self.entries.clone()) {
            panic!("leader epoch cache {:?}: {e}", self.entries);
        }
        if let Some((e, s)) = self.entries.last() {
            assert!(
                *s <= log_end,
                "epoch {e} starts at {s}, past the log end {log_end}"
            );
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum EpochFileError {
    #[error("leader epoch checkpoint I/O: {0}")]
    Io(#[from] io::Error),
    #[error("malformed leader epoch checkpoint: {0}")]
    Malformed(String),
}

/// The file's contents for `cache`.
pub(crate) fn encode(cache: &LeaderEpochCache) -> String {
    let mut out = format!("{VERSION}\n{}\n", cache.entries.len());
    for (epoch, start) in &cache.entries {
        out.push_str(&format!("{epoch} {start}\n"));
    }
    out
}

pub(crate) fn parse(text: &str) -> Result<LeaderEpochCache, EpochFileError> {
    let malformed = |m: String| EpochFileError::Malformed(m);
    let mut lines = text.lines();
    match lines.next() {
        Some(VERSION) => {}
        other => return Err(malformed(format!("unknown version line {other:?}"))),
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| malformed("missing or invalid entry count".into()))?;
    let mut entries = Vec::new();
    for i in 0..count {
        let line = lines
            .next()
            .ok_or_else(|| malformed(format!("{count} entries announced, {i} present")))?;
        let mut fields = line.split_whitespace();
        let epoch = fields.next().and_then(|f| f.parse::<i32>().ok());
        let start = fields.next().and_then(|f| f.parse::<i64>().ok());
        match (epoch, start, fields.next()) {
            (Some(e), Some(s), None) => entries.push((e, s)),
            _ => return Err(malformed(format!("bad entry line {line:?}"))),
        }
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(malformed("trailing content".into()));
    }
    LeaderEpochCache::from_entries(entries).map_err(malformed)
}

/// Reads the checkpoint in `dir`; `None` if there is none.
pub(crate) fn read(dir: &Path) -> Result<Option<LeaderEpochCache>, EpochFileError> {
    match checkpoint::read_small(&dir.join(FILE_NAME), MAX_FILE_BYTES) {
        Ok(Some(text)) => parse(&text).map(Some),
        Ok(None) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Err(EpochFileError::Malformed(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Durably replaces the checkpoint in `dir`.
pub(crate) fn write(dir: &Path, cache: &LeaderEpochCache) -> io::Result<()> {
    checkpoint::replace_file(dir, FILE_NAME, encode(cache).as_bytes())
}

/// Removes the checkpoint in `dir`, durably; a file already gone is fine.
pub(crate) fn remove(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(FILE_NAME)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => checkpoint::sync_dir(dir),
    }
}

impl PartitionLog {
    /// The newest leader epoch that wrote to the log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// OffsetsForLeaderEpoch: the largest epoch at or below `epoch` that wrote to this log,
    /// and its end offset (where the next epoch starts, or the log end for the latest).
    /// `None` if `epoch` is below every known epoch or none is known.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset)
    }

    /// Every `(epoch, start offset)` entry, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs.entries().to_vec()
    }

    /// Loads the cache on open, rebuilding it from the batch headers if the file is missing
    /// or unreadable, then fits it to the recovered log: entries past the end go, entries
    /// below the start are compacted. Writes the file if that changed anything.
    pub(super) fn load_epochs(&mut self) -> Result<(), LogError> {
        let mut dirty = false;
        let loaded = read(&self.dir).unwrap_or_else(|e| {
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "rebuilding unreadable leader epoch checkpoint");
            None
        });
        self.epochs = match loaded {
            Some(cache) => cache,
            None => {
                dirty = true;
                self.rebuild_epochs()?
            }
        };
        dirty |= self.epochs.truncate_from_end(self.log_end_offset);
        dirty |= self.epochs.truncate_from_start(self.log_start_offset);
        if dirty {
            self.persist_epochs()?;
        }
        Ok(())
    }

    fn rebuild_epochs(&self) -> Result<LeaderEpochCache, LogError> {
        let mut cache = LeaderEpochCache::default();
        for seg in self.segments.values() {
            seg.visit_headers_from(seg.base_offset(), |h| {
                cache.assign(h.partition_leader_epoch, h.base_offset);
            })?;
        }
        tracing::info!(dir = %self.dir.display(), entries = cache.entries().len(),
            "rebuilt leader epoch cache from the log");
        Ok(cache)
    }

    /// A new leader at `epoch` records that its epoch begins at the log end before it
    /// appends anything (as Kafka does on election), so a follower holding data of an
    /// epoch this replica never saw is told where its log diverged. No-op unless newer.
    pub fn begin_epoch(&mut self, epoch: i32) -> Result<(), LogError> {
        if !self.epochs.is_new_epoch(epoch) {
            return Ok(());
        }
        let before = self.epochs.clone();
        self.epochs.assign(epoch, self.log_end_offset);
        if let Err(e) = self.persist_epochs() {
            self.epochs = before;
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn persist_epochs(&self) -> Result<(), LogError> {
        write(&self.dir, &self.epochs)
            .map_err(|e| LogError::io(format!("write {}", self.dir.join(FILE_NAME).display()), e))
    }

    /// Adds the entries that `headers` (about to be appended) start, persisting them before
    /// the data lands. On a write failure the cache is left as it was.
    pub(super) fn note_epochs(&mut self, headers: &[BatchHeader]) -> Result<(), LogError> {
        // The common case, no new epoch, costs a comparison per batch and no allocation.
        if !headers
            .iter()
            .any(|h| self.epochs.is_new_epoch(h.partition_leader_epoch))
        {
            return Ok(());
        }
        let before = self.epochs.clone();
        for h in headers {
            self.epochs.assign(h.partition_leader_epoch, h.base_offset);
        }
        if let Err(e) = self.persist_epochs() {
            self.epochs = before;
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        LeaderEpochCache::from_entries(entries.to_vec()).unwrap()
    }

    #[test]
    fn assign_adds_only_newer_epochs() {
        let mut c = LeaderEpochCache::default();
        assert!(!c.assign(-1, 0));
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 5));
        assert!(c.assign(2, 7));
        assert!(!c.assign(1, 9));
        assert!(c.assign(5, 12));
        assert_eq!(c.entries(), &[(0, 0), (2, 7), (5, 12)]);
        assert_eq!(c.latest_epoch(), Some(5));
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let c = cache(&[(1, 0), (2, 7), (5, 12)]);
        // Below every cached epoch: itself and the first epoch's start (Kafka).
        assert_eq!(c.end_offset_for(0, 20), Some((0, 0)));
        assert_eq!(c.end_offset_for(-1, 20), None);
        assert_eq!(c.end_offset_for(1, 20), Some((1, 7)));
        assert_eq!(c.end_offset_for(2, 20), Some((2, 12)));
        assert_eq!(c.end_offset_for(3, 20), Some((2, 12)));
        assert_eq!(c.end_offset_for(5, 20), Some((5, 20)));
        // Above the latest: undefined.
        assert_eq!(c.end_offset_for(9, 20), None);
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, 20), None);
    }

    #[test]
    fn truncates_from_both_ends() {
        let mut c = cache(&[(1, 0), (2, 7), (5, 12)]);
        assert!(!c.truncate_from_end(13));
        assert!(c.truncate_from_end(12));
        assert_eq!(c.entries(), &[(1, 0), (2, 7)]);
        let mut c = cache(&[(1, 0), (2, 7), (5, 12)]);
        assert!(!c.truncate_from_start(0));
        assert!(c.truncate_from_start(9));
        assert_eq!(c.entries(), &[(2, 9), (5, 12)]);
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[(5, 12)]);
        assert!(!c.truncate_from_start(12));
        let mut c = cache(&[(1, 4)]);
        assert!(!c.truncate_from_start(2), "nothing below the start");
    }

    #[test]
    fn file_round_trips_and_rejects_malformed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let c = cache(&[(0, 0), (3, 100)]);
        write(dir.path(), &c).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "0\n2\n0 0\n3 100\n"
        );
        assert_eq!(read(dir.path()).unwrap(), Some(c));
        assert!(!dir.path().join("leader-epoch-checkpoint.tmp").exists());
        assert!(parse("0\n0\n").unwrap().entries().is_empty());
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0 0\n",
            "0\n1\nx 0\n",
            "0\n2\n3 0\n2 5\n",
            "0\n2\n1 5\n2 5\n",
            "0\n1\n0 0\n9 9\n",
            "0\n1\n-1 0\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        remove(dir.path()).unwrap();
        remove(dir.path()).unwrap();
        assert!(read(dir.path()).unwrap().is_none());
    }
}
