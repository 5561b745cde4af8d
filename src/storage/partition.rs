//! A partition as the broker serves it: the on-disk `PartitionLog` behind a lock, its topic
//! config, and the high watermark readers may see.
//!
//! Invariant: `log_start <= high_watermark <= log_end`. For topics with durable acks
//! (`flush.messages = 1`), the high watermark only advances after an fsync covering the
//! records, so a consumer never reads a record that a crash could take back.
//!
//! Replication (Kafka's rules): the leader's high watermark is the smallest durable log end
//! among the ISR (its own, and each in-sync follower's fetch offset), and does not advance
//! while the ISR is smaller than `min.insync.replicas`; a follower's is the leader's, capped
//! at its own durable end. The role comes from the metadata image.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::config::topic::TopicConfig;
use crate::log::{LogError, PartitionLog};

struct State {
    log: PartitionLog,
    config: TopicConfig,
    /// Messages appended since the last fsync (relaxed flush policy only).
    unflushed_messages: i64,
    last_flush_ms: i64,
    role: Role,
    /// Leader only: what each follower's fetches said.
    followers: HashMap<i32, FollowerProgress>,
    /// Follower only: the leader's high watermark from the last fetch.
    leader_high_watermark: i64,
    /// When the role last changed.
    role_since: Instant,
    /// Leader only: where this leadership's epoch began (the log end when it started).
    epoch_start: i64,
    /// Leader only: followers proposed for the ISR and not committed yet. They count for the
    /// high watermark at once (Kafka's "maximal ISR"), so a write acknowledged while the
    /// proposal is in flight is on them too.
    pending_isr: BTreeSet<i32>,
    /// How far the active segment's page cache has been released.
    released: Released,
    /// How far the active segment's writeback has been started.
    written_back: WrittenBack,
}

/// This broker's part in a partition, from the metadata image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Leads at `epoch`; `isr` as the controller last committed it.
    Leader {
        node: i32,
        epoch: i32,
        replicas: Vec<i32>,
        isr: BTreeSet<i32>,
    },
    /// Follows `leader` (none while the partition is offline) at `epoch`.
    Follower { leader: Option<i32>, epoch: i32 },
}

impl Role {
    pub fn epoch(&self) -> i32 {
        match self {
            Role::Leader { epoch, .. } | Role::Follower { epoch, .. } => *epoch,
        }
    }
}

/// A leader's view of one follower.
#[derive(Debug, Clone, Copy)]
pub struct FollowerProgress {
    /// The follower's durable log end, as its last fetch offset said.
    pub log_end: i64,
    /// When the follower was last caught up (Kafka's rule: its fetch reached the leader's
    /// log end as of now, or as of its previous fetch).
    pub caught_up_at: Instant,
    /// The leader's log end when that follower's last fetch was answered.
    pub leader_end_at_fetch: i64,
}

pub struct Partition {
    topic: Arc<str>,
    index: i32,
    dir: PathBuf,
    state: Mutex<State>,
    high_watermark: AtomicI64,
    /// The end of what this replica holds durably (fsynced, or appended under a relaxed
    /// flush policy): its own contribution to the high watermark.
    local_end: AtomicI64,
    /// The high watermark, for acks=all produces waiting on it.
    hw_changed: watch::Sender<i64>,
    /// Bumped by every truncation, so an fsync that began before one does not report the
    /// cut-off end as held.
    truncations: std::sync::atomic::AtomicU64,
    /// Sealed segments are archived to the object store: `remote.storage.enable`, never for
    /// internal topics. Kept beside the config so the produce path reads it without the lock.
    tiered: AtomicBool,
    /// Bumped whenever any partition's high watermark moves (wakes long-polling fetches).
    data_changed: watch::Sender<u64>,
    /// Bytes of the newest data kept in the page cache once written out
    /// (`log_page_cache_window_bytes`; 0 = never release).
    cache_window: u64,
}

/// The page cache is released in steps of at least this much, so the syscalls stay rare.
const RELEASE_STEP: u64 = 8 << 20;

/// Where early writeback of the active segment has reached (see
/// [`Partition::start_writeback`]).
struct WrittenBack {
    /// Base offset of the segment the position refers to.
    segment: i64,
    /// Writeback started up to this byte (a page boundary).
    upto: u64,
}

/// Least new data, in whole pages, worth starting writeback for.
const WRITEBACK_STEP: u64 = 128 << 10;
/// Page size the writeback ranges are aligned to.
const PAGE: u64 = 4096;

/// Where the active segment's page cache has been released (see
/// [`Partition::plan_release`]).
#[derive(Debug, Clone, Copy)]
struct Released {
    /// Base offset of the segment the positions refer to.
    segment: i64,
    /// Released up to this byte.
    upto: u64,
    /// Start of the last range released. Under a relaxed flush policy that range may still
    /// have been dirty (only its writeback was started), so the next release covers it again.
    last_from: u64,
}

/// What an append did.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The leader epoch the batches were written at.
    pub leader_epoch: i32,
    pub log_append_time: Option<i64>,
    pub log_start_offset: i64,
    /// The write is acknowledged only once fsynced (group commit).
    pub needs_flush: bool,
    /// A relaxed-policy partition crossed `flush.messages`: fsync in the background.
    pub flush_due: bool,
    /// An idempotent producer's retry: the offsets are the original's; nothing was appended.
    pub duplicate: bool,
}

/// Why an acks=all write was not confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationWait {
    /// Leadership moved on before the in-sync replicas had it.
    NotLeader,
    TimedOut,
}

/// A consumer's fetch of one partition: records read into memory, or a range of a segment
/// file to send as it is.
#[derive(Debug)]
pub enum Fetched {
    Read(Bytes),
    Region(crate::log::FileRegion),
}

impl Fetched {
    /// Record bytes this answers with.
    pub fn size(&self) -> usize {
        match self {
            Fetched::Read(b) => b.len(),
            Fetched::Region(r) => r.len,
        }
    }
}

/// Offsets of a partition at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: i64,
    pub high_watermark: i64,
    pub log_end: i64,
}

/// Internal topics (`__consumer_offsets`) are never tiered, whatever the broker default.
fn is_tiered(topic: &str, config: &TopicConfig) -> bool {
    config.remote_storage_enable && !topic.starts_with("__")
}

/// Tiered topics archive every batch as one Parquet row per record, so their batches must
/// decode record by record (Kafka's broker validates records on produce the same way). A batch
/// that could not be converted is refused here, to its producer, instead of stopping the
/// partition's archive later (which would keep its local data until the disk fills).
fn check_archivable(records: &[u8]) -> Result<(), LogError> {
    for raw in tiering::batch::split_batches(records) {
        let raw = raw.map_err(|e| LogError::CorruptBatch(e.to_string()))?;
        let batch = tiering::batch::Batch::decode(&raw)
            .map_err(|e| LogError::InvalidRecord(format!("batch at byte {}: {e}", raw.position)))?;
        let mut previous = -1;
        for r in &batch.records {
            if r.offset_delta <= previous || r.offset_delta > batch.last_offset_delta {
                return Err(LogError::InvalidRecord(format!(
                    "batch at byte {}: record offset deltas must increase within 0..={}",
                    raw.position, batch.last_offset_delta
                )));
            }
            previous = r.offset_delta;
        }
        if batch.records.is_empty() {
            return Err(LogError::InvalidRecord(format!(
                "batch at byte {} holds no records",
                raw.position
            )));
        }
    }
    Ok(())
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        index: i32,
        dir: PathBuf,
        log: PartitionLog,
        config: TopicConfig,
        data_changed: watch::Sender<u64>,
        now_ms: i64,
    ) -> Self {
        // Everything recovered from disk is durable here, but not necessarily on the other
        // replicas: the high watermark starts at the log start and the role moves it (a lone
        // replica at once to its log end, a leader once its in-sync followers report).
        let local_end = log.log_end_offset();
        let hw = log.log_start_offset();
        let tiered = AtomicBool::new(is_tiered(&topic, &config));
        Self {
            tiered,
            topic,
            index,
            dir,
            state: Mutex::new(State {
                log,
                config,
                unflushed_messages: 0,
                last_flush_ms: now_ms,
                role: Role::Follower {
                    leader: None,
                    epoch: -1,
                },
                followers: HashMap::new(),
                leader_high_watermark: 0,
                role_since: Instant::now(),
                epoch_start: 0,
                pending_isr: BTreeSet::new(),
                released: Released {
                    segment: i64::MIN,
                    upto: 0,
                    last_from: 0,
                },
                written_back: WrittenBack {
                    segment: i64::MIN,
                    upto: 0,
                },
            }),
            high_watermark: AtomicI64::new(hw),
            local_end: AtomicI64::new(local_end),
            hw_changed: watch::channel(hw).0,
            truncations: std::sync::atomic::AtomicU64::new(0),
            data_changed,
            cache_window: 0,
        }
    }

    /// Keeps `bytes` of the newest data in the page cache and releases older written pages
    /// (`log_page_cache_window_bytes`; 0, the default here, never releases).
    pub fn with_page_cache_window(mut self, bytes: u64) -> Self {
        self.cache_window = bytes;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn index(&self) -> i32 {
        self.index
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn config(&self) -> TopicConfig {
        self.lock().config.clone()
    }

    pub fn set_config(&self, config: TopicConfig) {
        let mut st = self.lock();
        self.tiered
            .store(is_tiered(&self.topic, &config), Ordering::Relaxed);
        st.log.set_config(config.to_log_config());
        st.config = config;
    }

    /// Sealed segments of this partition go to the object store.
    pub fn tiered(&self) -> bool {
        self.tiered.load(Ordering::Relaxed)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn offsets(&self) -> Offsets {
        let st = self.lock();
        Offsets {
            log_start: st.log.log_start_offset(),
            high_watermark: self.high_watermark(),
            log_end: st.log.log_end_offset(),
        }
    }

    fn advance_high_watermark(&self, to: i64) {
        let prev = self.high_watermark.fetch_max(to, Ordering::AcqRel);
        if to > prev {
            self.hw_changed.send_replace(to);
            self.wake_fetches();
        }
    }

    /// Wakes long-polling fetches (consumers re-check their high watermark, followers the
    /// log end).
    fn wake_fetches(&self) {
        self.data_changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Records that this replica now holds `end` durably, and moves the high watermark as
    /// the role allows.
    fn set_local_end(&self, end: i64) {
        self.local_end.fetch_max(end, Ordering::AcqRel);
        let st = self.lock();
        let hw = self.high_watermark_of(&st);
        drop(st);
        self.advance_high_watermark(hw);
    }

    /// The high watermark the role allows now (never applied backwards).
    fn high_watermark_of(&self, st: &State) -> i64 {
        let local = self.local_end.load(Ordering::Acquire);
        match &st.role {
            Role::Leader {
                node,
                isr,
                replicas,
                ..
            } => {
                // KIP-966: no progress while the ISR is below min.insync.replicas (capped at
                // the replica count: a lone replica with a copied min.insync.replicas=2 still
                // serves acks=1 data; its acks=all writes are refused).
                let min = (st.config.min_insync_replicas.max(1) as usize).min(replicas.len());
                if isr.len() < min {
                    return self.high_watermark();
                }
                isr.iter()
                    .chain(&st.pending_isr)
                    .filter(|r| *r != node)
                    .map(|r| st.followers.get(r).map_or(i64::MIN, |f| f.log_end))
                    .fold(local, i64::min)
            }
            Role::Follower { .. } => local.min(st.leader_high_watermark),
        }
    }

    /// Takes the role the metadata image gives this broker. A new leader starts with no
    /// follower progress (its followers report on their next fetch); the high watermark
    /// never moves back.
    pub fn set_role(&self, role: Role) {
        let mut st = self.lock();
        if st.role == role {
            return;
        }
        let new_epoch = st.role.epoch() != role.epoch();
        if new_epoch || !matches!(role, Role::Leader { .. }) {
            st.followers.clear();
        }
        // The image carries the committed ISR now: pending additions are settled (committed
        // or refused; a refused one is proposed again once still caught up).
        st.pending_isr.clear();
        if new_epoch {
            st.epoch_start = st.log.log_end_offset();
        }
        if let Role::Follower { .. } = role {
            st.leader_high_watermark = self.high_watermark();
        }
        if new_epoch {
            st.role_since = Instant::now();
        }
        if let Role::Leader { epoch, .. } = &role {
            if let Err(e) = st.log.begin_epoch(*epoch) {
                tracing::error!(partition = %self.name(), epoch, error = %e,
                    "cannot record the new leader epoch; followers may not see a divergence");
            }
        }
        st.role = role;
        let hw = self.high_watermark_of(&st);
        drop(st);
        self.advance_high_watermark(hw);
        // Wake acks=all waiters: a write from an earlier epoch is no longer this leader's.
        self.hw_changed.send_modify(|_| {});
        self.wake_fetches();
    }

    pub fn role(&self) -> Role {
        self.lock().role.clone()
    }

    /// Leader: a follower fetched from `fetch_offset` (so holds everything below it). Returns
    /// the high watermark after it counted.
    pub fn record_follower_fetch(&self, follower: i32, fetch_offset: i64, now: Instant) -> i64 {
        let mut st = self.lock();
        let log_end = st.log.log_end_offset();
        let entry = st.followers.entry(follower).or_insert(FollowerProgress {
            log_end: fetch_offset,
            // A follower that never caught up counts as lagging from its first fetch.
            caught_up_at: now,
            leader_end_at_fetch: i64::MAX,
        });
        entry.log_end = fetch_offset;
        // Under steady writes the leader appends between a follower's fetches, so reaching
        // the log end as of the previous fetch counts too (Kafka's rule).
        if fetch_offset >= log_end || fetch_offset >= entry.leader_end_at_fetch {
            entry.caught_up_at = now;
        }
        entry.leader_end_at_fetch = log_end;
        let hw = self.high_watermark_of(&st);
        drop(st);
        self.advance_high_watermark(hw);
        self.high_watermark()
    }

    /// Leader: the role, when it began, where its epoch began, and followers' progress, for
    /// ISR changes.
    pub fn leadership(&self) -> (Role, Instant, i64, HashMap<i32, FollowerProgress>) {
        let st = self.lock();
        (
            st.role.clone(),
            st.role_since,
            st.epoch_start,
            st.followers.clone(),
        )
    }

    /// Leader: `additions` are about to be proposed for the ISR; they count for the high
    /// watermark from now until the image settles the proposal.
    pub fn expect_isr_additions(&self, additions: &BTreeSet<i32>) {
        let mut st = self.lock();
        st.pending_isr.extend(additions);
    }

    /// Leader: a proposal of ISR additions failed; stop counting them.
    pub fn forget_isr_additions(&self) {
        self.lock().pending_isr.clear();
    }

    /// Follower: the leader's high watermark from a fetch response.
    pub fn set_leader_high_watermark(&self, hw: i64) {
        let mut st = self.lock();
        st.leader_high_watermark = st.leader_high_watermark.max(hw);
        let hw = self.high_watermark_of(&st);
        drop(st);
        self.advance_high_watermark(hw);
    }

    /// Leader: the ISR size and `min.insync.replicas`, for acks=all checks.
    pub fn insync(&self) -> (usize, usize) {
        let st = self.lock();
        let min = st.config.min_insync_replicas.max(1) as usize;
        match &st.role {
            Role::Leader { isr, .. } => (isr.len(), min),
            Role::Follower { .. } => (0, min),
        }
    }

    /// acks=all: waits until the high watermark reaches `offset` while this broker still
    /// leads at `epoch` (the epoch of the append). A leadership change fails the wait at once:
    /// the offsets may hold another leader's records by now, so reaching them proves nothing.
    pub async fn wait_for_high_watermark(
        &self,
        offset: i64,
        epoch: i32,
        timeout: Duration,
    ) -> Result<(), ReplicationWait> {
        let mut rx = self.hw_changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leading = matches!(&self.lock().role, Role::Leader { epoch: e, .. } if *e == epoch);
            if !leading {
                return Err(ReplicationWait::NotLeader);
            }
            if self.high_watermark() >= offset {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(ReplicationWait::TimedOut);
            }
        }
    }

    /// Validates and appends a producer's record batches (as sent; offsets assigned here).
    /// An idempotent producer's retry is answered with the original's offsets; it still waits
    /// for the flush like any write, because the original may not be durable yet.
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<Appended, LogError> {
        if self.tiered() {
            check_archivable(records)?;
        }
        let started = std::time::Instant::now();
        let mut st = self.lock();
        let epoch = match &st.role {
            Role::Leader { epoch, .. } => *epoch,
            Role::Follower { .. } => {
                return Err(LogError::NotLeader(self.name()));
            }
        };
        let res = st.log.append(records, now_ms, epoch);
        super::metrics::APPEND.record(started.elapsed());
        let res = res?;
        let count = if res.duplicate {
            0
        } else {
            res.last_offset - res.base_offset + 1
        };
        let durable = st.config.durable_ack();
        let mut flush_due = false;
        self.start_writeback(&mut st);
        if !durable {
            st.unflushed_messages += count;
            flush_due = st.unflushed_messages >= st.config.flush_messages;
            self.release_relaxed(&mut st);
        }
        let end = st.log.log_end_offset();
        drop(st);
        if !durable {
            self.set_local_end(end);
        }
        // Followers long-poll for data past their fetch offset, high watermark or not.
        self.wake_fetches();
        Ok(Appended {
            base_offset: res.base_offset,
            last_offset: res.last_offset,
            leader_epoch: epoch,
            log_append_time: res.log_append_time,
            log_start_offset: res.log_start_offset,
            needs_flush: durable,
            flush_due,
            duplicate: res.duplicate,
        })
    }

    /// Starts writing the whole pages appended since the last call back to disk. Under the
    /// durable policy the group-commit fsync that follows (which waits for them either way)
    /// then finds them written or on their way instead of starting them itself; under a
    /// relaxed one the data streams out instead of waiting for the kernel's write-back or
    /// the fsync of a segment roll (which took 20-50 ms under the partition lock at
    /// ~800 MiB/s without this, 3-5 ms with it). The pages are queued, not waited for; a
    /// page the next append extends is left for later.
    fn start_writeback(&self, st: &mut State) {
        let (segment, size) = st.log.active_extent();
        let w = &mut st.written_back;
        // A new segment, or this one cut back (a follower's truncation): start from its start.
        if w.segment != segment || size < w.upto {
            *w = WrittenBack { segment, upto: 0 };
        }
        let to = size & !(PAGE - 1);
        if to < w.upto + WRITEBACK_STEP {
            return;
        }
        let from = std::mem::replace(&mut w.upto, to);
        if let Err(e) = st.log.start_writeback(from, to) {
            tracing::debug!(partition = %self.name(), error = %e, "starting writeback");
        }
    }

    /// The byte range of the active segment to release from the page cache: what fell more
    /// than the cache window behind its end since the last release, once that is a step
    /// long. `dirty`: nothing fsynced it (relaxed flush policy), so the range begins with the
    /// previous one, whose writeback the previous release started. Marked released at once,
    /// so flushes in flight never release the same new range.
    fn plan_release(&self, st: &mut State, dirty: bool) -> Option<(u64, u64)> {
        if self.cache_window == 0 {
            return None;
        }
        let (segment, size) = st.log.active_extent();
        let r = &mut st.released;
        if r.segment != segment {
            *r = Released {
                segment,
                upto: 0,
                last_from: 0,
            };
        }
        let to = size.saturating_sub(self.cache_window);
        if to < r.upto + RELEASE_STEP {
            return None;
        }
        let from = if dirty { r.last_from } else { r.upto };
        r.last_from = r.upto;
        r.upto = to;
        Some((from, to))
    }

    /// Relaxed flush policy: nothing fsyncs often, so release what fell behind the window
    /// from here, in the background (the kernel writes those pages back first; see
    /// [`crate::log::pagecache`]).
    fn release_relaxed(&self, st: &mut State) {
        let Some((from, to)) = self.plan_release(st, true) else {
            return;
        };
        let Ok(file) = st.log.flush_handle() else {
            return;
        };
        let name = self.name();
        let release = move || {
            if let Err(e) = crate::log::pagecache::release(&file, from, to) {
                tracing::debug!(partition = %name, error = %e, "releasing written pages");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(release)),
            Err(_) => release(),
        }
    }

    /// fsyncs everything appended so far, then exposes it to readers.
    pub async fn flush(&self) -> std::io::Result<()> {
        let (file, end, truncations, release) = {
            let mut st = self.lock();
            let file = st.log.flush_handle().map_err(std::io::Error::other)?;
            let release = self.plan_release(&mut st, false);
            (
                file,
                st.log.log_end_offset(),
                self.truncations.load(Ordering::Acquire),
                release,
            )
        };
        let file = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let r = file.sync_data();
            super::metrics::FSYNC.record(started.elapsed());
            r.map(|()| file)
        })
        .await
        .map_err(std::io::Error::other)??;
        {
            let mut st = self.lock();
            st.unflushed_messages = 0;
            st.last_flush_ms = crate::now_ms();
        }
        // What the window left behind is clean now, so dropping it costs no writeback; done
        // on the side, so the writes this fsync covers are not answered later for it.
        if let Some((from, to)) = release {
            let name = self.name();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = crate::log::pagecache::release(&file, from, to) {
                    tracing::debug!(partition = %name, error = %e, "releasing written pages");
                }
            });
        }
        if self.truncations.load(Ordering::Acquire) == truncations {
            self.set_local_end(end);
        }
        Ok(())
    }

    /// True when a relaxed-policy partition has unflushed data older than `flush.ms`.
    pub fn flush_overdue(&self, now_ms: i64) -> bool {
        let st = self.lock();
        st.unflushed_messages > 0 && now_ms - st.last_flush_ms >= st.config.flush_ms
    }

    /// Where a read lands, under the lock; a read of data behind the page-cache window
    /// releases what it read (see [`crate::log::pagecache`]).
    fn plan_read(
        &self,
        st: &State,
        offset: i64,
        max_bytes: usize,
        limit: i64,
    ) -> Result<crate::log::partition::PlannedRead, LogError> {
        Ok(st
            .log
            .plan_read(offset, max_bytes, limit)?
            .release_behind(self.cache_window, st.log.active_extent()))
    }

    /// A read from `offset` up to `max_bytes`, never past the high watermark, located under
    /// the lock, with the offsets as of then; the data is read (or sent) after the lock is
    /// released, so a large read never holds up appends.
    fn plan_below_high_watermark(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(crate::log::partition::PlannedRead, Offsets), LogError> {
        let hw = self.high_watermark();
        let st = self.lock();
        let offsets = Offsets {
            log_start: st.log.log_start_offset(),
            high_watermark: hw,
            log_end: st.log.log_end_offset(),
        };
        Ok((self.plan_read(&st, offset, max_bytes, hw)?, offsets))
    }

    /// Reads record batches from `offset`, up to `max_bytes` (at least one whole batch), never
    /// past the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, Offsets), LogError> {
        let (planned, offsets) = self.plan_below_high_watermark(offset, max_bytes)?;
        Ok((planned.read()?.records, offsets))
    }

    /// [`Partition::read`] for a consumer's fetch, as a range of the segment file to send
    /// unread when it can be ([`crate::log::FileRegion`]): all of it below the high
    /// watermark. Otherwise (the high watermark inside the range) the data read and cut.
    pub fn read_for_send(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Fetched, Offsets), LogError> {
        let (planned, offsets) = self.plan_below_high_watermark(offset, max_bytes)?;
        let fetched = match planned.into_region() {
            Ok(None) => Fetched::Read(Bytes::new()),
            Ok(Some(region)) => Fetched::Region(region),
            Err(planned) => Fetched::Read(planned.read()?.records),
        };
        Ok((fetched, offsets))
    }

    /// The epoch of the newest batch held (a follower's `last_fetched_epoch`).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.lock().log.latest_epoch()
    }

    /// OffsetsForLeaderEpoch: the largest epoch at or below `epoch` and where it ends here.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.lock().log.end_offset_for_epoch(epoch)
    }

    /// Follower: appends batches exactly as the leader sent them. Returns whether they wait
    /// for an fsync before counting as held (the default flush policy); under a relaxed one
    /// they count at once.
    pub fn append_replica(&self, records: &[u8], now_ms: i64) -> Result<bool, LogError> {
        let mut st = self.lock();
        self.refuse_if_leader(&st)?;
        let appended = st.log.append_replica(records, now_ms)?;
        let durable = st.config.durable_ack();
        let end = st.log.log_end_offset();
        self.start_writeback(&mut st);
        if !durable {
            st.unflushed_messages += appended.last_offset - appended.first_offset + 1;
            self.release_relaxed(&mut st);
        }
        drop(st);
        if !durable {
            self.set_local_end(end);
        }
        Ok(durable && appended.batches > 0)
    }

    /// Follower: drops everything from `offset` on (where its log diverged from the
    /// leader's). The high watermark is never above what is held.
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        let mut st = self.lock();
        // A fetch answer that arrives after this broker became leader must not touch its log.
        self.refuse_if_leader(&st)?;
        st.log.truncate_to(offset)?;
        self.truncations.fetch_add(1, Ordering::AcqRel);
        let end = st.log.log_end_offset();
        drop(st);
        self.reset_local_end(end);
        Ok(())
    }

    /// Follower: empties the log and restarts it at `offset` (the leader's log start, when
    /// this replica fell below it).
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        let mut st = self.lock();
        self.refuse_if_leader(&st)?;
        st.log.truncate_fully_and_start_at(offset)?;
        self.truncations.fetch_add(1, Ordering::AcqRel);
        drop(st);
        self.reset_local_end(offset);
        self.high_watermark.store(offset, Ordering::Release);
        Ok(())
    }

    fn refuse_if_leader(&self, st: &State) -> Result<(), LogError> {
        if matches!(st.role, Role::Leader { .. }) {
            return Err(LogError::InvalidRecord(format!(
                "{} is led here; replica appends and truncation are refused",
                self.name()
            )));
        }
        Ok(())
    }

    /// After a truncation: what is held ends at `end`, and so does what may be visible.
    fn reset_local_end(&self, end: i64) {
        self.local_end.store(end, Ordering::Release);
        let _ = self
            .high_watermark
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |hw| {
                (hw > end).then_some(end)
            });
    }

    /// A follower's read: like [`read`](Self::read) but up to the log end, not the high
    /// watermark (followers replicate what the leader has, committed or not).
    pub fn read_replica(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Bytes, Offsets), LogError> {
        let hw = self.high_watermark();
        let st = self.lock();
        let log_end = st.log.log_end_offset();
        let offsets = Offsets {
            log_start: st.log.log_start_offset(),
            high_watermark: hw,
            log_end,
        };
        let planned = self.plan_read(&st, offset, max_bytes, log_end)?;
        drop(st);
        Ok((planned.read()?.records, offsets))
    }

    /// ListOffsets by timestamp: (offset, timestamp) of the first record at or after `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        let hw = self.high_watermark();
        let st = self.lock();
        let start = st.log.log_start_offset();
        // Batches are ordered by offset, not time: take the first whose max timestamp
        // reaches `ts`, then the first record inside it that does.
        let Some((base, _)) = st.log.offset_for_timestamp(ts)? else {
            return Ok(None);
        };
        if base >= hw {
            return Ok(None);
        }
        let batch = st.log.read(base, 1, hw)?.records;
        drop(st);
        crate::log::records::first_at_or_after(&batch, ts, start)
    }

    /// ListOffsets MAX_TIMESTAMP: the first record holding the largest timestamp.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        let hw = self.high_watermark();
        let st = self.lock();
        let start = st.log.log_start_offset();
        let Some((offset, _)) = st.log.max_timestamp().filter(|(offset, _)| *offset < hw) else {
            return Ok(None);
        };
        let batch = st.log.read(offset, 1, hw)?.records;
        drop(st);
        crate::log::records::max_timestamp_record(&batch, start)
    }

    /// DeleteRecords: moves the log start offset to `offset` (-1 = high watermark). The
    /// segments below it leave the log at once; their files are deleted in the background
    /// ([`crate::log::Retired::delete_in_background`]).
    pub fn delete_records(&self, offset: i64) -> Result<i64, LogError> {
        let hw = self.high_watermark();
        let target = if offset == -1 { hw } else { offset };
        let mut st = self.lock();
        let start = st.log.log_start_offset();
        if target < start || target > hw {
            return Err(LogError::OffsetOutOfRange {
                offset: target,
                log_start: start,
                log_end: hw,
            });
        }
        let (start, retired) = st.log.retire_records_before(target)?;
        drop(st);
        retired.delete_in_background();
        Ok(start)
    }

    /// Forgets idempotent producers idle past `producer_id_expiration_ms`; returns how many.
    pub fn remove_expired_producers(&self, now_ms: i64) -> usize {
        self.lock().log.remove_expired_producers(now_ms)
    }

    /// Reads whole batches of sealed segments only, from the batch holding `offset`, up to
    /// `max_bytes` (at least one batch) and never past the end of that segment: the unit the
    /// uploader archives. Empty when `offset` is in the active segment.
    pub fn read_sealed(&self, offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        let hw = self.high_watermark();
        let st = self.lock();
        let limit = st.log.active_base_offset().min(hw);
        let planned = self.plan_read(&st, offset, max_bytes, limit)?;
        drop(st);
        Ok(planned.read()?.records)
    }

    /// `(base offset, next offset, bytes)` of every segment, oldest first; the last one is the
    /// active segment.
    pub fn segment_spans(&self) -> Vec<(i64, i64, u64)> {
        self.lock().log.segment_spans()
    }

    /// The local retention of a tiered topic: deletes sealed segments past
    /// `local.retention.ms` / `local.retention.bytes`, but only those wholly below
    /// `uploaded_end` (the end of the committed remote manifest), so nothing is lost locally
    /// before it is durable remotely.
    pub fn apply_local_retention(&self, now_ms: i64, uploaded_end: i64) -> Result<usize, LogError> {
        let mut st = self.lock();
        let (ms, bytes) = (
            st.config.local_retention_ms,
            st.config.local_retention_bytes,
        );
        let bound = self.high_watermark().min(uploaded_end);
        let retired = st.log.retire_by_retention(now_ms, ms, bytes, bound)?;
        drop(st);
        retired.delete()
    }

    /// Deletes whole segments past `retention.ms` / `retention.bytes`.
    /// The files go after the partition lock is released (see [`crate::log::Retired`]).
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let mut st = self.lock();
        let (ms, bytes) = (st.config.retention_ms, st.config.retention_bytes);
        let retired = st
            .log
            .retire_by_retention(now_ms, ms, bytes, self.high_watermark())?;
        drop(st);
        retired.delete()
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock().log.size_bytes()
    }

    /// Flushes and closes the log files (shutdown).
    pub fn close(&self) -> Result<(), LogError> {
        self.lock().log.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::log::testutil::batch_of;

    fn partition(dir: &std::path::Path, min_insync: &str) -> Partition {
        let broker = BrokerConfig::default();
        let mut overrides = std::collections::BTreeMap::new();
        overrides.insert("min.insync.replicas".to_string(), min_insync.to_string());
        // Page-cache acknowledgement: appends count as held at once (no flusher needed).
        overrides.insert("flush.messages".to_string(), "100000".to_string());
        let config = TopicConfig::resolve(&broker, &overrides).unwrap();
        let log = PartitionLog::open(dir, config.to_log_config()).unwrap();
        Partition::new(
            "t".into(),
            0,
            dir.to_path_buf(),
            log,
            config,
            watch::channel(0).0,
            0,
        )
    }

    fn leader(isr: &[i32]) -> Role {
        Role::Leader {
            node: 1,
            epoch: 3,
            replicas: vec![1, 2, 3],
            isr: isr.iter().copied().collect(),
        }
    }

    #[test]
    fn written_pages_fall_out_of_the_page_cache_window_in_steps() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), "1").with_page_cache_window(1 << 20);
        p.set_role(leader(&[1]));
        let batch = batch_of(64, 1000, 1); // ~65 KB
        let released = |p: &Partition| {
            let st = p.lock();
            (
                st.released.upto,
                st.released.last_from,
                st.log.active_extent().1,
            )
        };
        // Nothing is released until a whole step lies behind the window.
        while released(&p).2 < (1 << 20) + RELEASE_STEP {
            assert_eq!(released(&p).0, 0);
            p.append(&batch, 1).unwrap();
        }
        let (upto, last_from, size) = released(&p);
        assert_eq!((upto, last_from), (size - (1 << 20), 0));
        // The next step: the relaxed policy releases the previous range again with it (its
        // writeback was only started).
        while released(&p).0 == upto {
            p.append(&batch, 1).unwrap();
        }
        let (upto2, last_from, size) = released(&p);
        assert_eq!((upto2, last_from), (size - (1 << 20), upto));
        assert!(upto2 >= upto + RELEASE_STEP);
        // Everything still reads back.
        let (bytes, _) = p.read(0, 64 << 20).unwrap();
        assert_eq!(bytes.len() as u64, size);
    }

    #[test]
    fn the_high_watermark_is_the_isr_minimum_and_waits_for_pending_additions() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), "2");
        p.set_role(leader(&[1, 2]));
        p.append(&batch_of(10, 10, 1), 1).unwrap();
        assert_eq!(p.high_watermark(), 0, "follower 2 has not fetched yet");
        let t0 = Instant::now();
        assert_eq!(p.record_follower_fetch(2, 6, t0), 6);
        assert_eq!(p.record_follower_fetch(2, 10, t0), 10);
        // Follower 3 is proposed for the ISR at 10: it counts before the commit.
        p.record_follower_fetch(3, 10, t0);
        p.expect_isr_additions(&[3].into());
        p.append(&batch_of(5, 10, 2), 2).unwrap();
        p.record_follower_fetch(2, 15, t0);
        assert_eq!(p.high_watermark(), 10, "3 holds only 10");
        p.record_follower_fetch(3, 15, t0);
        assert_eq!(p.high_watermark(), 15);
        // Below min.insync.replicas the high watermark stands still.
        p.set_role(leader(&[1]));
        p.append(&batch_of(5, 10, 3), 3).unwrap();
        assert_eq!(p.high_watermark(), 15);
        assert_eq!(p.insync(), (1, 2));
    }

    #[test]
    fn a_lone_replica_with_a_larger_min_insync_still_shows_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), "2");
        p.set_role(Role::Leader {
            node: 1,
            epoch: 0,
            replicas: vec![1],
            isr: [1].into(),
        });
        p.append(&batch_of(4, 10, 1), 1).unwrap();
        assert_eq!(p.high_watermark(), 4);
    }

    #[test]
    fn followers_count_as_caught_up_when_they_reach_the_previous_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), "1");
        p.set_role(leader(&[1, 2]));
        let t0 = Instant::now();
        p.append(&batch_of(10, 10, 1), 1).unwrap();
        p.record_follower_fetch(2, 0, t0);
        // The leader appended again before the follower's next fetch, which reached the
        // log end as of its previous fetch (10), not the current one (20).
        p.append(&batch_of(10, 10, 2), 2).unwrap();
        let t1 = t0 + Duration::from_secs(5);
        p.record_follower_fetch(2, 10, t1);
        let (_, _, _, followers) = p.leadership();
        assert_eq!(followers[&2].caught_up_at, t1);
    }

    #[test]
    fn a_restarted_replica_shows_nothing_until_its_role_says_so() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = partition(dir.path(), "1");
            p.set_role(leader(&[1, 2]));
            p.append(&batch_of(10, 10, 1), 1).unwrap();
            p.close().unwrap();
        }
        let p = partition(dir.path(), "1");
        assert_eq!(
            p.high_watermark(),
            0,
            "not everything on disk was replicated"
        );
        p.set_role(leader(&[1, 2]));
        assert_eq!(p.high_watermark(), 0);
        p.record_follower_fetch(2, 10, Instant::now());
        assert_eq!(p.high_watermark(), 10);
    }

    #[test]
    fn acks_all_waits_fail_when_leadership_moves() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(partition(dir.path(), "1"));
        p.set_role(leader(&[1, 2]));
        let a = p.append(&batch_of(3, 10, 1), 1).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let waiter = p.clone();
        let r = rt.block_on(async move {
            let wait = tokio::spawn(async move {
                waiter
                    .wait_for_high_watermark(
                        a.last_offset + 1,
                        a.leader_epoch,
                        Duration::from_secs(5),
                    )
                    .await
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            p.set_role(Role::Follower {
                leader: Some(2),
                epoch: 4,
            });
            // The new leader's data at these offsets would raise the high watermark; the
            // wait must not take that as its own write being replicated.
            p.set_leader_high_watermark(3);
            wait.await.unwrap()
        });
        assert_eq!(r, Err(ReplicationWait::NotLeader));
    }

    #[test]
    fn a_leader_refuses_replica_appends_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), "1");
        p.set_role(leader(&[1]));
        p.append(&batch_of(3, 10, 1), 1).unwrap();
        assert!(p.truncate_to(1).is_err());
        assert!(p.truncate_fully_and_start_at(5).is_err());
        assert!(p.append_replica(&batch_of(1, 10, 1), 1).is_err());
        assert_eq!(p.offsets().log_end, 3);
    }
}
