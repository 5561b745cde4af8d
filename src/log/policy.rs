//! Pure decisions about segments: when to roll the active one and which old ones retention
//! deletes. No I/O; the partition gathers the numbers and carries out the answer.
//!
//! Invariants: the active (last) segment is never planned for deletion, an empty segment is
//! never rolled (a batch larger than `segment_bytes` would otherwise roll forever), and
//! retention only deletes a prefix of the log, oldest first, lying wholly below the high
//! watermark so that no record a follower or consumer may still need is removed early.

/// Largest segment we let grow: file positions in the offset index are 32-bit, and Kafka
/// caps `segment.bytes` at `i32::MAX` too.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;
/// Largest offset distance from a segment's base that its indexes may record.
pub const MAX_RELATIVE_OFFSET: i64 = i32::MAX as i64;

/// The active segment's state and the append about to land in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollInput {
    pub segment_base_offset: i64,
    pub segment_size_bytes: u64,
    pub segment_created_at_ms: i64,
    /// Entries in the segment's larger index.
    pub index_entries: usize,
    pub incoming_bytes: u64,
    pub incoming_last_offset: i64,
    pub now_ms: i64,
}

/// Whether to seal the active segment and start a new one before appending.
pub fn should_roll(input: &RollInput, segment_bytes: u64, segment_ms: i64) -> bool {
    if input.segment_size_bytes == 0 {
        return false;
    }
    let limit = segment_bytes.min(MAX_SEGMENT_BYTES);
    let too_big = input
        .segment_size_bytes
        .saturating_add(input.incoming_bytes)
        > limit;
    let too_old = input.now_ms.saturating_sub(input.segment_created_at_ms) > segment_ms;
    let offsets_overflow = input
        .incoming_last_offset
        .saturating_sub(input.segment_base_offset)
        > MAX_RELATIVE_OFFSET;
    let index_full = input.index_entries >= super::index::MAX_INDEX_ENTRIES;
    too_big || too_old || offsets_overflow || index_full
}

/// What retention needs to know about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size_bytes: u64,
    /// Newest record timestamp in the segment, or its last-modified time if it has none.
    pub largest_timestamp_ms: i64,
}

/// Base offsets of the segments to delete, oldest first. `segments` is the whole log,
/// oldest first, the last entry being the active segment.
///
/// Time retention deletes segments whose newest record is more than `retention_ms` old,
/// stopping at the first that is not. Size retention then follows Kafka: a segment goes
/// only if the log stays at least `retention_bytes` without it, so `retention_bytes` is a
/// floor on what is kept rather than a ceiling. Either limit at -1 (any negative) is off.
pub fn retention_plan(
    segments: &[SegmentSummary],
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
    high_watermark: i64,
) -> Vec<i64> {
    let Some((_active, sealed)) = segments.split_last() else {
        return Vec::new();
    };
    let eligible = sealed
        .iter()
        .take_while(|s| s.next_offset <= high_watermark)
        .count();
    let sealed = &sealed[..eligible];
    let mut n = 0;
    if retention_ms >= 0 {
        n = sealed
            .iter()
            .take_while(|s| now_ms.saturating_sub(s.largest_timestamp_ms) > retention_ms)
            .count();
    }
    if retention_bytes >= 0 {
        let total: u64 = segments[n..].iter().map(|s| s.size_bytes).sum();
        let mut excess = total.saturating_sub(retention_bytes as u64);
        while let Some(s) = sealed.get(n) {
            if s.size_bytes > excess {
                break;
            }
            excess -= s.size_bytes;
            n += 1;
        }
    }
    sealed[..n].iter().map(|s| s.base_offset).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roll_input(size: u64, created: i64, now: i64) -> RollInput {
        RollInput {
            segment_base_offset: 100,
            segment_size_bytes: size,
            segment_created_at_ms: created,
            index_entries: 0,
            incoming_bytes: 100,
            incoming_last_offset: 200,
            now_ms: now,
        }
    }

    #[test]
    fn rolls_on_size() {
        assert!(!should_roll(&roll_input(900, 0, 0), 1000, 1000));
        assert!(should_roll(&roll_input(901, 0, 0), 1000, 1000));
        // An empty segment takes any batch, however large.
        assert!(!should_roll(&roll_input(0, 0, 0), 10, 1000));
        // segment_bytes beyond what 32-bit index positions allow is capped.
        assert!(should_roll(
            &roll_input(MAX_SEGMENT_BYTES - 50, 0, 0),
            u64::MAX,
            i64::MAX
        ));
    }

    #[test]
    fn rolls_on_age_offsets_and_index() {
        assert!(!should_roll(&roll_input(10, 0, 1000), 1 << 30, 1000));
        assert!(should_roll(&roll_input(10, 0, 1001), 1 << 30, 1000));
        assert!(!should_roll(&roll_input(0, 0, 5000), 1 << 30, 1000));
        let mut input = roll_input(10, 0, 0);
        input.incoming_last_offset = 100 + MAX_RELATIVE_OFFSET + 1;
        assert!(should_roll(&input, 1 << 30, i64::MAX));
        let mut input = roll_input(10, 0, 0);
        input.index_entries = crate::log::index::MAX_INDEX_ENTRIES;
        assert!(should_roll(&input, 1 << 30, i64::MAX));
    }

    fn segs(specs: &[(u64, i64)]) -> Vec<SegmentSummary> {
        specs
            .iter()
            .enumerate()
            .map(|(i, &(size_bytes, ts))| SegmentSummary {
                base_offset: i as i64 * 10,
                next_offset: i as i64 * 10 + 10,
                size_bytes,
                largest_timestamp_ms: ts,
            })
            .collect()
    }

    #[test]
    fn time_retention_deletes_an_old_prefix_never_the_active() {
        let s = segs(&[(100, 10), (100, 20), (100, 500), (100, 30), (100, 5)]);
        assert_eq!(retention_plan(&s, 1000, 900, -1, i64::MAX), vec![0, 10]);
        // Everything is old, but the active segment stays.
        let s = segs(&[(100, 10), (100, 20), (100, 5)]);
        assert_eq!(retention_plan(&s, 1000, 1, -1, i64::MAX), vec![0, 10]);
        assert!(retention_plan(&s, 1000, -1, -1, i64::MAX).is_empty());
        assert!(retention_plan(&s[..1], 1000, 1, 0, i64::MAX).is_empty());
        assert!(retention_plan(&[], 1000, 1, 0, i64::MAX).is_empty());
    }

    #[test]
    fn size_retention_keeps_at_least_the_limit() {
        let s = segs(&[(100, 0), (100, 0), (100, 0), (50, 0)]);
        assert_eq!(retention_plan(&s, 0, -1, 150, i64::MAX), vec![0, 10]);
        assert_eq!(retention_plan(&s, 0, -1, 151, i64::MAX), vec![0]);
        assert!(retention_plan(&s, 0, -1, 350, i64::MAX).is_empty());
        assert_eq!(retention_plan(&s, 0, -1, 0, i64::MAX), vec![0, 10, 20]);
    }

    #[test]
    fn retention_respects_high_watermark_and_combines_limits() {
        let s = segs(&[(100, 0), (100, 0), (100, 0), (50, 0)]);
        assert_eq!(retention_plan(&s, 1000, 0, -1, 20), vec![0, 10]);
        assert_eq!(retention_plan(&s, 1000, 0, -1, 19), vec![0]);
        // Time takes the first, size the next one.
        let s = segs(&[(100, 0), (100, 900), (100, 900), (50, 900)]);
        assert_eq!(retention_plan(&s, 1000, 500, 150, i64::MAX), vec![0, 10]);
    }
}
