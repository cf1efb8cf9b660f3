//! Retained changes on their way to consensus, and the acknowledgements waiting for
//! them: a QoS 1/2 retained PUBLISH is answered once its change is committed, so an
//! acknowledged retained message is in the log of a majority and survives its node
//! (ARCHITECTURE.md, "Retained messages are acknowledged after their commit"). The
//! node's proposer (`super::node`) batches the changes and resolves them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::message::Message;
use crate::protocol::QoS;
use crate::storage::{Completion, StoreError};

use super::state::encode_base64;

/// How long a QoS 1/2 retained PUBLISH may wait for its commit before its publisher is
/// answered with a failure (MQTT 5 PUBACK/PUBREC 0x80, MQTT 3 disconnected). The answer
/// comes after the first failed attempt past it: within this plus the proposal's own
/// timeout.
pub const RETAINED_COMMIT_BOUND: Duration = Duration::from_secs(3);

/// A retained change waiting to be committed, and the publisher's acknowledgement
/// waiting for it (QoS 1/2).
pub struct PendingRetained {
    pub topic: String,
    /// The message in the store's encoding, base64; `None` clears the topic.
    pub message: Option<String>,
    waiter: Option<(oneshot::Sender<Result<(), StoreError>>, Instant)>,
}

impl PendingRetained {
    /// The change `message` makes, and for QoS 1/2 the completion its acknowledgement
    /// waits for.
    pub fn new(
        message: &Arc<Message>,
        clock: &crate::storage::WallClock,
    ) -> (PendingRetained, Option<Completion>) {
        let encoded = (!message.payload.is_empty()).then(|| {
            let stored =
                crate::storage::StoredMessage::from_message(message, clock).without_cluster_id();
            encode_base64(&crate::storage::codec::encode_message(&stored))
        });
        let (waiter, completion) = if message.qos == QoS::AtMostOnce {
            (None, None)
        } else {
            let (sender, completion) = Completion::waiting();
            (
                Some((sender, Instant::now() + RETAINED_COMMIT_BOUND)),
                Some(completion),
            )
        };
        let pending = PendingRetained {
            topic: message.topic.to_string(),
            message: encoded,
            waiter,
        };
        (pending, completion)
    }

    /// What a QoS 1/2 publisher gets when too many changes wait already.
    pub fn refused(message: &Message) -> Option<Completion> {
        (message.qos != QoS::AtMostOnce).then(|| Completion::done(Err(StoreError::Overloaded)))
    }

    pub fn committed(self) {
        if let Some((waiter, _)) = self.waiter {
            let _ = waiter.send(Ok(()));
        }
    }

    /// Answers the publisher with a failure once the bound has passed; the change stays
    /// queued (the node's own subscribers already saw it, and the cluster converges on
    /// it when a leader is back).
    pub fn give_up_if_late(&mut self, now: Instant) {
        if self
            .waiter
            .as_ref()
            .is_some_and(|(_, deadline)| now >= *deadline)
        {
            if let Some((waiter, _)) = self.waiter.take() {
                let _ = waiter.send(Err(StoreError::Io(format!(
                    "the retained message was not committed by the cluster within {} s",
                    RETAINED_COMMIT_BOUND.as_secs()
                ))));
            }
        }
    }
}
