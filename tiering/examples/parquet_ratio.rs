//! How big is a segment once it is Parquet? Prints Parquet bytes / segment bytes for ~1 KiB
//! JSON-like records, for segments produced with each codec and two batch sizes.
//!
//! `cargo run -p strata-tiering --example parquet_ratio [records]`
//!
//! Records are generated from a fixed seed: event objects with ids, user ids, a timestamp,
//! an event type, a URL, a user agent, and properties, padded with words from a small
//! vocabulary to ~1 KiB, like application events. Real data compresses better or worse than
//! this; the point is the relative size of the same records in both forms.

use std::time::Instant;

use bytes::Bytes;
use tiering::batch::{Batch, Codec, Header, Record, TopicCompression};
use tiering::table::{batches_to_parquet, parquet_to_batches, WriteOptions};

/// xorshift64*: reproducible and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "checkout",
    "cart",
    "search",
    "product",
    "category",
    "summer",
    "sale",
    "shoes",
    "jacket",
    "blue",
    "red",
    "large",
    "medium",
    "small",
    "express",
    "standard",
    "discount",
    "member",
    "guest",
    "mobile",
    "desktop",
    "tablet",
    "recommendation",
    "banner",
    "footer",
    "header",
];
const TYPES: &[&str] = &[
    "page_view",
    "click",
    "add_to_cart",
    "purchase",
    "search",
    "login",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
];

fn json_record(rng: &mut Rng, n: u64, ts: i64) -> String {
    let mut s = format!(
        concat!(
            "{{\"event_id\":\"{:016x}{:016x}\",\"seq\":{},\"user_id\":{},\"session\":\"{:012x}\",",
            "\"ts\":{},\"type\":\"{}\",\"url\":\"https://shop.example.com/{}/{}?ref={}\",",
            "\"ua\":\"{}\",\"price_cents\":{},\"qty\":{},\"props\":{{"
        ),
        rng.next(),
        rng.next(),
        n,
        rng.below(1_000_000),
        rng.next() & 0xffff_ffff_ffff,
        ts,
        rng.pick(TYPES),
        rng.pick(WORDS),
        rng.below(100_000),
        rng.pick(WORDS),
        rng.pick(AGENTS),
        rng.below(100_000),
        1 + rng.below(5),
    );
    let mut i = 0;
    while s.len() < 1000 {
        s.push_str(&format!(
            "\"{}_{}\":\"{} {} {}\",",
            rng.pick(WORDS),
            i,
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.below(10_000)
        ));
        i += 1;
    }
    s.pop();
    s.push_str("}}");
    s
}

fn segment(records: u64, per_batch: u64, codec: Codec) -> Vec<u8> {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut out = Vec::new();
    let mut offset = 0u64;
    let t0 = 1_760_000_000_000i64;
    while offset < records {
        let n = per_batch.min(records - offset);
        let base_ts = t0 + offset as i64 * 3;
        let recs: Vec<Record> = (0..n)
            .map(|i| Record {
                attributes: 0,
                timestamp_delta: i as i64 * 3,
                offset_delta: i as i32,
                key: Some(Bytes::from(format!("user-{}", rng.below(1_000_000)))),
                value: Some(Bytes::from(json_record(
                    &mut rng,
                    offset + i,
                    base_ts + i as i64 * 3,
                ))),
                headers: vec![Header {
                    key: Bytes::from_static(b"content-type"),
                    value: Some(Bytes::from_static(b"application/json")),
                }],
            })
            .collect();
        Batch {
            base_offset: offset as i64,
            partition_leader_epoch: 0,
            attributes: 0,
            last_offset_delta: n as i32 - 1,
            base_timestamp: base_ts,
            max_timestamp: base_ts + (n as i64 - 1) * 3,
            producer_id: 1_000,
            producer_epoch: 0,
            base_sequence: offset as i32,
            records: recs,
        }
        .encode(codec, &mut out)
        .expect("encode");
        offset += n;
    }
    out
}

fn main() {
    let records: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("records: a number"))
        .unwrap_or(20_000);
    let mut rng = Rng(1);
    let uncompressed_value_bytes = (0..100)
        .map(|i| json_record(&mut rng, i, 0).len())
        .sum::<usize>()
        / 100;
    println!(
        "{records} records, values ~{uncompressed_value_bytes} B of JSON, zstd level {} in Parquet",
        WriteOptions::default().zstd_level
    );
    println!(
        "{:<8} {:>9} {:>13} {:>13} {:>8} {:>10} {:>10}",
        "codec", "per batch", "segment B", "parquet B", "ratio", "write MB/s", "read MB/s"
    );
    for per_batch in [16u64, 500] {
        for codec in Codec::ALL {
            let seg = segment(records, per_batch, codec);
            let started = Instant::now();
            let (parquet, summary) =
                batches_to_parquet(&seg, &WriteOptions::default()).expect("to parquet");
            let write_s = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let back = parquet_to_batches(Bytes::from(parquet), 0, TopicCompression::Producer)
                .expect("from parquet");
            let read_s = started.elapsed().as_secs_f64();
            assert_eq!(summary.records, records);
            if codec == Codec::None {
                assert_eq!(back, seg, "uncompressed rebuild is byte-identical");
            }
            let mb = seg.len() as f64 / 1e6;
            println!(
                "{:<8} {:>9} {:>13} {:>13} {:>8.3} {:>10.1} {:>10.1}",
                codec.name(),
                per_batch,
                seg.len(),
                summary.parquet_bytes,
                summary.parquet_bytes as f64 / seg.len() as f64,
                mb / write_s,
                mb / read_s,
            );
        }
    }
}
