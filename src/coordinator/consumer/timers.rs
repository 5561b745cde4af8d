//! Session and revocation timeouts. The shell calls [`ConsumerGroup::tick`] at (or after)
//! [`ConsumerGroup::next_deadline_ms`].

use super::ConsumerGroup;

impl ConsumerGroup {
    /// Removes members whose session expired (no heartbeat for `session_timeout_ms`, a static
    /// member away with epoch -2 included) and members that did not confirm a revocation
    /// within their rebalance timeout (Kafka's rebalance timeout). Each removal bumps the group
    /// epoch. Returns whether anything changed.
    pub fn tick(&mut self, now_ms: i64) -> bool {
        let due: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline_ms <= now_ms
                    || m.revocation_deadline_ms.is_some_and(|d| d <= now_ms)
            })
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in &due {
            self.remove_member(member_id);
        }
        self.check();
        !due.is_empty()
    }

    /// The earliest moment [`ConsumerGroup::tick`] has something to do.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| std::iter::once(m.session_deadline_ms).chain(m.revocation_deadline_ms))
            .min()
    }
}
