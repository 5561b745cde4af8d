//! Producer ids for idempotent producers, unique forever: blocks of ids are reserved through
//! the metadata log (`AllocateProducerIds`, which advances the image's `next_producer_id`),
//! and handed out one at a time from memory.
//!
//! A block is durable in the Raft log before any id in it is handed out, so a restart never
//! reuses an id; ids left in a block when the broker stops are skipped. No lock is held
//! while proposing: tasks that find the blocks empty at the same time each reserve a block,
//! and the extra blocks are queued rather than wasted.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use super::{Applied, ClusterError, Metadata, MetadataCommand};

/// Ids reserved per proposal (Kafka reserves 1000 per block too).
pub const BLOCK_SIZE: i64 = 1000;

/// Reserved ids not handed out yet, in order. Pure.
#[derive(Debug, Default)]
struct Blocks {
    ranges: VecDeque<Range<i64>>,
}

impl Blocks {
    fn take(&mut self) -> Option<i64> {
        while let Some(front) = self.ranges.front_mut() {
            if let Some(id) = front.next() {
                return Some(id);
            }
            self.ranges.pop_front();
        }
        None
    }

    fn add(&mut self, first: i64, count: i64) {
        self.ranges.push_back(first..first.saturating_add(count));
    }
}

pub struct ProducerIds {
    metadata: Metadata,
    broker_id: i32,
    blocks: Mutex<Blocks>,
}

impl ProducerIds {
    pub fn new(metadata: Metadata, broker_id: i32) -> Self {
        Self {
            metadata,
            broker_id,
            blocks: Mutex::new(Blocks::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A producer id no one has had before, reserving a new block when needed.
    pub async fn next_id(&self) -> Result<i64, ClusterError> {
        loop {
            if let Some(id) = self.lock().take() {
                return Ok(id);
            }
            let cmd = MetadataCommand::AllocateProducerIds {
                broker_id: self.broker_id,
                block_size: BLOCK_SIZE,
            };
            match self.metadata.propose_for(cmd).await? {
                Applied::ProducerIds { first, count } => {
                    tracing::debug!(first, count, "reserved producer ids");
                    self.lock().add(first, count);
                }
                Applied::Done => {
                    return Err(ClusterError::Raft(
                        "AllocateProducerIds applied without reserving ids".into(),
                    ))
                }
            }
        }
    }

    /// True if `id` has been reserved by some broker, so a client presenting it was given it
    /// by this cluster.
    pub fn was_issued(&self, id: i64) -> bool {
        (0..self.metadata.image().next_producer_id).contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_hand_out_each_id_once_in_order() {
        let mut b = Blocks::default();
        assert_eq!(b.take(), None);
        b.add(0, 2);
        b.add(10, 1);
        b.add(20, 0);
        b.add(30, 1);
        let got: Vec<_> = std::iter::from_fn(|| b.take()).collect();
        assert_eq!(got, vec![0, 1, 10, 30]);
        assert_eq!(b.take(), None);
    }
}
