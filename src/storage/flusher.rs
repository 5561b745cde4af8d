//! Group commit: one fsync per partition covers every write that arrived before it started.
//!
//! Writers append to the page cache and ask the flusher to make their partition durable. The
//! flusher takes every request queued so far and fsyncs each distinct partition once (off the
//! async workers, partitions independently), advances its high watermark, and answers its
//! waiters. Requests for a partition that arrive while its fsyncs run form its next group,
//! started as soon as the partition has fewer than `MAX_SYNCS_PER_PARTITION` fsyncs running,
//! so the fsync rate stays bounded (~2 per partition per fsync latency) however many writers
//! there are, and one slow partition never holds up another's acknowledgements.

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

/// fsyncs of one partition in flight at once. A write that arrives while one runs starts the
/// next right away instead of waiting for it to finish, so a write waits for about one fsync,
/// not up to two; the page writeback of the two overlaps, and Linux makes each fsync cover
/// everything written before it started (it also waits for pages another fsync is writing).
const MAX_SYNCS_PER_PARTITION: usize = 2;

/// One partition's flush state.
struct Pipeline {
    partition: Arc<Partition>,
    in_flight: usize,
    /// Waiters (and background requests, as `None`) not covered by a running fsync.
    pending: Vec<Option<oneshot::Sender<FlushResult>>>,
}

async fn run(mut rx: mpsc::Receiver<Request>) {
    let mut pipelines: HashMap<usize, Pipeline> = HashMap::new();
    let mut syncs: JoinSet<usize> = JoinSet::new();
    let mut group = Vec::new();
    loop {
        tokio::select! {
            received = rx.recv_many(&mut group, QUEUE_LIMIT) => {
                if received == 0 && syncs.is_empty() {
                    return;
                }
                for req in group.drain(..) {
                    let key = Arc::as_ptr(&req.partition) as usize;
                    pipelines
                        .entry(key)
                        .or_insert_with(|| Pipeline {
                            partition: req.partition.clone(),
                            in_flight: 0,
                            pending: Vec::new(),
                        })
                        .pending
                        .push(req.done);
                }
                if received == 0 {
                    // The broker is shutting down: finish the running fsyncs.
                    while syncs.join_next().await.is_some() {}
                    return;
                }
            }
            Some(done) = syncs.join_next(), if !syncs.is_empty() => {
                if let Ok(key) = done {
                    if let Some(p) = pipelines.get_mut(&key) {
                        p.in_flight -= 1;
                    }
                }
            }
        }
        // Start an fsync for every partition with uncovered writes and room in its pipeline.
        pipelines.retain(|&key, p| {
            if !p.pending.is_empty() && p.in_flight < MAX_SYNCS_PER_PARTITION {
                p.in_flight += 1;
                let partition = p.partition.clone();
                let waiters: Vec<_> = p.pending.drain(..).flatten().collect();
                syncs.spawn(async move {
                    let result = partition.flush().await.map_err(Arc::new);
                    if let Err(e) = &result {
                        tracing::error!(partition = %partition.name(), error = %e, "fsync failed");
                    }
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                    key
                });
            }
            p.in_flight > 0 || !p.pending.is_empty()
        });
    }
}
