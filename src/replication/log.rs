//! The replication core's view of a replica's log: one leader epoch per offset, and the
//! epoch chain (Kafka's leader-epoch checkpoint) that OffsetsForLeaderEpoch answers from.
//! Payloads are opaque (`u64`); the broker's segment log will stand behind the same calls.

/// A replica's log, from offset 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaLog {
    entries: Vec<(i32, u64)>,
    /// (epoch, first offset), epochs increasing.
    epochs: Vec<(i32, i64)>,
}

impl ReplicaLog {
    pub fn end(&self) -> i64 {
        self.entries.len() as i64
    }

    /// The epoch of the last entry, -1 when empty.
    pub fn last_epoch(&self) -> i32 {
        self.entries.last().map_or(-1, |e| e.0)
    }

    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        usize::try_from(offset)
            .ok()
            .and_then(|i| self.entries.get(i))
            .map(|e| e.0)
    }

    pub fn get(&self, offset: i64) -> Option<(i32, u64)> {
        usize::try_from(offset)
            .ok()
            .and_then(|i| self.entries.get(i))
            .copied()
    }

    /// Records that `epoch` starts at the current end (a new leader does this first).
    pub fn start_epoch(&mut self, epoch: i32) {
        if self.epochs.last().is_none_or(|(e, _)| *e < epoch) {
            self.epochs.push((epoch, self.end()));
        }
    }

    pub fn append(&mut self, epoch: i32, payload: u64) {
        self.start_epoch(epoch);
        self.entries.push((epoch, payload));
    }

    /// Appends entries fetched from the leader, which start at `from`; ignored unless `from`
    /// is this log's end.
    pub fn append_fetched(&mut self, from: i64, entries: &[(i32, u64)]) -> bool {
        if from != self.end() {
            return false;
        }
        for (epoch, payload) in entries {
            self.append(*epoch, *payload);
        }
        true
    }

    pub fn entries_from(&self, offset: i64, max: usize) -> Vec<(i32, u64)> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        self.entries.iter().skip(start).take(max).copied().collect()
    }

    /// OffsetsForLeaderEpoch: the largest epoch at or below `epoch` that this log has, and
    /// where it ends here (the start of the next epoch, or the log end for the latest).
    /// (-1, 0) when this log has no such epoch.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let i = self.epochs.partition_point(|(e, _)| *e <= epoch);
        if i == 0 {
            return (-1, 0);
        }
        let found = self.epochs[i - 1].0;
        let end = self.epochs.get(i).map_or(self.end(), |(_, start)| *start);
        (found, end)
    }

    /// Drops every entry at or after `offset`.
    pub fn truncate_to(&mut self, offset: i64) {
        let keep = usize::try_from(offset.max(0)).unwrap_or(0);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
        }
        self.epochs.retain(|(_, start)| *start < offset.max(0));
        // An epoch whose entries are all gone keeps no marker; the last kept epoch must be
        // the last entry's.
        while self
            .epochs
            .last()
            .is_some_and(|(e, _)| self.entries.last().is_none_or(|(last, _)| last < e))
        {
            self.epochs.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(epochs: &[i32]) -> ReplicaLog {
        let mut l = ReplicaLog::default();
        for (i, e) in epochs.iter().enumerate() {
            l.append(*e, i as u64);
        }
        l
    }

    #[test]
    fn epoch_chain_answers_offsets_for_leader_epoch() {
        let l = log(&[0, 0, 2, 2, 2, 5]);
        assert_eq!(l.end_offset_for_epoch(0), (0, 2));
        assert_eq!(l.end_offset_for_epoch(1), (0, 2));
        assert_eq!(l.end_offset_for_epoch(2), (2, 5));
        assert_eq!(l.end_offset_for_epoch(4), (2, 5));
        assert_eq!(l.end_offset_for_epoch(5), (5, 6));
        assert_eq!(l.end_offset_for_epoch(9), (5, 6));
        assert_eq!(log(&[3]).end_offset_for_epoch(2), (-1, 0));
        assert_eq!(l.last_epoch(), 5);
    }

    #[test]
    fn truncation_drops_entries_and_their_epochs() {
        let mut l = log(&[0, 0, 2, 2, 2, 5]);
        l.truncate_to(3);
        assert_eq!(l.end(), 3);
        assert_eq!(l.end_offset_for_epoch(5), (2, 3));
        l.truncate_to(2);
        assert_eq!(l.end_offset_for_epoch(2), (0, 2));
        assert!(l.append_fetched(2, &[(7, 9)]));
        assert!(!l.append_fetched(9, &[(7, 9)]));
        assert_eq!(l.get(2), Some((7, 9)));
    }
}
