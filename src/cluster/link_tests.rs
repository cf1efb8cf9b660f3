//! Socket-free tests of the node link (`link.rs`): the outbox's limit and its flow
//! control marks, the reader's liveness bookkeeping, and the forwarded messages kept
//! until the peer acknowledges them (`unacked.rs`).

use super::*;

fn links(limit: usize) -> Arc<Links> {
    links_pausing(limit, Duration::from_secs(1))
}

fn links_pausing(limit: usize, publisher_pause: Duration) -> Arc<Links> {
    let liveness = Liveness {
        ping_interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        publisher_pause,
    };
    // Node 2 never dials node 1: no task is started.
    Links::new(2, limit, liveness, None)
}

#[test]
fn a_full_outbox_drops_counts_and_reports_its_bytes() {
    let links = links(64);
    let peer = links.ensure_peer(1, "127.0.0.1:1");
    assert!(!peer.send(frame(FORWARD, &[0; 10])), "dropped while down");
    assert_eq!(peer.stats.dropped_frames.load(Ordering::Relaxed), 1);

    peer.stats.connected.store(true, Ordering::Relaxed);
    assert!(peer.send(frame(FORWARD, &[0; 30])));
    assert_eq!(peer.outbox_bytes(), 35);
    assert!(peer.send(frame(FORWARD, &[0; 20])));
    assert_eq!(peer.outbox_bytes(), 60);
    assert!(
        !peer.send(frame(FORWARD, &[0; 1])),
        "dropped: over the limit"
    );
    assert_eq!(peer.outbox_bytes(), 60);
    assert_eq!(peer.stats.dropped_frames.load(Ordering::Relaxed), 2);
}

fn connected_peer(links: &Arc<Links>) -> Arc<PeerLink> {
    let peer = links.ensure_peer(1, "127.0.0.1:1");
    peer.stats.connected.store(true, Ordering::Relaxed);
    peer
}

#[test]
fn acknowledgements_wait_above_the_high_water_mark_until_the_low_water_mark() {
    // 1000 bytes: high-water mark 500, low-water mark 250; frames of 105 bytes.
    let links = links(1000);
    let peer = connected_peer(&links);
    let connection = lock(&peer.outbox).connection;
    let frame_of_105 = || frame(FORWARD, &[0; 100]);
    for _ in 0..4 {
        assert!(matches!(peer.forward(frame_of_105(), true), Ok(None)));
    }
    assert_eq!(peer.outbox_bytes(), 420);
    assert!(
        matches!(peer.forward(frame_of_105(), false), Ok(None)),
        "QoS 0 never waits"
    );
    let mut first = peer.forward(frame_of_105(), true).unwrap().expect("paused");
    let mut second = peer.forward(frame_of_105(), true).unwrap().expect("paused");
    assert_eq!(peer.stats.paused_publishes.load(Ordering::Relaxed), 2);
    assert!(first.try_result().is_none() && second.try_result().is_none());

    // The writer takes all but what stays above the low-water mark: still waiting.
    let mut buffer = Vec::new();
    {
        let mut outbox = lock(&peer.outbox);
        while outbox.bytes > 350 {
            let frame = outbox.frames.pop_front().unwrap();
            outbox.bytes -= frame.len();
        }
        outbox.relieve_if_drained(peer.low_water());
    }
    assert_eq!(peer.outbox_bytes(), 315);
    assert!(first.try_result().is_none(), "above the low-water mark");

    assert!(peer.take_batch(connection, &mut buffer));
    assert_eq!(peer.outbox_bytes(), 0);
    assert!(matches!(first.try_result(), Some(Ok(()))));
    assert!(matches!(second.try_result(), Some(Ok(()))));
    assert!(
        matches!(peer.forward(frame_of_105(), true), Ok(None)),
        "below the mark again"
    );
}

#[test]
fn a_failed_link_fails_waiting_acknowledgements_and_a_late_pause_stalls() {
    let never_pausing = links_pausing(1000, Duration::ZERO);
    let peer = connected_peer(&never_pausing);
    for _ in 0..6 {
        assert!(matches!(
            peer.forward(frame(FORWARD, &[0; 100]), true),
            Ok(None)
        ));
    }
    assert_eq!(
        peer.stats.paused_publishes.load(Ordering::Relaxed),
        0,
        "a zero bound never pauses"
    );

    let links = links(1000);
    let peer = connected_peer(&links);
    let mut waits = Vec::new();
    for _ in 0..6 {
        waits.extend(peer.forward(frame(FORWARD, &[0; 100]), true).unwrap());
    }
    assert_eq!(waits.len(), 2);
    // A failed link releases the pause: what the acknowledgements wait for then is the
    // peer's acknowledgement of the kept messages (`unacked`).
    lock(&peer.outbox).clear();
    for mut wait in waits {
        assert!(matches!(wait.try_result(), Some(Ok(()))));
    }

    // A pause past its bound lets its publishers go on, and nobody waits until the
    // outbox drained.
    for _ in 0..5 {
        let _ = peer.forward(frame(FORWARD, &[0; 100]), true).unwrap();
    }
    let mut waiting = peer
        .forward(frame(FORWARD, &[0; 100]), true)
        .unwrap()
        .unwrap();
    lock(&peer.outbox).pause.as_mut().unwrap().since -= Duration::from_secs(2);
    peer.stall_if_late();
    assert!(matches!(waiting.try_result(), Some(Ok(()))));
    assert_eq!(peer.stats.pause_timeouts.load(Ordering::Relaxed), 1);
    assert!(matches!(
        peer.forward(frame(FORWARD, &[0; 100]), true),
        Ok(None)
    ));
    let connection = lock(&peer.outbox).connection;
    assert!(peer.take_batch(connection, &mut Vec::new()));
    assert!(
        !lock(&peer.outbox).stalled,
        "drained: publishers wait again"
    );

    assert_eq!(
        peer.forward(frame(FORWARD, &[0; 2000]), true).err(),
        Some(NotQueued::OutboxFull),
        "over the hard limit: not queued"
    );
    peer.stats.connected.store(false, Ordering::Relaxed);
    assert_eq!(
        peer.forward(frame(FORWARD, &[0; 10]), true).err(),
        Some(NotQueued::LinkDown)
    );
}

#[tokio::test]
async fn the_watched_reader_notes_when_bytes_arrive() {
    let (mut client, server) = tokio::io::duplex(64);
    let heard = Arc::new(Heard::default());
    let started = Instant::now() - Duration::from_millis(50);
    let mut reader = Watched {
        inner: server,
        started,
        heard: heard.clone(),
    };
    client.write_all(&frame(PING, &[])).await.unwrap();
    let (kind, body) = read_frame(&mut reader).await.unwrap();
    assert_eq!((kind, body.len()), (PING, 0));
    assert!(heard.last_ms.load(Ordering::Relaxed) >= 50);
}

fn message(topic: &str) -> Arc<crate::message::Message> {
    Arc::new(crate::message::Message {
        topic: topic.into(),
        payload: Bytes::from_static(b"m"),
        qos: crate::protocol::QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
        expires_at: None,
        publisher: None,
        cluster_id: Default::default(),
    })
}

#[test]
fn a_forwarded_qos_1_message_is_kept_until_acknowledged_and_resent_on_a_new_connection() {
    let links = links(1000);
    let peer = links.ensure_peer(1, "127.0.0.1:1");
    let first = message("a");
    let (mut acknowledged, pause) = peer
        .forward_acknowledged(frame(FORWARD_ACKED, &[0; 10]), &first, vec![], vec![1])
        .unwrap();
    assert!(pause.is_none());
    assert!(
        acknowledged.try_result().is_none(),
        "kept while the peer is down"
    );
    assert_eq!(peer.outbox_bytes(), 0, "not queued on no connection");

    // A new connection sends it first.
    {
        let unacked = lock(&peer.unacked);
        let mut outbox = lock(&peer.outbox);
        outbox.clear();
        peer.requeue_unacked(&unacked, &mut outbox);
    }
    assert_eq!(peer.outbox_bytes(), 15);
    assert_eq!(peer.stats.resent_forwards.load(Ordering::Relaxed), 1);

    // Its acknowledgement lets the publisher go on; an unknown id changes nothing.
    let stranger = crate::message::ClusterMessageId {
        node: 9,
        sequence: 9,
    };
    peer.acknowledged(Bytes::from(encode_acks(&[
        (stranger, true),
        (first.cluster_id(), true),
    ])));
    assert!(matches!(acknowledged.try_result(), Some(Ok(()))));
    assert_eq!(peer.unacked_forwards(), 0);

    // A failed write there, or no answer in time, fails the publisher's acknowledgement.
    let second = message("b");
    let (mut refused, _) = peer
        .forward_acknowledged(frame(FORWARD_ACKED, &[0; 10]), &second, vec![], vec![1])
        .unwrap();
    peer.acknowledged(Bytes::from(encode_acks(&[(second.cluster_id(), false)])));
    assert!(matches!(refused.try_result(), Some(Err(StoreError::Io(_)))));
    let third = message("c");
    let (mut late, _) = peer
        .forward_acknowledged(frame(FORWARD_ACKED, &[0; 10]), &third, vec![], vec![1])
        .unwrap();
    assert_eq!(peer.expire_unacked(Duration::from_secs(60)), 0);
    assert_eq!(peer.expire_unacked(Duration::ZERO), 1);
    assert!(matches!(late.try_result(), Some(Err(StoreError::Io(_)))));
    assert_eq!(peer.stats.timed_out_forwards.load(Ordering::Relaxed), 1);
}

#[test]
fn kept_messages_are_bounded_in_bytes_and_rerouted_copies_are_waited_for() {
    let links = links(64);
    let peer = links.ensure_peer(1, "127.0.0.1:1");
    let first = message("a");
    let (mut acknowledged, _) = peer
        .forward_acknowledged(frame(FORWARD_ACKED, &[0; 40]), &first, vec![], vec![1])
        .unwrap();
    assert!(
        peer.forward_acknowledged(
            frame(FORWARD_ACKED, &[0; 40]),
            &message("b"),
            vec![],
            vec![1]
        )
        .is_err(),
        "beyond cluster.link_buffer_bytes"
    );
    assert_eq!(peer.stats.unacked_refused.load(Ordering::Relaxed), 1);

    // Sent to node 3 meanwhile: the publisher waits for that copy too.
    let kept = peer.rerouting();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].sent_to, vec![1]);
    let (copy, copied) = crate::storage::write_promise();
    assert!(peer.rerouted(kept[0].id, 3, Completion::shared(copied)));
    assert_eq!(peer.rerouting()[0].sent_to, vec![1, 3]);
    peer.acknowledged(Bytes::from(encode_acks(&[(first.cluster_id(), true)])));
    assert!(
        acknowledged.try_result().is_none(),
        "the copy is not acknowledged yet"
    );
    copy.fulfil(Vec::new());
    assert!(matches!(acknowledged.try_result(), Some(Ok(()))));
}

/// A request waits for its answer only while the link it went out on is up: when that
/// connection fails, the request fails at once ("the link closed") instead of at its
/// timeout. (A proposal forwarded to a leader that had just died held the CONNECT that
/// caused it for the whole timeout.) Node 2 never answers (it has no handler); its
/// links shut down while node 1 waits.
#[tokio::test]
async fn a_request_fails_as_soon_as_its_link_goes_down() {
    let liveness = Liveness {
        ping_interval: Duration::from_millis(100),
        timeout: Duration::from_secs(30),
        publisher_pause: Duration::from_secs(1),
    };
    let asked = Links::new(2, 1 << 20, liveness, None);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(asked.clone().accept_loop(listener));
    // Node 2 knows node 1 (it only accepts known peers) and never dials it.
    asked.ensure_peer(1, "127.0.0.1:1");
    let asking = Links::new(1, 1 << 20, liveness, None);
    let peer = asking.ensure_peer(2, &addr.to_string());
    tokio::time::timeout(Duration::from_secs(10), async {
        while !peer.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the link comes up");

    let request = tokio::spawn({
        let asking = asking.clone();
        async move { asking.request(2, b"{}", Duration::from_secs(60)).await }
    });
    // The request is out (waiting for its answer) before the link goes.
    tokio::time::timeout(Duration::from_secs(10), async {
        while lock(&asking.pending).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the request waits");
    asked.begin_shutdown();
    let answer = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("failed with the link, not at its 60 s timeout")
        .unwrap();
    let error = answer.expect_err("nobody answered");
    assert!(error.contains("the link closed"), "{error}");
    asking.begin_shutdown();
}
