//! One member of a classic consumer group, as the coordinator tracks it.

use super::requests::{JoinProtocol, RequestToken};
use bytes::Bytes;

/// A group member: what it joined with, its assignment and the requests it has parked.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    /// In the member's preference order.
    pub protocols: Vec<JoinProtocol>,
    pub assignment: Bytes,
    /// A JoinGroup parked until the rebalance completes.
    pub awaiting_join: Option<RequestToken>,
    /// A SyncGroup parked until the leader's assignment is stored.
    pub awaiting_sync: Option<RequestToken>,
    /// Joined in the current rebalance and has not yet received its first JoinGroup answer.
    /// Such a member cannot heartbeat, so its session is the new-member join timeout.
    pub is_new: bool,
    /// When the member's session (or new-member join timeout) runs out; `None` while no
    /// expiry is scheduled (a parked member is not expired by its session).
    pub session_deadline_ms: Option<u64>,
}

impl Member {
    /// Approximate memory of the member (its strings, protocols and assignment), bytes.
    pub fn approximate_bytes(&self) -> usize {
        let protocols: usize = self
            .protocols
            .iter()
            .map(|p| std::mem::size_of::<JoinProtocol>() + p.name.len() + p.metadata.len())
            .sum();
        std::mem::size_of::<Member>()
            + self.member_id.len()
            + self.group_instance_id.as_ref().map_or(0, String::len)
            + self.client_id.len()
            + self.client_host.len()
            + self.protocol_type.len()
            + protocols
            + self.assignment.len()
    }

    /// The member's metadata for `protocol`, empty if it does not support it.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// Whether a JoinGroup carries exactly the protocols the member joined with.
    pub fn matches(&self, protocols: &[JoinProtocol]) -> bool {
        self.protocols == protocols
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    /// The first protocol in the member's preference order among `candidates`.
    pub fn vote<'a>(&self, candidates: &[&'a str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .find_map(|p| candidates.iter().find(|c| **c == p.name).copied())
    }

    /// Whether the member's session may expire now: a member parked in JoinGroup or
    /// SyncGroup is bounded by the rebalance timeout instead, unless it is new (then the
    /// deadline was the new-member join timeout).
    pub fn may_expire(&self) -> bool {
        self.is_new || (self.awaiting_join.is_none() && self.awaiting_sync.is_none())
    }
}

/// The topics of a consumer-protocol subscription (member metadata of protocol type
/// `consumer`: version i16, topics as an array of i16-length strings, then fields this does
/// not read), or `None` when the bytes are not one. Reads in place, allocating only per
/// topic found, so a declared count larger than the bytes costs nothing.
pub fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let head = rest.get(..n)?;
        *rest = &rest[n..];
        Some(head)
    }
    let mut rest = metadata;
    let version = i16::from_be_bytes(take(&mut rest, 2)?.try_into().ok()?);
    if version < 0 {
        return None;
    }
    let count = i32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?);
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let len = i16::from_be_bytes(take(&mut rest, 2)?.try_into().ok()?);
        let name = take(&mut rest, usize::try_from(len).ok()?)?;
        topics.push(std::str::from_utf8(name).ok()?.to_owned());
    }
    Some(topics)
}

#[cfg(test)]
mod subscription_tests {
    //! Decodes subscriptions as the Java client and librdkafka write them, and refuses
    //! truncated or lying ones without allocating by their counts.
    use super::subscribed_topics;

    fn subscription(version: i16, topics: &[&str]) -> Vec<u8> {
        let mut out = version.to_be_bytes().to_vec();
        out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for t in topics {
            out.extend_from_slice(&(t.len() as i16).to_be_bytes());
            out.extend_from_slice(t.as_bytes());
        }
        out.extend_from_slice(&(-1i32).to_be_bytes()); // user data: null
        out
    }

    #[test]
    fn topics_of_a_subscription() {
        let bytes = subscription(1, &["orders", "payments"]);
        assert_eq!(
            subscribed_topics(&bytes),
            Some(vec!["orders".to_owned(), "payments".to_owned()])
        );
        assert_eq!(subscribed_topics(&subscription(3, &[])), Some(vec![]));
    }

    #[test]
    fn truncated_or_lying_subscriptions_are_none() {
        let bytes = subscription(0, &["orders"]);
        assert_eq!(subscribed_topics(&bytes[..9]), None);
        let mut lying = 0i16.to_be_bytes().to_vec();
        lying.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(subscribed_topics(&lying), None);
        assert_eq!(subscribed_topics(&[]), None);
    }
}
