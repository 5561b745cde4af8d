//! Record values, built before the run: a pool of random uppercase letters (what
//! `kafka-producer-perf-test` sends), so producing a record costs a reference count, not an
//! allocation. Several distinct payloads keep compression honest: one payload repeated would
//! compress a batch to almost nothing.
//!
//! A *stamped* value starts with its intended send time (u64 big-endian ns since the Unix epoch)
//! so a consumer can measure end-to-end latency. Stamped values are cut from one arena buffer,
//! one allocation per `ARENA_BYTES` of records.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the send-time stamp at the front of a stamped value.
pub const STAMP_BYTES: usize = 8;
/// Upper bound on the memory the payload pool takes.
const POOL_BYTES: usize = 8 << 20;
const POOL_MAX: usize = 1024;
const ARENA_BYTES: usize = 1 << 20;

pub struct Payloads {
    pool: Vec<Bytes>,
    next: usize,
    stamped: bool,
    arena: BytesMut,
}

/// splitmix64: a small, good-enough generator; payload bytes need no cryptography.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Payloads {
    /// Values of `record_size` bytes. Stamped values need `record_size >= STAMP_BYTES`.
    pub fn new(record_size: usize, stamped: bool, seed: u64) -> Self {
        assert!(
            !stamped || record_size >= STAMP_BYTES,
            "stamped records need at least {STAMP_BYTES} bytes"
        );
        let count = (POOL_BYTES / record_size.max(1)).clamp(1, POOL_MAX);
        let mut state = seed;
        let pool = (0..count)
            .map(|_| {
                let v: Vec<u8> = (0..record_size)
                    .map(|_| b'A' + (splitmix64(&mut state) % 26) as u8)
                    .collect();
                Bytes::from(v)
            })
            .collect();
        Self {
            pool,
            next: 0,
            stamped,
            arena: BytesMut::new(),
        }
    }

    /// The next value; `send_unix_ns` is written into it when stamped.
    pub fn next(&mut self, send_unix_ns: u64) -> Bytes {
        let p = &self.pool[self.next];
        self.next = (self.next + 1) % self.pool.len();
        if !self.stamped {
            return p.clone();
        }
        if self.arena.capacity() - self.arena.len() < p.len() {
            self.arena.reserve(ARENA_BYTES.max(p.len()));
        }
        self.arena.put_u64(send_unix_ns);
        self.arena.extend_from_slice(&p[STAMP_BYTES..]);
        self.arena.split().freeze()
    }
}

/// The send time stamped into a value, if it is long enough to carry one.
pub fn stamp_of(value: &[u8]) -> Option<u64> {
    let b: [u8; STAMP_BYTES] = value.get(..STAMP_BYTES)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_are_shared_uppercase_payloads() {
        let mut p = Payloads::new(100, false, 1);
        let a = p.next(0);
        assert_eq!(a.len(), 100);
        assert!(a.iter().all(|b| b.is_ascii_uppercase()));
        assert_ne!(p.pool[0], p.pool[1], "distinct payloads");
        let pool = p.pool.len();
        for _ in 1..pool {
            p.next(0);
        }
        assert_eq!(
            a.as_ptr(),
            p.next(0).as_ptr(),
            "the pool is reused, not copied"
        );
    }

    #[test]
    fn pool_is_bounded() {
        assert_eq!(Payloads::new(1 << 20, false, 1).pool.len(), 8);
        assert_eq!(Payloads::new(10, false, 1).pool.len(), POOL_MAX);
        assert_eq!(Payloads::new(0, false, 1).next(0).len(), 0);
    }

    #[test]
    fn stamped_values_carry_their_send_time() {
        let mut p = Payloads::new(64, true, 7);
        let values: Vec<Bytes> = (0..10_000u64)
            .map(|i| p.next(1_700_000_000_000_000_000 + i))
            .collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(v.len(), 64);
            assert_eq!(stamp_of(v), Some(1_700_000_000_000_000_000 + i as u64));
        }
        assert_eq!(stamp_of(b"short"), None);
    }
}
