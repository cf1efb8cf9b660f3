//! The application message as the broker holds it between a publisher and its subscribers.
//!
//! A PUBLISH is turned into one `Arc<Message>` when it arrives; every subscriber's queue,
//! the retained store and (later) the storage layer share that one allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::{PublishProperties, QoS};

/// Identifies the connection-independent session a message came from, for No Local.
pub type SessionKey = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Always the full topic name (topic aliases are resolved before a Message is built).
    pub topic: ByteString,
    pub payload: Bytes,
    /// QoS the publisher sent it with; delivery QoS is min(this, granted).
    pub qos: QoS,
    /// The RETAIN flag as published.
    pub retain: bool,
    /// Properties forwarded unchanged to subscribers: payload format indicator, content
    /// type, response topic, correlation data, user properties. `topic_alias`,
    /// `subscription_identifiers` and `message_expiry_interval` are always cleared here:
    /// they are per hop and are filled in per delivery.
    pub properties: PublishProperties,
    /// When the message stops being deliverable (MQTT 5 message expiry interval).
    pub expires_at: Option<Instant>,
    /// The session that published it (`None` for wills and broker-generated messages
    /// such as `$SYS`), so No Local can skip it.
    pub publisher: Option<SessionKey>,
    /// Its identity across a cluster, set the first time a cluster node needs it (see
    /// `ClusterMessageId`); a single node never sets it.
    pub cluster_id: OnceLock<ClusterMessageId>,
}

/// A message's identity in a cluster: the node where it was published and a sequence
/// number of that node's. Copies of one message that reach a session by two ways while
/// the session moves between nodes (forwarded to its new node, and relayed by its old
/// one) carry the same id, so the session keeps one (`crate::session` de-duplicates).
///
/// The sequence starts at the process's start time in microseconds, so a restarted
/// node does not reuse the ids of its previous run (unless it published more than a
/// million messages a second on average).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterMessageId {
    pub node: u64,
    pub sequence: u64,
}

/// This process's node id and next sequence number for `ClusterMessageId`s. Process-wide
/// because a message is created where a PUBLISH is parsed, far from the cluster code;
/// only a cluster node sets the node id (once, at start).
static LOCAL_NODE: AtomicU64 = AtomicU64::new(0);
static NEXT_SEQUENCE: OnceLock<AtomicU64> = OnceLock::new();

impl ClusterMessageId {
    /// Names the local node in the ids this process hands out (a cluster node, at start).
    pub fn set_local_node(node: u64) {
        LOCAL_NODE.store(node, Ordering::Relaxed);
    }

    fn next() -> ClusterMessageId {
        let sequence = NEXT_SEQUENCE.get_or_init(|| {
            let micros = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_micros());
            AtomicU64::new(u64::try_from(micros).unwrap_or(u64::MAX / 2))
        });
        ClusterMessageId {
            node: LOCAL_NODE.load(Ordering::Relaxed),
            sequence: sequence.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Message {
    /// This message's identity in the cluster, allocated by this node if it has none yet.
    pub fn cluster_id(&self) -> ClusterMessageId {
        *self.cluster_id.get_or_init(ClusterMessageId::next)
    }

    /// True once the message expiry interval has run out.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The remaining message expiry interval in whole seconds, to forward to a subscriber
    /// (spec 3.3.2.3.3: the receiver gets the interval minus the time spent waiting).
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let remaining = at.saturating_duration_since(now);
            // To the nearest second: a message that came from another cluster node had its
            // expiry carried as wall-clock time, and the two nodes' clock pairs may differ
            // by a few milliseconds, which rounding up would turn into a longer interval
            // than the publisher gave. At least 1, so a message with 0.4 s left is not
            // sent as "0 = no expiry".
            let secs = remaining.as_secs() + u64::from(remaining.subsec_millis() >= 500);
            u32::try_from(secs).unwrap_or(u32::MAX).max(1)
        })
    }

    /// Approximate memory held by this message, for queue byte limits.
    pub fn size_bytes(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }
}

#[cfg(test)]
mod expiry_tests {
    use std::time::Duration;

    use super::*;

    fn expiring_in(now: Instant, left: Duration) -> Message {
        Message {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: Some(now + left),
            publisher: None,
            cluster_id: OnceLock::new(),
        }
    }

    #[test]
    fn the_remaining_interval_is_rounded_to_the_nearest_second_and_never_zero() {
        let now = Instant::now();
        // A few milliseconds more than given, as a clock translation between two nodes
        // can produce: still the publisher's 300.
        let later = expiring_in(now, Duration::from_millis(300_004));
        assert_eq!(later.remaining_expiry(now), Some(300));
        let sooner = expiring_in(now, Duration::from_millis(299_990));
        assert_eq!(sooner.remaining_expiry(now), Some(300));
        let almost_gone = expiring_in(now, Duration::from_millis(400));
        assert_eq!(almost_gone.remaining_expiry(now), Some(1));
        let mut none = expiring_in(now, Duration::ZERO);
        none.expires_at = None;
        assert_eq!(none.remaining_expiry(now), None);
    }
}
