//! Idempotent producers through the partition log: duplicates and gaps on append, and the
//! producer state surviving rolls, restarts, crashes and retention, against real files.

use super::*;
use crate::log::producer_state::snapshot;
use crate::log::producer_state::{BatchMeta, ProducerError};
use crate::log::segment::{file_name, LOG_SUFFIX};
use crate::log::testutil::{test_batch_with, Record};

fn config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 0,
        ..LogConfig::default()
    }
}

/// A batch of `n` 20-byte records from producer `pid` at `epoch`, starting at sequence `seq`.
fn idem(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    let value = [b'v'; 20];
    let recs: Vec<Record<'_>> = (0..n).map(|_| (None, Some(&value[..]))).collect();
    test_batch_with(&recs, crate::now_ms(), |h| {
        h.producer_id = pid;
        h.producer_epoch = epoch;
        h.base_sequence = seq;
    })
}

/// Each producer's epoch and retained batches. Replay cannot know when a batch was appended
/// (only that it was no later than its segment's last write), so activity times are left out.
fn sequences(log: &PartitionLog) -> Vec<(i64, i16, Vec<BatchMeta>)> {
    log.producer_states()
        .iter()
        .map(|(pid, e)| (pid, e.epoch, e.batches.iter().copied().collect()))
        .collect()
}

fn send(log: &mut PartitionLog, batch: &[u8]) -> Result<AppendResult, LogError> {
    let b = batch.to_vec();
    log.append(&b, crate::now_ms(), 0)
}

/// A config whose segments hold `batches` of [`idem`]'s 2-record batches.
fn small_segments(batches: u64) -> LogConfig {
    LogConfig {
        segment_bytes: idem(0, 0, 0, 2).len() as u64 * batches,
        ..config()
    }
}

#[test]
fn a_retry_gets_the_original_offsets_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    send(&mut log, &idem(-1, -1, -1, 3)).unwrap();
    let first = send(&mut log, &idem(7, 0, 0, 2)).unwrap();
    let second = send(&mut log, &idem(7, 0, 2, 2)).unwrap();
    assert_eq!((first.base_offset, second.base_offset), (3, 5));
    let retry = send(&mut log, &idem(7, 0, 0, 2)).unwrap();
    assert!(retry.duplicate && !first.duplicate);
    assert_eq!((retry.base_offset, retry.last_offset), (3, 4));
    assert_eq!(log.log_end_offset(), 7);
    // A gap appends nothing either.
    let err = send(&mut log, &idem(7, 0, 5, 1)).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Producer(ProducerError::OutOfOrderSequence { .. })
        ),
        "{err}"
    );
    assert_eq!(log.log_end_offset(), 7);
    // Fenced epoch after a bump.
    send(&mut log, &idem(7, 1, 0, 1)).unwrap();
    let err = send(&mut log, &idem(7, 0, 4, 1)).unwrap_err();
    assert!(matches!(
        err,
        LogError::Producer(ProducerError::InvalidEpoch { .. })
    ));
    // An idempotent batch without a sequence is malformed.
    let err = send(&mut log, &idem(7, 1, -1, 1)).unwrap_err();
    assert!(matches!(err, LogError::InvalidRecord(_)), "{err}");
}

#[test]
fn a_duplicate_reports_the_original_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    let b = idem(7, 0, 0, 2);
    let first = log.append(&b, 1_000, 0).unwrap();
    let b = idem(7, 0, 0, 2);
    let retry = log.append(&b, 2_000, 0).unwrap();
    assert_eq!(first.log_append_time, Some(1_000));
    assert_eq!((retry.base_offset, retry.log_append_time), (0, Some(1_000)));
}

#[test]
fn state_survives_rolls_restarts_and_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(2);
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for seq in (0..20).step_by(2) {
        send(&mut log, &idem(7, 0, seq, 2)).unwrap();
        send(&mut log, &idem(8, 3, seq, 2)).unwrap();
    }
    assert!(log.segment_count() > 5);
    // Rolls wrote snapshots, of which only the newest few are kept.
    let snaps = snapshot::list(dir.path()).unwrap();
    assert_eq!(snaps.len(), snapshot::SNAPSHOTS_KEPT, "{snaps:?}");
    assert_eq!(*snaps.last().unwrap(), log.active().base_offset());
    let before = sequences(&log);
    assert_eq!(before[0].2.len(), 5);

    // A crash (no close): newest snapshot plus a replay of the active segment.
    drop(log);
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(sequences(&log), before);
    let retry = send(&mut log, &idem(7, 0, 12, 2)).unwrap();
    assert!(retry.duplicate, "{retry:?}");

    // A clean close snapshots the log end; with every older snapshot gone it still loads.
    log.close().unwrap();
    let end = log.log_end_offset();
    drop(log);
    for offset in snapshot::list(dir.path()).unwrap() {
        if offset != end {
            snapshot::delete(dir.path(), offset).unwrap();
        }
    }
    let log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(sequences(&log), before);

    // No snapshot at all: the whole log is replayed.
    drop(log);
    for offset in snapshot::list(dir.path()).unwrap() {
        snapshot::delete(dir.path(), offset).unwrap();
    }
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(sequences(&log), before);
}

#[test]
fn state_matches_the_log_after_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    for seq in [0, 2, 4] {
        send(&mut log, &idem(7, 0, seq, 2)).unwrap();
    }
    // A snapshot at the log end as it was, then a batch whose write the crash tears.
    log.close().unwrap();
    let intact = sequences(&log);
    send(&mut log, &idem(7, 0, 6, 2)).unwrap();
    send(&mut log, &idem(9, 0, 0, 2)).unwrap();
    // And a stale snapshot past where the log will end (written before the tail was lost).
    log.close().unwrap();
    drop(log);
    let path = dir.path().join(file_name(0, LOG_SUFFIX));
    let len = std::fs::metadata(&path).unwrap().len();
    let last = idem(9, 0, 0, 2).len() as u64;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - last - 10).unwrap();
    drop(f);

    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(sequences(&log), intact);
    assert!(
        !snapshot::path(dir.path(), 10).exists(),
        "the snapshot past the log end must go"
    );
    // The torn batches were never acknowledged: their retries are appended, not duplicates.
    let retry = send(&mut log, &idem(7, 0, 6, 2)).unwrap();
    assert!(!retry.duplicate);
    assert_eq!(retry.base_offset, 6);
    assert!(!send(&mut log, &idem(9, 0, 0, 2)).unwrap().duplicate);
}

#[test]
fn a_damaged_snapshot_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    send(&mut log, &idem(7, 0, 0, 2)).unwrap();
    log.close().unwrap();
    send(&mut log, &idem(7, 0, 2, 2)).unwrap();
    log.close().unwrap();
    let want = sequences(&log);
    drop(log);
    let newest = snapshot::path(dir.path(), 4);
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 1;
    std::fs::write(&newest, bytes).unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(sequences(&log), want);
    assert!(!newest.exists());
}

#[test]
fn retention_deletes_the_snapshots_of_deleted_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(1);
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for seq in (0..10).step_by(2) {
        send(&mut log, &idem(7, 0, seq, 2)).unwrap();
    }
    assert_eq!(snapshot::list(dir.path()).unwrap(), vec![4, 6, 8]);
    log.apply_retention(crate::now_ms() + 10_000, 0, -1, i64::MAX)
        .unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(snapshot::list(dir.path()).unwrap(), vec![8]);
    // The producer outlives its deleted batches, as in Kafka (KIP-360): it keeps its
    // sequence, and its retries are still recognised.
    assert!(send(&mut log, &idem(7, 0, 8, 2)).unwrap().duplicate);
    assert!(matches!(
        send(&mut log, &idem(7, 0, 20, 2)),
        Err(LogError::Producer(_))
    ));
    drop(log);
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert!(send(&mut log, &idem(7, 0, 6, 2)).unwrap().duplicate);
}

#[test]
fn idle_producers_expire_at_runtime_and_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        producer_id_expiration_ms: 60_000,
        ..config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    send(&mut log, &idem(7, 0, 0, 2)).unwrap();
    let now = crate::now_ms();
    assert_eq!(log.remove_expired_producers(now + 1_000), 0);
    assert_eq!(log.remove_expired_producers(now + 120_000), 1);
    // Forgotten: any sequence is accepted again.
    assert!(!send(&mut log, &idem(7, 0, 40, 1)).unwrap().duplicate);
    log.close().unwrap();
    drop(log);
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert!(log.producer_states().get(7).is_some());
    drop(log);
    let cfg = LogConfig {
        producer_id_expiration_ms: 1,
        ..config()
    };
    std::thread::sleep(std::time::Duration::from_millis(5));
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert!(log.producer_states().is_empty());
}
