//! Drives the real `strata` broker with the load generator and checks that the counts it
//! reports are the records that are really there: produced = consumed = ListOffsets.
//!
//! The broker binary is another package's, so Cargo does not build it for these tests. It is
//! taken from `STRATA_BIN` if set, else from this test's own target directory
//! (`<target>/<profile>/strata`, which `scripts/test.sh` builds before the tests), and built there
//! first if it is missing.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kafka_protocol::records::Compression;
use loadtest::client::cluster::{Cluster, EARLIEST, LATEST};
use loadtest::commands::consume::{self, ConsumeArgs};
use loadtest::commands::e2e::{self, E2eArgs};
use loadtest::commands::produce::{self, ProduceArgs};
use loadtest::commands::workload::{self, WorkloadArgs};
use loadtest::commands::ProducerOpts;

/// `<target>/<profile>` of this test binary (`<target>/<profile>/deps/against_broker-*`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

fn strata_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("STRATA_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.exists(), "STRATA_BIN={} does not exist", bin.display());
            return bin;
        }
        let profile = profile_dir();
        let bin = profile.join("strata");
        if bin.exists() {
            return bin;
        }
        let target = profile.parent().expect("target dir");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // The same targets as `scripts/test.sh` and `cargo test --workspace` select, so features
        // resolve as they did for this test's own build and only the binary is linked (a plain
        // `cargo build -p strata` would rebuild shared dependencies with other features).
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace)
            .args([
                "build",
                "--workspace",
                "--lib",
                "--bins",
                "--tests",
                "--examples",
            ])
            .arg("--target-dir")
            .arg(target);
        if profile.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("running cargo build for the strata binary");
        assert!(
            status.success(),
            "building the strata binary failed: {status}"
        );
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// A broker on a free loopback port with its own data directory, stopped with SIGTERM.
struct Broker {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Broker {
    /// Picks a free port and starts there; a port taken between picking and listening (a
    /// concurrent test's connection or listener) is retried on another one.
    fn start() -> Broker {
        for _ in 0..5 {
            if let Some(broker) = Broker::start_on_free_port() {
                return broker;
            }
        }
        panic!("strata found no free port in 5 attempts");
    }

    fn start_on_free_port() -> Option<Broker> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("broker.log")).expect("log file");
        let child = Command::new(strata_bin())
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", &addr, "--advertised-listener", &addr])
            .env("STRATA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting strata");
        let mut broker = Broker { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Checked before every connect, and once more after one succeeds: something else
            // may hold the port, and then the broker exits.
            if let Some(status) = broker.child.try_wait().expect("broker status") {
                let log = broker.log();
                if log.contains("Address already in use") {
                    return None;
                }
                panic!("strata exited at start ({status}):\n{log}");
            }
            if TcpStream::connect(&broker.addr).is_ok() {
                std::thread::sleep(Duration::from_millis(200));
                if broker.child.try_wait().expect("broker status").is_none() {
                    return Some(broker);
                }
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "strata did not listen within 30 s:\n{}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("broker.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// SIGTERM, and the broker must exit cleanly within 30 s.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("broker status") {
                assert!(
                    status.success(),
                    "strata exited with {status} on SIGTERM:\n{}",
                    self.log()
                );
                return;
            }
            assert!(Instant::now() < deadline, "strata ignored SIGTERM for 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Only reached with the broker still running when a test failed.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn opts(acks: i16, compression: Compression) -> ProducerOpts {
    ProducerOpts {
        acks,
        batch_size: 16384,
        linger_ms: 5,
        compression,
        max_in_flight: 5,
        max_request_size: 1 << 20,
        buffer_memory: 32 << 20,
        topic_config: Vec::new(),
    }
}

fn produce_args(
    addr: &str,
    topic: &str,
    n: u64,
    partitions: u32,
    producer: ProducerOpts,
) -> ProduceArgs {
    ProduceArgs {
        bootstrap_server: addr.to_string(),
        topic: topic.to_string(),
        num_records: n,
        record_size: 100,
        throughput: -1.0,
        partitions,
        producers: 2,
        producer,
        json: true,
    }
}

fn consume_args(addr: &str, topic: &str, messages: u64) -> ConsumeArgs {
    ConsumeArgs {
        bootstrap_server: addr.to_string(),
        topic: topic.to_string(),
        messages,
        threads: 2,
        partitions: Vec::new(),
        fetch_max_bytes: 1 << 20,
        partition_max_bytes: 64 << 10,
        timeout_ms: 10_000,
        json: true,
    }
}

/// Records between log start and end, summed over partitions, per ListOffsets.
async fn records_in(addr: &str, topic: &str) -> u64 {
    let mut cluster = Cluster::connect(addr).await.expect("bootstrap");
    let t = cluster
        .topic(topic)
        .await
        .expect("metadata")
        .expect("topic exists");
    let parts: Vec<i32> = t.partitions.iter().map(|p| p.index).collect();
    let start = cluster
        .list_offsets(&t, &parts, EARLIEST)
        .await
        .expect("earliest");
    let end = cluster
        .list_offsets(&t, &parts, LATEST)
        .await
        .expect("latest");
    parts.iter().map(|p| (end[p] - start[p]) as u64).sum()
}

#[test]
fn produced_consumed_and_listed_counts_agree() {
    let broker = Broker::start();
    let addr = broker.addr.clone();
    let rt = runtime();

    // acks=all over three partitions from two producers, read back by two fetch loops.
    let p = rt
        .block_on(produce::run(&produce_args(
            &addr,
            "counts",
            20_000,
            3,
            opts(-1, Compression::None),
        )))
        .expect("produce");
    assert_eq!((p.records, p.failed, p.bytes), (20_000, 0, 20_000 * 100));
    assert!(
        p.latency_ms.count == 20_000 && p.latency_ms.p50 > 0.0,
        "{:?}",
        p.latency_ms
    );
    assert_eq!(rt.block_on(records_in(&addr, "counts")), 20_000);
    let c = rt
        .block_on(consume::run(&consume_args(&addr, "counts", 20_000)))
        .expect("consume");
    assert_eq!(
        (c.records, c.available, c.timed_out),
        (20_000, 20_000, false)
    );
    assert!(
        c.bytes > 20_000 * 100,
        "batch bytes include headers: {}",
        c.bytes
    );

    // Compressed batches are counted from their headers, without decompression.
    rt.block_on(produce::run(&produce_args(
        &addr,
        "zstd",
        10_000,
        2,
        opts(1, Compression::Zstd),
    )))
    .expect("produce zstd");
    assert_eq!(rt.block_on(records_in(&addr, "zstd")), 10_000);
    let c = rt
        .block_on(consume::run(&consume_args(&addr, "zstd", 10_000)))
        .expect("consume zstd");
    assert_eq!((c.records, c.available), (10_000, 10_000));

    // acks=0: no responses; every record still lands.
    let p = rt
        .block_on(produce::run(&produce_args(
            &addr,
            "fire",
            5_000,
            1,
            opts(0, Compression::Lz4),
        )))
        .expect("produce acks=0");
    assert_eq!((p.records, p.failed), (5_000, 0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.block_on(records_in(&addr, "fire")) < 5_000 {
        assert!(
            Instant::now() < deadline,
            "acks=0 records did not all arrive"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rt.block_on(records_in(&addr, "fire")), 5_000);

    // The binary prints kafka-consumer-perf-test's CSV with the same count.
    let out = Command::new(env!("CARGO_BIN_EXE_strata-loadtest"))
        .args([
            "consume",
            "--bootstrap-server",
            &addr,
            "--topic",
            "counts",
            "--messages",
            "20000",
        ])
        .output()
        .expect("running strata-loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        lines[0],
        "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, \
         rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
    );
    let fields: Vec<&str> = lines[1].split(", ").collect();
    assert_eq!(fields.len(), 10, "{}", lines[1]);
    assert_eq!(fields[4], "20000");

    // And kafka-producer-perf-test's final line.
    let out = Command::new(env!("CARGO_BIN_EXE_strata-loadtest"))
        .args([
            "produce",
            "--bootstrap-server",
            &addr,
            "--topic",
            "counts",
            "--num-records",
            "3000",
        ])
        .args([
            "--record-size",
            "200",
            "--throughput",
            "-1",
            "--acks",
            "all",
        ])
        .output()
        .expect("running strata-loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("3000 records sent, "), "{last}");
    assert!(last.ends_with(" ms 99.9th."), "{last}");
    assert_eq!(rt.block_on(records_in(&addr, "counts")), 23_000);

    drop(rt);
    broker.stop();
}

#[test]
fn e2e_and_workload_read_back_every_record() {
    let broker = Broker::start();
    let addr = broker.addr.clone();
    let rt = runtime();

    let args = E2eArgs {
        bootstrap_server: addr.clone(),
        topic: "latency".into(),
        rate: 2_000.0,
        duration_secs: 2.0,
        record_size: 256,
        partitions: 2,
        producer: ProducerOpts {
            linger_ms: 0,
            ..opts(1, Compression::None)
        },
        drain_timeout_secs: 20,
        json: true,
    };
    let r = rt.block_on(e2e::run(&args)).expect("e2e");
    assert_eq!(
        r.produce.records, 4_000,
        "the schedule's records for 2 s at 2000/s"
    );
    assert_eq!(r.e2e.sent, 4_000);
    assert_eq!(r.e2e.received, 4_000);
    assert_eq!(r.e2e.latency_ms.count, 4_000);
    let l = r.e2e.latency_ms;
    assert!(
        0.0 < l.p50 && l.p50 <= l.p99 && l.p99 <= l.p9999 && l.p9999 <= l.max,
        "{l:?}"
    );
    assert_eq!(rt.block_on(records_in(&addr, "latency")), 4_000);

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("short.yaml");
    std::fs::write(
        &file,
        "name: short\ntopics: 2\npartitionsPerTopic: 3\nmessageSize: 128\nsubscriptionsPerTopic: 2\n\
         consumerPerSubscription: 2\nproducersPerTopic: 2\nproducerRate: 4000\ntestDurationMinutes: 0.04\n",
    )
    .expect("workload file");
    let args = WorkloadArgs {
        file,
        bootstrap_server: addr.clone(),
        topic_prefix: Some("omb".into()),
        acks: -1,
        batch_size: 1 << 20,
        linger_ms: 1,
        compression: Compression::Lz4,
        max_in_flight: 5,
        topic_config: Vec::new(),
        drain_timeout_secs: 20,
        json: true,
    };
    let r = rt.block_on(workload::run(&args)).expect("workload");
    // 2.4 s at 4000/s over four producers; each record read by both subscriptions.
    assert_eq!(r.produce.records, 9_600);
    assert_eq!(r.e2e.received, 2 * 9_600);
    let listed = rt.block_on(records_in(&addr, "omb-0")) + rt.block_on(records_in(&addr, "omb-1"));
    assert_eq!(listed, 9_600);

    drop(rt);
    broker.stop();
}
