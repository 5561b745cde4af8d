//! The group coordinator: consumer-group membership (the classic protocol's pure state
//! machine in `group`), committed offsets, and their persistence in `__consumer_offsets`.
//!
//! Every group maps to one partition of `__consumer_offsets` (Kafka's hash). On start the
//! coordinator replays each partition to rebuild offsets and group metadata; until a
//! partition is loaded its groups answer COORDINATOR_LOAD_IN_PROGRESS. Membership changes are
//! decided by `group::Group` (events in, outputs out); this shell owns the waiting requests,
//! the timers, and the writes.
//!
//! Must not: hold the state lock across an await (plans are built under it, I/O after).

pub mod consumer;
mod consumer_groups;
pub mod group;
pub mod records;
pub mod store;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use group::{
    Group, GroupConfig, GroupError, GroupState, JoinRequest, JoinResponse, Output, SyncRequest,
    SyncResponse, Token,
};
use records::{
    encode_key, encode_value, partition_for, CommittedOffset, OffsetStore, RecordKey, RecordValue,
};
use store::StoreError;

use crate::config::BrokerConfig;
use crate::storage::LogManager;

/// A partition is compacted once it has grown this much since its last compaction.
const COMPACT_DIRTY_BYTES: u64 = 8 * 1024 * 1024;
/// How often partitions are checked for compaction.
const COMPACT_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Why a coordinator request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("the coordinator is still loading this group's partition")]
    Loading,
    #[error("this broker is not the group's coordinator; find it again")]
    NotCoordinator,
    #[error("group id must not be empty")]
    InvalidGroupId,
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("offset metadata of {0} bytes exceeds offset_metadata_max_bytes")]
    MetadataTooLarge(usize),
    #[error("the group's members consume this topic; its offsets cannot be deleted")]
    SubscribedToTopic,
    #[error(transparent)]
    Consumer(#[from] consumer::ConsumerError),
}

enum Waiter {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

#[derive(Default)]
struct State {
    /// `__consumer_offsets` partitions (for mapping groups in code that has only the state).
    partitions: i32,
    /// KIP-848 groups (ConsumerGroupHeartbeat), and the snapshot bytes last written for each.
    consumer_groups: HashMap<String, consumer::ConsumerGroup>,
    consumer_persisted: HashMap<String, Vec<u8>>,
    loaded: HashSet<i32>,
    /// Partitions this broker leads (loaded or being loaded).
    led: BTreeSet<i32>,
    groups: HashMap<String, Group>,
    stores: HashMap<i32, OffsetStore>,
    waiters: HashMap<Token, Waiter>,
}

pub struct Coordinator {
    logs: Arc<LogManager>,
    partitions: i32,
    group_config: GroupConfig,
    consumer_config: consumer::ConsumerGroupConfig,
    retention_ms: i64,
    metadata_max_bytes: usize,
    state: Mutex<State>,
    next_token: AtomicU64,
    /// One writer at a time per `__consumer_offsets` partition, so compaction never races a
    /// write of the same key.
    write_locks: Vec<tokio::sync::Mutex<()>>,
    /// Partition size right after its last compaction (bytes), to compact only when dirty.
    compacted_size: Mutex<HashMap<i32, u64>>,
}

/// A group as ListGroups/DescribeGroups show it.
pub struct GroupListing {
    pub group_id: String,
    /// "classic" or "consumer" (KIP-848).
    pub group_type: &'static str,
    pub protocol_type: String,
    /// Kafka's state name for the group's protocol.
    pub state: &'static str,
}

impl Coordinator {
    /// `partitions` is the actual partition count of `__consumer_offsets` (which may differ
    /// from `offsets_topic_num_partitions` if that changed after the topic was created).
    pub fn new(config: &BrokerConfig, logs: Arc<LogManager>, partitions: i32) -> Arc<Self> {
        Arc::new(Self {
            logs,
            partitions,
            group_config: GroupConfig {
                min_session_timeout_ms: config.group_min_session_timeout_ms,
                max_session_timeout_ms: config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
                max_size: config.group_max_size,
            },
            consumer_config: consumer::ConsumerGroupConfig {
                session_timeout_ms: config.group_consumer_session_timeout_ms,
                heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
                max_size: config.group_max_size,
                ..Default::default()
            },
            retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
            metadata_max_bytes: config.offset_metadata_max_bytes,
            state: Mutex::new(State {
                partitions,
                ..State::default()
            }),
            next_token: AtomicU64::new(1),
            write_locks: (0..partitions.max(1))
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            compacted_size: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    pub fn partition_of(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.partitions)
    }

    /// Makes the coordinator serve exactly the groups of the `__consumer_offsets` partitions
    /// this broker leads (`led`): newly led partitions are replayed from the log, then served
    /// (COORDINATOR_LOAD_IN_PROGRESS meanwhile); partitions led elsewhere now are dropped
    /// (NOT_COORDINATOR). Blocking: replays read the log.
    pub fn sync_leadership(self: &Arc<Self>, led: &BTreeSet<i32>) {
        let (gained, lost): (Vec<i32>, Vec<i32>) = {
            let mut st = self.lock();
            let gained = led.difference(&st.led).copied().collect();
            let lost = st.led.difference(led).copied().collect();
            st.led = led.clone();
            (gained, lost)
        };
        for p in lost {
            self.unload(p);
        }
        if gained.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let mut groups = 0usize;
        for &p in &gained {
            groups += self.load(p);
        }
        // Partitions that could not be loaded are tried again at the next sync.
        {
            let mut st = self.lock();
            let failed: Vec<i32> = gained
                .iter()
                .copied()
                .filter(|p| !st.loaded.contains(p))
                .collect();
            for p in failed {
                st.led.remove(&p);
            }
        }
        tracing::info!(
            partitions = gained.len(),
            groups,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "group coordinator loaded {}",
            store::TOPIC
        );
    }

    /// Replays partition `p` and serves its groups, unless leadership moved away meanwhile.
    fn load(self: &Arc<Self>, p: i32) -> usize {
        let now = crate::now_ms();
        let mut store = match self.logs.partition(store::TOPIC, p) {
            Some(part) => match store::load(&part) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "cannot load coordinator partition; its groups stay unavailable");
                    return 0;
                }
            },
            // Not opened by the storage layer yet (it applies the same metadata): the next
            // sync retries.
            None => return 0,
        };
        let snapshots = store.take_group_snapshots();
        let consumer_snapshots = store.take_consumer_group_snapshots();
        let mut st = self.lock();
        if !st.led.contains(&p) {
            return 0;
        }
        let groups = snapshots.len() + consumer_snapshots.len();
        for (id, snap) in consumer_snapshots {
            let bytes = encode_value(&RecordValue::ConsumerGroup(Box::new(snap.clone())));
            let g = consumer::ConsumerGroup::restore(snap, self.consumer_config, now);
            st.consumer_groups.insert(id.clone(), g);
            st.consumer_persisted.insert(id, bytes);
        }
        for (id, snap) in snapshots {
            st.groups
                .insert(id, Group::restore(snap, self.group_config, now));
        }
        st.stores.insert(p, store);
        st.loaded.insert(p);
        groups
    }

    /// Stops serving partition `p`'s groups: another broker leads it now.
    fn unload(&self, p: i32) {
        let mut st = self.lock();
        let partitions = st.partitions;
        let mine = |id: &String| partition_for(id, partitions) == p;
        st.groups.retain(|id, _| !mine(id));
        st.consumer_groups.retain(|id, _| !mine(id));
        st.consumer_persisted.retain(|id, _| !mine(id));
        st.stores.remove(&p);
        st.loaded.remove(&p);
        tracing::info!(
            partition = p,
            "{} partition led elsewhere now; its groups moved",
            store::TOPIC
        );
    }

    fn check(&self, st: &State, group_id: &str) -> Result<i32, CoordinatorError> {
        if group_id.is_empty() {
            return Err(CoordinatorError::InvalidGroupId);
        }
        let p = self.partition_of(group_id);
        if !st.loaded.contains(&p) {
            return Err(if st.led.contains(&p) {
                CoordinatorError::Loading
            } else {
                CoordinatorError::NotCoordinator
            });
        }
        Ok(p)
    }

    fn token(&self) -> Token {
        Token(self.next_token.fetch_add(1, Ordering::Relaxed))
    }

    /// Answers waiting requests and collects the groups to persist.
    fn dispatch(st: &mut State, group_id: &str, outputs: Vec<Output>, persist: &mut Vec<String>) {
        for out in outputs {
            match out {
                Output::Join(token, resp) => {
                    if let Some(Waiter::Join(tx)) = st.waiters.remove(&token) {
                        let _ = tx.send(resp);
                    }
                }
                Output::Sync(token, resp) => {
                    if let Some(Waiter::Sync(tx)) = st.waiters.remove(&token) {
                        let _ = tx.send(resp);
                    }
                }
                Output::Persist => persist.push(group_id.to_string()),
            }
        }
    }

    /// Writes the current snapshot of each named group (after the state lock is released).
    fn persist(self: &Arc<Self>, groups: Vec<String>) {
        if groups.is_empty() {
            return;
        }
        let mut writes: HashMap<i32, Vec<store::KeyValue>> = HashMap::new();
        {
            let st = self.lock();
            for g in groups {
                let value = st
                    .groups
                    .get(&g)
                    .map(|grp| encode_value(&RecordValue::Group(Box::new(grp.snapshot()))));
                writes
                    .entry(self.partition_of(&g))
                    .or_default()
                    .push((encode_key(&RecordKey::Group { group: g }), value));
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            for (p, records) in writes {
                if let Err(e) = this.append(p, records).await {
                    tracing::error!(partition = p, error = %e, "persisting group metadata failed");
                }
            }
        });
    }

    /// Writes records to one partition under its write lock, durably.
    async fn append(
        &self,
        partition: i32,
        records: Vec<store::KeyValue>,
    ) -> Result<(), StoreError> {
        let _guard = self.write_lock(partition).lock().await;
        store::append(&self.logs, partition, records).await
    }

    fn write_lock(&self, partition: i32) -> &tokio::sync::Mutex<()> {
        let i = usize::try_from(partition).unwrap_or(0) % self.write_locks.len();
        &self.write_locks[i]
    }

    /// Compacts partitions that have grown by `COMPACT_DIRTY_BYTES` since their last
    /// compaction (replay time and disk use then track live state, not history).
    async fn compact_dirty(&self) {
        for p in 0..self.partitions {
            let Some(part) = self.logs.partition(store::TOPIC, p) else {
                continue;
            };
            let size = part.size_bytes();
            let base = self
                .compacted_size
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&p)
                .copied()
                .unwrap_or(0);
            if size < base + COMPACT_DIRTY_BYTES {
                continue;
            }
            let started = std::time::Instant::now();
            let result = {
                let _guard = self.write_lock(p).lock().await;
                store::compact(&self.logs, p).await
            };
            match result {
                Ok(c) => {
                    let after = part.size_bytes();
                    self.compacted_size
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(p, after);
                    tracing::info!(
                        partition = p,
                        records_read = c.records_read,
                        live_records = c.live_records,
                        log_start = c.new_log_start,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "compacted {}",
                        store::TOPIC
                    );
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "compacting {} failed", store::TOPIC)
                }
            }
        }
    }

    pub async fn join(
        self: &Arc<Self>,
        group_id: &str,
        req: JoinRequest,
    ) -> Result<JoinResponse, CoordinatorError> {
        let (tx, rx) = oneshot::channel();
        let mut persist = Vec::new();
        {
            let mut st = self.lock();
            self.check(&st, group_id)?;
            if st
                .consumer_groups
                .get(group_id)
                .is_some_and(|g| !g.is_empty())
            {
                return Err(GroupError::InconsistentGroupProtocol.into());
            }
            let token = self.token();
            st.waiters.insert(token, Waiter::Join(tx));
            let config = self.group_config;
            let client_id = req.client_id.clone();
            let group = st
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id.to_string(), config));
            let outputs = group.join(crate::now_ms(), req, token, || {
                format!("{client_id}-{}", uuid::Uuid::new_v4())
            });
            Self::dispatch(&mut st, group_id, outputs, &mut persist);
        }
        self.persist(persist);
        rx.await
            .map_err(|_| CoordinatorError::Group(GroupError::CoordinatorNotAvailable))
    }

    pub async fn sync(
        self: &Arc<Self>,
        group_id: &str,
        req: SyncRequest,
    ) -> Result<SyncResponse, CoordinatorError> {
        let (tx, rx) = oneshot::channel();
        let mut persist = Vec::new();
        {
            let mut st = self.lock();
            self.check(&st, group_id)?;
            let token = self.token();
            let Some(group) = st.groups.get_mut(group_id) else {
                return Err(GroupError::UnknownMemberId.into());
            };
            let outputs = group.sync(crate::now_ms(), req, token);
            st.waiters.insert(token, Waiter::Sync(tx));
            Self::dispatch(&mut st, group_id, outputs, &mut persist);
        }
        self.persist(persist);
        rx.await
            .map_err(|_| CoordinatorError::Group(GroupError::CoordinatorNotAvailable))
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), CoordinatorError> {
        let mut st = self.lock();
        self.check(&st, group_id)?;
        let group = st
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        Ok(group.heartbeat(crate::now_ms(), member_id, instance_id, generation)?)
    }

    pub fn leave(
        self: &Arc<Self>,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, CoordinatorError> {
        let mut persist = Vec::new();
        let results = {
            let mut st = self.lock();
            self.check(&st, group_id)?;
            let Some(group) = st.groups.get_mut(group_id) else {
                return Ok(members
                    .iter()
                    .map(|_| Err(GroupError::UnknownMemberId))
                    .collect());
            };
            let (results, outputs) = group.leave(crate::now_ms(), members);
            Self::dispatch(&mut st, group_id, outputs, &mut persist);
            results
        };
        self.persist(persist);
        Ok(results)
    }

    /// Validates and durably stores offset commits; returns per-entry results in order.
    pub async fn commit_offsets(
        self: &Arc<Self>,
        group_id: &str,
        member: (&str, Option<&str>, i32),
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<(), CoordinatorError> {
        let (member_id, instance, generation) = member;
        let p = {
            let mut st = self.lock();
            let p = self.check(&st, group_id)?;
            for (_, _, o) in &offsets {
                let len = o.metadata.as_ref().map_or(0, |m| m.len());
                if len > self.metadata_max_bytes {
                    return Err(CoordinatorError::MetadataTooLarge(len));
                }
            }
            let now = crate::now_ms();
            if let Some(cg) = st.consumer_groups.get(group_id) {
                // KIP-848 groups check the member epoch instead of a generation.
                cg.validate_offset_commit(member_id, generation)?;
            } else {
                match st.groups.get_mut(group_id) {
                    Some(g) => g.offset_commit(now, member_id, instance, generation)?,
                    // Kafka: a commit naming a member or generation of a group that does not
                    // exist is refused; a simple (assign-based) commit creates an Empty group.
                    None if !member_id.is_empty() || generation >= 0 => {
                        return Err(GroupError::IllegalGeneration.into())
                    }
                    None => {
                        st.groups.insert(
                            group_id.to_string(),
                            Group::new(group_id.to_string(), self.group_config),
                        );
                    }
                }
            }
            p
        };
        let records = offsets
            .iter()
            .map(|(t, part, o)| {
                let key = RecordKey::Offset {
                    group: group_id.to_string(),
                    topic: t.clone(),
                    partition: *part,
                };
                (
                    encode_key(&key),
                    Some(encode_value(&RecordValue::Offset(o.clone()))),
                )
            })
            .collect();
        self.append(p, records).await?;
        let mut st = self.lock();
        let store = st.stores.entry(p).or_default();
        for (t, part, o) in offsets {
            store.commit(group_id, t, part, o);
        }
        Ok(())
    }

    /// Committed offsets of a group: the requested partitions, or all of them.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, i32, Option<CommittedOffset>)>, CoordinatorError> {
        let st = self.lock();
        let p = self.check(&st, group_id)?;
        let store = st.stores.get(&p);
        Ok(match wanted {
            Some(topics) => topics
                .into_iter()
                .flat_map(|(t, parts)| parts.into_iter().map(move |i| (t.clone(), i)))
                .map(|(t, i)| {
                    let o = store.and_then(|s| s.offset(group_id, &t, i)).cloned();
                    (t, i, o)
                })
                .collect(),
            None => store
                .map(|s| {
                    s.offsets_of(group_id)
                        .into_iter()
                        .map(|((t, i), o)| (t.clone(), *i, Some(o.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// OffsetDelete: removes committed offsets of partitions the group does not consume.
    pub async fn delete_offsets(
        self: &Arc<Self>,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Result<(), CoordinatorError>>, CoordinatorError> {
        let (p, results, keys) = {
            let st = self.lock();
            let p = self.check(&st, group_id)?;
            let group = st.groups.get(group_id);
            let has_offsets = st.stores.get(&p).is_some_and(|s| s.has_offsets(group_id));
            if group.is_none() && !has_offsets {
                return Err(GroupError::GroupIdNotFound.into());
            }
            let mut subscribed = group.map(subscribed_topics).unwrap_or_default();
            if let Some(cg) = st.consumer_groups.get(group_id) {
                subscribed.extend(cg.subscribed_topics());
            }
            let mut results = Vec::new();
            let mut keys = Vec::new();
            for (t, i) in &partitions {
                if subscribed.contains(t) {
                    results.push(Err(CoordinatorError::SubscribedToTopic));
                } else {
                    results.push(Ok(()));
                    keys.push((t.clone(), *i));
                }
            }
            (p, results, keys)
        };
        let records = keys
            .iter()
            .map(|(t, i)| {
                (
                    encode_key(&RecordKey::Offset {
                        group: group_id.to_string(),
                        topic: t.clone(),
                        partition: *i,
                    }),
                    None,
                )
            })
            .collect();
        self.append(p, records).await?;
        let mut st = self.lock();
        if let Some(s) = st.stores.get_mut(&p) {
            for (t, i) in keys {
                s.delete_offset(group_id, &t, i);
            }
        }
        Ok(results)
    }

    /// DeleteGroups: only empty groups; removes the group and all its offsets.
    pub async fn delete_group(self: &Arc<Self>, group_id: &str) -> Result<(), CoordinatorError> {
        let (p, keys) = {
            let mut st = self.lock();
            let p = self.check(&st, group_id)?;
            let has_offsets = st.stores.get(&p).is_some_and(|s| s.has_offsets(group_id));
            let mut consumer_group = false;
            if let Some(cg) = st.consumer_groups.get_mut(group_id) {
                cg.mark_dead()?;
                st.consumer_groups.remove(group_id);
                st.consumer_persisted.remove(group_id);
                consumer_group = true;
            }
            match st.groups.get(group_id) {
                None if consumer_group => {}
                None if !has_offsets => return Err(GroupError::GroupIdNotFound.into()),
                // The state machine decides what may be deleted (Empty only).
                Some(g) => g.validate_delete()?,
                _ => {}
            }
            if let Some(mut g) = st.groups.remove(group_id) {
                let outputs = g.mark_dead();
                Self::dispatch(&mut st, group_id, outputs, &mut Vec::new());
            }
            let mut keys: Vec<RecordKey> = st
                .stores
                .get(&p)
                .map(|s| {
                    s.offsets_of(group_id)
                        .into_iter()
                        .map(|((t, i), _)| RecordKey::Offset {
                            group: group_id.to_string(),
                            topic: t.clone(),
                            partition: *i,
                        })
                        .collect()
                })
                .unwrap_or_default();
            keys.push(RecordKey::Group {
                group: group_id.to_string(),
            });
            if consumer_group {
                keys.push(RecordKey::ConsumerGroup {
                    group: group_id.to_string(),
                });
            }
            (p, keys)
        };
        self.append(p, keys.iter().map(|k| (encode_key(k), None)).collect())
            .await?;
        let mut st = self.lock();
        if let Some(s) = st.stores.get_mut(&p) {
            for k in keys {
                if let RecordKey::Offset {
                    topic, partition, ..
                } = k
                {
                    s.delete_offset(group_id, &topic, partition);
                }
            }
        }
        tracing::info!(group = group_id, "deleted group");
        Ok(())
    }

    pub fn list_groups(&self) -> Vec<GroupListing> {
        let st = self.lock();
        let mut out: Vec<GroupListing> = st
            .groups
            .iter()
            .filter(|(_, g)| g.state() != GroupState::Dead)
            .map(|(id, g)| GroupListing {
                group_id: id.clone(),
                group_type: "classic",
                protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                state: g.state().as_str(),
            })
            .collect();
        out.extend(st.consumer_groups.iter().map(|(id, g)| GroupListing {
            group_id: id.clone(),
            group_type: "consumer",
            protocol_type: "consumer".to_string(),
            state: g.state().as_str(),
        }));
        // Groups known only by their committed offsets are Empty groups too.
        for store in st.stores.values() {
            for id in store.group_ids() {
                if !st.groups.contains_key(id) && !st.consumer_groups.contains_key(id) {
                    out.push(GroupListing {
                        group_id: id.clone(),
                        group_type: "classic",
                        protocol_type: String::new(),
                        state: GroupState::Empty.as_str(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        out
    }

    pub fn describe(
        &self,
        group_id: &str,
    ) -> Result<Option<group::GroupDescription>, CoordinatorError> {
        let st = self.lock();
        self.check(&st, group_id)?;
        Ok(st.groups.get(group_id).map(|g| g.describe()))
    }

    /// Drives group timers (sessions, rebalance timeouts) and offset expiry. Runs forever.
    pub async fn run_timers(self: Arc<Self>, retention_check_every: Duration) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last_expiry = tokio::time::Instant::now();
        let mut last_compaction = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let now = crate::now_ms();
            let mut persist = Vec::new();
            {
                let mut st = self.lock();
                let due: Vec<String> = st
                    .groups
                    .iter()
                    .filter(|(_, g)| g.next_deadline_ms().is_some_and(|d| d <= now))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in due {
                    if let Some(g) = st.groups.get_mut(&id) {
                        let outputs = g.tick(now);
                        Self::dispatch(&mut st, &id, outputs, &mut persist);
                    }
                }
            }
            self.persist(persist);
            self.tick_consumer_groups(now);
            if last_expiry.elapsed() >= retention_check_every {
                last_expiry = tokio::time::Instant::now();
                self.expire_offsets(now).await;
            }
            if last_compaction.elapsed() >= COMPACT_CHECK_EVERY {
                last_compaction = tokio::time::Instant::now();
                self.compact_dirty().await;
            }
        }
    }

    async fn expire_offsets(self: &Arc<Self>, now: i64) {
        let plan: Vec<(i32, Vec<RecordKey>)> = {
            let st = self.lock();
            st.stores
                .iter()
                .map(|(p, s)| {
                    let keys = s.expired(now, self.retention_ms, |g| {
                        st.groups.get(g).is_none_or(|grp| grp.is_empty())
                    });
                    (*p, keys)
                })
                .filter(|(_, k)| !k.is_empty())
                .collect()
        };
        for (p, keys) in plan {
            let n = keys.len();
            if let Err(e) = self
                .append(p, keys.iter().map(|k| (encode_key(k), None)).collect())
                .await
            {
                tracing::warn!(partition = p, error = %e, "expiring offsets failed");
                continue;
            }
            let mut st = self.lock();
            if let Some(s) = st.stores.get_mut(&p) {
                for k in keys {
                    if let RecordKey::Offset {
                        group,
                        topic,
                        partition,
                    } = k
                    {
                        s.delete_offset(&group, &topic, partition);
                    }
                }
            }
            tracing::info!(
                partition = p,
                offsets = n,
                "expired committed offsets of empty groups"
            );
        }
    }
}

/// Topics the members of a `consumer`-protocol group subscribe to (from their join metadata).
fn subscribed_topics(group: &Group) -> HashSet<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let desc = group.describe();
    if desc.protocol_type.as_deref() != Some("consumer") {
        return HashSet::new();
    }
    let mut topics = HashSet::new();
    for m in desc.members {
        let mut buf = m.metadata.clone();
        if buf.len() < 2 {
            continue;
        }
        let version = i16::from_be_bytes([buf[0], buf[1]]);
        let _ = bytes::Buf::get_i16(&mut buf);
        if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
            topics.extend(sub.topics.into_iter().map(|t| t.to_string()));
        }
    }
    topics
}
