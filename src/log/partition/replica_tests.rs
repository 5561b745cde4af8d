//! Replication through the partition log, against real files: the leader epoch cache,
//! follower appends of a leader's bytes, and truncation, including reopening afterwards.

use super::*;
use crate::log::batch::{patch_batch, BatchIter};
use crate::log::producer_state::snapshot;
use crate::log::testutil::{batch_of, test_batch_with, Record};

fn config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 0,
        ..LogConfig::default()
    }
}

/// A config whose segments hold `batches` batches of `batch_of(records, 100, _)`.
fn small_segments(records: usize, batches: u64) -> LogConfig {
    LogConfig {
        segment_bytes: batch_of(records, 100, 0).len() as u64 * batches,
        ..config()
    }
}

/// Appends, as leader at `epoch`, a batch of `n` records with 100-byte values at `ts`.
fn produce(log: &mut PartitionLog, n: usize, ts: i64, epoch: i32) -> AppendResult {
    let b = batch_of(n, 100, ts);
    log.append(&b, ts, epoch).unwrap()
}

/// A batch of `n` records from idempotent producer `pid` (epoch 0) from sequence `seq`.
fn idem(pid: i64, seq: i32, n: usize) -> Vec<u8> {
    let value = [b'v'; 20];
    let recs: Vec<Record<'_>> = (0..n).map(|_| (None, Some(&value[..]))).collect();
    test_batch_with(&recs, crate::now_ms(), |h| {
        h.producer_id = pid;
        h.producer_epoch = 0;
        h.base_sequence = seq;
    })
}

/// Every stored byte from the log start to the log end, batch by batch.
fn all_bytes(log: &PartitionLog) -> Vec<u8> {
    let mut offset = log.log_start_offset();
    let mut out = Vec::new();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20, i64::MAX).unwrap();
        assert!(!r.records.is_empty(), "nothing at {offset}");
        out.extend_from_slice(&r.records);
        offset = r.next_offset;
    }
    out
}

fn bases(bytes: &[u8]) -> Vec<i64> {
    BatchIter::new(bytes)
        .map(|r| r.unwrap().0.base_offset)
        .collect()
}

/// Copies the leader's log past the follower's end into the follower, `max_bytes` a fetch.
fn replicate(leader: &PartitionLog, follower: &mut PartitionLog, max_bytes: usize) {
    while follower.log_end_offset() < leader.log_end_offset() {
        let r = leader
            .read(follower.log_end_offset(), max_bytes, i64::MAX)
            .unwrap();
        let a = follower.append_replica(&r.records, 5_000).unwrap();
        assert_eq!(a.bytes_used, r.records.len());
        assert_eq!(a.last_offset + 1, r.next_offset);
    }
}

fn epoch_file(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join(epochs::FILE_NAME)
}

#[test]
fn epoch_cache_follows_appends_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.end_offset_for_epoch(0), None);
    for epoch in [0, 0, 2, 2, 5] {
        produce(&mut log, 2, 1, epoch);
    }
    let expected = vec![(0, 0), (2, 4), (5, 8)];
    assert_eq!(log.epoch_entries(), expected);
    assert_eq!(log.latest_epoch(), Some(5));
    let answers: Vec<_> = [-1, 0, 1, 2, 3, 5, 7]
        .iter()
        .map(|e| log.end_offset_for_epoch(*e))
        .collect();
    assert_eq!(
        answers,
        vec![
            None,
            Some((0, 4)),
            Some((0, 4)),
            Some((2, 8)),
            Some((2, 8)),
            Some((5, 10)),
            None
        ]
    );
    assert_eq!(
        std::fs::read_to_string(epoch_file(dir.path())).unwrap(),
        "0\n3\n0 0\n2 4\n5 8\n"
    );
    // The file is written when an entry is added, not on every append.
    std::fs::remove_file(epoch_file(dir.path())).unwrap();
    produce(&mut log, 2, 1, 5);
    assert!(!epoch_file(dir.path()).exists());
    log.close().unwrap();
    drop(log);
    // Missing: rebuilt from the batch headers, and written back.
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.epoch_entries(), expected);
    assert!(epoch_file(dir.path()).exists());
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 12)));
    drop(log);
    // Unreadable: rebuilt too.
    std::fs::write(epoch_file(dir.path()), b"0\n2\n0 0\n").unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.epoch_entries(), expected);
    drop(log);
    // Entries at or past the recovered log end (a crash cut the data they announce) go.
    std::fs::write(epoch_file(dir.path()), b"0\n4\n0 0\n2 4\n5 8\n9 12\n").unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.epoch_entries(), expected);
    assert_eq!(
        std::fs::read_to_string(epoch_file(dir.path())).unwrap(),
        "0\n3\n0 0\n2 4\n5 8\n"
    );
}

#[test]
fn epoch_cache_is_compacted_to_the_log_start_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(2, 2);
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for epoch in [1, 1, 3, 3, 3, 4] {
        produce(&mut log, 2, 1, epoch);
    }
    assert_eq!(log.epoch_entries(), vec![(1, 0), (3, 4), (4, 10)]);
    log.delete_records_before(7).unwrap();
    drop(log);
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(log.epoch_entries(), vec![(3, 7), (4, 10)]);
    // Epoch 1's data is gone: answered with the first remaining epoch's start.
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 7)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 10)));
}

#[test]
fn replica_append_reproduces_the_leaders_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(2, 3);
    let mut leader = PartitionLog::open(dir.path().join("leader"), cfg.clone()).unwrap();
    for (i, epoch) in [0, 0, 1, 1, 1, 4, 4, 4, 4, 6].into_iter().enumerate() {
        produce(&mut leader, 1 + i % 3, 100 + i as i64, epoch);
    }
    let b = idem(7, 0, 2);
    leader.append(&b, 1_000, 6).unwrap();
    let mut follower = PartitionLog::open(dir.path().join("follower"), cfg.clone()).unwrap();
    // Small fetches: several batches per append some of the time, one at others.
    replicate(&leader, &mut follower, 500);
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(all_bytes(&follower), all_bytes(&leader));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(
        follower.epoch_entries(),
        vec![(0, 0), (1, 3), (4, 9), (6, 18)]
    );
    // Rolled by the same policy; boundaries may differ from the leader's, which decided
    // one produce request at a time.
    assert!(
        follower.segment_count() > 2,
        "{:?}",
        follower.segment_spans()
    );
    assert_eq!(
        follower.offset_for_timestamp(105).unwrap(),
        leader.offset_for_timestamp(105).unwrap()
    );
    assert_eq!(follower.max_timestamp(), leader.max_timestamp());
    follower.close().unwrap();
    drop(follower);
    let follower = PartitionLog::open(dir.path().join("follower"), cfg).unwrap();
    assert_eq!(all_bytes(&follower), all_bytes(&leader));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
}

#[test]
fn replica_append_refuses_bad_input_and_skips_a_partial_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(dir.path().join("leader"), config()).unwrap();
    for _ in 0..3 {
        produce(&mut leader, 2, 1, 3);
    }
    let bytes = leader.read(0, 1 << 20, i64::MAX).unwrap().records.to_vec();
    let first_len = BatchHeader::parse(&bytes).unwrap().total_size();
    let mut follower = PartitionLog::open(dir.path().join("follower"), config()).unwrap();
    // Nothing complete: nothing done.
    let none = follower.append_replica(&bytes[..first_len - 1], 0).unwrap();
    assert_eq!(
        none,
        ReplicaAppend {
            first_offset: 0,
            last_offset: -1,
            bytes_used: 0,
            batches: 0
        }
    );
    // One batch and a half: the half is left for the next fetch.
    let a = follower
        .append_replica(&bytes[..first_len + 70], 0)
        .unwrap();
    assert_eq!(
        a,
        ReplicaAppend {
            first_offset: 0,
            last_offset: 1,
            bytes_used: first_len,
            batches: 1
        }
    );
    // The same batches again start below the log end.
    let err = follower.append_replica(&bytes, 0).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::OffsetOutOfRange {
                offset: 0,
                log_start: 2,
                log_end: 2
            }
        ),
        "{err}"
    );
    // Skipping a batch leaves a gap.
    let err = follower
        .append_replica(&bytes[first_len * 2..], 0)
        .unwrap_err();
    assert!(matches!(err, LogError::OffsetOutOfRange { offset: 4, .. }));
    // A flipped byte fails the CRC.
    let mut corrupt = bytes[first_len..].to_vec();
    let n = corrupt.len();
    corrupt[n - 1] ^= 1;
    let err = follower.append_replica(&corrupt, 0).unwrap_err();
    assert!(matches!(err, LogError::CorruptBatch(_)), "{err}");
    // Batches that do not follow on from each other.
    let mut gap = bytes[first_len..first_len * 2].to_vec();
    gap.extend_from_slice(&bytes[first_len..first_len * 2]);
    let err = follower.append_replica(&gap, 0).unwrap_err();
    assert!(matches!(err, LogError::CorruptBatch(_)), "{err}");
    assert_eq!(follower.log_end_offset(), 2);
    let rest = follower.append_replica(&bytes[first_len..], 0).unwrap();
    assert_eq!(
        (rest.first_offset, rest.last_offset, rest.batches),
        (2, 5, 2)
    );
    assert_eq!(all_bytes(&follower), bytes);
}

#[test]
fn replica_append_accepts_control_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    let mut marker = test_batch_with(&[(None, Some(b"m"))], 10, |h| {
        h.attributes = 0x30; // control + transactional
        h.producer_id = 9;
        h.producer_epoch = 1;
        h.base_sequence = -1;
    });
    patch_batch(&mut marker, 0, 2, None).unwrap();
    let a = log.append_replica(&marker, 10).unwrap();
    assert_eq!((a.first_offset, a.last_offset), (0, 0));
    assert_eq!(log.epoch_entries(), vec![(2, 0)]);
    assert_eq!(all_bytes(&log), marker);
}

#[test]
fn replicated_producer_state_lets_the_follower_lead() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let mut leader = PartitionLog::open(dir.path().join("leader"), cfg.clone()).unwrap();
    for seq in [0, 3, 6] {
        let b = idem(7, seq, 3);
        leader.append(&b, 1_000, 0).unwrap();
    }
    let mut follower = PartitionLog::open(dir.path().join("follower"), cfg).unwrap();
    replicate(&leader, &mut follower, 1 << 20);
    let batches = |log: &PartitionLog| log.producer_states().get(7).unwrap().batches.clone();
    assert_eq!(batches(&follower), batches(&leader));
    // The follower takes over at epoch 1: a retry of the last batch is a duplicate, the
    // next sequence is accepted, and a gap is refused.
    let retry = idem(7, 6, 3);
    let dup = follower.append(&retry, 2_000, 1).unwrap();
    assert!(dup.duplicate);
    assert_eq!((dup.base_offset, dup.last_offset), (6, 8));
    let next = idem(7, 9, 1);
    assert_eq!(follower.append(&next, 2_000, 1).unwrap().base_offset, 9);
    let gap = idem(7, 12, 1);
    assert!(matches!(
        follower.append(&gap, 2_000, 1),
        Err(LogError::Producer(_))
    ));
    assert_eq!(follower.epoch_entries(), vec![(0, 0), (1, 9)]);
}

#[test]
fn truncating_at_the_log_end_drops_an_epoch_begun_without_data() {
    // This replica led at epoch 2 and lost leadership before writing anything; the new
    // leader's diverging epoch ends at our log end, so the truncation cuts no data but must
    // drop epoch 2, or every later fetch would name it and be told to truncate again.
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    produce(&mut log, 5, 10, 1);
    log.begin_epoch(2).unwrap();
    assert_eq!(log.latest_epoch(), Some(2));
    log.truncate_to(5).unwrap();
    assert_eq!((log.log_end_offset(), log.latest_epoch()), (5, Some(1)));
    assert_eq!(log.epoch_entries(), vec![(1, 0)]);
    // And durably: a reopened log agrees.
    drop(log);
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.epoch_entries(), vec![(1, 0)]);
}

#[test]
fn truncate_within_across_and_at_segment_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(1, 4);
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    // One record a batch, timestamps 10, 20, ... so offset o has timestamp 10 * (o + 1).
    for i in 0..10 {
        produce(&mut log, 1, 10 * (i + 1), if i < 6 { 1 } else { 2 });
    }
    assert_eq!(log.segment_count(), 3);
    assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 6)]);
    // At or past the log end: nothing happens.
    log.truncate_to(10).unwrap();
    log.truncate_to(50).unwrap();
    assert_eq!(log.log_end_offset(), 10);

    // Inside the last segment.
    log.truncate_to(9).unwrap();
    assert_eq!((log.log_end_offset(), log.segment_count()), (9, 3));
    // Across a whole segment into the middle of a sealed one, which becomes active.
    log.truncate_to(6).unwrap();
    assert_eq!(log.segment_spans().len(), 2);
    assert_eq!(log.active_base_offset(), 4);
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(log.epoch_entries(), vec![(1, 0)]);
    // Epoch 2 is gone entirely: above the latest, undefined.
    assert_eq!(log.end_offset_for_epoch(2), None);
    for o in 0..6 {
        assert_eq!(bases(&log.read(o, 1, i64::MAX).unwrap().records), vec![o]);
    }
    assert_eq!(log.offset_for_timestamp(45).unwrap(), Some((4, 50)));
    assert_eq!(log.offset_for_timestamp(61).unwrap(), None);
    assert_eq!(log.max_timestamp(), Some((5, 60)));
    // Appends go on at the new end, into the segment that was sealed.
    assert_eq!(produce(&mut log, 1, 70, 3).base_offset, 6);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.offset_for_timestamp(65).unwrap(), Some((6, 70)));
    assert_eq!(log.epoch_entries(), vec![(1, 0), (3, 6)]);
    // At a segment boundary: the segment starting there is left empty and active.
    log.truncate_to(4).unwrap();
    assert_eq!(
        log.segment_spans(),
        vec![(0, 4, log.segment_spans()[0].2), (4, 4, 0)]
    );
    assert_eq!(produce(&mut log, 1, 50, 3).base_offset, 4);
    // Dropped without closing, as a crash would: nothing truncated comes back.
    drop(log);
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(bases(&all_bytes(&log)), vec![0, 1, 2, 3, 4]);
    assert_eq!(log.epoch_entries(), vec![(1, 0), (3, 4)]);
    assert_eq!(log.offset_for_timestamp(41).unwrap(), Some((4, 50)));
    // Back to a single segment.
    log.truncate_to(1).unwrap();
    assert_eq!(log.segment_spans().len(), 1);
    assert_eq!(bases(&all_bytes(&log)), vec![0]);
    assert_eq!(log.max_timestamp(), Some((0, 10)));
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_end_offset(), log.segment_count()), (0, 1));
    assert!(log.epoch_entries().is_empty());
    assert_eq!(produce(&mut log, 1, 1, 4).base_offset, 0);
    drop(log);
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(log.epoch_entries(), vec![(4, 0)]);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    left.sort();
    assert_eq!(left, vec![format!("{:020}.log", 0)]);
}

#[test]
fn truncate_removes_a_straddling_batch_and_respects_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    for _ in 0..5 {
        produce(&mut log, 2, 1, 0);
    }
    // Offset 7 is the second record of the batch at 6: the whole batch goes.
    log.truncate_to(7).unwrap();
    assert_eq!(log.log_end_offset(), 6);
    log.delete_records_before(3).unwrap();
    let err = log.truncate_to(2).unwrap_err();
    assert!(matches!(err, LogError::OffsetOutOfRange { offset: 2, .. }));
    // The batch at 2 straddles the log start: cutting it brings the start down with it.
    log.truncate_to(3).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 2));
    drop(log);
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 2));
}

#[test]
fn truncate_rebuilds_producer_state_and_drops_later_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: idem(7, 0, 2).len() as u64 * 2,
        ..config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for seq in [0, 2, 4, 6, 8] {
        let b = idem(7, seq, 2);
        log.append(&b, crate::now_ms(), 0).unwrap();
    }
    log.close().unwrap();
    assert_eq!(snapshot::list(dir.path()).unwrap(), vec![4, 8, 10]);
    log.truncate_to(5).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(snapshot::list(dir.path()).unwrap(), vec![4]);
    let entry = log.producer_states().get(7).unwrap();
    assert_eq!(entry.batches.back().unwrap().last_seq, 3);
    // Sequence 4 was a duplicate before the cut; now it is the next one.
    let b = idem(7, 4, 2);
    let a = log.append(&b, crate::now_ms(), 0).unwrap();
    assert!(!a.duplicate);
    assert_eq!(a.base_offset, 4);
    drop(log);
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(
        log.producer_states()
            .get(7)
            .unwrap()
            .batches
            .back()
            .unwrap()
            .last_seq,
        5
    );
}

#[test]
fn a_read_planned_before_a_truncation_returns_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    for _ in 0..4 {
        produce(&mut log, 1, 1, 0);
    }
    let whole = log.plan_read(1, 1 << 20, i64::MAX).unwrap();
    let gone = log.plan_read(3, 1 << 20, i64::MAX).unwrap();
    log.truncate_to(2).unwrap();
    assert_eq!(bases(&whole.read().unwrap().records), vec![1]);
    let r = gone.read().unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.next_offset, 3);
}

#[test]
fn truncate_fully_then_replicate_from_the_new_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(2, 2);
    // The leader's log starts at 100.
    let mut leader = PartitionLog::open(dir.path().join("leader"), cfg.clone()).unwrap();
    leader.truncate_fully_and_start_at(100).unwrap();
    for epoch in [3, 3, 5] {
        produce(&mut leader, 2, 1, epoch);
    }
    let fdir = dir.path().join("follower");
    let mut follower = PartitionLog::open(&fdir, cfg.clone()).unwrap();
    for i in 0..5 {
        let b = idem(7, 2 * i, 2);
        follower.append(&b, 1_000, 1).unwrap();
    }
    follower.close().unwrap();
    follower.truncate_fully_and_start_at(100).unwrap();
    assert_eq!(
        (
            follower.log_start_offset(),
            follower.log_end_offset(),
            follower.segment_count()
        ),
        (100, 100, 1)
    );
    assert!(follower.epoch_entries().is_empty());
    assert!(follower.producer_states().is_empty());
    assert!(snapshot::list(&fdir).unwrap().is_empty());
    assert!(follower.read(99, 100, i64::MAX).is_err());
    replicate(&leader, &mut follower, 1 << 20);
    assert_eq!(all_bytes(&follower), all_bytes(&leader));
    assert_eq!(follower.epoch_entries(), vec![(3, 100), (5, 104)]);
    drop(follower);
    let follower = PartitionLog::open(&fdir, cfg.clone()).unwrap();
    assert_eq!(follower.log_start_offset(), 100);
    assert_eq!(all_bytes(&follower), all_bytes(&leader));
    assert_eq!(follower.epoch_entries(), vec![(3, 100), (5, 104)]);
    assert!(follower.producer_states().is_empty());
    let segments = std::fs::read_dir(&fdir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str().unwrap().ends_with(".log")
        })
        .count();
    assert_eq!(segments, follower.segment_count());
}

#[test]
fn an_empty_follower_restarts_at_a_batch_straddling_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(dir.path().join("leader"), config()).unwrap();
    for _ in 0..3 {
        produce(&mut leader, 2, 1, 2);
    }
    leader.delete_records_before(3).unwrap();
    let mut follower = PartitionLog::open(dir.path().join("follower"), config()).unwrap();
    follower.truncate_fully_and_start_at(3).unwrap();
    let r = leader.read(3, 1 << 20, i64::MAX).unwrap();
    assert_eq!(bases(&r.records), vec![2, 4]);
    let a = follower.append_replica(&r.records, 0).unwrap();
    assert_eq!((a.first_offset, a.last_offset), (2, 5));
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (2, 6)
    );
    assert_eq!(follower.epoch_entries(), vec![(2, 2)]);
}
