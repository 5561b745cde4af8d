//! Opening a partition directory: finding its segments, sweeping what interrupted writes
//! and deletions left behind, recovering the active segment, reading the log start
//! checkpoint and rebuilding the producer state and the leader epoch cache.
//!
//! Invariant on return: the segments are contiguous (anything else is reported as a
//! corrupt segment, not repaired), the log start lies within them, and no sealed segment
//! lies wholly below the log start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::PartitionLog;
use crate::log::checkpoint;
use crate::log::segment::{
    parse_file_name, Segment, DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use crate::log::{LogConfig, LogError};

pub(super) fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Lists segment base offsets in `dir`, removing temp files and index files whose log is
/// gone (both are what an interrupted write or deletion leaves behind).
fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    let ctx = || format!("list {}", dir.display());
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(ctx(), e))? {
        let path = entry.map_err(|e| LogError::io(ctx(), e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(checkpoint::TEMP_SUFFIX) || name.ends_with(DELETED_SUFFIX) {
            remove_leftover(&path)?;
            continue;
        }
        match parse_file_name(name) {
            Some((base, LOG_SUFFIX)) => logs.push(base),
            Some((base, INDEX_SUFFIX | TIME_INDEX_SUFFIX)) => indexes.push((base, path)),
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            remove_leftover(&path)?;
        }
    }
    Ok(logs)
}

fn remove_leftover(path: &Path) -> Result<(), LogError> {
    tracing::info!(path = %path.display(), "removing leftover file");
    match std::fs::remove_file(path) {
        // Retired files may be unlinked by the retention that retired them meanwhile.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(LogError::io(format!("remove {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

impl PartitionLog {
    /// Opens (creating if needed) the partition log in `dir`. The active segment is fully
    /// recovered: a torn or corrupt tail is cut off. Sealed segments were fsynced when
    /// sealed, so only their indexes are checked (and rebuilt if bad).
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<PartitionLog, LogError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| LogError::io(format!("create {}", dir.display()), e))?;
        let bases = list_segments(&dir)?;
        let checkpoint = checkpoint::read(&dir).unwrap_or_else(|e| {
            tracing::warn!(dir = %dir.display(), error = %e, "ignoring log start checkpoint");
            None
        });
        let interval = config.index_interval_bytes;
        let mut segments = BTreeMap::new();
        if let Some((&last, sealed)) = bases.split_last() {
            for &base in sealed {
                segments.insert(base, Segment::open_sealed(&dir, base, interval)?);
            }
            // Recovery logs what it cut, with the segment's path.
            let (active, _truncated) = Segment::open_active(&dir, last, interval)?;
            segments.insert(last, active);
        } else {
            let base = checkpoint.unwrap_or(0);
            segments.insert(
                base,
                Segment::create(&dir, base, interval, wall_clock_ms())?,
            );
            checkpoint::sync_dir(&dir)
                .map_err(|e| LogError::io(format!("sync {}", dir.display()), e))?;
        }
        check_contiguous(&segments)?;
        let (Some(&first_base), Some(active)) = (segments.keys().next(), segments.values().last())
        else {
            unreachable!("open always leaves at least one segment");
        };
        let log_end_offset = active.next_offset();
        let mut log_start_offset = checkpoint.unwrap_or(first_base).max(first_base);
        if log_start_offset > log_end_offset {
            // The checkpoint outlived data lost in a crash; offsets past the recovered end
            // do not exist, so the start cannot be there either.
            tracing::warn!(
                dir = %dir.display(),
                log_start_offset,
                log_end_offset,
                "log start checkpoint is past the log end"
            );
            log_start_offset = log_end_offset;
        }
        let mut log = PartitionLog {
            dir,
            config,
            segments,
            log_start_offset,
            log_end_offset,
            producers: Default::default(),
            epochs: Default::default(),
        };
        log.delete_segments_below_start()?;
        log.load_producer_state(wall_clock_ms())?;
        log.load_epochs()?;
        log.check();
        Ok(log)
    }
}

/// Offsets must run on from one segment to the next; anything else means files were
/// lost or damaged outside what recovery repairs.
fn check_contiguous(segments: &BTreeMap<i64, Segment>) -> Result<(), LogError> {
    let mut prev: Option<&Segment> = None;
    for seg in segments.values() {
        if let Some(p) = prev.filter(|p| p.next_offset() != seg.base_offset()) {
            return Err(LogError::CorruptSegment {
                path: seg.log_path().to_path_buf(),
                detail: format!(
                    "previous segment ends at offset {}, this one starts at {}",
                    p.next_offset(),
                    seg.base_offset()
                ),
            });
        }
        prev = Some(seg);
    }
    Ok(())
}
