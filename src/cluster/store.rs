//! The persistent Raft log: `raft/log.jsonl` (one JSON entry per line, fsynced on append),
//! `raft/vote.json`, `raft/committed.json` and `raft/purged.json`.
//!
//! Metadata changes are rare and small, so the log is kept whole in memory and rewritten on
//! truncate/purge; a torn last line left by a crash is dropped on open (it was never
//! acknowledged, because `append` reports completion only after fsync).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogId, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::TypeConfig;

type SErr = StorageError<u64>;

struct Inner {
    dir: PathBuf,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    log_file: File,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    purged: Option<LogId<u64>>,
}

#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io_err(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::write(&e).into()
}

/// Writes `value` as JSON to `path` atomically: temp file, fsync, rename, fsync the directory.
pub(super) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    let mut f = File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

pub(super) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl LogStore {
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log_path = dir.join("log.jsonl");
        let mut log = BTreeMap::new();
        let mut valid_len = 0u64;
        if let Ok(f) = File::open(&log_path) {
            for line in BufReader::new(f).split(b'\n') {
                let line = line?;
                match serde_json::from_slice::<Entry<TypeConfig>>(&line) {
                    Ok(entry) => {
                        valid_len += line.len() as u64 + 1;
                        log.insert(entry.log_id.index, entry);
                    }
                    Err(e) => {
                        tracing::warn!(path = %log_path.display(), error = %e,
                            "dropping torn tail of the raft log");
                        break;
                    }
                }
            }
        }
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        log_file.set_len(valid_len)?;
        let inner = Inner {
            log,
            log_file,
            vote: read_json(&dir.join("vote.json"))?,
            committed: read_json(&dir.join("committed.json"))?,
            purged: read_json(&dir.join("purged.json"))?,
            dir: dir.to_path_buf(),
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Rewrites the whole log file from memory (after truncate or purge).
    fn rewrite(&mut self) -> io::Result<()> {
        let path = self.dir.join("log.jsonl");
        let tmp = self.dir.join("log.jsonl.tmp");
        let mut f = File::create(&tmp)?;
        for entry in self.log.values() {
            serde_json::to_writer(&mut f, entry).map_err(io::Error::other)?;
            f.write_all(b"\n")?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        self.log_file = OpenOptions::new().append(true).open(&path)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        Ok(self
            .lock()
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let inner = self.lock();
        let last = inner
            .log
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), SErr> {
        let mut inner = self.lock();
        write_json_atomic(&inner.dir.join("vote.json"), vote).map_err(io_err)?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, SErr> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), SErr> {
        let mut inner = self.lock();
        write_json_atomic(&inner.dir.join("committed.json"), &committed).map_err(io_err)?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, SErr> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        let mut new = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut buf, &entry).map_err(io_err)?;
            buf.push(b'\n');
            new.push(entry);
        }
        // Metadata writes are rare and tiny; an fsync inline here is cheaper than a hand-off.
        let res = inner
            .log_file
            .write_all(&buf)
            .and_then(|_| inner.log_file.sync_data());
        if res.is_ok() {
            for entry in new {
                inner.log.insert(entry.log_id.index, entry);
            }
        }
        let failed = res
            .as_ref()
            .err()
            .map(|e| io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(res);
        match failed {
            Some(e) => Err(io_err(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        let mut inner = self.lock();
        inner.log.split_off(&log_id.index);
        inner.rewrite().map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        let mut inner = self.lock();
        write_json_atomic(&inner.dir.join("purged.json"), &log_id).map_err(io_err)?;
        inner.purged = Some(log_id);
        let keep = inner.log.split_off(&(log_id.index + 1));
        inner.log = keep;
        inner.rewrite().map_err(io_err)
    }
}
