//! Session liveness, sans-IO: which sessions are alive and when each expires.
//!
//! Like ZooKeeper's `ExpiryQueue`, deadlines are rounded up into buckets so a check only
//! looks at the buckets that are due; unlike ZooKeeper, whose buckets are a tickTime wide, a
//! bucket is at most [`MAX_EXPIRY_INTERVAL_MS`] wide ([`expiry_interval_ms`]), so a session
//! expires within that much of its timeout rather than up to a whole tick later (a broker's
//! failover waits on exactly this). Every packet from a client moves its session to a later
//! bucket. The caller supplies the time
//! (`now_ms`, any monotonic clock) and turns expired sessions into close-session
//! transactions; the committed session table itself (timeouts, passwords) lives in the
//! data tree, because it must be the same on every server.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Clamps a client's requested session timeout into `[min_ms, max_ms]`.
pub fn negotiate_timeout_ms(requested_ms: i32, min_ms: u32, max_ms: u32) -> i32 {
    (requested_ms.max(0) as u32).clamp(min_ms, max_ms.max(min_ms)) as i32
}

/// The widest expiry bucket, ms: sessions expire at most this long after their deadline
/// (plus one check of the server loop, which runs at the same interval).
pub const MAX_EXPIRY_INTERVAL_MS: u64 = 100;

/// The expiry bucket width (and check interval) for a server with this tickTime.
pub fn expiry_interval_ms(tick_ms: u64) -> u64 {
    tick_ms.clamp(1, MAX_EXPIRY_INTERVAL_MS)
}

/// Hands out session ids as ZooKeeper does: the server id in the top byte, the start time
/// in milliseconds shifted into the next 40 bits, then a counter, so ids from different
/// servers and different runs do not collide.
#[derive(Debug, Clone)]
pub struct SessionIdGenerator {
    next: i64,
}

impl SessionIdGenerator {
    pub fn new(server_id: u8, wall_clock_ms: u64) -> Self {
        let base = ((wall_clock_ms << 24) >> 8) as i64;
        SessionIdGenerator {
            next: base | ((server_id as i64) << 56),
        }
    }

    pub fn next_id(&mut self) -> i64 {
        self.next = self.next.wrapping_add(1);
        self.next
    }
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    timeout_ms: u64,
    expires_at_ms: u64,
    closing: bool,
}

/// The expiry buckets of the sessions this server is responsible for.
#[derive(Debug)]
pub struct SessionTracker {
    interval_ms: u64,
    sessions: HashMap<i64, Tracked>,
    buckets: BTreeMap<u64, HashSet<i64>>,
}

impl SessionTracker {
    /// A tracker whose deadlines round up to multiples of `interval_ms`.
    pub fn new(interval_ms: u64) -> Self {
        SessionTracker {
            interval_ms: interval_ms.max(1),
            sessions: HashMap::new(),
            buckets: BTreeMap::new(),
        }
    }

    fn bucket_for(&self, now_ms: u64, timeout_ms: u64) -> u64 {
        ((now_ms + timeout_ms) / self.interval_ms + 1) * self.interval_ms
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Starts tracking a session (new, or known from a snapshot/log at startup).
    pub fn add(&mut self, session_id: i64, timeout_ms: u64, now_ms: u64) {
        self.remove(session_id);
        let expires_at_ms = self.bucket_for(now_ms, timeout_ms);
        self.sessions.insert(
            session_id,
            Tracked {
                timeout_ms,
                expires_at_ms,
                closing: false,
            },
        );
        self.buckets
            .entry(expires_at_ms)
            .or_default()
            .insert(session_id);
    }

    /// Records client activity; false if the session is unknown or already closing.
    pub fn touch(&mut self, session_id: i64, now_ms: u64) -> bool {
        let Some(t) = self.sessions.get(&session_id).copied() else {
            return false;
        };
        if t.closing {
            return false;
        }
        let new_expiry = self.bucket_for(now_ms, t.timeout_ms);
        if new_expiry != t.expires_at_ms {
            self.unbucket(session_id, t.expires_at_ms);
            self.buckets
                .entry(new_expiry)
                .or_default()
                .insert(session_id);
            if let Some(t) = self.sessions.get_mut(&session_id) {
                t.expires_at_ms = new_expiry;
            }
        }
        true
    }

    fn unbucket(&mut self, session_id: i64, at_ms: u64) {
        if let Some(set) = self.buckets.get_mut(&at_ms) {
            set.remove(&session_id);
            if set.is_empty() {
                self.buckets.remove(&at_ms);
            }
        }
    }

    /// True if the session is tracked and not closing.
    pub fn is_alive(&self, session_id: i64) -> bool {
        self.sessions.get(&session_id).is_some_and(|t| !t.closing)
    }

    /// Marks a session as closing: its close transaction is on its way, no more requests.
    pub fn set_closing(&mut self, session_id: i64) {
        if let Some(t) = self.sessions.get_mut(&session_id) {
            t.closing = true;
        }
    }

    pub fn remove(&mut self, session_id: i64) {
        if let Some(t) = self.sessions.remove(&session_id) {
            self.unbucket(session_id, t.expires_at_ms);
        }
    }

    /// Sessions whose deadline passed, marked closing and returned once each, in id order.
    pub fn expire(&mut self, now_ms: u64) -> Vec<i64> {
        let mut out = Vec::new();
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > now_ms {
                break;
            }
            out.extend(entry.remove());
        }
        out.sort_unstable();
        for id in &out {
            if let Some(t) = self.sessions.get_mut(id) {
                t.closing = true;
            }
        }
        out.retain(|id| self.sessions.contains_key(id));
        out
    }
}

#[cfg(test)]
mod tests {
    //! Proves timeouts are clamped, sessions expire only after their timeout (rounded to a
    //! bucket) without activity, and touching postpones expiry, by driving a fake clock.
    use super::*;

    #[test]
    fn timeout_is_clamped() {
        assert_eq!(negotiate_timeout_ms(100, 4000, 40000), 4000);
        assert_eq!(negotiate_timeout_ms(100_000, 4000, 40000), 40000);
        assert_eq!(negotiate_timeout_ms(10_000, 4000, 40000), 10_000);
        assert_eq!(negotiate_timeout_ms(-5, 4000, 40000), 4000);
    }

    #[test]
    fn idle_session_expires_and_touched_one_survives() {
        let mut t = SessionTracker::new(2000);
        t.add(1, 4000, 0);
        t.add(2, 4000, 0);
        assert!(t.expire(4000).is_empty());
        for now in (1000..=12_000).step_by(1000) {
            assert!(t.touch(2, now));
            let expired = t.expire(now);
            if now < 6000 {
                assert!(expired.is_empty(), "at {now}: {expired:?}");
            } else if now == 6000 {
                assert_eq!(expired, vec![1]);
            } else {
                assert!(expired.is_empty());
            }
        }
        assert!(!t.touch(1, 13_000), "a closing session cannot be revived");
        assert!(t.is_alive(2));
        t.remove(1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_session_expires_within_one_interval_of_its_timeout_whatever_the_tick() {
        assert_eq!(expiry_interval_ms(2000), 100);
        assert_eq!(expiry_interval_ms(40), 40);
        let mut t = SessionTracker::new(expiry_interval_ms(2000));
        t.add(7, 6000, 1234);
        assert!(
            t.expire(1234 + 6000 - 1).is_empty(),
            "not before its timeout"
        );
        assert_eq!(
            t.expire(1234 + 6000 + 100),
            vec![7],
            "at most 100 ms after it"
        );
    }

    #[test]
    fn session_ids_carry_server_id_and_are_unique() {
        let mut g = SessionIdGenerator::new(3, 1_700_000_000_000);
        let a = g.next_id();
        let b = g.next_id();
        assert_ne!(a, b);
        assert_eq!((a >> 56) & 0xff, 3);
    }
}
