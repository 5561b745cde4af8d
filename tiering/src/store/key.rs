//! Object keys of archived segments.
//!
//! `topics/<topic>/partition=<n>/<first>-<last>.parquet`, Hive-style so query engines see
//! `partition` as a column. Offsets are zero-padded to 20 digits (i64::MAX has 19; 20 matches
//! Kafka's segment file names), so a plain lexicographic LIST returns a partition's segments in
//! offset order. The key is a pure function of the segment, which makes an upload idempotent:
//! a retried or repeated upload of the same segment writes the same object.

use object_store::path::Path;

use super::StoreError;

/// The key of the segment spanning `first..=last` of `topic`/`partition`.
pub fn segment_key(topic: &str, partition: i32, first: i64, last: i64) -> Result<Path, StoreError> {
    check_topic(topic)?;
    if partition < 0 || first < 0 || last < first {
        return Err(StoreError::InvalidKey(format!(
            "partition {partition}, offsets {first}..={last}"
        )));
    }
    Ok(Path::from_iter([
        "topics".to_owned(),
        topic.to_owned(),
        format!("partition={partition}"),
        format!("{first:020}-{last:020}.parquet"),
    ]))
}

/// The prefix under which one partition's segments live (for LIST).
pub fn partition_prefix(topic: &str, partition: i32) -> Result<Path, StoreError> {
    check_topic(topic)?;
    Ok(Path::from_iter([
        "topics".to_owned(),
        topic.to_owned(),
        format!("partition={partition}"),
    ]))
}

/// The parts of a key made by [`segment_key`]; `None` for anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentKey {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

pub fn parse_segment_key(path: &Path) -> Option<SegmentKey> {
    let parts: Vec<_> = path.parts().collect();
    let [topics, topic, partition, file] = parts.as_slice() else {
        return None;
    };
    if topics.as_ref() != "topics" {
        return None;
    }
    let partition = partition
        .as_ref()
        .strip_prefix("partition=")?
        .parse()
        .ok()?;
    let (first, last) = file.as_ref().strip_suffix(".parquet")?.split_once('-')?;
    if first.len() != 20 || last.len() != 20 {
        return None;
    }
    let key = SegmentKey {
        topic: topic.as_ref().to_owned(),
        partition,
        first_offset: first.parse().ok()?,
        last_offset: last.parse().ok()?,
    };
    // Only keys this module would have made.
    (segment_key(&key.topic, key.partition, key.first_offset, key.last_offset).ok()? == *path)
        .then_some(key)
}

/// Kafka's topic name rule (`[a-zA-Z0-9._-]{1,249}`, not `.` or `..`), which also keeps the
/// name a single, unescaped path segment.
fn check_topic(topic: &str) -> Result<(), StoreError> {
    let legal = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if legal {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(format!("topic name {topic:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        let k = segment_key("orders", 3, 0, 41).unwrap();
        assert_eq!(
            k.as_ref(),
            "topics/orders/partition=3/00000000000000000000-00000000000000000041.parquet"
        );
        assert_eq!(
            parse_segment_key(&k),
            Some(SegmentKey {
                topic: "orders".into(),
                partition: 3,
                first_offset: 0,
                last_offset: 41
            })
        );
        let max = segment_key("t", 0, i64::MAX, i64::MAX).unwrap();
        assert!(max
            .as_ref()
            .ends_with("09223372036854775807-09223372036854775807.parquet"));
        assert_eq!(
            partition_prefix("orders", 3).unwrap().as_ref(),
            "topics/orders/partition=3"
        );
    }

    #[test]
    fn keys_sort_by_offset() {
        let a = segment_key("t", 0, 9, 99).unwrap();
        let b = segment_key("t", 0, 100, 1000).unwrap();
        assert!(a.as_ref() < b.as_ref());
    }

    #[test]
    fn bad_inputs() {
        for topic in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(segment_key(topic, 0, 0, 1).is_err(), "{topic:?}");
        }
        assert!(segment_key("t", -1, 0, 1).is_err());
        assert!(segment_key("t", 0, 5, 4).is_err());
        for other in [
            "topics/t/partition=0/1-2.parquet",
            "topics/t/p=0/00000000000000000000-00000000000000000001.parquet",
            "x/t/partition=0/00000000000000000000-00000000000000000001.parquet",
            "topics/t/partition=00/00000000000000000000-00000000000000000001.parquet",
        ] {
            assert_eq!(parse_segment_key(&Path::from(other)), None, "{other}");
        }
    }
}
