//! Socket-free tests of the node link (`link.rs`): the outbox's limit and its flow
//! control marks, and the reader's liveness bookkeeping.

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
    lock(&peer.outbox).clear(peer.id);
    for mut wait in waits {
        assert!(matches!(wait.try_result(), Some(Err(StoreError::Io(_)))));
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
