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
//! publisher's later QoS 1 and 2 messages queue behind it (`ForwardOrder`), each task
//! waiting for the previous one to hand its message over. QoS 0 messages do not wait
//! (MQTT orders messages per QoS level, and nothing would bound a QoS 0 flood waiting
//! there). A QoS 1/2 message in line keeps its acknowledgement held, and the publisher's
//! connection stops reading while `LINE_LIMIT` of them wait (`ForwardOrder::is_full`),
//! so a stalled backup slows its publishers down instead of piling up their messages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::message::Message;
use crate::protocol::QoS;
use crate::storage::{write_promise, Completion, StoreOp};

use super::ClusterHook;

/// Messages of one publisher waiting in line beyond which its connection stops reading
/// until the line is shorter: far more than a client's window of unacknowledged
/// messages (mosquitto_pub keeps 20, MQTT 5 clients at most our Receive Maximum).
pub const LINE_LIMIT: usize = 1024;

/// One publisher's place in line for the cluster: its connection keeps it across its
/// PUBLISHes. Empty (and free) while none of its forwards is held.
#[derive(Debug, Default)]
pub struct ForwardOrder {
    /// Boxed: every connection has a `ForwardOrder`, few ever hold a forward.
    line: Option<Box<Line>>,
}

#[derive(Debug)]
struct Line {
    /// Resolves once the publisher's last message in line was handed to the cluster.
    last: oneshot::Receiver<()>,
    /// Messages in line, counted down by their tasks as each is handed over.
    waiting: Arc<AtomicUsize>,
}

impl ForwardOrder {
    /// Whether a message of this publisher waits in line.
    fn waiting(&mut self) -> bool {
        let Some(line) = &mut self.line else {
            return false;
        };
        match line.last.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => true,
            // Handed over, or its task ended (the runtime shutting down).
            _ => {
                self.line = None;
                false
            }
        }
    }

    /// Whether `LINE_LIMIT` messages wait: the publisher is not read meanwhile.
    pub fn is_full(&self) -> bool {
        self.line
            .as_ref()
            .is_some_and(|line| line.waiting.load(Ordering::Relaxed) >= LINE_LIMIT)
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
    let behind = message.qos != QoS::AtMostOnce && order.waiting();
    // Nothing to wait for (or no runtime to wait on: tests driving the broker from a
    // plain thread).
    let runtime = (hold || behind)
        .then(tokio::runtime::Handle::try_current)
        .and_then(Result::ok);
    let Some(runtime) = runtime else {
        writes.extend(publisher_write);
        writes.extend(cluster.published(message));
        return;
    };
    let (promise, forwarded) = write_promise();
    writes.push(Completion::shared(forwarded));
    let (handed_over, next) = oneshot::channel();
    let waiting = order
        .line
        .as_ref()
        .map_or_else(Arc::default, |line| line.waiting.clone());
    waiting.fetch_add(1, Ordering::Relaxed);
    let previous = order.line.replace(Box::new(Line {
        last: next,
        waiting: waiting.clone(),
    }));
    let cluster = cluster.clone();
    let message = message.clone();
    runtime.spawn(async move {
        if let Some(previous) = previous {
            // An error only means that task ended unfinished (shutdown): go on.
            let _ = previous.last.await;
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
        waiting.fetch_sub(1, Ordering::Relaxed);
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
        for topic in ["second", "third"] {
            let later = message(topic, QoS::AtLeastOnce);
            forward(&hook, &later, None, false, &mut order, &mut writes);
        }
        // QoS 0 is ordered only among QoS 0 messages: it does not wait.
        let at_most_once = message("qos0", QoS::AtMostOnce);
        forward(
            &hook,
            &at_most_once,
            None,
            false,
            &mut order,
            &mut Vec::new(),
        );
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
        assert_eq!(cluster.forwarded(), ["qos0", "unrelated"]);

        durable.send(Ok(())).expect("the task waits");
        assert!(acknowledged(writes).await.is_ok());
        assert_eq!(
            cluster.forwarded(),
            ["qos0", "unrelated", "first", "second", "third"]
        );
    }

    #[tokio::test]
    async fn a_line_of_limit_messages_is_full_until_they_are_handed_over() {
        let (cluster, hook) = cluster();
        let mut order = ForwardOrder::default();
        let (durable, write) = Completion::waiting();
        let mut writes = Vec::new();
        let first = message("first", QoS::ExactlyOnce);
        forward(&hook, &first, Some(write), true, &mut order, &mut writes);
        for _ in 1..LINE_LIMIT {
            assert!(!order.is_full());
            let later = message("later", QoS::AtLeastOnce);
            forward(&hook, &later, None, false, &mut order, &mut writes);
        }
        assert!(order.is_full());

        durable.send(Ok(())).expect("the task waits");
        assert!(acknowledged(writes).await.is_ok());
        assert_eq!(cluster.forwarded().len(), LINE_LIMIT);
        assert!(!order.is_full());
        assert!(!order.waiting());
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
