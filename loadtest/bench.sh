#!/usr/bin/env bash
# Benchmarks Strata on this machine with strata-loadtest, and a peer broker too when PEER_CMD is
# set. Prints a Markdown table of the figures and writes it into docs/BENCHMARKS.md.
#
#   bash loadtest/bench.sh                     # full run, ~6 minutes after the build
#   QUICK=1 bash loadtest/bench.sh             # smaller sizes, ~1.5 minutes
#   PEER_CMD='/opt/kafka/run-broker.sh $PORT' bash loadtest/bench.sh
#
# Steps: machine limits (dd with fdatasync/dsync, loopback iperf3), release build of strata and
# strata-loadtest, a fresh broker, then the workloads:
#   (a) 1 producer, 1 KiB records, 1 partition, unthrottled: acks=1 and acks=all
#   (b) 4 producers, 100-byte records, 12 partitions, unthrottled, acks=1
#   (c) consume 2 GiB from the start of a topic; (c') the same on a second Strata broker with
#       the page-cache window off (log_page_cache_window_bytes=0)
#   (d) end-to-end latency at 50% of (a)'s acks=all rate (linger 1 ms)
#   (e) (a) acks=all and (d) again on a topic with flush.messages=100000 (page-cache acks)
#
# Environment:
#   QUICK=1          smaller sizes
#   PEER_CMD         shell command that starts a peer broker in the foreground listening on
#                    127.0.0.1:$PORT (PORT is exported; also passed as $1). It is stopped with
#                    SIGTERM (its process group) when its workloads are done.
#   PEER_NAME        the peer's column title (default: peer)
#   BENCH_DIR        scratch directory for data (default: a new one under /var/tmp)
#   UPDATE_DOCS=0    leave docs/BENCHMARKS.md alone
#   CARGO_TARGET_DIR as for cargo (default: target/ in the repository)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$root/$CARGO_TARGET_DIR" ;; esac

quick="${QUICK:-0}"
if [ "$quick" = 1 ]; then
  a_records=200000      # x 1 KiB = 195 MiB per acks setting
  b_records=2000000     # x 100 B
  c_bytes=$((256 << 20))
  e2e_secs=10
  dd_mib=256
else
  a_records=1000000     # x 1 KiB = 977 MiB per acks setting
  b_records=10000000    # x 100 B
  c_bytes=$((2 << 30))
  e2e_secs=45
  dd_mib=1024
fi
c_records=$((c_bytes / 1024))

step() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }

scratch="${BENCH_DIR:-$(mktemp -d /var/tmp/strata-bench.XXXXXX)}"
mkdir -p "$scratch"
# A full run keeps every workload's data until the end: about 2 GiB for (a), 1 GiB for (b),
# 2 GiB for (c). The end-to-end runs write up to ~17 GiB each in 45 s at this machine's rates,
# so their topics keep only `retention.bytes` (plus the segment being written and what arrives
# between retention checks, which Strata runs every 5 s here instead of Kafka's 5 minutes).
e2e_keep_bytes=$((4 << 30))
need_gib=$([ "$quick" = 1 ] && echo 4 || echo 24)
free_gib=$(( $(df -Pk "$scratch" | awk 'NR == 2 { print $4 }') / 1048576 ))
if [ "$free_gib" -lt "$need_gib" ]; then
  echo "bench.sh: $scratch has ${free_gib} GiB free; a $([ "$quick" = 1 ] && echo quick || echo full) run needs about ${need_gib} GiB (set BENCH_DIR elsewhere or QUICK=1)" >&2
  exit 1
fi
results="$scratch/results"
mkdir -p "$results"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$scratch"; fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # host:port, seconds
  local deadline=$((SECONDS + $2))
  until python3 -c "import socket,sys; socket.create_connection(('${1%:*}', ${1##*:}), 1)" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then return 1; fi
    sleep 0.2
  done
}

# ---- machine limits ----------------------------------------------------------------------------
load="$(cut -d' ' -f1-3 /proc/loadavg)"
step "machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB memory, $(uname -r), load average $load"
fs="$(df -T "$scratch" | awk 'NR==2{print $2" on "$1}')"
note "scratch: $scratch ($fs)"

step "sequential write, ${dd_mib} MiB, bs=1M, one fdatasync at the end (conv=fdatasync)"
dd_seq="$(dd if=/dev/zero of="$scratch/dd.seq" bs=1M count="$dd_mib" conv=fdatasync 2>&1 | tail -1)"
note "$dd_seq"
rm -f "$scratch/dd.seq"
step "sequential write, ${dd_mib} MiB, bs=1M, bypassing the page cache (oflag=direct)"
dd_direct="$(dd if=/dev/zero of="$scratch/dd.direct" bs=1M count="$dd_mib" oflag=direct 2>&1 | tail -1)"
note "$dd_direct"
rm -f "$scratch/dd.direct"
step "synchronous writes: 1 MiB x 500, each fdatasync'd (oflag=dsync): one commit per request of (a)"
dd_sync1m="$(dd if=/dev/zero of="$scratch/dd.sync1m" bs=1M count=500 oflag=dsync 2>&1 | tail -1)"
note "$dd_sync1m"
rm -f "$scratch/dd.sync1m"
step "synchronous writes: 64 KiB x 500, each fdatasync'd (oflag=dsync)"
dd_sync="$(dd if=/dev/zero of="$scratch/dd.sync" bs=64k count=500 oflag=dsync 2>&1 | tail -1)"
note "$dd_sync"
rm -f "$scratch/dd.sync"
step "synchronous writes: 4 KiB x 500, each fdatasync'd (oflag=dsync)"
dd_sync4k="$(dd if=/dev/zero of="$scratch/dd.sync4k" bs=4k count=500 oflag=dsync 2>&1 | tail -1)"
note "$dd_sync4k"
rm -f "$scratch/dd.sync4k"

step "loopback TCP (iperf3, 5 s)"
if ! command -v iperf3 >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  ( $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends iperf3 ) \
    >"$scratch/apt.log" 2>&1 || true
fi
iperf_gbit=""
if command -v iperf3 >/dev/null 2>&1; then
  iport="$(free_port)"
  iperf3 -s -1 -p "$iport" >/dev/null 2>&1 &
  ipid=$!
  sleep 0.5
  if iperf3 -c 127.0.0.1 -p "$iport" -t 5 -J >"$scratch/iperf.json" 2>/dev/null; then
    iperf_gbit="$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$scratch/iperf.json")"
    note "${iperf_gbit} Gbit/s"
  fi
  wait "$ipid" 2>/dev/null || true
else
  note "iperf3 is not installed and could not be installed; loopback bandwidth not measured"
fi

# ---- build -------------------------------------------------------------------------------------
step "cargo build --release (strata, strata-loadtest)"
cargo build --release --workspace --bin strata --bin strata-loadtest >&2
strata="$CARGO_TARGET_DIR/release/strata"
lt="$CARGO_TARGET_DIR/release/strata-loadtest"

# ---- workloads ---------------------------------------------------------------------------------
# Each workload starts with no dirty pages left from the one before: the kernel writing back
# gigabytes in the background would slow the next workload's fsyncs and skew its figures. After
# the sync, where the kernel reports I/O pressure (PSI), it also waits (up to 60 s) until no
# task has waited on I/O for the last 10 s average: removing gigabytes of files on a filesystem
# mounted with `discard` keeps the device busy for tens of seconds after the files are gone.
settle() {
  sync
  sleep 2
  [ -r /proc/pressure/io ] || return 0
  local i
  for i in $(seq 60); do
    awk '/^some/ { split($2, a, "="); exit !(a[2] < 0.5) }' /proc/pressure/io && return 0
    sleep 1
  done
  note "the disk is still busy after 60 s (/proc/pressure/io: $(head -1 /proc/pressure/io))"
}

# run_suite NAME BOOTSTRAP PID: every workload against one broker (process PID); JSON results
# in $results/NAME.*
run_suite() {
  local name="$1" bs="$2" pid="$3" out="$results/$1"
  local fast=(--batch-size 1048576 --linger-ms 1 --max-request-size 2097152)

  step "[$name] (r) resident memory at idle with 100 partitions"
  "$lt" produce --bootstrap-server "$bs" --topic r-idle --partitions 100 --num-records 1000 \
    --record-size 100 --throughput -1 --acks 1 --json >"$out.rprod.json"
  sleep 5
  awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" >"$out.rss" 2>/dev/null || true
  note "$(cat "$out.rss" 2>/dev/null || echo '?') KiB"

  settle
  step "[$name] (a) 1 producer, 1 KiB, 1 partition, acks=1"
  "$lt" produce --bootstrap-server "$bs" --topic a-acks1 --partitions 1 --num-records "$a_records" \
    --record-size 1024 --throughput -1 --acks 1 "${fast[@]}" --json >"$out.a1.json"
  settle
  step "[$name] (a) 1 producer, 1 KiB, 1 partition, acks=all"
  "$lt" produce --bootstrap-server "$bs" --topic a-acksall --partitions 1 --num-records "$a_records" \
    --record-size 1024 --throughput -1 --acks all "${fast[@]}" --json >"$out.aall.json"

  settle
  step "[$name] (b) 4 producers, 100 B, 12 partitions, acks=1"
  "$lt" produce --bootstrap-server "$bs" --topic b-small --partitions 12 --producers 4 \
    --num-records "$b_records" --record-size 100 --throughput -1 --acks 1 "${fast[@]}" --json >"$out.b.json"

  settle
  step "[$name] (c) fill $((c_bytes >> 20)) MiB, then consume it from the start"
  "$lt" produce --bootstrap-server "$bs" --topic c-read --partitions 1 --num-records "$c_records" \
    --record-size 1024 --throughput -1 --acks 1 "${fast[@]}" --json >"$out.cfill.json"
  settle
  "$lt" consume --bootstrap-server "$bs" --topic c-read --messages "$c_records" --json >"$out.c.json"
  note "$(python3 -c 'import json,sys; print("%.1f MiB/s" % json.load(open(sys.argv[1]))["fetch_mib_per_sec"])' "$out.c.json")"

  local rate
  rate="$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["records_per_sec"] * 0.5))' "$out.aall.json")"
  echo "$rate" >"$out.rate"
  settle
  step "[$name] (d) end-to-end latency at ${rate} records/s (50% of (a) acks=all), ${e2e_secs} s"
  e2e_or_fail "$out.d" --bootstrap-server "$bs" --topic d-e2e --partitions 1 --rate "$rate" \
    --duration-secs "$e2e_secs" --record-size 1024 --acks all --linger-ms 1 --batch-size 1048576 \
    --topic-config "retention.bytes=$e2e_keep_bytes"

  settle
  step "[$name] (e) flush.messages=100000: (a) acks=all and (d) again"
  "$lt" produce --bootstrap-server "$bs" --topic e-relaxed --partitions 1 --num-records "$a_records" \
    --record-size 1024 --throughput -1 --acks all "${fast[@]}" --topic-config flush.messages=100000 \
    --json >"$out.eprod.json"
  settle
  e2e_or_fail "$out.e" --bootstrap-server "$bs" --topic e-e2e --partitions 1 --rate "$rate" \
    --duration-secs "$e2e_secs" --record-size 1024 --acks all --linger-ms 1 --batch-size 1048576 \
    --topic-config flush.messages=100000 --topic-config "retention.bytes=$e2e_keep_bytes"
}

# e2e_or_fail OUT ARGS...: an e2e run whose broker cannot keep up with the offered rate (the
# records are not all read back in time) is a result, not an abort: OUT.json records why.
e2e_or_fail() {
  local out="$1"
  shift
  if ! "$lt" e2e "$@" --json >"$out.json" 2>"$out.err"; then
    tail -1 "$out.err" >&2
    note "(the broker's log is kept as $results/<broker>.broker.log when BENCH_DIR is set)"
    python3 -c 'import json,sys; json.dump({"failed": open(sys.argv[1]).read().strip().splitlines()[-1:] or ["failed"]}, open(sys.argv[2], "w"))' \
      "$out.err" "$out.json"
  fi
}

start_strata() {
  local port
  port="$(free_port)"
  mkdir -p "$scratch/strata"
  STRATA_LOG=warn STRATA_LOG_RETENTION_CHECK_INTERVAL_MS=5000 setsid "$strata" serve --data-dir "$scratch/strata/data" \
    --listen "127.0.0.1:$port" --advertised-listener "127.0.0.1:$port" \
    >"$scratch/strata/broker.log" 2>&1 &
  pids+=($!)
  strata_pid=$!
  wait_port "127.0.0.1:$port" 30 || { cat "$scratch/strata/broker.log" >&2; exit 1; }
  strata_addr="127.0.0.1:$port"
}

stop_pid() {
  kill -TERM -- "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

step "starting strata ($strata), fresh data dir"
start_strata
run_suite strata "$strata_addr" "$strata_pid"
stop_pid "$strata_pid"
cp "$scratch/strata/broker.log" "$results/strata.broker.log"
rm -rf "$scratch/strata"

# (c) again with the page-cache window off: the 2 GiB stay in the page cache, as in Kafka.
step "starting strata with log_page_cache_window_bytes=0, fresh data dir"
STRATA_LOG_PAGE_CACHE_WINDOW_BYTES=0 start_strata
step "[strata] (c') fill $((c_bytes >> 20)) MiB, then consume it from the start (page-cache window off)"
"$lt" produce --bootstrap-server "$strata_addr" --topic c-read --partitions 1 --num-records "$c_records" \
  --record-size 1024 --throughput -1 --acks 1 --batch-size 1048576 --linger-ms 1 \
  --max-request-size 2097152 --json >"$results/strata.cwfill.json"
settle
"$lt" consume --bootstrap-server "$strata_addr" --topic c-read --messages "$c_records" --json \
  >"$results/strata.cw.json"
note "$(python3 -c 'import json,sys; print("%.1f MiB/s" % json.load(open(sys.argv[1]))["fetch_mib_per_sec"])' "$results/strata.cw.json")"
stop_pid "$strata_pid"
rm -rf "$scratch/strata"

peer_name="${PEER_NAME:-peer}"
if [ -n "${PEER_CMD:-}" ]; then
  port="$(free_port)"
  step "starting $peer_name: $PEER_CMD (PORT=$port)"
  mkdir -p "$scratch/peer"
  PORT="$port" setsid bash -c "$PEER_CMD" _ "$port" >"$scratch/peer/peer.log" 2>&1 &
  pids+=($!)
  peer_pid=$!
  wait_port "127.0.0.1:$port" 120 || { tail -50 "$scratch/peer/peer.log" >&2; exit 1; }
  sleep 2 # a listening socket is not always a ready broker
  run_suite peer "127.0.0.1:$port" "$peer_pid"
  stop_pid "$peer_pid"
fi

# ---- report ------------------------------------------------------------------------------------
table="$scratch/table.md"
python3 - "$results" "$peer_name" "$quick" "$dd_seq" "$dd_direct" "$dd_sync1m" "$dd_sync" "$dd_sync4k" "$iperf_gbit" \
  "$(nproc)" "$fs" "$load" >"$table" <<'EOF'
import json, os, re, sys

results, peer_name, quick, dd_seq, dd_direct, dd_sync1m, dd_sync, dd_sync4k, iperf, cores, fs, loadavg = sys.argv[1:]
sides = [s for s in ("strata", "peer") if os.path.exists(f"{results}/{s}.a1.json")]

def load(side, key):
    with open(f"{results}/{side}.{key}.json") as f:
        return json.load(f)

def dd_rate(line):
    m = re.search(r"([\d.,]+) ([kMG]?B)/s", line)
    return f"{m.group(1)} {m.group(2)}/s" if m else line

def dd_time(line, count):
    m = re.search(r"([\d.,]+) s,", line)
    if not m:
        return ""
    secs = float(m.group(1).replace(",", "."))
    return f"{secs / count * 1000:.2f} ms per write"

rows = []  # (workload, metric, fmt, getter)
def prod(key, label):
    return [
        (label, "records/s", "{:,.0f}", lambda s: load(s, key)["records_per_sec"]),
        (label, "MiB/s", "{:,.1f}", lambda s: load(s, key)["mib_per_sec"]),
        (label, "latency p50 / p99 / max (ms)", "lat3", lambda s: load(s, key)["latency_ms"]),
    ]
def e2e_part(s, key, part):
    r = load(s, key)
    return r["failed"] if "failed" in r else r["e2e"][part]
def e2e(key, label):
    return [
        (label, "achieved rate (records/s)", "{:,.0f}", lambda s: e2e_part(s, key, "records_per_sec")),
        (label, "e2e p50 / p99 / p99.9 / p99.99 / max (ms)", "lat5", lambda s: e2e_part(s, key, "latency_ms")),
    ]
rows += prod("a1", "(a) 1 producer, 1 KiB, 1 partition, acks=1")
rows += prod("aall", "(a) 1 producer, 1 KiB, 1 partition, acks=all")
rows += prod("b", "(b) 4 producers, 100 B, 12 partitions, acks=1")
rows += [
    ("(c) consume from the start, 1 KiB records (default page-cache window: behind it, read from disk)", "records/s", "{:,.0f}", lambda s: load(s, "c")["fetch_records_per_sec"]),
    ("(c) consume from the start, 1 KiB records (default page-cache window: behind it, read from disk)", "MiB/s", "{:,.1f}", lambda s: load(s, "c")["fetch_mib_per_sec"]),
]
# The peer has no page-cache window: its one (c) figure stands on both rows.
cw = lambda s: "cw" if s == "strata" else "c"
rows += [
    ("(c') the same, page-cache window off (Kafka's caching)", "records/s", "{:,.0f}", lambda s: load(s, cw(s))["fetch_records_per_sec"]),
    ("(c') the same, page-cache window off (Kafka's caching)", "MiB/s", "{:,.1f}", lambda s: load(s, cw(s))["fetch_mib_per_sec"]),
]
rows += e2e("d", "(d) e2e at 50% of (a) acks=all; acks=all, linger 1 ms")
rows += prod("eprod", "(e) flush.messages=100000, 1 KiB, acks=all")
rows += e2e("e", "(e) flush.messages=100000, e2e at the (d) rate")
def rss_mib(side):
    try:
        return int(open(f"{results}/{side}.rss").read().split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        return ["not measured"]
rows += [("(r) idle, 100 partitions, 1,000 records written", "resident memory (MiB)", "{:,.0f}", rss_mib)]

def fmt(kind, v):
    if isinstance(v, list):  # a failed run: its error line
        if v == ["not measured"]:
            return "not measured"
        return "did not keep up: " + (v[0].replace("error: ", "") if v else "failed")
    if kind == "lat3":
        return f"{v['p50']:.1f} / {v['p99']:.1f} / {v['max']:.1f}"
    if kind == "lat5":
        return f"{v['p50']:.2f} / {v['p99']:.2f} / {v['p999']:.2f} / {v['p9999']:.2f} / {v['max']:.1f}"
    return kind.format(v)

def scalar(kind, v):
    if isinstance(v, list):
        return None
    return v["p99"] if kind.startswith("lat") else v

head = "| Workload | Metric | Strata |"
sep = "|---|---|---:|"
if "peer" in sides:
    head += f" {peer_name} | Strata / {peer_name} |"
    sep += "---:|---:|"
out = [head, sep]
for label, metric, kind, get in rows:
    line = f"| {label} | {metric} | {fmt(kind, get('strata'))} |"
    if "peer" in sides:
        a, b = get("strata"), get("peer")
        sa, sb = scalar(kind, a), scalar(kind, b)
        ratio = (f"{sa / sb:.2f}" + (" (p99)" if kind.startswith("lat") else "")) if sa and sb else "n/a"
        line += f" {fmt(kind, b)} | {ratio} |"
    out.append(line)

sizes = "QUICK=1 sizes" if quick == "1" else "full sizes"
a = load("strata", "a1")
print(f"Machine: {cores} cores; scratch file system {fs}; load average {loadavg} at the start. Run with {sizes}.")
print()
print("| Machine limit | Figure |")
print("|---|---:|")
print(f"| Sequential write, 1 MiB blocks, one fdatasync at the end (`dd conv=fdatasync`) | {dd_rate(dd_seq)} |")
print(f"| Sequential write, 1 MiB blocks, bypassing the page cache (`dd oflag=direct`) | {dd_rate(dd_direct)} |")
print(f"| Synchronous 1 MiB writes (`dd oflag=dsync`), one commit per write as in (a) | {dd_rate(dd_sync1m)}, {dd_time(dd_sync1m, 500)} |")
print(f"| Synchronous 64 KiB writes (`dd oflag=dsync`) | {dd_rate(dd_sync)}, {dd_time(dd_sync, 500)} |")
print(f"| Synchronous 4 KiB writes (`dd oflag=dsync`) | {dd_rate(dd_sync4k)}, {dd_time(dd_sync4k, 500)} |")
print(f"| Loopback TCP, one stream (`iperf3 -t 5`) | {iperf + ' Gbit/s' if iperf else 'not measured (iperf3 unavailable)'} |")
print()
print("\n".join(out))
print()
rate = open(f"{results}/strata.rate").read().strip()
print(f"(d)/(e) target rate on Strata: {int(rate):,} records/s of 1 KiB; the achieved rate counts until the "
      "last record was read.", end="")
if "peer" in sides:
    peer_rate = open(f"{results}/peer.rate").read().strip()
    print(f" On {peer_name}: {int(peer_rate):,} records/s (50% of its own (a) acks=all). Ratios divide "
          "Strata's figure by the peer's; for latency rows they compare the p99s, and below 1 is better.", end="")
print()
EOF

cat "$table"
if [ "${UPDATE_DOCS:-1}" != 0 ] && [ -f "$root/docs/BENCHMARKS.md" ]; then
  python3 - "$root/docs/BENCHMARKS.md" "$table" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$quick" <<'EOF'
import sys
doc, table, when, quick = sys.argv[1:]
text = open(doc).read()
begin, end = "<!-- results:begin -->", "<!-- results:end -->"
i, j = text.index(begin) + len(begin), text.index(end)
cmd = "QUICK=1 bash loadtest/bench.sh" if quick == "1" else "bash loadtest/bench.sh"
body = f"\n\nMeasured {when} with `{cmd}`.\n\n" + open(table).read().strip() + "\n\n"
open(doc, "w").write(text[:i] + body + text[j:])
EOF
  step "results written to docs/BENCHMARKS.md"
fi
