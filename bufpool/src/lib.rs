//! Large buffers are reused rather than freed: the broker's request bodies, produce scratch
//! copies, fetch reads and encoded responses, and the load tool's batches, frames and responses.
//!
//! The allocator hands buffers of a MiB or more straight back to the OS when they are freed
//! (glibc maps them on their own), so every such request would otherwise touch new pages:
//! each one zeroed by the kernel, and on a virtual machine whose free memory the host takes
//! back (virtio-balloon free page reporting, as on the benchmark machine) first faulted in on
//! the host. Measured there: consuming 2 GiB of cold data ran at 370 MB/s with fresh buffers
//! and 680 MB/s with retained ones; 1 KiB acks=1 produce at 405-490 against 585 MiB/s.
//!
//! Buffers come in power-of-two classes from 64 KiB to 64 MiB; smaller ones are left to the
//! allocator, which reuses them anyway, and larger ones are not kept. At most
//! [`RETAIN_BYTES`] are kept in all.

use std::sync::Mutex;

use bytes::Bytes;

/// Smallest pooled buffer: 64 KiB.
const MIN_SHIFT: u32 = 16;
/// Largest pooled buffer: 64 MiB.
const MAX_SHIFT: u32 = 26;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Most bytes of idle buffers kept for reuse; beyond this they are freed.
pub const RETAIN_BYTES: usize = 128 << 20;

struct Pool {
    free: [Vec<Vec<u8>>; CLASSES],
    retained: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: [const { Vec::new() }; CLASSES],
    retained: 0,
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The class of a buffer able to hold `len` bytes, if such buffers are pooled.
fn class_for(len: usize) -> Option<usize> {
    let shift = len.max(1 << MIN_SHIFT).next_power_of_two().trailing_zeros();
    (shift <= MAX_SHIFT).then(|| (shift - MIN_SHIFT) as usize)
}

/// An empty buffer with room for at least `len` bytes, reused when one is free.
pub fn take(len: usize) -> Vec<u8> {
    let mut buf = reuse(len);
    buf.clear();
    buf
}

/// A buffer of exactly `len` bytes to be overwritten (a read's destination). A reused buffer
/// keeps whatever its last user left in it, so only bytes it never held are zeroed; the
/// caller must overwrite or cut off every byte before it lets the contents out.
pub fn take_filled(len: usize) -> Vec<u8> {
    let mut buf = reuse(len);
    if buf.len() >= len {
        buf.truncate(len);
    } else {
        buf.resize(len, 0);
    }
    buf
}

/// A pooled buffer of `len`'s class as its last user left it, or a new empty one.
fn reuse(len: usize) -> Vec<u8> {
    if len < 1 << MIN_SHIFT {
        return Vec::with_capacity(len);
    }
    let Some(class) = class_for(len) else {
        return Vec::with_capacity(len);
    };
    let mut p = pool();
    if let Some(buf) = p.free[class].pop() {
        p.retained -= buf.capacity();
        return buf;
    }
    drop(p);
    Vec::with_capacity(1 << (class as u32 + MIN_SHIFT))
}

/// Returns a buffer for reuse (or frees it: not a pooled size, or the pool is full). Its
/// contents stay, so [`take_filled`] need not zero them again.
pub fn give(buf: Vec<u8>) {
    let cap = buf.capacity();
    if cap < 1 << MIN_SHIFT || !cap.is_power_of_two() {
        return;
    }
    let Some(class) = class_for(cap) else {
        return;
    };
    let mut p = pool();
    if p.retained + cap > RETAIN_BYTES {
        return;
    }
    p.retained += cap;
    p.free[class].push(buf);
}

/// `buf` as [`Bytes`] that hand it back to the pool once the last clone is dropped.
pub fn freeze(buf: Vec<u8>) -> Bytes {
    if buf.capacity() < 1 << MIN_SHIFT {
        return Bytes::from(buf);
    }
    Bytes::from_owner(Recycled(buf))
}

struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_to_powers_of_two_within_bounds() {
        assert_eq!(class_for(1), Some(0));
        assert_eq!(class_for(64 << 10), Some(0));
        assert_eq!(class_for((64 << 10) + 1), Some(1));
        assert_eq!(class_for(1 << 20), Some(4));
        assert_eq!(class_for(64 << 20), Some(CLASSES - 1));
        assert_eq!(class_for((64 << 20) + 1), None);
    }

    #[test]
    fn buffers_come_back_through_bytes_and_are_reused() {
        // Other tests share the pool: use a size class nothing else in this crate's tests
        // asks for, and compare capacities and addresses only.
        let len = (32 << 20) + 3;
        let mut buf = take(len);
        assert!(buf.is_empty() && buf.capacity() == 64 << 20);
        buf.extend_from_slice(b"hello");
        let addr = buf.as_ptr() as usize;
        let bytes = freeze(buf);
        let slice = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(&slice[..], b"el");
        drop(slice);
        let again = take(len);
        assert_eq!(
            again.as_ptr() as usize,
            addr,
            "the freed buffer is handed out again"
        );
        assert!(again.is_empty());
        // A read destination comes back at the length asked for, old bytes and all (the
        // reader overwrites them), and zeroed only where the buffer never reached.
        let mut filled = again;
        filled.extend_from_slice(b"abc");
        give(filled);
        let filled = take_filled(len);
        assert_eq!((filled.len(), &filled[..3]), (len, &b"abc"[..]));
        give(filled);
        let again = take(len);
        // Odd capacities (not from the pool) and tiny buffers are simply freed.
        give(Vec::with_capacity(100_000));
        give(Vec::with_capacity(10));
        give(again);
    }
}
