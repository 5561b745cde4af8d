//! Serving archived offsets: Fetch and ListOffsets below the local log start.
//!
//! A read finds the row group holding the offset (from the object's cached footer), takes the
//! rebuilt batches of that group from the cache (or the store on a miss), and returns whole
//! batches from the one holding the offset, up to `max_bytes` (at least one batch, KIP-74).
//! The next row groups are then loaded in the background, so a sequential reader finds them
//! cached.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tiering::RemoteSegment;
use uuid::Uuid;

use super::cache::Located;

use super::{TierError, TierMetrics, Tiering};
use crate::cluster::RemoteLog;
use crate::log::{records, BatchIter, LogError};

impl Tiering {
    /// Record batches of `segment` from `offset`, up to `max_bytes` (at least one whole
    /// batch). `next` is the following segment, read ahead when this one is nearly done.
    pub async fn read(
        self: &Arc<Self>,
        topic_id: &Uuid,
        segment: &RemoteSegment,
        next: Option<&RemoteSegment>,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, TierError> {
        let started = Instant::now();
        let result = self
            .read_inner(topic_id, segment, next, offset, max_bytes)
            .await;
        let ms = started.elapsed().as_millis() as u64;
        let m = &self.metrics;
        TierMetrics::add(&m.remote_reads_total, 1);
        TierMetrics::add(&m.remote_read_ms_total, ms);
        m.remote_read_ms_max.fetch_max(ms, Ordering::Relaxed);
        if let Err(e) = &result {
            TierMetrics::add(&m.remote_read_errors_total, 1);
            tracing::error!(
                partition = %format!("{}-{}", segment.topic, segment.partition),
                object = %segment.object_key, offset, error = %e,
                "remote read failed; the partition's archived offsets cannot be served"
            );
        }
        result
    }

    async fn read_inner(
        self: &Arc<Self>,
        topic_id: &Uuid,
        segment: &RemoteSegment,
        next: Option<&RemoteSegment>,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, TierError> {
        let located = self.cache.layout(&self.store, topic_id, segment).await?;
        let Some(first) = located.layout.group_for_offset(offset) else {
            return Ok(Bytes::new());
        };
        let mut out = Vec::new();
        let mut group = first;
        loop {
            let bytes = self.group(&located, group).await?;
            let complete =
                append_batches(&bytes, offset, max_bytes, &mut out, &segment.object_key)?;
            group += 1;
            if !complete || group >= located.layout.groups.len() || out.len() >= max_bytes {
                break;
            }
        }
        self.prefetch(*topic_id, located, group, next.cloned());
        Ok(Bytes::from(out))
    }

    async fn group(&self, located: &Located, group: usize) -> Result<Bytes, TierError> {
        match self.cache.group(&self.store, located, group).await {
            Ok((bytes, hit)) => {
                let counter = if hit {
                    &self.metrics.cache_hits
                } else {
                    &self.metrics.cache_misses
                };
                TierMetrics::add(counter, 1);
                Ok(bytes)
            }
            Err(e) => {
                // The object may have been replaced or deleted: do not keep its footer.
                self.cache.forget(located);
                Err(e)
            }
        }
    }

    /// Loads the next row groups (and the next object's first) into the cache in the
    /// background.
    fn prefetch(
        self: &Arc<Self>,
        topic_id: Uuid,
        located: Located,
        from: usize,
        next: Option<RemoteSegment>,
    ) {
        let ahead = self.config.prefetch_row_groups;
        if ahead == 0 {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let groups = located.layout.groups.len();
            for g in from..(from + ahead).min(groups) {
                if this.cache.group(&this.store, &located, g).await.is_err() {
                    return;
                }
            }
            if from + ahead > groups {
                if let Some(next) = next {
                    if let Ok(next_located) = this.cache.layout(&this.store, &topic_id, &next).await
                    {
                        if !next_located.layout.groups.is_empty() {
                            let _ = this.cache.group(&this.store, &next_located, 0).await;
                        }
                    }
                }
            }
        });
    }

    /// ListOffsets by timestamp in the remote tier: (offset, timestamp) of the first record
    /// at or after `min_offset` whose timestamp reaches `ts`.
    pub async fn offset_for_timestamp(
        self: &Arc<Self>,
        topic_id: &Uuid,
        log: &RemoteLog,
        ts: i64,
        min_offset: i64,
    ) -> Result<Option<(i64, i64)>, TierError> {
        self.first_at_or_after(topic_id, &log.manifest.segments, ts, min_offset)
            .await
    }

    /// The first record at or after `min_offset` in `segments` (offset order) whose
    /// timestamp reaches `ts`.
    async fn first_at_or_after(
        self: &Arc<Self>,
        topic_id: &Uuid,
        segments: &[RemoteSegment],
        ts: i64,
        min_offset: i64,
    ) -> Result<Option<(i64, i64)>, TierError> {
        for segment in segments
            .iter()
            .filter(|s| s.last_offset >= min_offset && s.max_timestamp_ms >= ts)
        {
            let located = self.cache.layout(&self.store, topic_id, segment).await?;
            for (g, span) in located.layout.groups.iter().enumerate() {
                if span.last_offset < min_offset || span.max_timestamp < ts {
                    continue;
                }
                let bytes = self.group(&located, g).await?;
                for item in BatchIter::new(&bytes) {
                    let (header, range) = item.map_err(|e| corrupt(segment, e))?;
                    if header.last_offset() < min_offset || header.max_timestamp < ts {
                        continue;
                    }
                    let batch = bytes.slice(range);
                    if let Some(found) = records::first_at_or_after(&batch, ts, min_offset)
                        .map_err(|e| corrupt(segment, e))?
                    {
                        return Ok(Some(found));
                    }
                }
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP in the remote tier: the first record holding the largest
    /// timestamp at or after `min_offset`, with that timestamp.
    pub async fn max_timestamp(
        self: &Arc<Self>,
        topic_id: &Uuid,
        log: &RemoteLog,
        min_offset: i64,
    ) -> Result<Option<(i64, i64)>, TierError> {
        let mut best: Option<&RemoteSegment> = None;
        for s in log
            .manifest
            .segments
            .iter()
            .filter(|s| s.last_offset >= min_offset)
        {
            if best.is_none_or(|b| s.max_timestamp_ms > b.max_timestamp_ms) {
                best = Some(s);
            }
        }
        let Some(segment) = best else {
            return Ok(None);
        };
        let top = segment.max_timestamp_ms;
        Ok(self
            .first_at_or_after(topic_id, std::slice::from_ref(segment), top, min_offset)
            .await?
            .filter(|(_, ts)| *ts == top))
    }
}

fn corrupt(segment: &RemoteSegment, e: LogError) -> TierError {
    TierError::Object {
        key: segment.object_key.clone(),
        reason: e.to_string(),
    }
}

/// Appends the batches of `group` that end at or after `offset` to `out`, stopping before a
/// batch that would take `out` past `max_bytes` (the first batch always goes). Returns true
/// when every such batch was appended.
fn append_batches(
    group: &Bytes,
    offset: i64,
    max_bytes: usize,
    out: &mut Vec<u8>,
    key: &str,
) -> Result<bool, TierError> {
    for item in BatchIter::new(group) {
        let (header, range) = item.map_err(|e| TierError::Object {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        if header.last_offset() < offset {
            continue;
        }
        if !out.is_empty() && out.len() + range.len() > max_bytes {
            return Ok(false);
        }
        out.extend_from_slice(&group[range]);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testutil;

    #[test]
    fn append_batches_takes_whole_batches_from_the_offset() {
        let mut group = Vec::new();
        for base in [0i64, 10, 20] {
            let mut batch = testutil::batch_of(10, 100, 1_000);
            // The base offset is outside the CRC.
            batch[..8].copy_from_slice(&base.to_be_bytes());
            group.extend_from_slice(&batch);
        }
        let group = Bytes::from(group);
        let one = group.len() / 3;
        let mut out = Vec::new();
        assert!(append_batches(&group, 12, usize::MAX, &mut out, "k").unwrap());
        assert_eq!(out.len(), 2 * one, "the batch holding 12 and the next");
        let mut out = Vec::new();
        assert!(!append_batches(&group, 0, one + 1, &mut out, "k").unwrap());
        assert_eq!(out.len(), one, "stops before the batch that does not fit");
        let mut out = Vec::new();
        assert!(!append_batches(&group, 0, 1, &mut out, "k").unwrap());
        assert_eq!(out.len(), one, "the first batch always goes");
    }
}
