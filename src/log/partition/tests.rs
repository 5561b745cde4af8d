//! Unit tests for `partition.rs`, against real files in a temp dir.

use super::*;
use crate::log::batch::{BatchHeader, BatchIter};
use crate::log::segment::{file_name, INDEX_SUFFIX, LOG_SUFFIX};
use crate::log::testutil::batch_of;
use std::io::Write;

fn config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 0,
        ..LogConfig::default()
    }
}

/// Appends a batch of `n` records with `value_len`-byte values at time `ts`.
fn produce(log: &mut PartitionLog, n: usize, value_len: usize, ts: i64) -> AppendResult {
    let b = batch_of(n, value_len, ts);
    log.append(&b, ts, 1).unwrap()
}

/// Base offsets of the batches in `bytes`.
fn bases(bytes: &[u8]) -> Vec<i64> {
    BatchIter::new(bytes)
        .map(|r| r.unwrap().0.base_offset)
        .collect()
}

fn read_everything(log: &PartitionLog) -> Vec<i64> {
    let mut offset = log.log_start_offset();
    let mut out = Vec::new();
    loop {
        let r = log.read(offset, 1 << 20, i64::MAX).unwrap();
        if r.records.is_empty() {
            return out;
        }
        out.extend(bases(&r.records));
        offset = r.next_offset;
    }
}

/// A config whose segments roll after `batches` batches of `batch_of(1, 100, _)`.
fn segments_of(batches: u64) -> LogConfig {
    LogConfig {
        segment_bytes: batch_of(1, 100, 0).len() as u64 * batches,
        ..config()
    }
}

#[test]
fn a_request_of_many_batches_is_stored_whole_with_its_headers_patched() {
    // More batches than one pwritev takes pieces (two per batch), so the write is split.
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path().join("t-0"), config()).unwrap();
    produce(&mut log, 2, 10, 50);
    let sent: Vec<Vec<u8>> = (0..700)
        .map(|i| batch_of(1 + i % 3, 1 + i % 40, 100))
        .collect();
    let request = sent.concat();
    let a = log.append(&request, 100, 7).unwrap();
    let records: usize = (0..700).map(|i| 1 + i % 3).sum();
    assert_eq!((a.base_offset, a.last_offset), (2, 1 + records as i64));
    let stored = log.read(2, 64 << 20, i64::MAX).unwrap().records;
    assert_eq!(stored.len(), request.len());
    let mut next = 2;
    for ((h, range), original) in BatchIter::new(&stored).map(Result::unwrap).zip(&sent) {
        assert_eq!((h.base_offset, h.partition_leader_epoch), (next, 7));
        // Past the offset and epoch, the batch is byte for byte what was sent.
        assert_eq!(stored[range.start + 16..range.end], original[16..]);
        assert_eq!(stored[range.start + 8..range.start + 12], original[8..12]);
        next = h.next_offset();
    }
    assert_eq!(next, a.last_offset + 1);
}

#[test]
fn assigns_offsets_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path().join("t-0"), config()).unwrap();
    let a = produce(&mut log, 3, 10, 100);
    assert_eq!(
        (a.base_offset, a.last_offset, a.log_append_time),
        (0, 2, None)
    );
    let b = produce(&mut log, 2, 10, 101);
    assert_eq!((b.base_offset, b.last_offset), (3, 4));
    assert_eq!(log.log_end_offset(), 5);
    let r = log.read(0, 1 << 20, i64::MAX).unwrap();
    assert_eq!(bases(&r.records), vec![0, 3]);
    assert_eq!((r.next_offset, r.log_end_offset), (5, 5));
    let h = BatchHeader::parse(&r.records).unwrap();
    assert_eq!(h.partition_leader_epoch, 1);
    // Inside the second batch: the whole batch comes back.
    assert_eq!(bases(&log.read(4, 1, i64::MAX).unwrap().records), vec![3]);
    // Several batches in one request get consecutive offsets.
    let mut two = batch_of(2, 5, 1);
    two.extend_from_slice(&batch_of(4, 5, 1));
    let c = log.append(&two, 1, 1).unwrap();
    assert_eq!((c.base_offset, c.last_offset), (5, 10));
    assert_eq!(
        bases(&log.read(5, 1 << 20, i64::MAX).unwrap().records),
        vec![5, 7]
    );
}

#[test]
fn log_append_time_overwrites_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    let b = batch_of(2, 10, 5);
    let res = log.append(&b, 777, 0).unwrap();
    assert_eq!(res.log_append_time, Some(777));
    let r = log.read(0, 1 << 20, i64::MAX).unwrap();
    let h = BatchHeader::parse(&r.records).unwrap();
    assert_eq!(
        (h.max_timestamp, h.timestamp_type()),
        (777, TimestampType::LogAppendTime)
    );
    // The stored batch's CRC covers the broker's timestamp, not the producer's.
    assert_eq!(h.crc, crate::log::batch::compute_crc(&r.records));
    assert_ne!(h.crc, BatchHeader::parse(&b).unwrap().crc);
    assert_eq!(log.max_timestamp(), Some((0, 777)));
}

#[test]
fn rejects_bad_produce_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    let mut b = batch_of(1, 10, 5);
    let n = b.len();
    b[n - 1] ^= 1;
    assert!(matches!(
        log.append(&b, 0, 0),
        Err(LogError::CorruptBatch(_))
    ));
    let mut b = batch_of(1, 10, 5);
    b[16] = 1;
    assert!(matches!(
        log.append(&b, 0, 0),
        Err(LogError::UnsupportedMagic(1))
    ));
    assert!(matches!(
        log.append(&[], 0, 0),
        Err(LogError::InvalidRecord(_))
    ));
    let big = batch_of(1, 2_000_000, 5);
    let err = log.append(&big, 0, 0).unwrap_err();
    assert!(matches!(err, LogError::MessageTooLarge { .. }), "{err}");
    assert!(!err.is_storage_error());
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn read_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    produce(&mut log, 2, 10, 1);
    produce(&mut log, 2, 10, 1);
    let empty = log.read(4, 100, i64::MAX).unwrap();
    assert!(empty.records.is_empty());
    assert_eq!(empty.next_offset, 4);
    assert!(matches!(
        log.read(5, 100, i64::MAX),
        Err(LogError::OffsetOutOfRange {
            offset: 5,
            log_start: 0,
            log_end: 4
        })
    ));
    // The high watermark hides batches at or past it.
    assert_eq!(bases(&log.read(0, 1 << 20, 2).unwrap().records), vec![0]);
    assert!(log.read(2, 1 << 20, 2).unwrap().records.is_empty());
}

#[test]
fn rolls_on_size_and_reopens_intact() {
    let dir = tempfile::tempdir().unwrap();
    let probe = batch_of(1, 100, 0).len() as u64;
    let cfg = segments_of(3);
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..10 {
        produce(&mut log, 1, 100, i);
    }
    assert_eq!(log.segment_count(), 4);
    assert_eq!(log.size_bytes(), probe * 10);
    // A read at a segment's end moves on to the next segment.
    assert_eq!(
        bases(&log.read(2, 1 << 20, i64::MAX).unwrap().records),
        vec![2]
    );
    assert_eq!(
        bases(&log.read(3, 1 << 20, i64::MAX).unwrap().records),
        vec![3, 4, 5]
    );
    assert_eq!(read_everything(&log), (0..10).collect::<Vec<_>>());
    log.close().unwrap();
    drop(log);
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!((log.segment_count(), log.log_end_offset()), (4, 10));
    assert_eq!(read_everything(&log), (0..10).collect::<Vec<_>>());
}

#[test]
fn rolls_on_age() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_ms: 1000,
        ..config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    let t0 = log.active().created_at_ms();
    let b = batch_of(1, 10, 0);
    log.append(&b, t0 + 1000, 0).unwrap();
    assert_eq!(log.segment_count(), 1);
    let b = batch_of(1, 10, 0);
    log.append(&b, t0 + 1001, 0).unwrap();
    assert_eq!(log.segment_count(), 2);
    // The new segment's age counts from the injected clock.
    let b = batch_of(1, 10, 0);
    log.append(&b, t0 + 2001, 0).unwrap();
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn recovers_a_torn_tail_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    for i in 0..5 {
        produce(&mut log, 2, 50, i);
    }
    drop(log);
    let path = dir.path().join(file_name(0, LOG_SUFFIX));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let partial = batch_of(3, 50, 9);
    f.write_all(&partial[..40]).unwrap();
    drop(f);
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(read_everything(&log), vec![0, 2, 4, 6, 8]);
    assert_eq!(produce(&mut log, 1, 5, 1).base_offset, 10);
}

#[test]
fn rebuilds_a_corrupt_sealed_index_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = segments_of(4);
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..8 {
        produce(&mut log, 1, 100, i);
    }
    log.close().unwrap();
    drop(log);
    std::fs::write(dir.path().join(file_name(0, INDEX_SUFFIX)), b"garbage").unwrap();
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join(file_name(0, INDEX_SUFFIX)))
            .unwrap()
            .len()
            % 8,
        0
    );
    assert_eq!(read_everything(&log), (0..8).collect::<Vec<_>>());
    assert_eq!(bases(&log.read(2, 1, i64::MAX).unwrap().records), vec![2]);
}

#[test]
fn delete_records_moves_start_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let probe = batch_of(2, 100, 0).len() as u64;
    let cfg = LogConfig {
        segment_bytes: probe * 2,
        ..config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..6 {
        produce(&mut log, 2, 100, i);
    }
    assert_eq!(log.segment_count(), 3);
    assert!(matches!(
        log.delete_records_before(13),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Offset 5 lies in the second segment: the first goes, the second stays.
    assert_eq!(log.delete_records_before(5).unwrap(), 5);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.delete_records_before(3).unwrap(), 5);
    assert!(matches!(
        log.read(3, 100, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // The batch straddling the new start is returned whole.
    assert_eq!(bases(&log.read(5, 100, i64::MAX).unwrap().records), vec![4]);
    drop(log);
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 12));
    // Everything, up to the log end: the active segment stays but the start moves.
    log.delete_records_before(12).unwrap();
    assert_eq!((log.segment_count(), log.log_start_offset()), (1, 12));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
}

#[test]
fn retention_deletes_old_segments_but_not_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let probe = batch_of(1, 100, 0).len() as u64;
    let cfg = segments_of(2);
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for ts in [10, 20, 30, 40, 50, 60, 70] {
        produce(&mut log, 1, 100, ts);
    }
    assert_eq!(log.segment_count(), 4);
    // Segments end at timestamps 20, 40, 60 (sealed) and 70 (active).
    assert_eq!(log.apply_retention(100, 70, -1, i64::MAX).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 2);
    // The high watermark protects what followers may still need.
    assert_eq!(log.apply_retention(1_000, 0, -1, 5).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 4);
    assert_eq!(log.apply_retention(1_000, 0, -1, i64::MAX).unwrap(), 1);
    assert_eq!((log.segment_count(), log.log_start_offset()), (1, 6));
    assert_eq!(log.apply_retention(1_000, 0, 0, i64::MAX).unwrap(), 0);
    for ts in [80, 90, 100] {
        produce(&mut log, 1, 100, ts);
    }
    // 4 batches in 2 segments: keeping at least 2 batches' worth deletes one segment.
    assert_eq!(
        log.apply_retention(0, -1, (probe * 2) as i64, i64::MAX)
            .unwrap(),
        1
    );
    assert_eq!(log.log_start_offset(), 8);
    drop(log);
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(log.log_start_offset(), 8);
    assert_eq!(read_everything(&log), vec![8, 9]);
}

#[test]
fn retired_segments_leave_the_log_at_once_and_their_files_when_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = segments_of(2);
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for ts in [10, 20, 30, 40, 50] {
        produce(&mut log, 1, 100, ts);
    }
    let files = |suffix: &str| {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(suffix))
            .collect();
        names.sort();
        names
    };
    let retired = log.retire_by_retention(1_000, 0, -1, i64::MAX).unwrap();
    assert_eq!(retired.segments(), 2);
    assert_eq!((log.segment_count(), log.log_start_offset()), (1, 4));
    assert_eq!(read_everything(&log), vec![4]);
    // Renamed, not yet gone: the log files, each with its index files.
    assert_eq!(files(".log.deleted").len(), 2);
    assert_eq!(files(".deleted").len(), 6);
    retired.delete().unwrap();
    assert!(files(".deleted").is_empty());
    assert_eq!(files(".log").len(), 1);

    // In the background: gone soon after.
    produce(&mut log, 1, 100, 55);
    produce(&mut log, 1, 100, 57);
    let (start, retired) = log.retire_records_before(6).unwrap();
    assert_eq!((start, retired.segments()), (6, 1));
    assert_eq!(files(".log.deleted").len(), 1);
    assert_eq!(retired.delete_in_background(), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !files(".deleted").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "retired files still there after 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(read_everything(&log), vec![6]);

    // Files retired but never deleted (a crash in between) are swept when the log opens.
    produce(&mut log, 1, 100, 60);
    produce(&mut log, 1, 100, 70);
    let (start, retired) = log.retire_records_before(8).unwrap();
    assert_eq!((start, retired.segments()), (8, 1));
    assert_eq!(files(".log.deleted").len(), 1);
    drop(retired);
    drop(log);
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert!(files(".deleted").is_empty());
    assert_eq!(log.log_start_offset(), 8);
    assert_eq!(read_everything(&log), vec![8]);
}

#[test]
fn finds_offsets_by_timestamp_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = segments_of(2);
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    for ts in [10, 50, 20, 30, 60, 40] {
        produce(&mut log, 1, 100, ts);
    }
    assert_eq!(log.offset_for_timestamp(5).unwrap(), Some((0, 10)));
    assert_eq!(log.offset_for_timestamp(25).unwrap(), Some((1, 50)));
    assert_eq!(log.offset_for_timestamp(55).unwrap(), Some((4, 60)));
    assert_eq!(log.offset_for_timestamp(61).unwrap(), None);
    assert_eq!(log.max_timestamp(), Some((4, 60)));
    log.delete_records_before(2).unwrap();
    assert_eq!(log.offset_for_timestamp(25).unwrap(), Some((3, 30)));
}

#[test]
fn open_sweeps_leftovers_and_honours_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(file_name(5, INDEX_SUFFIX)), [0u8; 8]).unwrap();
    std::fs::write(dir.path().join("log-start-offset.tmp"), b"junk").unwrap();
    std::fs::write(dir.path().join("log-start-offset"), b"0\n40\n").unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    assert!(!dir.path().join(file_name(5, INDEX_SUFFIX)).exists());
    assert!(!dir.path().join("log-start-offset.tmp").exists());
    // An empty log picks up where the checkpoint says it starts.
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 40));
    assert_eq!(produce(&mut log, 1, 1, 0).base_offset, 40);
    let handle = log.flush_handle().unwrap();
    handle.sync_data().unwrap();
    log.flush().unwrap();
}

#[test]
fn refuses_a_gap_between_segments() {
    let dir = tempfile::tempdir().unwrap();
    let probe = batch_of(1, 10, 0).len() as u64;
    let cfg = LogConfig {
        segment_bytes: probe,
        ..config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for _ in 0..3 {
        produce(&mut log, 1, 10, 0);
    }
    log.close().unwrap();
    drop(log);
    std::fs::remove_file(dir.path().join(file_name(1, LOG_SUFFIX))).unwrap();
    let err = PartitionLog::open(dir.path(), cfg).unwrap_err();
    assert!(matches!(err, LogError::CorruptSegment { .. }), "{err}");
}
