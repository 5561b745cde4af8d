//! The metadata state machine: applies committed commands to the `MetadataImage` and keeps a
//! snapshot of it in `raft/snapshot.json` so the Raft log can be compacted.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::image::MetadataImage;
use super::store::{read_json, write_json_atomic};
use super::types::{Applied, MetadataError, TypeConfig};

type SErr = StorageError<u64>;

#[derive(Clone, Default, Serialize, Deserialize)]
struct Persisted {
    meta: Option<SnapshotMeta<u64, BasicNode>>,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    image: MetadataImage,
}

pub struct StateMachine {
    dir: PathBuf,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    image: Arc<RwLock<Arc<MetadataImage>>>,
    /// The latest snapshot, shared with the snapshot builders so that one built in the
    /// background is the one sent to a follower that needs it.
    snapshot: Arc<Mutex<Option<Arc<Persisted>>>>,
    changes: watch::Sender<u64>,
}

fn io_err(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::write(&e).into()
}

impl StateMachine {
    pub fn open(dir: &Path, changes: watch::Sender<u64>) -> std::io::Result<Self> {
        let snapshot: Option<Persisted> = read_json(&dir.join("snapshot.json"))?;
        let mut sm = Self {
            dir: dir.to_path_buf(),
            last_applied: None,
            membership: StoredMembership::default(),
            image: Arc::new(RwLock::new(Arc::new(MetadataImage::default()))),
            snapshot: Arc::default(),
            changes,
        };
        if let Some(snap) = snapshot {
            sm.restore(snap);
        }
        Ok(sm)
    }

    pub fn image_handle(&self) -> Arc<RwLock<Arc<MetadataImage>>> {
        self.image.clone()
    }

    fn current(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn publish(&self, image: MetadataImage) {
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(image);
        self.changes.send_modify(|v| *v += 1);
    }

    fn restore(&mut self, mut snap: Persisted) {
        snap.image.reindex();
        self.last_applied = snap.last_applied;
        self.membership = snap.membership.clone();
        self.publish(snap.image.clone());
        self.set_snapshot(snap);
    }

    fn set_snapshot(&self, snap: Persisted) {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(snap));
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let image = (*self.current()).clone();
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}", id.leader_id, id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let persisted = Persisted {
            meta: Some(meta.clone()),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            image,
        };
        write_json_atomic(&self.dir.join("snapshot.json"), &persisted).map_err(io_err)?;
        let data = serde_json::to_vec(&persisted).map_err(io_err)?;
        self.set_snapshot(persisted);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), SErr> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Result<Applied, MetadataError>>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut image = (*self.current()).clone();
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Ok(Applied::Done)),
                EntryPayload::Normal(cmd) => {
                    let res = image.apply(&cmd);
                    if let Err(e) = &res {
                        tracing::debug!(error = %e, "metadata command rejected");
                    }
                    out.push(res);
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Ok(Applied::Done));
                }
            }
        }
        self.publish(image);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Self {
            dir: self.dir.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            image: Arc::new(RwLock::new(self.current())),
            snapshot: self.snapshot.clone(),
            changes: watch::channel(0).0,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let persisted: Persisted =
            serde_json::from_slice(snapshot.get_ref()).map_err(|e| StorageIOError::read(&e))?;
        write_json_atomic(&self.dir.join("snapshot.json"), &persisted).map_err(io_err)?;
        self.restore(persisted);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let snap = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(snap) = snap else {
            return Ok(None);
        };
        let Some(meta) = snap.meta.clone() else {
            return Ok(None);
        };
        let data = serde_json::to_vec(&*snap).map_err(io_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, RaftSnapshotBuilder};

    use super::*;
    use crate::cluster::image::TopicMeta;
    use crate::cluster::types::MetadataCommand;

    fn create(index: u64, name: &str) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(MetadataCommand::CreateTopic(TopicMeta::new(
                name.into(),
                Default::default(),
                vec![vec![1]],
            ))),
        }
    }

    /// A snapshot built in the background is the one offered to a follower that needs it
    /// (and survives a restart).
    #[tokio::test]
    async fn built_snapshot_is_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path(), watch::channel(0).0).unwrap();
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        sm.apply([create(1, "a"), create(2, "b")]).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        let built = builder.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(2));
        let current = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot");
        assert_eq!(current.meta, built.meta);

        // A new node installs it and has the same image.
        let other = tempfile::tempdir().unwrap();
        let mut fresh = StateMachine::open(other.path(), watch::channel(0).0).unwrap();
        fresh
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert_eq!(fresh.current().topics.len(), 2);
        assert_eq!(
            fresh.applied_state().await.unwrap().0.map(|l| l.index),
            Some(2)
        );

        let mut reopened = StateMachine::open(dir.path(), watch::channel(0).0).unwrap();
        let again = reopened
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot");
        assert_eq!(again.meta, built.meta);
    }
}
