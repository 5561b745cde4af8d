//! One TCP connection to one broker, pipelined: many requests may be on the wire at once and
//! responses are matched to them in order, as Kafka guarantees per connection.
//!
//! A writer task sends frames in the order `send` was called; before writing a frame that
//! expects an answer it queues the caller's reply slot for the reader task, which reads
//! size-prefixed responses and hands each to the next slot after checking its correlation id.
//! In-flight requests are bounded by a semaphore whose permit travels with the request and is
//! released when its response arrives. Decoding happens in the caller's task (`Pending::wait`),
//! so the reader only moves bytes.
//!
//! A failure on either side closes the connection: every waiting request gets the cause.

use std::io::IoSlice;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::versions::Versions;

pub const CLIENT_ID: &str = "strata-loadtest";
/// Largest response accepted; fetch sizes are capped well below it.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;
const READ_BUFFER_BYTES: usize = 256 << 10;

type Closed = Arc<Mutex<Option<String>>>;

enum Expect {
    Response {
        correlation_id: i32,
        reply: oneshot::Sender<Bytes>,
        permit: OwnedSemaphorePermit,
    },
    /// Produce with acks=0: nothing comes back; report when the bytes reached the socket.
    Nothing { written: oneshot::Sender<Instant> },
}

struct Outgoing {
    /// The frame, in pieces written with one vectored write (see [`super::splice`]).
    frame: Vec<Bytes>,
    expect: Expect,
}

struct Slot {
    correlation_id: i32,
    reply: oneshot::Sender<Bytes>,
    _permit: OwnedSemaphorePermit,
}

pub struct Connection {
    addr: String,
    tx: mpsc::Sender<Outgoing>,
    in_flight: Arc<Semaphore>,
    correlation: AtomicI32,
    versions: Versions,
    closed: Closed,
}

/// A response on its way.
pub struct Pending<T> {
    rx: oneshot::Receiver<Bytes>,
    version: i16,
    addr: String,
    closed: Closed,
    _response: PhantomData<T>,
}

fn close_reason(closed: &Closed) -> String {
    closed
        .lock()
        .expect("poisoned")
        .clone()
        .unwrap_or_else(|| "closed".to_string())
}

fn set_closed(closed: &Closed, why: String) {
    let mut c = closed.lock().expect("poisoned");
    if c.is_none() {
        *c = Some(why);
    }
}

impl<T: Decodable + HeaderVersion> Pending<T> {
    pub async fn wait(self) -> Result<T> {
        let mut body = self.rx.await.map_err(|_| {
            anyhow!(
                "connection to {}: {}",
                self.addr,
                close_reason(&self.closed)
            )
        })?;
        ResponseHeader::decode(&mut body, T::header_version(self.version))?;
        T::decode(&mut body, self.version)
    }
}

/// Completion of a request that has no response.
pub struct Written {
    rx: oneshot::Receiver<Instant>,
    addr: String,
    closed: Closed,
}

impl Written {
    pub async fn wait(self) -> Result<Instant> {
        self.rx.await.map_err(|_| {
            anyhow!(
                "connection to {}: {}",
                self.addr,
                close_reason(&self.closed)
            )
        })
    }
}

impl Connection {
    /// Connects and learns the broker's API versions. At most `max_in_flight` requests are
    /// outstanding at any time.
    pub async fn connect(addr: &str, max_in_flight: usize) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let closed: Closed = Arc::default();
        let (tx, rx) = mpsc::channel(max_in_flight.max(1));
        let (slots_tx, slots_rx) = mpsc::channel(max_in_flight.max(1));
        tokio::spawn(write_loop(
            write,
            rx,
            slots_tx,
            closed.clone(),
            addr.to_string(),
        ));
        tokio::spawn(read_loop(read, slots_rx, closed.clone(), addr.to_string()));
        let mut conn = Self {
            addr: addr.to_string(),
            tx,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            correlation: AtomicI32::new(0),
            versions: Versions::default(),
            closed,
        };
        // v0 is answered by every broker, old or new (a newer one would answer a v3 request
        // it does not know with a v0 body anyway, KIP-511).
        let resp = conn
            .send(&ApiVersionsRequest::default(), 0)
            .await?
            .wait()
            .await?;
        if resp.error_code != 0 {
            bail!(
                "{addr}: ApiVersions failed with error code {}",
                resp.error_code
            );
        }
        conn.versions = Versions::from_broker(&resp.api_keys);
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version to speak for `api` on this connection.
    pub fn version(&self, api: ApiKey) -> Result<i16> {
        self.versions
            .pick(api)
            .with_context(|| format!("broker {}", self.addr))
    }

    /// `req` framed at `version`, with its correlation id. `sets`: the record sets that
    /// `req` carries as markers ([`super::splice`]), in order; empty for other requests.
    fn frame<R: Request>(
        &self,
        req: &R,
        version: i16,
        sets: Vec<Bytes>,
    ) -> Result<(i32, Vec<Bytes>)> {
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let header_version = R::header_version(version);
        let size = header.compute_size(header_version)? + req.compute_size(version)?;
        let mut buf = bufpool::take(4 + size);
        buf.put_i32(size as i32);
        header.encode(&mut buf, header_version)?;
        req.encode(&mut buf, version)?;
        debug_assert_eq!(buf.len(), 4 + size);
        let frame = bufpool::freeze(buf);
        let flexible = header_version >= 2;
        Ok((
            correlation_id,
            super::splice::splice(frame, flexible, sets)?,
        ))
    }

    /// Sends `req` at `version`; waits only for an in-flight slot, not for the response.
    pub async fn send<R: Request>(&self, req: &R, version: i16) -> Result<Pending<R::Response>> {
        self.send_spliced(req, version, Vec::new()).await
    }

    /// [`Connection::send`] for a request carrying `sets` as markers ([`super::splice`]).
    pub async fn send_spliced<R: Request>(
        &self,
        req: &R,
        version: i16,
        sets: Vec<Bytes>,
    ) -> Result<Pending<R::Response>> {
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let (correlation_id, frame) = self.frame(req, version, sets)?;
        let (reply, rx) = oneshot::channel();
        let out = Outgoing {
            frame,
            expect: Expect::Response {
                correlation_id,
                reply,
                permit,
            },
        };
        self.tx.send(out).await.map_err(|_| {
            anyhow!(
                "connection to {}: {}",
                self.addr,
                close_reason(&self.closed)
            )
        })?;
        Ok(Pending {
            rx,
            version,
            addr: self.addr.clone(),
            closed: self.closed.clone(),
            _response: PhantomData,
        })
    }

    /// Sends a request the broker will not answer (Produce with acks=0), carrying `sets` as
    /// markers ([`super::splice`]).
    pub async fn send_no_response<R: Request>(
        &self,
        req: &R,
        version: i16,
        sets: Vec<Bytes>,
    ) -> Result<Written> {
        let (_, frame) = self.frame(req, version, sets)?;
        let (written, rx) = oneshot::channel();
        self.tx
            .send(Outgoing {
                frame,
                expect: Expect::Nothing { written },
            })
            .await
            .map_err(|_| {
                anyhow!(
                    "connection to {}: {}",
                    self.addr,
                    close_reason(&self.closed)
                )
            })?;
        Ok(Written {
            rx,
            addr: self.addr.clone(),
            closed: self.closed.clone(),
        })
    }

    /// Sends `req` at the negotiated version and waits for the response.
    pub async fn call<R: Request>(&self, req: &R) -> Result<R::Response> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown api key {}", R::KEY))?;
        let version = self.version(api)?;
        self.send(req, version)
            .await?
            .wait()
            .await
            .with_context(|| format!("{api:?} v{version} to {}", self.addr))
    }
}

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    slots: mpsc::Sender<Slot>,
    closed: Closed,
    addr: String,
) {
    while let Some(out) = rx.recv().await {
        let written = match out.expect {
            Expect::Response {
                correlation_id,
                reply,
                permit,
            } => {
                // Queued before the bytes go out, so the reader always knows whom a response
                // belongs to.
                let slot = Slot {
                    correlation_id,
                    reply,
                    _permit: permit,
                };
                if slots.send(slot).await.is_err() {
                    break;
                }
                None
            }
            Expect::Nothing { written } => Some(written),
        };
        if let Err(e) = write_pieces(&mut write, out.frame).await {
            set_closed(&closed, format!("write to {addr} failed: {e}"));
            break;
        }
        if let Some(w) = written {
            let _ = w.send(Instant::now());
        }
    }
}

/// Writes every piece, as few writes as the socket allows.
async fn write_pieces(write: &mut OwnedWriteHalf, pieces: Vec<Bytes>) -> std::io::Result<()> {
    let mut rest: &[Bytes] = &pieces;
    let mut skip = 0; // bytes of rest[0] already written
    while !rest.is_empty() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(&rest[0][skip..]))
            .chain(rest[1..].iter().map(|p| IoSlice::new(p)))
            .collect();
        let mut n = write.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        n += skip;
        while let Some(first) = rest.first() {
            if n < first.len() {
                break;
            }
            n -= first.len();
            rest = &rest[1..];
        }
        skip = n;
    }
    Ok(())
}

async fn read_loop(
    read: OwnedReadHalf,
    mut slots: mpsc::Receiver<Slot>,
    closed: Closed,
    addr: String,
) {
    let mut read = BufReader::with_capacity(READ_BUFFER_BYTES, read);
    while let Some(slot) = slots.recv().await {
        match read_frame(&mut read).await {
            Ok(frame) => {
                let got = i32::from_be_bytes(frame[..4].try_into().expect("checked length"));
                if got != slot.correlation_id {
                    set_closed(
                        &closed,
                        format!(
                            "{addr} answered correlation id {got}, expected {}",
                            slot.correlation_id
                        ),
                    );
                    break;
                }
                let _ = slot.reply.send(frame);
            }
            Err(e) => {
                set_closed(&closed, format!("reading from {addr}: {e:#}"));
                break;
            }
        }
    }
}

async fn read_frame(read: &mut BufReader<OwnedReadHalf>) -> Result<Bytes> {
    let size = read
        .read_i32()
        .await
        .context("connection closed by the broker")?;
    if size < 4 || size as usize > MAX_RESPONSE_BYTES {
        bail!("response size {size} out of range");
    }
    let size = size as usize;
    let mut buf = bufpool::take(size);
    let mut limited = read.take(size as u64);
    while buf.len() < size {
        if limited.read_buf(&mut buf).await? == 0 {
            bail!("connection closed mid-response");
        }
    }
    Ok(bufpool::freeze(buf))
}
