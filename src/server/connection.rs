//! One client connection: a reader that frames and dispatches requests in arrival order, and
//! a writer that sends the replies in that same order.
//!
//! Requests are *processed* one at a time, in order, as Kafka does, so two pipelined Produce
//! requests to one partition append in the order they were sent. A reply may complete later
//! (a Produce waiting for its group-commit fsync); the writer awaits those in order, which lets
//! one connection keep many writes in flight under a single fsync.
//!
//! Bounds: `connection_max_inflight_requests` replies queued, and
//! `connection_max_inflight_bytes` of request bytes read but not yet answered.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::frame::frame_size;
use crate::api::splice::Chunk;
use crate::api::{self, Reply};
use crate::broker::Broker;
use crate::log::FileRegion;

struct Outgoing {
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) {
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(broker.config.connection_max_inflight_requests);
    let writer = tokio::spawn(write_loop(wr, rx, peer));
    read_loop(rd, peer, &broker, tx, shutdown).await;
    // The reader has stopped; the writer drains the replies already queued, then exits.
    let _ = writer.await;
}

async fn read_loop(
    mut rd: OwnedReadHalf,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    tx: mpsc::Sender<Outgoing>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = broker.config.socket_request_max_bytes;
    let inflight = Arc::new(Semaphore::new(broker.config.connection_max_inflight_bytes));
    loop {
        let mut prefix = [0u8; 4];
        tokio::select! {
            r = rd.read_exact(&mut prefix) => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let size = match frame_size(prefix, max) {
            Ok(size) => size,
            Err(e) => {
                tracing::info!(%peer, error = %e, "closing connection");
                return;
            }
        };
        // A request larger than the whole budget waits for all of it, then runs alone.
        let want = size.min(broker.config.connection_max_inflight_bytes) as u32;
        let permit = match inflight.clone().acquire_many_owned(want).await {
            Ok(p) => p,
            Err(_) => return,
        };
        // Pages of a new buffer are only touched as bytes arrive, so a size prefix alone
        // does not make the broker commit `max` bytes of memory.
        let mut body = crate::bufpool::take(size);
        while body.len() < size {
            let want = (size - body.len()) as u64;
            match (&mut rd).take(want).read_buf(&mut body).await {
                Ok(n) if n > 0 => {}
                _ => {
                    tracing::debug!(%peer, "connection closed mid-request");
                    return;
                }
            }
        }
        let reply = match api::handle(broker, crate::bufpool::freeze(body), peer).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::info!(%peer, error = %e, "closing connection after a bad request");
                return;
            }
        };
        if tx
            .send(Outgoing {
                reply,
                _permit: permit,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Outgoing>, peer: SocketAddr) {
    while let Some(out) = rx.recv().await {
        let sent = match out.reply {
            Reply::Now(bytes) => wr.write_all(&bytes).await,
            Reply::Later(fut) => wr.write_all(&fut.await).await,
            Reply::Spliced(chunks) => write_chunks(&mut wr, chunks).await,
            Reply::Nothing => continue,
        };
        if let Err(e) = sent {
            tracing::debug!(%peer, error = %e, "write failed; dropping connection");
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// Writes a response frame made of encoded pieces and segment file ranges (see
/// [`crate::api::splice`]).
async fn write_chunks(wr: &mut OwnedWriteHalf, chunks: Vec<Chunk>) -> std::io::Result<()> {
    for chunk in chunks {
        match chunk {
            Chunk::Bytes(bytes) => wr.write_all(&bytes).await?,
            Chunk::File(region) => {
                send_file(wr, &region).await?;
                region.sent();
            }
        }
    }
    Ok(())
}

/// Sends a file range on the socket straight from the page cache (`sendfile`), waiting for
/// room in the socket buffer as `write_all` does. A range that ends early (a follower cut
/// the segment since the fetch was planned) cannot complete the frame already announced,
/// so it fails the connection; the client reconnects and fetches again.
#[cfg(target_os = "linux")]
async fn send_file(wr: &OwnedWriteHalf, region: &FileRegion) -> std::io::Result<()> {
    use tokio::io::Interest;
    let stream: &TcpStream = wr.as_ref();
    let mut pos = region.pos;
    let end = region.pos + region.len as u64;
    while pos < end {
        stream.writable().await?;
        let want = (end - pos) as usize;
        let sent = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, &*region.file, Some(&mut pos), want)
                .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                    "{} ends before byte {end} of a fetch response (truncated since it was read)",
                    region.path().display()
                ),
                ))
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Elsewhere: the range is read, then written.
#[cfg(not(target_os = "linux"))]
async fn send_file(wr: &mut OwnedWriteHalf, region: &FileRegion) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; region.len];
    region.file.read_exact_at(&mut buf, region.pos)?;
    wr.write_all(&buf).await
}
