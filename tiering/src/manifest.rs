//! The remote manifest of one partition: which offset ranges live in which objects.
//!
//! A plain value (serde) that the broker keeps in its replicated metadata; every function is
//! pure. Invariants, checked by [`RemoteManifest::validate`] and kept by every mutation:
//! segments belong to the manifest's partition, are sorted by offset, contiguous (each starts
//! right after the previous one ends: no gap, no overlap), each key is the one
//! [`crate::store::segment_key`] gives for its range, and leader epochs never go down.

use serde::{Deserialize, Serialize};

use crate::store::segment_key;
use crate::table::Summary;

/// One archived segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegment {
    pub topic: String,
    pub partition: i32,
    /// Base offset of the first batch.
    pub first_offset: i64,
    /// Last offset of the last batch (inclusive).
    pub last_offset: i64,
    /// Smallest and largest record timestamp, as consumers see them.
    pub min_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    /// Bytes of the object in the store.
    pub size_bytes: u64,
    /// Bytes of the record batches it archives, as they were in the local segment: what
    /// `retention.bytes` counts, in the same unit as the local log. 0 in entries written
    /// before this field existed (their object size is used then).
    #[serde(default)]
    pub segment_bytes: u64,
    pub object_key: String,
    /// The newest leader epoch among the segment's batches.
    pub leader_epoch: i32,
    pub records: u64,
}

impl RemoteSegment {
    /// The entry for a segment converted to `summary` and uploaded to its canonical key.
    pub fn from_summary(
        topic: &str,
        partition: i32,
        summary: &Summary,
    ) -> Result<RemoteSegment, crate::store::StoreError> {
        let key = segment_key(topic, partition, summary.first_offset, summary.last_offset)?;
        Ok(RemoteSegment {
            topic: topic.to_owned(),
            partition,
            first_offset: summary.first_offset,
            last_offset: summary.last_offset,
            min_timestamp_ms: summary.min_timestamp,
            max_timestamp_ms: summary.max_timestamp,
            size_bytes: summary.parquet_bytes,
            segment_bytes: summary.segment_bytes,
            object_key: key.to_string(),
            leader_epoch: summary.leader_epoch(),
            records: summary.records,
        })
    }

    /// The bytes retention counts: the archived batches' size in the log's own unit.
    pub fn log_bytes(&self) -> u64 {
        if self.segment_bytes > 0 {
            self.segment_bytes
        } else {
            self.size_bytes
        }
    }

    pub fn contains(&self, offset: i64) -> bool {
        self.first_offset <= offset && offset <= self.last_offset
    }
}

/// Kafka's `retention.ms` and `retention.bytes`, which cover both tiers; -1 is "forever".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub retention_ms: i64,
    pub retention_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("segment {first_offset}..={last_offset} belongs to {topic}-{partition}")]
    WrongPartition {
        topic: String,
        partition: i32,
        first_offset: i64,
        last_offset: i64,
    },
    #[error("segment {first_offset}..={last_offset} has an empty or negative range")]
    BadRange { first_offset: i64, last_offset: i64 },
    #[error("segment starting at {first_offset} has min timestamp {min} after max {max}")]
    BadTimestamps {
        first_offset: i64,
        min: i64,
        max: i64,
    },
    #[error("segment starting at {next_first} does not follow the previous one, which ends at {previous_last}")]
    NotContiguous { previous_last: i64, next_first: i64 },
    #[error("segment starting at {first_offset} has key {found}, expected {expected}")]
    KeyMismatch {
        first_offset: i64,
        found: String,
        expected: String,
    },
    #[error("segment starting at {first_offset} has leader epoch {epoch}, below the previous {previous}")]
    EpochRegression {
        first_offset: i64,
        epoch: i32,
        previous: i32,
    },
}

/// The archived segments of one partition, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteManifest {
    pub topic: String,
    pub partition: i32,
    pub segments: Vec<RemoteSegment>,
}

impl RemoteManifest {
    pub fn new(topic: impl Into<String>, partition: i32) -> RemoteManifest {
        RemoteManifest {
            topic: topic.into(),
            partition,
            segments: Vec::new(),
        }
    }

    /// First offset held remotely.
    pub fn start_offset(&self) -> Option<i64> {
        self.segments.first().map(|s| s.first_offset)
    }

    /// The offset after the last one held remotely: where the next upload must start.
    pub fn end_offset(&self) -> Option<i64> {
        self.segments.last().map(|s| s.last_offset + 1)
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes).sum()
    }

    /// Adds the next segment; refused (and the manifest unchanged) unless the result is valid.
    pub fn push(&mut self, segment: RemoteSegment) -> Result<(), ManifestError> {
        self.check_segment(&segment)?;
        if let Some(last) = self.segments.last() {
            check_follows(last, &segment)?;
        }
        self.segments.push(segment);
        debug_assert_eq!(self.validate(), Ok(()));
        Ok(())
    }

    /// Removes the `count` oldest segments (after their objects were deleted, or before: the
    /// manifest is the truth, an object it no longer names is garbage).
    pub fn remove_oldest(&mut self, count: usize) -> Vec<RemoteSegment> {
        let count = count.min(self.segments.len());
        self.segments.drain(..count).collect()
    }

    /// The segment holding `offset`.
    pub fn locate(&self, offset: i64) -> Option<&RemoteSegment> {
        let i = self.segments.partition_point(|s| s.last_offset < offset);
        self.segments.get(i).filter(|s| s.contains(offset))
    }

    /// The first segment, in offset order, with a record at or after `timestamp_ms`: where
    /// ListOffsets by timestamp starts looking. Timestamps need not grow with offsets
    /// (CreateTime), so this is a scan by max timestamp, as Kafka's time index does.
    pub fn locate_timestamp(&self, timestamp_ms: i64) -> Option<&RemoteSegment> {
        self.segments
            .iter()
            .find(|s| s.max_timestamp_ms >= timestamp_ms)
    }

    /// The oldest segments that retention removes, as a prefix of `segments`.
    ///
    /// By time: a segment whose newest record is older than `retention_ms`. By size: while the
    /// partition (these segments' log bytes plus `local_only_bytes`, the local data not
    /// archived yet) exceeds `retention_bytes` by at least a whole segment. Stops at the first segment that
    /// neither rule removes, as Kafka does, so the remote log stays contiguous.
    pub fn expired(
        &self,
        now_ms: i64,
        retention: Retention,
        local_only_bytes: u64,
    ) -> &[RemoteSegment] {
        let mut excess = if retention.retention_bytes < 0 {
            None
        } else {
            let archived: u64 = self.segments.iter().map(RemoteSegment::log_bytes).sum();
            let total = archived.saturating_add(local_only_bytes);
            Some(total.saturating_sub(retention.retention_bytes as u64))
        };
        let mut count = 0;
        for s in &self.segments {
            let by_time = retention.retention_ms >= 0
                && now_ms.saturating_sub(s.max_timestamp_ms) > retention.retention_ms;
            let by_size = excess.is_some_and(|e| e >= s.log_bytes());
            if !(by_time || by_size) {
                break;
            }
            if let Some(e) = excess.as_mut() {
                *e = e.saturating_sub(s.log_bytes());
            }
            count += 1;
        }
        &self.segments[..count]
    }

    /// Checks every invariant listed in the module doc.
    pub fn validate(&self) -> Result<(), ManifestError> {
        for (i, s) in self.segments.iter().enumerate() {
            self.check_segment(s)?;
            if i > 0 {
                check_follows(&self.segments[i - 1], s)?;
            }
        }
        Ok(())
    }

    fn check_segment(&self, s: &RemoteSegment) -> Result<(), ManifestError> {
        if s.topic != self.topic || s.partition != self.partition {
            return Err(ManifestError::WrongPartition {
                topic: s.topic.clone(),
                partition: s.partition,
                first_offset: s.first_offset,
                last_offset: s.last_offset,
            });
        }
        if s.first_offset < 0 || s.last_offset < s.first_offset {
            return Err(ManifestError::BadRange {
                first_offset: s.first_offset,
                last_offset: s.last_offset,
            });
        }
        if s.min_timestamp_ms > s.max_timestamp_ms {
            return Err(ManifestError::BadTimestamps {
                first_offset: s.first_offset,
                min: s.min_timestamp_ms,
                max: s.max_timestamp_ms,
            });
        }
        let expected = segment_key(&s.topic, s.partition, s.first_offset, s.last_offset)
            .map(|k| k.to_string())
            .unwrap_or_default();
        if s.object_key != expected {
            return Err(ManifestError::KeyMismatch {
                first_offset: s.first_offset,
                found: s.object_key.clone(),
                expected,
            });
        }
        Ok(())
    }
}

fn check_follows(previous: &RemoteSegment, next: &RemoteSegment) -> Result<(), ManifestError> {
    if previous.last_offset.checked_add(1) != Some(next.first_offset) {
        return Err(ManifestError::NotContiguous {
            previous_last: previous.last_offset,
            next_first: next.first_offset,
        });
    }
    if next.leader_epoch < previous.leader_epoch {
        return Err(ManifestError::EpochRegression {
            first_offset: next.first_offset,
            epoch: next.leader_epoch,
            previous: previous.leader_epoch,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(first: i64, last: i64, max_ts: i64, size: u64) -> RemoteSegment {
        RemoteSegment {
            topic: "t".into(),
            partition: 0,
            first_offset: first,
            last_offset: last,
            min_timestamp_ms: max_ts - 10,
            max_timestamp_ms: max_ts,
            size_bytes: size,
            segment_bytes: 0,
            object_key: segment_key("t", 0, first, last).unwrap().to_string(),
            leader_epoch: 1,
            records: (last - first + 1) as u64,
        }
    }

    fn manifest() -> RemoteManifest {
        let mut m = RemoteManifest::new("t", 0);
        m.push(seg(10, 19, 1_000, 100)).unwrap();
        m.push(seg(20, 29, 900, 100)).unwrap();
        m.push(seg(30, 49, 3_000, 200)).unwrap();
        m
    }

    #[test]
    fn locate_by_offset() {
        let m = manifest();
        assert_eq!(m.locate(9), None);
        assert_eq!(m.locate(10).unwrap().first_offset, 10);
        assert_eq!(m.locate(19).unwrap().first_offset, 10);
        assert_eq!(m.locate(20).unwrap().first_offset, 20);
        assert_eq!(m.locate(49).unwrap().first_offset, 30);
        assert_eq!(m.locate(50), None);
        assert_eq!(RemoteManifest::new("t", 0).locate(0), None);
        assert_eq!(m.start_offset(), Some(10));
        assert_eq!(m.end_offset(), Some(50));
        assert_eq!(m.size_bytes(), 400);
    }

    #[test]
    fn locate_by_timestamp_uses_max_timestamps_in_offset_order() {
        let m = manifest();
        assert_eq!(m.locate_timestamp(0).unwrap().first_offset, 10);
        assert_eq!(m.locate_timestamp(1_000).unwrap().first_offset, 10);
        // The second segment's timestamps are older than the first's: skipped.
        assert_eq!(m.locate_timestamp(1_001).unwrap().first_offset, 30);
        assert_eq!(m.locate_timestamp(3_001), None);
    }

    #[test]
    fn push_refuses_gaps_overlaps_and_strangers() {
        let mut m = manifest();
        assert_eq!(
            m.push(seg(51, 60, 0, 1)),
            Err(ManifestError::NotContiguous {
                previous_last: 49,
                next_first: 51
            })
        );
        assert!(matches!(
            m.push(seg(45, 60, 0, 1)),
            Err(ManifestError::NotContiguous { .. })
        ));
        let mut other = seg(50, 60, 0, 1);
        other.partition = 1;
        assert!(matches!(
            m.push(other),
            Err(ManifestError::WrongPartition { .. })
        ));
        let mut wrong_key = seg(50, 60, 0, 1);
        wrong_key.object_key = "elsewhere.parquet".into();
        assert!(matches!(
            m.push(wrong_key),
            Err(ManifestError::KeyMismatch { .. })
        ));
        let mut old_epoch = seg(50, 60, 0, 1);
        old_epoch.leader_epoch = 0;
        assert!(matches!(
            m.push(old_epoch),
            Err(ManifestError::EpochRegression { .. })
        ));
        assert_eq!(m, manifest(), "refused pushes leave the manifest unchanged");
        m.push(seg(50, 60, 0, 1)).unwrap();
    }

    #[test]
    fn validate_finds_broken_manifests() {
        assert_eq!(manifest().validate(), Ok(()));
        let mut m = manifest();
        m.segments.swap(0, 1);
        assert!(matches!(
            m.validate(),
            Err(ManifestError::NotContiguous { .. })
        ));
        let mut m = manifest();
        m.segments[1].min_timestamp_ms = m.segments[1].max_timestamp_ms + 1;
        assert!(matches!(
            m.validate(),
            Err(ManifestError::BadTimestamps { .. })
        ));
        let mut m = manifest();
        m.segments.remove(1);
        assert!(matches!(
            m.validate(),
            Err(ManifestError::NotContiguous { .. })
        ));
        let mut m = manifest();
        m.segments[0].last_offset = 5;
        assert!(matches!(m.validate(), Err(ManifestError::BadRange { .. })));
    }

    #[test]
    fn retention_by_time_takes_a_prefix() {
        let m = manifest();
        let keep_forever = Retention {
            retention_ms: -1,
            retention_bytes: -1,
        };
        assert!(m.expired(i64::MAX, keep_forever, 0).is_empty());
        let r = Retention {
            retention_ms: 1_000,
            retention_bytes: -1,
        };
        // now - 1000 = 1500: the first segment (max 1000) and second (900) are older, the
        // third (3000) is not.
        assert_eq!(m.expired(2_500, r, 0).len(), 2);
        // At exactly the retention the segment stays (Kafka: strictly older expires).
        assert_eq!(m.expired(2_000, r, 0).len(), 0);
        assert_eq!(m.expired(2_001, r, 0).len(), 2);
        assert_eq!(m.expired(1_000, r, 0).len(), 0);
        // A young first segment shields older ones after it.
        let mut m2 = manifest();
        m2.segments[0].max_timestamp_ms = 5_000;
        assert_eq!(m2.expired(2_500, r, 0).len(), 0);
    }

    #[test]
    fn retention_by_size_counts_both_tiers() {
        let m = manifest(); // 100 + 100 + 200 remote
        let r = |bytes| Retention {
            retention_ms: -1,
            retention_bytes: bytes,
        };
        assert_eq!(m.expired(0, r(400), 0).len(), 0);
        assert_eq!(m.expired(0, r(300), 0).len(), 1);
        assert_eq!(m.expired(0, r(399), 0).len(), 0, "only whole segments go");
        assert_eq!(m.expired(0, r(300), 100).len(), 2);
        assert_eq!(m.expired(0, r(0), 0).len(), 3);
        assert_eq!(m.expired(0, r(0), 1_000).len(), 3);
    }

    #[test]
    fn remove_oldest_and_serde() {
        let mut m = manifest();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<RemoteManifest>(&json).unwrap(), m);
        let removed = m.remove_oldest(2);
        assert_eq!(removed.len(), 2);
        assert_eq!(m.start_offset(), Some(30));
        assert_eq!(m.validate(), Ok(()));
        assert_eq!(m.remove_oldest(10).len(), 1);
        assert_eq!(m.end_offset(), None);
    }
}
