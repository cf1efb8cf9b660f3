//! When a message published on a cluster node goes to the other nodes, and in what order.
//!
//! Most messages are handed to the cluster (`ClusterHook::published`) as soon as they are
//! routed locally, in parallel with their store write. A QoS 2 message whose publisher
//! has a persistent session waits for that write first: it carries the publisher's new
//! incoming packet id (and the id the message goes under), and once it is durable on the
//! session's backups, a node taking the session over from their copy recognises the
//! client's resend (DUP) of the message and routes it under the same id, which the nodes
//! that got the first copy drop. Forwarded before, the message could reach subscribers
//! on other nodes while the copy lacked the packet id; had the publisher's node then
//! died, the resend was taken for a new message and those subscribers got it twice. The
//! cost is one replicated write's latency before the forward, for such messages only.
//!
//! Messages of one publisher keep their order: while one of its forwards is held, the
//! publisher's later messages (any QoS) queue behind it (`ForwardOrder`), each task
//! waiting for the previous one to hand its message over.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::message::Message;
use crate::protocol::QoS;
use crate::storage::{write_promise, Completion, StoreOp};

use super::ClusterHook;

/// One publisher's place in line for the cluster: its connection keeps it across its
/// PUBLISHes. Empty (and free) while none of its forwards is held.
#[derive(Debug, Default)]
pub struct ForwardOrder {
    /// Resolves once the publisher's last held forward was handed to the cluster. Boxed:
    /// every connection has a `ForwardOrder`, few ever hold a forward.
    last: Option<Box<oneshot::Receiver<()>>>,
}

impl ForwardOrder {
    /// Whether a held forward of this publisher has not been handed over yet.
    fn waiting(&mut self) -> bool {
        let Some(last) = &mut self.last else {
            return false;
        };
        match last.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => true,
            // Handed over, or its task ended (the runtime shutting down).
            _ => {
                self.last = None;
                false
            }
        }
    }
}

/// Whether `message` waits for its publisher's write before going to other nodes: a
/// QoS 2 message whose PUBLISH recorded a packet id in a persistent session
/// (`publisher_ops`; a clean session records none in the store).
pub(super) fn waits_for_publisher(message: &Message, publisher_ops: &[StoreOp]) -> bool {
    message.qos == QoS::ExactlyOnce
        && publisher_ops
            .iter()
            .any(|op| matches!(op, StoreOp::AddIncomingQos2 { .. }))
}

/// Hands `message` to the cluster, now or (`hold`, or an earlier message of the same
/// publisher still held) once `publisher_write` and the publisher's earlier forwards
/// are done. Pushes onto `writes` what the publisher's acknowledgement waits for: the
/// publisher's write and the cluster's acknowledgements of the message.
pub(super) fn forward(
    cluster: &Arc<dyn ClusterHook>,
    message: &Arc<Message>,
    publisher_write: Option<Completion>,
    hold: bool,
    order: &mut ForwardOrder,
    writes: &mut Vec<Completion>,
) {
    let behind = order.waiting();
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(runtime) if hold || behind => runtime,
        // Nothing to wait for (or no runtime to wait on: tests driving the broker from
        // a plain thread).
        _ => {
            writes.extend(publisher_write);
            writes.extend(cluster.published(message));
            return;
        }
    };
    let (promise, forwarded) = write_promise();
    writes.push(Completion::shared(forwarded));
    let (handed_over, next) = oneshot::channel();
    let previous = order.last.replace(Box::new(next));
    let cluster = cluster.clone();
    let message = message.clone();
    runtime.spawn(async move {
        if let Some(previous) = previous {
            // An error only means that task ended unfinished (shutdown): go on.
            let _ = (*previous).await;
        }
        let mut settled = Vec::with_capacity(2);
        match publisher_write {
            // Forwarded once settled either way: a failed write fails the
            // acknowledgement, and the client's resend then finds the packet id or not
            // as before; holding the message back would lose it where the packet id
            // did reach the copy.
            Some(write) if hold => settled.push(Completion::done(write.await)),
            write => settled.extend(write),
        }
        settled.extend(cluster.published(&message));
        let _ = handed_over.send(());
        promise.fulfil(settled);
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::broker::remote::ClaimFuture;
    use crate::protocol::PublishProperties;
    use crate::storage::StoreError;

    /// Records the topics handed to the cluster, in order.
    #[derive(Default)]
    struct Cluster {
        forwarded: Mutex<Vec<String>>,
    }

    impl Cluster {
        fn forwarded(&self) -> Vec<String> {
            self.forwarded.lock().expect("not poisoned").clone()
        }
    }

    impl ClusterHook for Cluster {
        fn published(&self, message: &Arc<Message>) -> Option<Completion> {
            let topic = message.topic.to_string();
            self.forwarded.lock().expect("not poisoned").push(topic);
            None
        }
        fn filter_added(&self, _: &str) {}
        fn filter_removed(&self, _: &str) {}
        fn has_leader(&self) -> bool {
            true
        }
        fn claim(&self, _: &str, _: bool) -> ClaimFuture<'_> {
            Box::pin(async { Err(0x80) })
        }
        fn owns(&self, _: &str, _: u64) -> bool {
            true
        }
        fn session_ended(&self, _: &str) {}
        fn render_metrics(&self) -> String {
            String::new()
        }
    }

    fn message(topic: &str, qos: QoS) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"m"),
            qos,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: None,
            publisher: None,
            cluster_id: Default::default(),
        })
    }

    fn packet_id_recorded() -> Vec<StoreOp> {
        vec![StoreOp::AddIncomingQos2 {
            client_id: "publisher".into(),
            packet_id: 1,
        }]
    }

    /// Lets the spawned forwarding tasks run (the test runtime has one thread).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// Resolves the acknowledgement's writes.
    async fn acknowledged(writes: Vec<Completion>) -> Result<(), StoreError> {
        for write in writes {
            write.await?;
        }
        Ok(())
    }

    fn cluster() -> (Arc<Cluster>, Arc<dyn ClusterHook>) {
        let cluster = Arc::new(Cluster::default());
        let hook: Arc<dyn ClusterHook> = cluster.clone();
        (cluster, hook)
    }

    #[test]
    fn only_a_qos2_message_recording_a_packet_id_waits() {
        let ops = packet_id_recorded();
        assert!(waits_for_publisher(&message("t", QoS::ExactlyOnce), &ops));
        assert!(!waits_for_publisher(&message("t", QoS::ExactlyOnce), &[]));
        assert!(!waits_for_publisher(&message("t", QoS::AtLeastOnce), &ops));
    }

    #[tokio::test]
    async fn a_message_with_nothing_held_before_it_goes_at_once() {
        let (cluster, hook) = cluster();
        let mut order = ForwardOrder::default();
        let (_sender, write) = Completion::waiting();
        let mut writes = Vec::new();
        forward(
            &hook,
            &message("now", QoS::AtLeastOnce),
            Some(write),
            false,
            &mut order,
            &mut writes,
        );
        assert_eq!(cluster.forwarded(), ["now"]);
        assert_eq!(writes.len(), 1, "the publisher's write is waited for");
    }

    #[tokio::test]
    async fn a_held_message_goes_once_its_publishers_write_is_durable() {
        let (cluster, hook) = cluster();
        let mut order = ForwardOrder::default();
        let (durable, write) = Completion::waiting();
        let mut writes = Vec::new();
        let held = message("held", QoS::ExactlyOnce);
        forward(&hook, &held, Some(write), true, &mut order, &mut writes);
        settle().await;
        assert!(cluster.forwarded().is_empty(), "forwarded before its write");
        assert!(
            writes.iter_mut().all(|write| write.try_result().is_none()),
            "acknowledged before the message was forwarded"
        );

        durable.send(Ok(())).expect("the task waits");
        assert!(acknowledged(writes).await.is_ok());
        assert_eq!(cluster.forwarded(), ["held"]);
        assert!(!order.waiting(), "the line is empty again");
    }

    #[tokio::test]
    async fn a_publishers_later_messages_queue_behind_its_held_one_and_others_do_not() {
        let (cluster, hook) = cluster();
        let mut order = ForwardOrder::default();
        let mut other_publisher = ForwardOrder::default();
        let (durable, write) = Completion::waiting();
        let mut writes = Vec::new();
        let first = message("first", QoS::ExactlyOnce);
        forward(&hook, &first, Some(write), true, &mut order, &mut writes);
        for (topic, qos) in [("second", QoS::AtMostOnce), ("third", QoS::AtLeastOnce)] {
            forward(
                &hook,
                &message(topic, qos),
                None,
                false,
                &mut order,
                &mut writes,
            );
        }
        let unrelated = message("unrelated", QoS::AtLeastOnce);
        forward(
            &hook,
            &unrelated,
            None,
            false,
            &mut other_publisher,
            &mut Vec::new(),
        );
        settle().await;
        assert_eq!(cluster.forwarded(), ["unrelated"]);

        durable.send(Ok(())).expect("the task waits");
        assert!(acknowledged(writes).await.is_ok());
        assert_eq!(
            cluster.forwarded(),
            ["unrelated", "first", "second", "third"]
        );
    }

    #[tokio::test]
    async fn a_failed_publishers_write_fails_the_acknowledgement_and_still_forwards() {
        let (cluster, hook) = cluster();
        let mut order = ForwardOrder::default();
        let (failed, write) = Completion::waiting();
        let mut writes = Vec::new();
        let held = message("held", QoS::ExactlyOnce);
        forward(&hook, &held, Some(write), true, &mut order, &mut writes);
        failed
            .send(Err(StoreError::Io("disk gone".into())))
            .expect("the task waits");
        assert!(acknowledged(writes).await.is_err());
        assert_eq!(cluster.forwarded(), ["held"]);
    }
}
