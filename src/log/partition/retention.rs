//! Moving the log start forward: DeleteRecords and time/size retention.
//!
//! Invariant: the new log start is checkpointed (durably) before any segment file is
//! removed, so a crash in between leaves segments below the start, which the next open
//! deletes, and never a log start below the data.
//!
//! Segments are taken out of the log in two steps, as Kafka does: under the caller's lock
//! their files are only renamed `*.deleted` ([`Retired`], 0.05 ms for a 1 GiB file on the
//! benchmark machine); unlinking them (200 ms for the same file with its pages cached, time
//! appends would wait) happens after the lock is released ([`Retired::delete`]; for
//! DeleteRecords on the segment-deleting thread, [`Retired::delete_in_background`]), each log
//! file first cut down a paced 8 MiB at a time when nothing reads it any more (freeing 1 GiB
//! at once held up other files' fsyncs for 60-90 ms; see [`cut_down`]), and the next open
//! sweeps up any left behind.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, OnceLock};

use super::PartitionLog;
use crate::log::checkpoint;
use crate::log::policy::{retention_plan, SegmentSummary};
use crate::log::segment::{cut_down, remove_retired, Segment};
use crate::log::LogError;

/// Segments taken out of a log whose files are still on disk, renamed `*.deleted`.
#[derive(Debug)]
#[must_use = "the retired files stay on disk until deleted"]
pub struct Retired {
    dir: PathBuf,
    files: Vec<PathBuf>,
    /// Each retired segment's log file, with its path, to cut down before unlinking.
    logs: Vec<(Arc<File>, PathBuf)>,
}

impl Retired {
    fn none(dir: PathBuf) -> Self {
        Retired {
            dir,
            files: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// How many segments were retired.
    pub fn segments(&self) -> usize {
        self.logs.len()
    }

    /// Unlinks the files (every one is tried; the logs cut down first, see [`cut_down`]),
    /// then syncs the directory. Returns how many segments were deleted.
    pub fn delete(self) -> Result<usize, LogError> {
        let n = self.segments();
        if self.files.is_empty() {
            return Ok(n);
        }
        for (log, path) in self.logs {
            cut_down(log, &path);
        }
        remove_retired(&self.files)?;
        checkpoint::sync_dir(&self.dir)
            .map_err(|e| LogError::io(format!("sync {}", self.dir.display()), e))?;
        Ok(n)
    }

    /// [`delete`](Self::delete), a failure logged (the next open of the log removes what is
    /// left).
    fn delete_logged(self) {
        let dir = self.dir.clone();
        if let Err(e) = self.delete() {
            tracing::warn!(dir = %dir.display(), error = %e,
                "deleting retired segments failed; the next open of the log removes what is left");
        }
    }

    /// [`delete`](Self::delete) on the broker's segment-deleting thread, for a caller that
    /// answers a client and should not wait out the paced cut-down (~1.5 s per GiB on the
    /// benchmark machine): DeleteRecords answers once the log start has moved, as Kafka's
    /// does (it deletes the files `file.delete.delay.ms` later). One thread takes the sets in
    /// turn, so two partitions' discards never compete. A failure is logged; files a crash
    /// leaves behind are swept when the log next opens. Returns how many segments were
    /// retired.
    pub fn delete_in_background(self) -> usize {
        static QUEUE: OnceLock<Option<mpsc::Sender<Retired>>> = OnceLock::new();
        let n = self.segments();
        if self.files.is_empty() {
            return n;
        }
        let queue = QUEUE.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Retired>();
            std::thread::Builder::new()
                .name("segment-delete".into())
                .spawn(move || rx.into_iter().for_each(Retired::delete_logged))
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "cannot start the segment-deleting thread; deleting in the caller");
                })
                .ok()
                .map(|_| tx)
        });
        match queue {
            Some(tx) => {
                if let Err(mpsc::SendError(retired)) = tx.send(self) {
                    retired.delete_logged();
                }
            }
            None => self.delete_logged(),
        }
        n
    }
}

impl PartitionLog {
    /// DeleteRecords: moves the log start up to `offset` (durably) and deletes segments
    /// wholly below it. The caller checks `offset` against the high watermark; here it
    /// may not pass the log end. Returns the new log start.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let (start, retired) = self.retire_records_before(offset)?;
        retired.delete()?;
        Ok(start)
    }

    /// [`PartitionLog::delete_records_before`], leaving the segments' files to delete.
    pub fn retire_records_before(&mut self, offset: i64) -> Result<(i64, Retired), LogError> {
        if offset < 0 || offset > self.log_end_offset {
            return Err(self.out_of_range(offset));
        }
        let mut retired = Retired::none(self.dir.clone());
        if offset > self.log_start_offset {
            self.set_log_start(offset)?;
            retired = self.retire_segments_below_start()?;
            self.check();
        }
        Ok((self.log_start_offset, retired))
    }

    fn set_log_start(&mut self, offset: i64) -> Result<(), LogError> {
        checkpoint::write(&self.dir, offset)
            .map_err(|e| LogError::io(format!("checkpoint {}", self.dir.display()), e))?;
        self.log_start_offset = offset;
        Ok(())
    }

    pub(super) fn delete_segments_below_start(&mut self) -> Result<(), LogError> {
        self.retire_segments_below_start()?.delete().map(drop)
    }

    fn retire_segments_below_start(&mut self) -> Result<Retired, LogError> {
        let active = self.active().base_offset();
        let doomed: Vec<i64> = self
            .segments
            .values()
            .take_while(|s| s.base_offset() != active && s.next_offset() <= self.log_start_offset)
            .map(Segment::base_offset)
            .collect();
        self.retire_segments(&doomed)
    }

    /// Drops the segments from the log and retires their files. Every segment is retired
    /// even if one fails, and the in-memory log is consistent either way: files left behind
    /// lie below the log start and are swept on the next open.
    fn retire_segments(&mut self, bases: &[i64]) -> Result<Retired, LogError> {
        let mut retired = Retired::none(self.dir.clone());
        if bases.is_empty() {
            return Ok(retired);
        }
        let doomed: Vec<Segment> = bases
            .iter()
            .filter_map(|b| self.segments.remove(b))
            .collect();
        let mut first_error = None;
        for seg in doomed {
            tracing::info!(path = %seg.log_path().display(), "deleting segment");
            match seg.retire() {
                Ok((files, log)) => {
                    retired.logs.push((log, files[0].clone()));
                    retired.files.extend(files);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "failed to delete segment files");
                    first_error.get_or_insert(e);
                }
            }
        }
        self.delete_snapshots_of_deleted_segments();
        match first_error {
            Some(e) => {
                // The segments that were retired go now (or on the next open).
                let _ = remove_retired(&retired.files);
                Err(e)
            }
            None => Ok(retired),
        }
    }

    /// Deletes old sealed segments per [`retention_plan`], never the active one nor any
    /// segment reaching `high_watermark`, and moves the log start past them. Returns how
    /// many segments were deleted.
    pub fn apply_retention(
        &mut self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
        high_watermark: i64,
    ) -> Result<usize, LogError> {
        self.retire_by_retention(now_ms, retention_ms, retention_bytes, high_watermark)?
            .delete()
    }

    /// [`PartitionLog::apply_retention`], leaving the segments' files to delete.
    pub fn retire_by_retention(
        &mut self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
        high_watermark: i64,
    ) -> Result<Retired, LogError> {
        let summaries: Vec<SegmentSummary> = self
            .segments
            .values()
            .map(|s| SegmentSummary {
                base_offset: s.base_offset(),
                next_offset: s.next_offset(),
                size_bytes: s.size_bytes(),
                largest_timestamp_ms: s
                    .max_timestamp()
                    .map(|(_, ts)| ts)
                    .filter(|ts| *ts >= 0)
                    .unwrap_or(s.last_modified_ms()),
            })
            .collect();
        let plan = retention_plan(
            &summaries,
            now_ms,
            retention_ms,
            retention_bytes,
            high_watermark,
        );
        if plan.is_empty() {
            return Ok(Retired::none(self.dir.clone()));
        }
        // The plan is a prefix of the sealed segments, so a segment always follows it.
        let Some(new_start) = summaries.get(plan.len()).map(|s| s.base_offset) else {
            return Ok(Retired::none(self.dir.clone()));
        };
        if new_start > self.log_start_offset {
            self.set_log_start(new_start)?;
        }
        let retired = self.retire_segments(&plan)?;
        self.check();
        Ok(retired)
    }
}
