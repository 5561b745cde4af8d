//! Moving the log start forward: DeleteRecords and time/size retention.
//!
//! Invariant: the new log start is checkpointed (durably) before any segment file is
//! removed, so a crash in between leaves segments below the start, which the next open
//! deletes, and never a log start below the data.

use super::PartitionLog;
use crate::log::checkpoint;
use crate::log::policy::{retention_plan, SegmentSummary};
use crate::log::segment::Segment;
use crate::log::LogError;

impl PartitionLog {
    /// DeleteRecords: moves the log start up to `offset` (durably) and deletes segments
    /// wholly below it. The caller checks `offset` against the high watermark; here it
    /// may not pass the log end. Returns the new log start.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset < 0 || offset > self.log_end_offset {
            return Err(self.out_of_range(offset));
        }
        if offset > self.log_start_offset {
            self.set_log_start(offset)?;
            self.delete_segments_below_start()?;
            self.check();
        }
        Ok(self.log_start_offset)
    }

    fn set_log_start(&mut self, offset: i64) -> Result<(), LogError> {
        checkpoint::write(&self.dir, offset)
            .map_err(|e| LogError::io(format!("checkpoint {}", self.dir.display()), e))?;
        self.log_start_offset = offset;
        Ok(())
    }

    pub(super) fn delete_segments_below_start(&mut self) -> Result<(), LogError> {
        let active = self.active().base_offset();
        let doomed: Vec<i64> = self
            .segments
            .values()
            .take_while(|s| s.base_offset() != active && s.next_offset() <= self.log_start_offset)
            .map(Segment::base_offset)
            .collect();
        self.delete_segments(&doomed)
    }

    /// Drops the segments from the log, then deletes their files. Every file deletion is
    /// attempted even if one fails, and the in-memory log is consistent either way: files
    /// left behind lie below the log start and are swept on the next open.
    fn delete_segments(&mut self, bases: &[i64]) -> Result<(), LogError> {
        if bases.is_empty() {
            return Ok(());
        }
        let doomed: Vec<Segment> = bases
            .iter()
            .filter_map(|b| self.segments.remove(b))
            .collect();
        let mut first_error = None;
        for seg in doomed {
            tracing::info!(path = %seg.log_path().display(), "deleting segment");
            if let Err(e) = seg.delete() {
                tracing::warn!(error = %e, "failed to delete segment files");
                first_error.get_or_insert(e);
            }
        }
        self.delete_snapshots_of_deleted_segments();
        match first_error {
            Some(e) => Err(e),
            None => self.sync_dir(),
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
            return Ok(0);
        }
        // The plan is a prefix of the sealed segments, so a segment always follows it.
        let Some(new_start) = summaries.get(plan.len()).map(|s| s.base_offset) else {
            return Ok(0);
        };
        if new_start > self.log_start_offset {
            self.set_log_start(new_start)?;
        }
        self.delete_segments(&plan)?;
        self.check();
        Ok(plan.len())
    }
}
