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
//! Both are advice to the kernel: a failure costs only the cache, never data.

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

#[cfg(target_os = "linux")]
mod imp {
    use std::fs::File;
    use std::io;
    use std::num::NonZeroU64;

    use rustix::fs::{fadvise, Advice};

    pub fn release(file: &File, from: u64, len: u64) -> io::Result<()> {
        fadvise(file, from, NonZeroU64::new(len), Advice::DontNeed).map_err(io::Error::from)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::fs::File;
    use std::io;

    pub fn release(_file: &File, _from: u64, _len: u64) -> io::Result<()> {
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
}
