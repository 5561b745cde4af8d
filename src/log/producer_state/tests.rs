//! Unit tests for the producer state rules and the snapshot format.

use super::snapshot::{decode, encode};
use super::*;
use proptest::prelude::*;

/// The header of a batch of `count` records from producer `pid` at `epoch`, first sequence
/// `seq`, placed at `base_offset`.
fn batch(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
    BatchHeader {
        base_offset,
        batch_length: 0,
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: count - 1,
        base_timestamp: 1_000,
        max_timestamp: 1_000 + base_offset,
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
        records_count: count,
    }
}

/// A partition log in miniature: checks, then "appends" at the next offset.
#[derive(Default)]
struct Log {
    states: ProducerStates,
    end: i64,
}

impl Log {
    fn produce(&mut self, batches: &[BatchHeader]) -> Result<AppendCheck, ProducerError> {
        let check = self.states.check(batches)?;
        if check == AppendCheck::Fresh {
            for b in batches {
                let placed = BatchHeader {
                    base_offset: self.end,
                    max_timestamp: 1_000 + self.end,
                    ..*b
                };
                self.end = placed.next_offset();
                self.states.apply(&placed, 5_000);
            }
        }
        self.states.validate();
        Ok(check)
    }

    fn one(
        &mut self,
        pid: i64,
        epoch: i16,
        seq: i32,
        count: i32,
    ) -> Result<AppendCheck, ProducerError> {
        self.produce(&[batch(pid, epoch, seq, count, 0)])
    }
}

#[test]
fn in_order_batches_are_appended_and_remembered() {
    let mut log = Log::default();
    assert_eq!(log.one(7, 0, 0, 3), Ok(AppendCheck::Fresh));
    assert_eq!(log.one(7, 0, 3, 2), Ok(AppendCheck::Fresh));
    // Several batches of one producer in one request continue each other.
    assert_eq!(
        log.produce(&[batch(7, 0, 5, 1, 0), batch(7, 0, 6, 4, 0)]),
        Ok(AppendCheck::Fresh)
    );
    let e = log.states.get(7).unwrap();
    assert_eq!(e.epoch, 0);
    let seqs: Vec<_> = e
        .batches
        .iter()
        .map(|b| (b.first_seq, b.last_seq))
        .collect();
    assert_eq!(seqs, vec![(0, 2), (3, 4), (5, 5), (6, 9)]);
    assert_eq!(e.batches.back().unwrap().last_offset, 9);
    // Producers are independent; batches without a producer id are not tracked.
    assert_eq!(log.one(8, 3, 0, 1), Ok(AppendCheck::Fresh));
    assert_eq!(log.one(-1, -1, -1, 1), Ok(AppendCheck::Fresh));
    assert_eq!(log.states.len(), 2);
}

#[test]
fn a_retry_of_any_of_the_last_five_batches_is_a_duplicate() {
    let mut log = Log::default();
    for i in 0..7 {
        log.one(7, 0, i * 2, 2).unwrap();
    }
    // Batches 2..=6 are retained (offsets 4..=13); 0 and 1 have been pushed out.
    for i in 2..7 {
        let got = log.one(7, 0, i * 2, 2).unwrap();
        let AppendCheck::Duplicate(meta) = got else {
            panic!("batch {i}: {got:?}");
        };
        assert_eq!(
            (
                meta.first_seq,
                meta.last_seq,
                meta.first_offset,
                meta.last_offset
            ),
            (i * 2, i * 2 + 1, i64::from(i) * 2, i64::from(i) * 2 + 1)
        );
        assert_eq!(meta.max_timestamp, 1_000 + i64::from(i) * 2);
    }
    assert_eq!(log.end, 14, "duplicates append nothing");
    // Too old to be recognised: it is out of sequence instead.
    assert!(matches!(
        log.one(7, 0, 2, 2),
        Err(ProducerError::OutOfOrderSequence { .. })
    ));
    // Same first sequence, different range: not a duplicate, and out of order.
    assert!(matches!(
        log.one(7, 0, 12, 1),
        Err(ProducerError::OutOfOrderSequence { .. })
    ));
    // One duplicate batch makes the whole request a duplicate (Kafka's rule).
    let got = log
        .produce(&[batch(7, 0, 12, 2, 0), batch(7, 0, 14, 1, 0)])
        .unwrap();
    assert!(matches!(got, AppendCheck::Duplicate(m) if m.first_offset == 12));
    assert_eq!(log.end, 14);
}

#[test]
fn gaps_and_reordering_are_out_of_order() {
    let mut log = Log::default();
    log.one(7, 0, 0, 5).unwrap();
    let err = log.one(7, 0, 6, 1).unwrap_err();
    assert_eq!(
        err,
        ProducerError::OutOfOrderSequence {
            producer_id: 7,
            epoch: 0,
            first_seq: 6,
            last_seq: 4
        }
    );
    // A gap inside a request rejects the whole request: nothing of it is applied.
    assert!(log
        .produce(&[batch(7, 0, 5, 1, 0), batch(7, 0, 7, 1, 0)])
        .is_err());
    assert_eq!(log.end, 5);
    assert_eq!(log.one(7, 0, 5, 1), Ok(AppendCheck::Fresh));
}

#[test]
fn unknown_producers_are_accepted_at_any_sequence() {
    // Kafka since KIP-360: no state (new, expired, retention took its batches) means no
    // sequence to continue, and refusing would make the client resend and duplicate.
    let mut log = Log::default();
    assert_eq!(log.one(9, 4, 1234, 2), Ok(AppendCheck::Fresh));
    assert_eq!(log.one(9, 4, 1236, 1), Ok(AppendCheck::Fresh));
    assert!(log.one(9, 4, 1238, 1).is_err());
}

#[test]
fn a_higher_epoch_restarts_at_zero_and_fences_the_old_one() {
    let mut log = Log::default();
    log.one(7, 0, 0, 3).unwrap();
    log.one(7, 0, 3, 3).unwrap();
    // A new epoch must start at sequence 0.
    assert!(matches!(
        log.one(7, 1, 6, 1),
        Err(ProducerError::OutOfOrderSequence { .. })
    ));
    assert_eq!(log.one(7, 1, 0, 2), Ok(AppendCheck::Fresh));
    let e = log.states.get(7).unwrap();
    assert_eq!(
        (e.epoch, e.batches.len()),
        (1, 1),
        "state resets with the epoch"
    );
    // The old epoch is fenced, retries included.
    assert_eq!(
        log.one(7, 0, 6, 1),
        Err(ProducerError::InvalidEpoch {
            producer_id: 7,
            epoch: 0,
            current: 1
        })
    );
    assert!(matches!(
        log.one(7, 0, 3, 3),
        Err(ProducerError::InvalidEpoch { .. })
    ));
    // The new epoch's own batch is still recognised as a duplicate.
    assert!(matches!(log.one(7, 1, 0, 2), Ok(AppendCheck::Duplicate(_))));
    // Epoch bump and older epoch in one request: the later batch is fenced by the earlier.
    assert!(matches!(
        log.produce(&[batch(7, 2, 0, 1, 0), batch(7, 1, 2, 1, 0)]),
        Err(ProducerError::InvalidEpoch { current: 2, .. })
    ));
    assert_eq!(log.states.get(7).unwrap().epoch, 1);
}

#[test]
fn sequences_wrap_around_at_i32_max() {
    assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
    assert_eq!(last_sequence(i32::MAX, 1), 0);
    assert_eq!(last_sequence(i32::MAX - 1, 4), 2);
    assert_eq!(last_sequence(5, 4), 9);
    let mut log = Log::default();
    log.one(7, 0, i32::MAX - 2, 3).unwrap();
    assert_eq!(log.states.get(7).unwrap().batches[0].last_seq, i32::MAX);
    assert_eq!(log.one(7, 0, 0, 2), Ok(AppendCheck::Fresh));
    // A batch that straddles the wrap.
    log.one(8, 0, i32::MAX - 1, 4).unwrap();
    assert_eq!(log.states.get(8).unwrap().batches[0].last_seq, 1);
    assert!(matches!(
        log.one(8, 0, i32::MAX - 1, 4),
        Ok(AppendCheck::Duplicate(_))
    ));
    assert_eq!(log.one(8, 0, 2, 1), Ok(AppendCheck::Fresh));
    assert!(log.one(8, 0, 0, 1).is_err());
}

#[test]
fn expiry_drops_idle_producers() {
    let mut states = ProducerStates::new();
    let mut b = batch(1, 0, 0, 1, 0);
    b.max_timestamp = 100;
    states.apply(&b, 1_000);
    let mut b = batch(2, 0, 0, 1, 1);
    // A producer clock ahead of the broker's counts: expiry never comes early.
    b.max_timestamp = 5_000;
    states.apply(&b, 1_000);
    assert_eq!(states.get(1).unwrap().last_timestamp_ms, 1_000);
    assert_eq!(states.remove_expired(1_999, 1_000), 0);
    assert_eq!(states.remove_expired(2_000, 1_000), 1);
    assert!(states.get(1).is_none() && states.get(2).is_some());
    assert_eq!(states.remove_expired(6_000, 1_000), 1);
    assert!(states.is_empty());
}

#[test]
fn replaying_the_log_rebuilds_the_same_state() {
    let mut log = Log::default();
    let mut placed = Vec::new();
    for (pid, epoch, seq, count) in [
        (1, 0, 0, 2),
        (2, 5, 10, 1),
        (1, 0, 2, 3),
        (1, 1, 0, 1),
        (2, 5, 11, 2),
    ] {
        let before = log.end;
        log.one(pid, epoch, seq, count).unwrap();
        placed.push(batch(pid, epoch, seq, count, before));
    }
    let mut rebuilt = ProducerStates::new();
    for h in &placed {
        rebuilt.apply(h, 5_000);
    }
    assert_eq!(rebuilt, log.states);
}

#[test]
fn snapshot_round_trips_and_rejects_damage() {
    let mut log = Log::default();
    for i in 0..8 {
        log.one(3, 1, i, 1).unwrap();
    }
    log.one(11, 0, 40, 4).unwrap();
    let bytes = encode(log.end, &log.states);
    let (offset, back) = decode(&bytes).unwrap();
    assert_eq!((offset, &back), (log.end, &log.states));
    // Every single-byte corruption and every truncation is caught.
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        assert!(decode(&bad).is_err(), "flipped byte {i}");
        assert!(decode(&bytes[..i]).is_err(), "cut at {i}");
    }
    // Batches at or past the snapshot's own offset cannot be in it.
    assert!(decode(&encode(log.end - 1, &log.states)).is_err());
    let empty = encode(0, &ProducerStates::new());
    assert_eq!(decode(&empty).unwrap(), (0, ProducerStates::new()));
}

#[test]
fn snapshot_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    log.one(3, 1, 0, 2).unwrap();
    snapshot::write(dir.path(), 2, &log.states).unwrap();
    snapshot::write(dir.path(), 0, &ProducerStates::new()).unwrap();
    assert_eq!(snapshot::list(dir.path()).unwrap(), vec![0, 2]);
    assert_eq!(snapshot::read(dir.path(), 2).unwrap(), log.states);
    // A file renamed to another offset does not pass as that offset's snapshot.
    std::fs::rename(snapshot::path(dir.path(), 2), snapshot::path(dir.path(), 9)).unwrap();
    assert!(snapshot::read(dir.path(), 9).is_err());
    snapshot::delete(dir.path(), 9).unwrap();
    snapshot::delete(dir.path(), 9).unwrap();
    assert_eq!(snapshot::list(dir.path()).unwrap(), vec![0]);
}

proptest! {
    #[test]
    fn snapshot_encoding_round_trips(
        batches in proptest::collection::vec(
            (0i64..20, 0i16..3, 1i32..5, any::<i64>()), 0..60),
    ) {
        let mut states = ProducerStates::new();
        let mut end = 0i64;
        for (pid, epoch, count, ts) in batches {
            // Replay accepts anything; keep sequences following on so entries stay valid.
            let seq = states
                .get(pid)
                .filter(|e| e.epoch == epoch)
                .map_or(0, |e| last_sequence(e.batches.back().unwrap().last_seq, 1));
            let mut h = batch(pid, epoch, seq, count, end);
            h.max_timestamp = ts;
            end = h.next_offset();
            states.apply(&h, ts.wrapping_add(1));
        }
        states.validate();
        let (offset, back) = decode(&encode(end, &states)).unwrap();
        prop_assert_eq!(offset, end);
        prop_assert_eq!(back, states);
    }
}
