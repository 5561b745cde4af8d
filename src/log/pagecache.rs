//! The page cache as a bounded window over each partition's newest data.
//!
//! Kafka leaves caching to the OS: every byte written or read stays in the page cache until
//! memory runs out, and only then does reclaim recycle old pages. Growing the page cache is
//! not free: each new page is allocated and, on a virtual machine whose free memory the host
//! has taken back (virtio-balloon free page reporting) or never backed, first touched through
//! a host fault. Measured on the benchmark machine, the kernel's copy into fresh page-cache
//! pages ran at 220-260 MB/s against ~1 GB/s into recycled ones, and a cold sequential read
//! at 410 MB/s against 1.6 GB/s. So the broker releases what it no longer needs:
//! - writes: data more than `log_page_cache_window_bytes` behind a partition's newest byte is
//!   released once it is on disk (the partition decides when; see `storage::partition`);
//! - reads: a read of data outside the window (a consumer catching up on old data) releases
//!   what it read once it is copied out, so a catch-up read neither grows the page cache nor
//!   evicts the tail that other readers share. Reading ahead is left to the kernel's own
//!   readahead: asking for more (`WILLNEED`) allocated the pages and queued the reads on the
//!   fetch's own thread, and a 2 GiB catch-up read ran at ~700 MiB/s with it against
//!   ~950 MiB/s without.
//!
//! - writes are queued for writeback as their pages fill ([`start_writeback`]), so the
//!   group-commit fsync that follows waits for I/O already under way instead of starting it
//!   all itself (time in fsync halved on the benchmark machine), and a relaxed topic's
//!   segment roll does not find tens of megabytes to write under the partition lock.
//!
//! All of these are advice to the kernel: a failure costs only the cache or a slower fsync,
//! never data.

use std::fs::File;
use std::io;

/// Drops `from..to` of `file` from the page cache. The kernel drops only clean pages and
/// starts writeback of dirty ones (without waiting), so a range still dirty needs a second
/// call once written back; no fsync either way.
pub fn release(file: &File, from: u64, to: u64) -> io::Result<()> {
    if to <= from {
        return Ok(());
    }
    imp::release(file, from, to - from)
}

/// Starts writing `from..to` of `file` back to disk without waiting for it, so the fsync that
/// follows finds most of its data already written or in flight.
pub fn start_writeback(file: &File, from: u64, to: u64) -> io::Result<()> {
    if to <= from {
        return Ok(());
    }
    imp::start_writeback(file, from, to - from)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::fs::File;
    use std::io;
    use std::num::NonZeroU64;
    use std::os::fd::AsRawFd;

    use rustix::fs::{fadvise, Advice};

    pub fn release(file: &File, from: u64, len: u64) -> io::Result<()> {
        fadvise(file, from, NonZeroU64::new(len), Advice::DontNeed).map_err(io::Error::from)
    }

    // Unsafe for the FFI call alone: durable 1 KiB produce went from ~575 to ~680 MiB/s
    // and the time in fsync halved with it (docs/BENCHMARKS.md).
    #[allow(unsafe_code)]
    pub fn start_writeback(file: &File, from: u64, len: u64) -> io::Result<()> {
        // SAFETY: a plain syscall on a descriptor that stays open while `file` is borrowed;
        // it reads no memory of ours and only queues writeback of that file's pages.
        let r = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                from as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::fs::File;
    use std::io;

    pub fn release(_file: &File, _from: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    pub fn start_writeback(_file: &File, _from: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn released_ranges_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let file = File::open(&path).unwrap();
        // Cached (just written), then released (cold): the same bytes.
        for released in [false, true] {
            if released {
                file.sync_data().unwrap();
                release(&file, 0, data.len() as u64).unwrap();
            }
            let mut buf = vec![0u8; 100_000];
            file.read_exact_at(&mut buf, 150_000).unwrap();
            assert_eq!(buf, data[150_000..250_000]);
        }
        // Empty and inverted ranges are no-ops.
        release(&file, 10, 10).unwrap();
        release(&file, 20, 10).unwrap();
    }

    #[test]
    fn written_back_ranges_stay_cached_and_appendable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let first: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        file.write_all_at(&first, 0).unwrap();
        // Whole pages only, as the partition asks; then a range reaching past the end.
        start_writeback(&file, 0, 196_608).unwrap();
        start_writeback(&file, 196_608, 1 << 20).unwrap();
        start_writeback(&file, 5, 5).unwrap();
        // Appending into the page whose writeback was started, then reading it all back.
        let second = vec![7u8; 10_000];
        file.write_all_at(&second, first.len() as u64).unwrap();
        file.sync_data().unwrap();
        let mut buf = vec![0u8; first.len() + second.len()];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf[..first.len()], first[..]);
        assert_eq!(buf[first.len()..], second[..]);
    }
}
