//! A QoS 2 PUBLISH resent after a takeover, while the first connection's write of it has
//! not completed: the new connection's PUBREC must wait for that write. Socket-free: the
//! sessions are driven as the connection task drives them, over a store that holds every
//! completion until the test releases it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::*;
use crate::protocol::{
    Connect, ConnectProperties, Packet, ProtocolVersion, Publish, PublishProperties, QoS,
};
use crate::session::Action;
use crate::storage::{
    Completion, MemoryStore, MessageId, RestoredState, Store, StoreError, StoreOp, StoreStats,
    UnixMillis, WritePromise,
};

/// A memory store whose writes apply at once but complete only when released, like a
/// disk that is slow to sync.
#[derive(Default)]
struct LateStore {
    inner: MemoryStore,
    held: Mutex<Vec<oneshot::Sender<Result<(), StoreError>>>>,
}

impl LateStore {
    /// Completes every write submitted so far.
    fn release(&self) {
        for sender in self.held.lock().expect("not poisoned").drain(..) {
            let _ = sender.send(Ok(()));
        }
    }
}

impl Store for LateStore {
    fn submit(&self, ops: Vec<StoreOp>) -> Completion {
        drop(self.inner.submit(ops));
        let (sender, completion) = Completion::waiting();
        self.held.lock().expect("not poisoned").push(sender);
        completion
    }

    fn flush(&self) -> Completion {
        self.inner.flush()
    }

    fn restore(&self, now: UnixMillis) -> Result<RestoredState, StoreError> {
        self.inner.restore(now)
    }

    fn next_message_id(&self) -> MessageId {
        self.inner.next_message_id()
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

fn persistent_connect(client_id: &str) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 30,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: Some(3600),
            ..ConnectProperties::default()
        },
    }
}

fn qos2_publish(packet_id: u16, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "t/1".into(),
        packet_id,
        properties: PublishProperties::default(),
        payload: Bytes::from_static(b"m"),
    })
}

/// What the connection task keeps from handling one PUBLISH under the session lock.
struct Handled {
    routed: Option<Arc<crate::message::Message>>,
    ops: Vec<StoreOp>,
    promise: Option<WritePromise>,
    /// What the PUBREC waits for.
    pubrec_waits_for: Option<Completion>,
}

/// Handles `packet` on connection `connected` as `Connection::handle_packet` does.
fn handle(connected: &Connected, packet: Packet) -> Handled {
    let mut session = connected
        .handle
        .lock_current(connected.attachment.generation)
        .expect("current connection");
    let packet_id = match &packet {
        Packet::Publish(publish) => publish.packet_id,
        other => panic!("a PUBLISH, not {other:?}"),
    };
    let actions = session.handle_packet(packet, now()).expect("valid PUBLISH");
    let ops = session.take_journal();
    let promise = session.promise_incoming_write(&ops);
    let pubrec_waits_for = session.incoming_write(packet_id);
    let mut routed = None;
    let mut acknowledged = false;
    for action in actions {
        match action {
            Action::Route(message) => routed = Some(message),
            Action::Send(Packet::PubRec(ack)) => {
                assert_eq!(ack.packet_id, packet_id);
                acknowledged = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(acknowledged, "a QoS 2 PUBLISH is answered with PUBREC");
    Handled {
        routed,
        ops,
        promise,
        pubrec_waits_for,
    }
}

/// Routes and submits what `handled` routed, and hands the write to its promise.
fn submit(broker: &Broker, handled: &mut Handled) {
    let message = handled.routed.take().expect("a routed message");
    let published = broker.publish_durably_with(&message, std::mem::take(&mut handled.ops));
    handled
        .promise
        .take()
        .expect("the packet id's write is promised")
        .fulfil(published.writes);
}

fn resolved(completion: &mut Completion) -> Option<bool> {
    completion.try_result().map(|result| result.is_ok())
}

#[test]
fn a_resend_after_takeover_is_acknowledged_only_once_the_first_write_completed() {
    let store = Arc::new(LateStore::default());
    let broker = Broker::new(Config::default(), store.clone());
    let connect = persistent_connect("pub");
    let expiry = Duration::from_secs(3600);
    let old = broker.connect(&connect, expiry, None);
    store.release();

    // The old connection has handled the PUBLISH but not yet submitted its write.
    let mut first = handle(&old, qos2_publish(7, false));
    let mut first_pubrec = first.pubrec_waits_for.take().expect("PUBREC waits");
    // The client reconnects and resends it: a duplicate, not routed again, and its PUBREC
    // waits too.
    let new = broker.connect(&connect, expiry, None);
    store.release();
    let mut resent = handle(&new, qos2_publish(7, true));
    assert!(resent.routed.is_none(), "a duplicate is not routed again");
    assert!(resent.promise.is_none(), "nothing new to write");
    let mut resent_pubrec = resent
        .pubrec_waits_for
        .take()
        .expect("the resend's PUBREC waits for the first write");
    assert_eq!(resolved(&mut resent_pubrec), None);

    // The old connection submits now; the write is not durable yet.
    submit(&broker, &mut first);
    assert_eq!(resolved(&mut resent_pubrec), None);
    assert_eq!(resolved(&mut first_pubrec), None);

    // Durable: both PUBRECs may go, and a later resend is answered at once.
    store.release();
    assert_eq!(resolved(&mut resent_pubrec), Some(true));
    assert_eq!(resolved(&mut first_pubrec), Some(true));
    let again = handle(&new, qos2_publish(7, true));
    assert!(again.routed.is_none() && again.pubrec_waits_for.is_none());
}

#[test]
fn a_packet_id_whose_write_never_happened_is_not_acknowledged_and_is_handled_anew() {
    let store = Arc::new(LateStore::default());
    let broker = Broker::new(Config::default(), store.clone());
    let connect = persistent_connect("pub");
    let expiry = Duration::from_secs(3600);
    let old = broker.connect(&connect, expiry, None);
    store.release();

    // The old connection ends before it submitted anything.
    let first = handle(&old, qos2_publish(9, false));
    let new = broker.connect(&connect, expiry, None);
    store.release();
    let mut resent = handle(&new, qos2_publish(9, true));
    assert!(resent.routed.is_none());
    let mut pubrec = resent.pubrec_waits_for.take().expect("PUBREC waits");
    drop(first);
    // The PUBREC must not confirm a message that was never stored.
    assert_eq!(resolved(&mut pubrec), Some(false));
    // The client sends it again: it is a new message now, routed and written.
    let mut anew = handle(&new, qos2_publish(9, true));
    assert!(anew.routed.is_some(), "routed as a new message");
    let mut pubrec = anew.pubrec_waits_for.take().expect("PUBREC waits");
    submit(&broker, &mut anew);
    assert_eq!(resolved(&mut pubrec), None);
    store.release();
    assert_eq!(resolved(&mut pubrec), Some(true));
}

#[test]
fn a_clean_session_waits_for_nothing() {
    let store = Arc::new(LateStore::default());
    let broker = Broker::new(Config::default(), store.clone());
    let mut connect = persistent_connect("clean");
    connect.clean_start = true;
    connect.properties.session_expiry_interval = None;
    let client = broker.connect(&connect, Duration::ZERO, None);
    let handled = handle(&client, qos2_publish(1, false));
    assert!(handled.promise.is_none() && handled.pubrec_waits_for.is_none());
    assert!(handled.ops.is_empty(), "a clean session writes nothing");
}
