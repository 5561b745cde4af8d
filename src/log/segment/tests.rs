//! Unit tests for `segment.rs`, against real files in a temp dir.

use super::*;
use crate::log::batch::patch_batch;
use crate::log::testutil::batch_of;
use std::io::Write;

/// Appends one batch per `(records, value_len, ts)`, numbered from the segment's next
/// offset; returns the stored bytes of each.
fn append(seg: &mut Segment, specs: &[(usize, usize, i64)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for &(n, len, ts) in specs {
        let mut b = batch_of(n, len, ts);
        let h = patch_batch(&mut b, seg.next_offset(), 3, None).unwrap();
        seg.append(vec![std::io::IoSlice::new(&b)], &[h], ts)
            .unwrap();
        out.push(b);
    }
    out
}

fn read_all(seg: &Segment, from: i64, max: usize) -> Option<ReadSlice> {
    seg.read(from, max, i64::MAX).unwrap()
}

#[test]
fn append_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 100, 4096, 0).unwrap();
    assert!(seg.is_empty());
    let batches = append(&mut seg, &[(3, 10, 1), (1, 10, 2), (2, 10, 3)]);
    assert_eq!(seg.next_offset(), 106);
    let all: Vec<u8> = batches.concat();
    assert_eq!(seg.size_bytes(), all.len() as u64);
    let slice = read_all(&seg, 100, 1 << 20).unwrap();
    assert_eq!(&slice.bytes[..], &all[..]);
    assert_eq!((slice.first_offset, slice.next_offset), (100, 106));
    assert!(read_all(&seg, 106, 1 << 20).is_none());
    assert_eq!(seg.max_timestamp(), Some((104, 3)));
}

#[test]
fn read_inside_a_batch_returns_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 4096, 0).unwrap();
    let batches = append(&mut seg, &[(5, 10, 1), (5, 10, 1)]);
    let slice = read_all(&seg, 7, 1 << 20).unwrap();
    assert_eq!(slice.first_offset, 5);
    assert_eq!(&slice.bytes[..], &batches[1][..]);
}

#[test]
fn read_limits_to_whole_batches_but_always_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 4096, 0).unwrap();
    let batches = append(&mut seg, &[(1, 1000, 1), (1, 1000, 1), (1, 1000, 1)]);
    // KIP-74: a first batch larger than max_bytes still comes back whole.
    let slice = read_all(&seg, 0, 10).unwrap();
    assert_eq!(&slice.bytes[..], &batches[0][..]);
    // One and a half batches' worth gives one batch.
    let slice = read_all(&seg, 0, batches[0].len() * 3 / 2).unwrap();
    assert_eq!(slice.bytes.len(), batches[0].len());
    assert_eq!(slice.next_offset, 1);
    // The high watermark bound cuts at a batch's base offset.
    let slice = seg.read(0, 1 << 20, 2).unwrap().unwrap();
    assert_eq!(slice.bytes.len(), batches[0].len() + batches[1].len());
    assert!(seg.read(2, 1 << 20, 2).unwrap().is_none());
}

#[test]
fn only_ranges_wholly_below_the_limit_are_sent_unread() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 4096, 0).unwrap();
    let batches = append(&mut seg, &[(1, 1000, 1), (2, 1000, 1), (1, 1000, 1)]);
    let whole: usize = batches.iter().map(|b| b.len()).sum();
    // The limit (high watermark) at or past the segment's end: the range as located, the
    // last batch cut short by max_bytes as Kafka's fetch responses may be.
    let cut = batches[0].len() + batches[1].len() / 2;
    let region = seg
        .plan_read(0, cut, 4)
        .unwrap()
        .unwrap()
        .into_region()
        .unwrap();
    assert_eq!((region.pos, region.len), (0, cut));
    let region = seg
        .plan_read(1, 1 << 20, 10)
        .unwrap()
        .unwrap()
        .into_region()
        .unwrap();
    assert_eq!(
        (region.pos, region.len),
        (batches[0].len() as u64, whole - batches[0].len())
    );
    let mut sent = vec![0; region.len];
    std::os::unix::fs::FileExt::read_exact_at(&*region.file, &mut sent, region.pos).unwrap();
    assert_eq!(sent, [&batches[1][..], &batches[2][..]].concat());
    // The limit inside the segment: the plan comes back to be read and cut at the limit.
    let plan = seg.plan_read(0, 1 << 20, 3).unwrap().unwrap();
    let plan = plan.into_region().unwrap_err();
    assert_eq!(
        plan.read().unwrap().bytes.len(),
        batches[0].len() + batches[1].len()
    );
}

#[test]
fn sparse_index_is_used_and_correct() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 0, 0).unwrap();
    let specs: Vec<_> = (0..20).map(|i| (2, 50, i)).collect();
    let batches = append(&mut seg, &specs);
    assert_eq!(seg.index_entries(), 19);
    for offset in 0..40 {
        let slice = read_all(&seg, offset, 1).unwrap();
        let i = offset as usize / 2;
        assert_eq!(&slice.bytes[..], &batches[i][..], "offset {offset}");
    }
}

#[test]
fn header_walk_crosses_read_windows() {
    let dir = tempfile::tempdir().unwrap();
    // No index entries at all: every lookup walks from the start of the file.
    let mut seg = Segment::create(dir.path(), 0, u32::MAX, 0).unwrap();
    let specs: Vec<_> = (0..150).map(|i| (1, 200 + i as usize, i)).collect();
    let batches = append(&mut seg, &specs);
    assert!(seg.size_bytes() > 2 * HEADER_WINDOW_BYTES);
    assert_eq!(seg.index_entries(), 0);
    for (i, batch) in batches.iter().enumerate() {
        let slice = read_all(&seg, i as i64, 1).unwrap();
        assert_eq!(&slice.bytes[..], &batch[..], "offset {i}");
        assert_eq!(
            seg.find_offset_by_timestamp(i as i64, 0).unwrap(),
            Some((i as i64, i as i64))
        );
    }
}

#[test]
fn finds_offsets_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 0, 0).unwrap();
    // Timestamps 10, 30, 20, 40 at base offsets 0, 2, 4, 6.
    append(&mut seg, &[(2, 5, 10), (2, 5, 30), (2, 5, 20), (2, 5, 40)]);
    let find = |ts, min| seg.find_offset_by_timestamp(ts, min).unwrap();
    assert_eq!(find(0, 0), Some((0, 10)));
    assert_eq!(find(10, 0), Some((0, 10)));
    assert_eq!(find(11, 0), Some((2, 30)));
    assert_eq!(find(25, 0), Some((2, 30)));
    assert_eq!(find(31, 0), Some((6, 40)));
    assert_eq!(find(41, 0), None);
    // Batches wholly below min_offset are skipped; a straddling one is clamped.
    assert_eq!(find(0, 3), Some((3, 30)));
    assert_eq!(find(0, 4), Some((4, 20)));
}

#[test]
fn recover_truncates_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 0, 0).unwrap();
    let batches = append(&mut seg, &[(2, 100, 1), (3, 100, 2)]);
    let good = seg.size_bytes();
    let path = seg.log_path().to_path_buf();
    drop(seg);
    // Half of a third batch, as a crash mid-write leaves it.
    let mut third = batch_of(1, 100, 3);
    patch_batch(&mut third, 5, 3, None).unwrap();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&third[..third.len() / 2]).unwrap();
    drop(f);

    let (seg, truncated) = Segment::open_active(dir.path(), 0, 0).unwrap();
    assert_eq!(truncated, (third.len() / 2) as u64);
    assert_eq!(seg.size_bytes(), good);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    assert_eq!(seg.next_offset(), 5);
    assert_eq!(
        &read_all(&seg, 0, 1 << 20).unwrap().bytes[..],
        &batches.concat()[..]
    );
}

#[test]
fn recover_cuts_at_a_crc_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 4096, 0).unwrap();
    let batches = append(&mut seg, &[(1, 10, 1), (1, 10, 1), (1, 10, 1)]);
    let path = seg.log_path().to_path_buf();
    drop(seg);
    let mut bytes = std::fs::read(&path).unwrap();
    let flip = batches[0].len() + batches[1].len() - 1;
    bytes[flip] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let (seg, truncated) = Segment::open_active(dir.path(), 0, 4096).unwrap();
    assert_eq!(seg.next_offset(), 1);
    assert_eq!(truncated, (batches[1].len() + batches[2].len()) as u64);
}

#[test]
fn sealed_segment_reloads_its_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 50, 0, 0).unwrap();
    let specs: Vec<_> = (0..10).map(|i| (1, 20, 100 - i)).collect();
    append(&mut seg, &specs);
    seg.seal().unwrap();
    let entries = seg.index_entries();
    drop(seg);
    let seg = Segment::open_sealed(dir.path(), 50, 0).unwrap();
    assert_eq!(seg.index_entries(), entries);
    assert_eq!(seg.next_offset(), 60);
    assert_eq!(seg.max_timestamp(), Some((50, 100)));
}

#[test]
fn sealed_segment_rebuilds_a_corrupt_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 0, 0).unwrap();
    let batches = append(&mut seg, &[(1, 20, 5), (1, 20, 9), (1, 20, 7), (1, 20, 8)]);
    seg.seal().unwrap();
    let index_path = dir.path().join(file_name(0, INDEX_SUFFIX));
    let good_index = std::fs::read(&index_path).unwrap();
    drop(seg);
    // Entries pointing past the log, out of order.
    std::fs::write(
        &index_path,
        [0u8, 0, 0, 9, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
    )
    .unwrap();
    let seg = Segment::open_sealed(dir.path(), 0, 0).unwrap();
    assert_eq!(std::fs::read(&index_path).unwrap(), good_index);
    assert_eq!(seg.next_offset(), 4);
    assert_eq!(seg.max_timestamp(), Some((1, 9)));
    let slice = read_all(&seg, 2, 1).unwrap();
    assert_eq!(&slice.bytes[..], &batches[2][..]);
    // A truncated time index is rebuilt too.
    std::fs::write(
        dir.path().join(file_name(0, TIME_INDEX_SUFFIX)),
        [1u8, 2, 3],
    )
    .unwrap();
    drop(seg);
    let seg = Segment::open_sealed(dir.path(), 0, 0).unwrap();
    assert_eq!(seg.max_timestamp(), Some((1, 9)));
}

#[test]
fn sealed_segment_with_damaged_log_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 4096, 0).unwrap();
    append(&mut seg, &[(1, 20, 5), (1, 20, 9)]);
    seg.seal().unwrap();
    let path = seg.log_path().to_path_buf();
    drop(seg);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(f.metadata().unwrap().len() - 1).unwrap();
    let err = Segment::open_sealed(dir.path(), 0, 4096).unwrap_err();
    assert!(matches!(err, LogError::CorruptSegment { .. }), "{err}");
    assert!(err.is_storage_error());
}

#[test]
fn delete_removes_all_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 7, 4096, 0).unwrap();
    append(&mut seg, &[(1, 20, 5)]);
    seg.seal().unwrap();
    seg.sync_handle().unwrap().sync_data().unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    seg.delete().unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn file_names_round_trip() {
    assert_eq!(file_name(42, LOG_SUFFIX), "00000000000000000042.log");
    assert_eq!(
        parse_file_name("00000000000000000042.timeindex"),
        Some((42, "timeindex"))
    );
    assert_eq!(parse_file_name("42.log"), None);
    assert_eq!(parse_file_name("log-start-offset"), None);
}

#[test]
fn a_retired_log_is_cut_down_only_when_nothing_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000000000.log.deleted");
    let file = File::create(&path).unwrap();
    let len = 3 * CUT_STEP + 12_345;
    file.set_len(len).unwrap();
    let log = Arc::new(file);
    // A fetch still sending from it holds a handle: the file stays whole.
    let reader = log.clone();
    cut_down(log, &path);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    // The last handle: cut to less than a step, left for the unlink.
    cut_down(reader, &path);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 12_345);
}
