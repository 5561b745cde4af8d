//! Kafka request framing: a big-endian i32 size followed by that many bytes. Pure code.

/// Why a frame was refused; each closes the connection (Kafka does the same).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("request size {0} is negative or too small to hold a request header")]
    BadSize(i32),
    #[error("request of {size} bytes exceeds socket_request_max_bytes ({max})")]
    TooLarge { size: usize, max: usize },
}

/// The fixed prefix of every request header (v0-v2): api key, api version, correlation id.
pub const MIN_REQUEST_BYTES: usize = 8;

/// Validates a frame's size prefix against the broker's limit.
pub fn frame_size(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    if size < MIN_REQUEST_BYTES as i32 {
        return Err(FrameError::BadSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(size)
}

/// The fixed part of a request header, readable for any API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl HeaderPrefix {
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let b = frame.get(..MIN_REQUEST_BYTES)?;
        Some(Self {
            api_key: i16::from_be_bytes([b[0], b[1]]),
            api_version: i16::from_be_bytes([b[2], b[3]]),
            correlation_id: i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(frame_size(100i32.to_be_bytes(), 1000), Ok(100));
        assert_eq!(
            frame_size((-1i32).to_be_bytes(), 1000),
            Err(FrameError::BadSize(-1))
        );
        assert_eq!(
            frame_size(3i32.to_be_bytes(), 1000),
            Err(FrameError::BadSize(3))
        );
        assert_eq!(
            frame_size(i32::MAX.to_be_bytes(), 1000),
            Err(FrameError::TooLarge {
                size: i32::MAX as usize,
                max: 1000
            })
        );
    }

    #[test]
    fn header_prefix() {
        let frame = [0, 18, 0, 3, 0, 0, 0, 7, 0xff];
        assert_eq!(
            HeaderPrefix::parse(&frame),
            Some(HeaderPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 7
            })
        );
        assert_eq!(HeaderPrefix::parse(&frame[..7]), None);
    }
}
