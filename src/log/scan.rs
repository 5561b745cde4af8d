//! Walking a segment's `.log` file batch by batch with positioned reads.
//!
//! Owns the rules for what counts as an intact stored batch: a complete v2 header, a length
//! that fits in the file, a base offset that continues exactly where the previous batch
//! ended, and (when asked) a matching CRC. The scan reports where the intact prefix ends and
//! why it stopped; deciding whether to truncate or to fail is the segment's job.
//! Memory use is bounded by one header and one fixed-size chunk, whatever the batch sizes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::batch::{BatchHeader, HEADER_LEN};

/// Bytes read at a time while checking a batch's CRC.
const CRC_CHUNK_BYTES: usize = 64 * 1024;
/// First byte covered by the batch CRC.
const CRC_START: usize = 21;

/// Where a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Byte position just past the last intact batch.
    pub end: u64,
    /// Offset just past the last intact batch (the expected offset if there were none).
    pub next_offset: i64,
    /// Why the scan stopped short of the file end, if it did.
    pub stopped: Option<String>,
}

/// Reads the fixed header of the batch at `pos`.
fn read_header_at(file: &File, pos: u64) -> io::Result<[u8; HEADER_LEN]> {
    let mut buf = [0u8; HEADER_LEN];
    file.read_exact_at(&mut buf, pos)?;
    Ok(buf)
}

/// Scans `file` from byte `start` (a batch boundary whose batch has base offset
/// `expected_offset`) up to `file_len`, calling `visit` with each intact batch's header and
/// position. I/O errors other than a short read are returned; everything that marks the
/// data itself as bad ends the scan with `stopped` set.
pub(crate) fn scan(
    file: &File,
    start: u64,
    file_len: u64,
    expected_offset: i64,
    verify_crc: bool,
    mut visit: impl FnMut(&BatchHeader, u64),
) -> io::Result<ScanEnd> {
    let mut pos = start;
    let mut expected = expected_offset;
    let mut chunk = Vec::new();
    let stopped = loop {
        let remaining = file_len.saturating_sub(pos);
        if remaining == 0 {
            break None;
        }
        if remaining < HEADER_LEN as u64 {
            break Some(format!(
                "partial batch header of {remaining} bytes at {pos}"
            ));
        }
        let raw = match read_header_at(file, pos) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                break Some(format!("file ended inside the header at {pos}"));
            }
            Err(e) => return Err(e),
        };
        let header = match BatchHeader::parse(&raw) {
            Ok(h) => h,
            Err(e) => break Some(format!("bad header at {pos}: {e}")),
        };
        let size = header.total_size() as u64;
        if size > remaining {
            break Some(format!(
                "batch at {pos} claims {size} bytes but only {remaining} remain"
            ));
        }
        if header.base_offset != expected || header.last_offset_delta < 0 {
            break Some(format!(
                "batch at {pos} spans offsets {}..={}, expected to start at {expected}",
                header.base_offset,
                header.last_offset()
            ));
        }
        if verify_crc {
            match batch_crc(file, pos, size, &raw, &mut chunk) {
                Ok(crc) if crc == header.crc => {}
                Ok(crc) => {
                    break Some(format!(
                        "batch at {pos} has CRC {:#010x}, computed {crc:#010x}",
                        header.crc
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    break Some(format!("file ended inside the batch at {pos}"));
                }
                Err(e) => return Err(e),
            }
        }
        visit(&header, pos);
        expected = header.next_offset();
        pos += size;
    };
    Ok(ScanEnd {
        end: pos,
        next_offset: expected,
        stopped,
    })
}

/// CRC-32C of the batch at `pos`, streaming its body through `chunk`.
fn batch_crc(
    file: &File,
    pos: u64,
    size: u64,
    header: &[u8; HEADER_LEN],
    chunk: &mut Vec<u8>,
) -> io::Result<u32> {
    let mut crc = crc32c::crc32c(&header[CRC_START..]);
    let mut at = pos + HEADER_LEN as u64;
    let end = pos + size;
    while at < end {
        let n = (end - at).min(CRC_CHUNK_BYTES as u64) as usize;
        chunk.resize(n, 0);
        file.read_exact_at(chunk, at)?;
        crc = crc32c::crc32c_append(crc, chunk);
        at += n as u64;
    }
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::patch_batch;
    use crate::log::testutil::batch_of;
    use std::io::Write;

    fn file_with(batches: &[Vec<u8>]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for b in batches {
            f.write_all(b).unwrap();
        }
        let len = f.as_file().metadata().unwrap().len();
        (f, len)
    }

    fn numbered(count: usize, records: usize, value_len: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| {
                let mut b = batch_of(records, value_len, 10);
                patch_batch(&mut b, (i * records) as i64, 0, None).unwrap();
                b
            })
            .collect()
    }

    #[test]
    fn scans_intact_file() {
        // A large value checks CRC streaming across chunks.
        let batches = numbered(3, 2, CRC_CHUNK_BYTES + 7);
        let (f, len) = file_with(&batches);
        let mut seen = Vec::new();
        let end = scan(f.as_file(), 0, len, 0, true, |h, pos| {
            seen.push((h.base_offset, pos))
        })
        .unwrap();
        assert_eq!(end.stopped, None);
        assert_eq!((end.end, end.next_offset), (len, 6));
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1], (2, batches[0].len() as u64));
    }

    #[test]
    fn stops_at_crc_mismatch_torn_tail_and_offset_gap() {
        let mut batches = numbered(3, 1, 20);
        let good = (batches[0].len() + batches[1].len()) as u64;
        let last = batches[2].len() - 1;
        batches[2][last] ^= 1;
        let (f, len) = file_with(&batches);
        let end = scan(f.as_file(), 0, len, 0, true, |_, _| {}).unwrap();
        assert_eq!((end.end, end.next_offset), (good, 2));
        assert!(end.stopped.unwrap().contains("CRC"));
        // Without CRC checks the flipped byte goes unnoticed.
        let end = scan(f.as_file(), 0, len, 0, false, |_, _| {}).unwrap();
        assert_eq!(end.stopped, None);
        // A torn tail: the file is shorter than the last batch claims.
        let end = scan(f.as_file(), 0, len - 3, 0, false, |_, _| {}).unwrap();
        assert_eq!(end.end, good);
        assert!(end.stopped.is_some());
        // Wrong starting offset.
        let end = scan(f.as_file(), 0, len, 5, false, |_, _| {}).unwrap();
        assert_eq!(end.end, 0);
        assert!(end.stopped.is_some());
    }
}
