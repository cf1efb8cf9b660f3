//! Retained messages owed to the client since a SUBSCRIBE, kept apart from the bounded
//! queue.
//!
//! A SUBSCRIBE can match far more retained messages than `max_queued_messages` (a new
//! `#` subscriber matches them all). They are not copied into the queue: each matching
//! filter adds one segment holding references to the messages the retained store already
//! holds, and `Outbound::poll` sends them as the inflight window and the connection's
//! outbox allow. The backlog is bounded by `SessionLimits::max_retained_backlog` in
//! messages; it is never stored (a restart loses only these copies, the retained store
//! keeps the messages).
//!
//! Order is the queue's: a segment records how many messages had entered the queue when
//! it was made, and goes out once those have left it, before anything queued after the
//! SUBSCRIBE. Retained messages therefore follow their SUBACK and precede any live
//! message routed to the session afterwards, as if they had been queued.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::message::Message;
use crate::protocol::QoS;

use super::Delivery;

/// The retained messages of one filter of one SUBSCRIBE.
#[derive(Debug)]
struct Segment {
    /// The queue's push count at the SUBSCRIBE: queue entries below it go first.
    after_queued: u64,
    /// The QoS granted to the filter; each message goes at min(its QoS, this).
    granted: QoS,
    /// The filter's subscription identifier (MQTT 5), if any.
    subscription_ids: Vec<u32>,
    messages: VecDeque<Arc<Message>>,
}

#[derive(Debug, Default)]
pub(super) struct RetainedBacklog {
    /// Oldest first; never holds an empty segment.
    segments: VecDeque<Segment>,
    len: usize,
}

impl RetainedBacklog {
    /// Messages waiting.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds the retained messages of one filter, behind the `after_queued` queue entries
    /// pushed so far. Takes at most `room` of them; returns how many did not fit.
    pub(super) fn add(
        &mut self,
        after_queued: u64,
        granted: QoS,
        subscription_id: Option<u32>,
        mut messages: Vec<Arc<Message>>,
        room: usize,
    ) -> usize {
        let refused = messages.len().saturating_sub(room);
        messages.truncate(room);
        if !messages.is_empty() {
            self.len += messages.len();
            self.segments.push_back(Segment {
                after_queued,
                granted,
                subscription_ids: subscription_id.into_iter().collect(),
                messages: VecDeque::from(messages),
            });
        }
        refused
    }

    /// The next message and the QoS it goes at, if the backlog goes before the queue's
    /// front now (`queue_popped` entries have left the queue).
    pub(super) fn next_due(&self, queue_popped: u64) -> Option<(&Arc<Message>, QoS)> {
        let segment = self.segments.front()?;
        if queue_popped < segment.after_queued {
            return None;
        }
        let message = segment.messages.front()?;
        Some((message, message.qos.min(segment.granted)))
    }

    /// Takes the next message as a delivery (call after `next_due` said it is due).
    pub(super) fn pop(&mut self) -> Option<Delivery> {
        let segment = self.segments.front_mut()?;
        let message = segment.messages.pop_front()?;
        let delivery = Delivery {
            qos: message.qos.min(segment.granted),
            message,
            retain: true,
            subscription_ids: segment.subscription_ids.clone(),
            // The retained store keeps the message itself.
            stored: None,
        };
        if segment.messages.is_empty() {
            self.segments.pop_front();
        }
        self.len -= 1;
        Some(delivery)
    }

    /// Puts back a delivery just taken by `pop`, first in line.
    pub(super) fn unpop(&mut self, delivery: Delivery) {
        self.len += 1;
        self.segments.push_front(Segment {
            after_queued: 0,
            // delivery.qos is already min(message QoS, granted).
            granted: delivery.qos,
            subscription_ids: delivery.subscription_ids,
            messages: VecDeque::from([delivery.message]),
        });
    }
}
