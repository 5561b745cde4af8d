//! Idempotent producer state of one partition: per producer id, its epoch and the sequence
//! ranges and offsets of its last few batches. Pure: headers in, decisions out; no I/O.
//!
//! The rules are Kafka's `ProducerAppendInfo` / `ProducerStateEntry`, followed exactly so that
//! clients see the answers they were written against:
//! - Batches without a producer id (`producer_id < 0`) are not tracked.
//! - A batch whose epoch and sequence range equal one of the producer's last
//!   [`RETAINED_BATCHES`] batches is a retry of it: nothing is appended and the producer is
//!   told where the original went ([`AppendCheck::Duplicate`]).
//! - An epoch below the producer's current one is fenced (`InvalidEpoch`).
//! - A higher epoch must start at sequence 0 (else `OutOfOrderSequence`) and starts afresh.
//! - Within an epoch, a batch must start right after the last one (sequences wrap from
//!   `i32::MAX` to 0).
//! - A producer id with no state here (new, expired, or whose state was lost) is accepted at
//!   any sequence: since KIP-360 Kafka no longer answers UNKNOWN_PRODUCER_ID, because a client
//!   that reset its sequences on that error would resend, and duplicate, what it had buffered.
//!
//! A request's batches are checked together against the state as it would be after each
//! earlier batch of the same request ([`ProducerStates::check`]), and the state changes only
//! once the batches are in the log ([`ProducerStates::apply`]), so a rejected or failed
//! append leaves no trace. Replaying the log's batch headers through `apply` rebuilds the
//! same state, which is how the partition recovers what its last snapshot does not cover.
//!
//! Invariants ([`ProducerStates::validate`]): each producer keeps 1..=`RETAINED_BATCHES`
//! batches, oldest first, with increasing offsets, each spanning as many sequence numbers as
//! offsets.

pub mod snapshot;

use std::collections::{BTreeMap, VecDeque};

use super::batch::BatchHeader;

/// How many recent batches per producer are remembered for duplicate detection; producers
/// keep at most this many requests in flight per partition (Kafka's
/// `NUM_BATCHES_TO_RETAIN`, and the clients' `max.in.flight.requests.per.connection` cap).
pub const RETAINED_BATCHES: usize = 5;

/// Kafka's `RecordBatch.NO_PRODUCER_EPOCH`: no state for this producer.
const NO_EPOCH: i16 = -1;
/// Kafka's `RecordBatch.NO_SEQUENCE`.
const NO_SEQUENCE: i32 = -1;

/// Where one of a producer's batches went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// One producer's state in this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// The latest batches of `epoch`, oldest first; never empty.
    pub batches: VecDeque<BatchMeta>,
    /// When the producer was last active, for expiry: the later of its latest batch's max
    /// timestamp and the broker's clock when that batch was appended.
    pub last_timestamp_ms: i64,
}

impl ProducerEntry {
    fn last_seq(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    /// The retained batch with exactly this epoch and sequence range (Kafka's
    /// `findDuplicateBatch`).
    fn duplicate_of(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMeta> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }
}

/// Why a producer's batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// The producer was fenced by a newer epoch of the same id (INVALID_PRODUCER_EPOCH).
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// A gap or reordering in the producer's sequence numbers (OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error(
        "out of order sequence for producer {producer_id} epoch {epoch}: batch starts at \
         {first_seq}, the last sequence written is {last_seq}"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    },
}

/// The outcome of checking a request's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendCheck {
    /// Append them.
    Fresh,
    /// A retry of a batch already in the log: append nothing and answer with where the
    /// original went. As in Kafka, one duplicate batch makes the whole request a duplicate.
    Duplicate(BatchMeta),
}

/// The last sequence number of a batch (Kafka's `DefaultRecordBatch.incrementSequence`):
/// sequences run from 0 to `i32::MAX` and wrap to 0.
pub fn last_sequence(first_seq: i32, last_offset_delta: i32) -> i32 {
    if first_seq > i32::MAX - last_offset_delta {
        last_offset_delta - (i32::MAX - first_seq) - 1
    } else {
        first_seq + last_offset_delta
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// What one request's earlier batches did to a producer, while checking (Kafka's
/// `ProducerAppendInfo.updatedEntry`, less what checking does not need).
#[derive(Debug, Clone, Copy)]
struct Pending {
    epoch: i16,
    last_seq: Option<i32>,
}

/// Every tracked producer of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// Checks a produce request's batches (already validated as batches) against the state,
    /// in order, without changing it.
    pub fn check(&self, batches: &[BatchHeader]) -> Result<AppendCheck, ProducerError> {
        let mut pending: BTreeMap<i64, Pending> = BTreeMap::new();
        for h in batches.iter().filter(|h| h.producer_id >= 0) {
            let pid = h.producer_id;
            let epoch = h.producer_epoch;
            let first_seq = h.base_sequence;
            let last_seq = last_sequence(first_seq, h.last_offset_delta);
            let current = self.producers.get(&pid);
            if let Some(dup) = current.and_then(|e| e.duplicate_of(epoch, first_seq, last_seq)) {
                return Ok(AppendCheck::Duplicate(dup));
            }
            let current_epoch = current.map_or(NO_EPOCH, |e| e.epoch);
            let p = pending.entry(pid).or_insert(Pending {
                epoch: current_epoch,
                last_seq: None,
            });
            if epoch < p.epoch {
                return Err(ProducerError::InvalidEpoch {
                    producer_id: pid,
                    epoch,
                    current: p.epoch,
                });
            }
            if epoch != p.epoch {
                // A new epoch starts from sequence 0, unless we know nothing of the producer.
                if first_seq != 0 && p.epoch != NO_EPOCH {
                    return Err(ProducerError::OutOfOrderSequence {
                        producer_id: pid,
                        epoch,
                        first_seq,
                        last_seq: NO_SEQUENCE,
                    });
                }
            } else {
                let last = match (p.last_seq, current) {
                    (Some(seq), _) => seq,
                    (None, Some(e)) if e.epoch == epoch => e.last_seq(),
                    (None, _) => NO_SEQUENCE,
                };
                if current_epoch != NO_EPOCH && !in_sequence(last, first_seq) {
                    return Err(ProducerError::OutOfOrderSequence {
                        producer_id: pid,
                        epoch,
                        first_seq,
                        last_seq: last,
                    });
                }
            }
            p.epoch = epoch;
            p.last_seq = Some(last_seq);
        }
        Ok(AppendCheck::Fresh)
    }

    /// Records a batch that is now in the log (`header` carries its final offsets). Used both
    /// after an append that [`check`](Self::check) allowed and when replaying the log, where
    /// no rule is enforced: the log is what happened. `activity_ms` is when the batch was
    /// appended (or a later time, if that is all that is known).
    pub fn apply(&mut self, header: &BatchHeader, activity_ms: i64) {
        if header.producer_id < 0 {
            return;
        }
        let batch = BatchMeta {
            first_seq: header.base_sequence,
            last_seq: last_sequence(header.base_sequence, header.last_offset_delta),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        };
        let last_timestamp_ms = header.max_timestamp.max(activity_ms);
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::with_capacity(RETAINED_BATCHES),
                last_timestamp_ms,
            });
        if entry.epoch != header.producer_epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == RETAINED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        entry.last_timestamp_ms = last_timestamp_ms;
    }

    /// Forgets producers idle for `expiration_ms` or longer (Kafka's
    /// `producer.id.expiration.ms`). Returns how many were dropped.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms);
        before - self.producers.len()
    }

    /// Inserts a producer's state as read from a snapshot.
    pub(crate) fn insert(&mut self, producer_id: i64, entry: ProducerEntry) {
        self.producers.insert(producer_id, entry);
    }

    /// Asserts the invariants in the module doc. A failure is a bug in this module.
    pub fn validate(&self) {
        for (pid, e) in &self.producers {
            assert!(*pid >= 0, "producer id {pid} tracked");
            assert!(
                (1..=RETAINED_BATCHES).contains(&e.batches.len()),
                "producer {pid} keeps {} batches",
                e.batches.len()
            );
            let mut prev: Option<&BatchMeta> = None;
            for b in &e.batches {
                assert!(b.first_offset <= b.last_offset, "producer {pid}: {b:?}");
                assert_eq!(
                    last_sequence(b.first_seq, (b.last_offset - b.first_offset) as i32),
                    b.last_seq,
                    "producer {pid}: sequence span differs from offset span in {b:?}"
                );
                if let Some(p) = prev {
                    assert!(
                        p.last_offset < b.first_offset,
                        "producer {pid}: {p:?} {b:?}"
                    );
                }
                prev = Some(b);
            }
        }
    }
}

#[cfg(test)]
mod tests;
