//! Time: member sessions, pending KIP-394 ids, the join-phase timer and the sync timeout.
//! The shell calls [`Group::tick`] at [`Group::next_deadline_ms`] (late is fine: everything
//! due is handled, earliest first).

use super::{Group, GroupState, JoinTimer, Output};

/// What falls due next. On equal deadlines, sessions go first, then the sync timeout, then the
/// join phase (a member found dead is not waited for).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Pending(String),
    Session(String),
    Sync,
    Join,
}

impl Group {
    /// When [`Group::tick`] must next run, if ever.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.next_due().map(|(at, _)| at)
    }

    fn next_due(&self) -> Option<(i64, Due)> {
        let pending = self
            .pending_members
            .iter()
            .map(|(id, at)| (*at, Due::Pending(id.clone())));
        let sessions = self.members.values().filter_map(|m| {
            m.session_deadline_ms
                .map(|at| (at, Due::Session(m.member_id.clone())))
        });
        let sync = self.sync_deadline_ms.map(|at| (at, Due::Sync));
        let join = self.join_timer.map(|t| (t.deadline_ms(), Due::Join));
        pending.chain(sessions).chain(sync).chain(join).min()
    }

    /// Handles everything due at `now_ms`: silent members are removed (a rebalance follows),
    /// unused KIP-394 ids expire, members that never sent SyncGroup are removed, and the join
    /// phase ends or its initial delay is extended.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some((at, due)) = self.next_due() {
            if at > now_ms {
                break;
            }
            match due {
                Due::Pending(id) => {
                    self.pending_members.remove(&id);
                    self.maybe_complete_join(now_ms, &mut out);
                }
                Due::Session(id) => self.on_session_expired(now_ms, &id, &mut out),
                Due::Sync => self.on_sync_expired(now_ms, &mut out),
                Due::Join => self.on_join_timer(now_ms, &mut out),
            }
            self.check();
        }
        out
    }

    fn on_session_expired(&mut self, now_ms: i64, member_id: &str, out: &mut Vec<Output>) {
        let m = self.members.get_mut(member_id).expect("due member exists");
        if m.heartbeat_satisfied() {
            // Its parked request vouches for it; the session restarts when that is answered.
            m.session_deadline_ms = None;
            return;
        }
        tracing::info!(group = %self.group_id, member = %member_id, "session expired");
        self.remove_member(member_id, out);
        self.maybe_prepare_rebalance_or_complete_join(now_ms, out);
    }

    /// Members of this generation that never sent SyncGroup are gone; rebalance without them.
    fn on_sync_expired(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        self.sync_deadline_ms = None;
        debug_assert!(matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ));
        let missing: Vec<String> = std::mem::take(&mut self.pending_sync).into_iter().collect();
        if missing.is_empty() {
            return;
        }
        tracing::info!(group = %self.group_id, members = ?missing, "no SyncGroup before the rebalance timeout");
        for id in &missing {
            self.remove_member(id, out);
        }
        self.prepare_rebalance(now_ms, out);
    }

    fn on_join_timer(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        let timer = self.join_timer.take().expect("due join timer");
        debug_assert_eq!(self.state, GroupState::PreparingRebalance);
        match timer {
            JoinTimer::Initial {
                delay_ms,
                remaining_ms,
                ..
            } => self.on_initial_delay_expired(now_ms, delay_ms, remaining_ms, out),
            JoinTimer::Rebalance { .. } => self.complete_join(now_ms, out),
        }
    }
}
