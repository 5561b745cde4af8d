//! A minimal Kafka protocol client for broker-to-broker requests (a follower's Fetch and
//! OffsetsForLeaderEpoch to its leader): one connection, one request at a time.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted (fetch sizes are bounded well below it).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: {0}", addr = .1)]
    Protocol(String, String),
    #[error("{0}: timed out")]
    Timeout(String),
}

pub struct BrokerClient {
    addr: String,
    stream: TcpStream,
    client_id: StrBytes,
    correlation: i32,
}

impl BrokerClient {
    pub async fn connect(
        addr: &str,
        client_id: String,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(addr.to_string()))?
            .map_err(|source| ClientError::Io {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            addr: addr.to_string(),
            stream,
            client_id: StrBytes::from_string(client_id),
            correlation: 0,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req` at `version` and waits (up to `timeout`) for its response.
    pub async fn call<R>(
        &mut self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ClientError>
    where
        R: Request + Encodable + HeaderVersion,
        R::Response: Decodable + HeaderVersion,
    {
        tokio::time::timeout(timeout, self.call_inner(req, version))
            .await
            .map_err(|_| ClientError::Timeout(self.addr.clone()))?
    }

    async fn call_inner<R>(&mut self, req: &R, version: i16) -> Result<R::Response, ClientError>
    where
        R: Request + Encodable + HeaderVersion,
        R::Response: Decodable + HeaderVersion,
    {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(self.client_id.clone()));
        let protocol = |e: anyhow::Error| ClientError::Protocol(e.to_string(), self.addr.clone());
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(protocol)?;
        req.encode(&mut buf, version).map_err(protocol)?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let io = |source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.stream.write_all(&buf).await.map_err(io)?;
        let len = self.stream.read_i32().await.map_err(io)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| {
                ClientError::Protocol(format!("response of {len} bytes"), self.addr.clone())
            })?;
        let mut body = BytesMut::zeroed(len);
        self.stream.read_exact(&mut body).await.map_err(io)?;
        let mut body = body.freeze();
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| ClientError::Protocol(e.to_string(), self.addr.clone()))?;
        if header.correlation_id != self.correlation {
            return Err(ClientError::Protocol(
                format!(
                    "correlation id {} for request {}",
                    header.correlation_id, self.correlation
                ),
                self.addr.clone(),
            ));
        }
        let resp = R::Response::decode(&mut body, version)
            .map_err(|e| ClientError::Protocol(e.to_string(), self.addr.clone()))?;
        let _ = body.remaining();
        Ok(resp)
    }
}
