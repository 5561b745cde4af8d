//! Object-store conformance: one suite, run against every store Strata supports here: the
//! in-memory store, a local directory, and a real S3-API server (moto, started by the test).
//! Plus faults: a multipart upload that fails half-way leaves no object behind, and an S3
//! server killed mid-upload makes the upload return an error, after which a restarted server
//! takes the same upload.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use tiering::batch::{Batch, Codec, Header, Record, TopicCompression};
use tiering::store::{
    open_store, parse_segment_key, partition_prefix, segment_key, upload, StoreError, StoreOptions,
    UploadOptions, Verify,
};
use tiering::table::{
    batches_to_parquet, parquet_to_batches, read_object, ReadOptions, WriteOptions,
};

use support::hook::HookStore;

const MIB: usize = 1024 * 1024;

/// Multipart parts of 5 MiB (S3's minimum), for objects over 5 MiB.
fn multipart_options(verify: Verify) -> UploadOptions {
    UploadOptions {
        multipart_threshold_bytes: 5 * MIB,
        part_size_bytes: 5 * MIB,
        max_parts_in_flight: 2,
        verify,
    }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn not_found<T: std::fmt::Debug>(r: object_store::Result<T>) -> bool {
    matches!(r, Err(object_store::Error::NotFound { .. }))
}

fn segment(base: i64, batches: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for b in 0..batches {
        let base_offset = base + (b as i64) * 10;
        Batch {
            base_offset,
            partition_leader_epoch: 1,
            attributes: Codec::Lz4.id(),
            last_offset_delta: 9,
            base_timestamp: 1_700_000_000_000 + base_offset,
            max_timestamp: 1_700_000_000_009 + base_offset,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records: (0..10)
                .map(|i| Record {
                    attributes: 0,
                    timestamp_delta: i64::from(i),
                    offset_delta: i,
                    key: Some(Bytes::from(format!("user-{}", base_offset + i64::from(i)))),
                    value: Some(Bytes::from(format!(
                        "{{\"n\":{},\"pad\":\"{}\"}}",
                        base_offset + i64::from(i),
                        "y".repeat(200)
                    ))),
                    headers: vec![Header {
                        key: Bytes::from_static(b"h"),
                        value: None,
                    }],
                })
                .collect(),
        }
        .encode(Codec::Lz4, &mut out)
        .unwrap();
    }
    out
}

/// The behaviour tiering relies on, checked against one store.
async fn conformance(store: Arc<dyn ObjectStore>) {
    let dyn_store: &dyn ObjectStore = store.as_ref();
    let key = segment_key("orders", 0, 0, 99).unwrap();

    // Not found, before anything exists.
    assert!(not_found(store.get(&key).await), "get of a missing object");
    assert!(
        not_found(store.head(&key).await),
        "head of a missing object"
    );
    assert!(
        not_found(store.get_range(&key, 0..1).await),
        "ranged get of a missing object"
    );

    // Put and get, through the upload path with full read-back verification.
    let small = pattern(100_000, 1);
    let up = upload(
        dyn_store,
        &key,
        small.clone(),
        &UploadOptions {
            verify: Verify::Content,
            ..UploadOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(up.size_bytes, small.len() as u64);
    assert_eq!(store.get(&key).await.unwrap().bytes().await.unwrap(), small);

    // Head.
    let meta = store.head(&key).await.unwrap();
    assert_eq!(meta.size, small.len() as u64);
    assert_eq!(meta.location, key);

    // Ranged reads: one range, several, a suffix (how Parquet readers fetch the footer).
    assert_eq!(
        store.get_range(&key, 10..1_000).await.unwrap(),
        small.slice(10..1_000)
    );
    let ranges = store
        .get_ranges(&key, &[0..10, 50_000..50_100, 99_990..100_000])
        .await
        .unwrap();
    assert_eq!(ranges[0], small.slice(0..10));
    assert_eq!(ranges[1], small.slice(50_000..50_100));
    assert_eq!(ranges[2], small.slice(99_990..100_000));
    let suffix = store
        .get_opts(
            &key,
            GetOptions {
                range: Some(GetRange::Suffix(8)),
                ..GetOptions::default()
            },
        )
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(suffix, small.slice(small.len() - 8..));

    // Overwrite: the key is deterministic, so a repeated upload replaces the object whole.
    let other = pattern(50_000, 2);
    upload(dyn_store, &key, other.clone(), &UploadOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap().bytes().await.unwrap(), other);
    upload(dyn_store, &key, other.clone(), &UploadOptions::default())
        .await
        .unwrap();
    assert_eq!(store.head(&key).await.unwrap().size, other.len() as u64);

    // List with a prefix: a partition's segments, in offset order; nothing from elsewhere.
    for (partition, first, last) in [(0, 100, 199), (0, 200, 299), (1, 0, 49)] {
        let k = segment_key("orders", partition, first, last).unwrap();
        upload(dyn_store, &k, pattern(10, 3), &UploadOptions::default())
            .await
            .unwrap();
    }
    upload(
        dyn_store,
        &segment_key("orders-eu", 0, 0, 9).unwrap(),
        pattern(10, 4),
        &UploadOptions::default(),
    )
    .await
    .unwrap();
    let mut listed: Vec<_> = store
        .list(Some(&partition_prefix("orders", 0).unwrap()))
        .map_ok(|m| parse_segment_key(&m.location).expect("only segment keys"))
        .try_collect()
        .await
        .unwrap();
    listed.sort_by_key(|k| k.first_offset);
    let ranges: Vec<_> = listed
        .iter()
        .map(|k| (k.first_offset, k.last_offset))
        .collect();
    assert_eq!(ranges, [(0, 99), (100, 199), (200, 299)]);
    let partitions = store
        .list_with_delimiter(Some(&Path::from("topics/orders")))
        .await
        .unwrap();
    let mut names: Vec<_> = partitions
        .common_prefixes
        .iter()
        .map(|p| p.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["topics/orders/partition=0", "topics/orders/partition=1"]
    );

    // Delete; deleting again is fine either way (retention may race a previous attempt).
    store.delete(&key).await.unwrap();
    assert!(not_found(store.head(&key).await), "deleted object is gone");
    let again = store.delete(&key).await;
    assert!(again.is_ok() || not_found(again), "second delete");

    // A large object: a multipart upload of three parts, verified byte for byte.
    let big_key = segment_key("orders", 2, 0, 1_000_000).unwrap();
    let big = pattern(12 * MIB + 123, 5);
    let up = upload(
        dyn_store,
        &big_key,
        big.clone(),
        &multipart_options(Verify::Content),
    )
    .await
    .unwrap();
    assert_eq!(up.size_bytes, big.len() as u64);
    assert_eq!(
        store
            .get_range(&big_key, (6 * MIB) as u64..(6 * MIB + 10) as u64)
            .await
            .unwrap(),
        big.slice(6 * MIB..6 * MIB + 10)
    );

    // A multipart upload that fails half-way leaves nothing visible under its key.
    let torn_key = segment_key("orders", 3, 0, 5).unwrap();
    let failing = HookStore::new(
        store.clone(),
        Arc::new(|part| {
            (part == 2).then(|| object_store::Error::Generic {
                store: "test",
                source: "injected failure of part 2".into(),
            })
        }),
    );
    let err = upload(
        &failing,
        &torn_key,
        big.clone(),
        &multipart_options(Verify::Size),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Upload { .. }), "{err}");
    assert!(
        not_found(store.head(&torn_key).await),
        "no partial object after a failed upload"
    );

    // A Parquet segment, read back with ranged GETs from a given offset.
    let seg = segment(1_000, 30);
    let (parquet, summary) = batches_to_parquet(
        &seg,
        &WriteOptions {
            row_group_max_rows: 50,
            ..WriteOptions::default()
        },
    )
    .unwrap();
    assert_eq!(summary.row_groups, 6);
    let pkey = segment_key("orders", 0, summary.first_offset, summary.last_offset).unwrap();
    let parquet = Bytes::from(parquet);
    let up = upload(dyn_store, &pkey, parquet.clone(), &UploadOptions::default())
        .await
        .unwrap();
    for (from, size) in [
        (0, None),
        (1_155, Some(up.size_bytes)),
        (1_299, None),
        (1_300, None),
    ] {
        let options = ReadOptions {
            from_offset: from,
            compression: TopicCompression::Producer,
            max_bytes: usize::MAX,
        };
        let remote = read_object(store.clone(), pkey.clone(), size, &options)
            .await
            .unwrap();
        let local = parquet_to_batches(parquet.clone(), from, TopicCompression::Producer).unwrap();
        assert_eq!(remote, local, "from offset {from}");
    }
    assert_eq!(
        read_object(
            store.clone(),
            pkey.clone(),
            None,
            &ReadOptions {
                from_offset: 0,
                compression: TopicCompression::Producer,
                max_bytes: usize::MAX,
            }
        )
        .await
        .unwrap(),
        seg,
        "a rebuild with the producer's codec equals the segment"
    );
    let missing = read_object(
        store.clone(),
        segment_key("orders", 9, 0, 1).unwrap(),
        None,
        &ReadOptions {
            from_offset: 0,
            compression: TopicCompression::Producer,
            max_bytes: usize::MAX,
        },
    )
    .await;
    assert!(
        missing.as_ref().is_err_and(|e| e.is_object_not_found()),
        "reading a missing object is a not-found error: {missing:?}"
    );
}

#[tokio::test]
async fn in_memory_store() {
    conformance(open_store("memory://", &StoreOptions::default()).unwrap()).await;
}

#[tokio::test]
async fn local_directory_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/objects", dir.path().display());
    conformance(open_store(&url, &StoreOptions::default()).unwrap()).await;
    // Objects are plain files under the directory, at their keys.
    assert!(dir
        .path()
        .join("objects/topics/orders/partition=0/00000000000000000100-00000000000000000199.parquet")
        .is_file());
}

#[cfg(feature = "s3")]
mod s3 {
    use std::time::Duration;

    use super::support::moto::{Moto, BUCKET};
    use super::*;
    use tiering::store::{RetryOptions, S3Options};

    fn options(moto: &Moto, retry: RetryOptions) -> StoreOptions {
        StoreOptions {
            retry,
            request_timeout_ms: 10_000,
            connect_timeout_ms: 1_000,
            s3: S3Options {
                endpoint: Some(moto.endpoint()),
                region: Some("us-east-1".into()),
                path_style: Some(true),
                allow_http: true,
                access_key_id: Some("test".into()),
                secret_access_key: Some("test".into()),
                session_token: None,
            },
            ..StoreOptions::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_api_server() {
        let moto = Moto::start();
        let store = open_store(
            &format!("s3://{BUCKET}/strata"),
            &options(&moto, RetryOptions::default()),
        )
        .unwrap();
        conformance(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_server_killed_mid_upload_then_restarted() {
        let moto = Arc::new(std::sync::Mutex::new(Moto::start()));
        // A short retry budget: the point is that the error comes back, not how long the
        // client keeps trying.
        let retry = RetryOptions {
            max_retries: 2,
            retry_timeout_ms: 3_000,
            init_backoff_ms: 50,
            max_backoff_ms: 200,
        };
        let store = open_store(
            &format!("s3://{BUCKET}"),
            &options(&moto.lock().unwrap(), retry),
        )
        .unwrap();
        let key = segment_key("orders", 0, 0, 999).unwrap();
        let data = pattern(12 * MIB, 7);

        // The server dies (SIGKILL) after the first part went up, before the second is sent.
        let killer = moto.clone();
        let dying = HookStore::new(
            store.clone(),
            Arc::new(move |part| {
                if part == 2 {
                    killer.lock().unwrap().kill();
                }
                None
            }),
        );
        let started = std::time::Instant::now();
        let err = upload(&dying, &key, data.clone(), &multipart_options(Verify::Size))
            .await
            .expect_err("an upload to a dead server fails");
        assert!(matches!(err, StoreError::Upload { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(60));

        // While it is down, a single PUT fails too.
        let small = pattern(1_000, 8);
        let err = upload(
            store.as_ref(),
            &key,
            small.clone(),
            &UploadOptions::default(),
        )
        .await
        .expect_err("a put to a dead server fails");
        assert!(matches!(err, StoreError::Upload { .. }), "{err}");

        // Back up (moto keeps no state: the bucket is created again); the same store, with
        // its stale pooled connections, takes the same upload.
        moto.lock().unwrap().restart();
        let up = upload(
            store.as_ref(),
            &key,
            data.clone(),
            &multipart_options(Verify::Content),
        )
        .await
        .unwrap();
        assert_eq!(up.size_bytes, data.len() as u64);
        assert_eq!(store.get(&key).await.unwrap().bytes().await.unwrap(), data);
        upload(
            store.as_ref(),
            &key,
            small.clone(),
            &UploadOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(store.get(&key).await.unwrap().bytes().await.unwrap(), small);
    }
}
