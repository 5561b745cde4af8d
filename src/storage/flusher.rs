//! Group commit: one fsync per partition covers every write that arrived before it started.
//!
//! Writers append to the page cache and ask the flusher to make their partition durable. The
//! flusher takes every request queued so far, fsyncs each distinct partition once (in
//! parallel, off the async workers), advances those partitions' high watermarks, and answers
//! all the waiters. Requests that arrive while an fsync runs form the next group, so the fsync
//! rate stays bounded (~1 per partition per fsync latency) however many writers there are.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::partition::Partition;

/// Outcome of a flush, shared by every waiter of one group.
pub type FlushResult = Result<(), Arc<std::io::Error>>;

struct Request {
    partition: Arc<Partition>,
    done: Option<oneshot::Sender<FlushResult>>,
}

#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<Request>,
}

/// Most requests queued for the flusher; writers wait (backpressure) beyond this.
const QUEUE_LIMIT: usize = 16 * 1024;

impl Flusher {
    pub fn start() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
        tokio::spawn(run(rx));
        Self { tx }
    }

    /// Queues a flush of `partition`; the receiver resolves once everything appended to it
    /// before this call is durable. Submit all partitions first, then await, so they share
    /// one group.
    pub async fn submit(&self, partition: Arc<Partition>) -> oneshot::Receiver<FlushResult> {
        let (done, rx) = oneshot::channel();
        // If the flusher is gone, `done` is dropped and the receiver reports that.
        let _ = self
            .tx
            .send(Request {
                partition,
                done: Some(done),
            })
            .await;
        rx
    }

    /// Awaits a receiver from `submit`.
    pub async fn wait(rx: oneshot::Receiver<FlushResult>) -> FlushResult {
        rx.await
            .unwrap_or_else(|_| Err(Arc::new(std::io::Error::other("broker is shutting down"))))
    }

    /// Requests a flush without waiting for it (acks=0 and background flushes).
    pub fn flush_soon(&self, partition: Arc<Partition>) {
        let _ = self.tx.try_send(Request {
            partition,
            done: None,
        });
    }
}

async fn run(mut rx: mpsc::Receiver<Request>) {
    let mut group = Vec::new();
    while rx.recv_many(&mut group, QUEUE_LIMIT).await > 0 {
        let mut by_partition: HashMap<usize, (Arc<Partition>, Vec<oneshot::Sender<FlushResult>>)> =
            HashMap::new();
        for req in group.drain(..) {
            let entry = by_partition
                .entry(Arc::as_ptr(&req.partition) as usize)
                .or_insert_with(|| (req.partition.clone(), Vec::new()));
            entry.1.extend(req.done);
        }
        let mut syncs = JoinSet::new();
        for (_, (partition, waiters)) in by_partition {
            syncs.spawn(async move {
                let result = partition.flush().await.map_err(Arc::new);
                if let Err(e) = &result {
                    tracing::error!(partition = %partition.name(), error = %e, "fsync failed");
                }
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            });
        }
        while syncs.join_next().await.is_some() {}
    }
}
