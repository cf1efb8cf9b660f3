//! Retained messages: stored, replaced, deleted, sent on subscribe with the RETAIN flag
//! at min(retained QoS, granted QoS); MQTT 5 Retain Handling, Retain As Published and
//! No Local.

use crate::both_versions;
use crate::common::clients::V4Client;
use crate::common::raw::RawClient;
use crate::common::wire::{sub_options, PublishSpec, V311, V5};
use crate::common::{client_id, start_default, topic};

both_versions!(
    retained_sent_on_subscribe_with_retain_flag,
    retained_replaced_by_newer,
    retained_deleted_by_empty_payload,
    retained_qos_is_min_of_retained_and_granted,
    retained_matched_by_wildcard_filter,
    live_delivery_clears_retain_flag,
);

async fn publish_retained(
    addr: std::net::SocketAddr,
    version: u8,
    t: &str,
    qos: u8,
    payload: &[u8],
) {
    let mut publisher = RawClient::connect(addr, version, &client_id("retainer")).await;
    publisher
        .publish(PublishSpec::new(t, qos, payload).retain())
        .await;
    publisher.disconnect().await;
}

/// Subscribes a fresh client to `filter` at `qos`, then publishes a live sentinel on
/// `sentinel_topic` and returns every message received before it.
async fn retained_seen_by_new_subscriber(
    addr: std::net::SocketAddr,
    version: u8,
    filter: &str,
    qos: u8,
    sentinel_topic: &str,
) -> Vec<crate::common::wire::Publish> {
    let mut sub = RawClient::connect(addr, version, &client_id("sub")).await;
    sub.subscribe(filter, qos).await;
    let mut publisher = RawClient::connect(addr, V311, &client_id("live")).await;
    publisher
        .publish_simple(sentinel_topic, 0, b"sentinel")
        .await;
    let mut seen = Vec::new();
    loop {
        let p = sub.recv_publish().await;
        if p.payload == b"sentinel" {
            assert!(!p.retain, "live message delivered with RETAIN set");
            return seen;
        }
        seen.push(p);
    }
}

async fn retained_sent_on_subscribe_with_retain_flag(version: u8) {
    let broker = start_default().await;
    let t = topic("ret");
    publish_retained(broker.addr, version, &t, 1, b"kept").await;
    let seen = retained_seen_by_new_subscriber(broker.addr, version, &t, 1, &t).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let p = &seen[0];
    assert_eq!(
        (
            p.topic.as_str(),
            p.payload.as_slice(),
            p.retain,
            p.qos,
            p.dup
        ),
        (t.as_str(), &b"kept"[..], true, 1, false)
    );
}

async fn retained_replaced_by_newer(version: u8) {
    let broker = start_default().await;
    let t = topic("replace");
    publish_retained(broker.addr, version, &t, 0, b"old").await;
    publish_retained(broker.addr, version, &t, 0, b"new").await;
    let seen = retained_seen_by_new_subscriber(broker.addr, version, &t, 0, &t).await;
    let payloads: Vec<&[u8]> = seen.iter().map(|p| p.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&b"new"[..]]);
}

async fn retained_deleted_by_empty_payload(version: u8) {
    let broker = start_default().await;
    let t = topic("delete");
    publish_retained(broker.addr, version, &t, 1, b"doomed").await;
    publish_retained(broker.addr, version, &t, 1, b"").await;
    let seen = retained_seen_by_new_subscriber(broker.addr, version, &t, 1, &t).await;
    assert!(
        seen.is_empty(),
        "retained message survived deletion: {seen:?}"
    );
}

async fn retained_qos_is_min_of_retained_and_granted(version: u8) {
    let broker = start_default().await;
    let base = topic("rqos");
    for retained_qos in 0..=2u8 {
        publish_retained(
            broker.addr,
            version,
            &format!("{base}/{retained_qos}"),
            retained_qos,
            b"r",
        )
        .await;
    }
    for granted in 0..=2u8 {
        let filter = format!("{base}/#");
        let mut seen = retained_seen_by_new_subscriber(
            broker.addr,
            version,
            &filter,
            granted,
            &format!("{base}/live"),
        )
        .await;
        seen.sort_by(|a, b| a.topic.cmp(&b.topic));
        let got: Vec<(String, u8, bool)> = seen
            .into_iter()
            .map(|p| (p.topic, p.qos, p.retain))
            .collect();
        let expected: Vec<(String, u8, bool)> = (0..=2u8)
            .map(|retained_qos| {
                (
                    format!("{base}/{retained_qos}"),
                    retained_qos.min(granted),
                    true,
                )
            })
            .collect();
        assert_eq!(got, expected, "granted QoS {granted}");
    }
}

async fn retained_matched_by_wildcard_filter(version: u8) {
    let broker = start_default().await;
    let base = topic("rwild");
    for leaf in ["a", "b/c", "d"] {
        publish_retained(
            broker.addr,
            version,
            &format!("{base}/{leaf}"),
            0,
            leaf.as_bytes(),
        )
        .await;
    }
    let filter = format!("{base}/+");
    let mut seen =
        retained_seen_by_new_subscriber(broker.addr, version, &filter, 0, &format!("{base}/z"))
            .await;
    seen.sort_by(|a, b| a.topic.cmp(&b.topic));
    let payloads: Vec<&[u8]> = seen.iter().map(|p| p.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&b"a"[..], &b"d"[..]]);
}

async fn live_delivery_clears_retain_flag(version: u8) {
    let broker = start_default().await;
    let t = topic("liveret");
    let mut sub = RawClient::connect(broker.addr, version, &client_id("sub")).await;
    sub.subscribe(&t, 1).await;
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;
    publisher
        .publish(PublishSpec::new(&t, 1, b"live and kept").retain())
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(
        (p.payload.as_slice(), p.retain),
        (&b"live and kept"[..], false)
    );
    // ...and it was stored.
    let seen = retained_seen_by_new_subscriber(broker.addr, version, &t, 1, &t).await;
    assert_eq!(seen.len(), 1);
    assert!(seen[0].retain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retain_handling_options() {
    let broker = start_default().await;
    let base = topic("rh");
    let t = format!("{base}/t");
    publish_retained(broker.addr, V5, &t, 1, b"kept").await;
    let mut live = RawClient::connect(broker.addr, V311, &client_id("live")).await;

    for handling in 0..=2u8 {
        let mut sub = RawClient::connect(broker.addr, V5, &client_id("sub")).await;
        let options = sub_options(1, false, false, handling);
        let sentinel = format!("{base}/s{handling}");
        assert_eq!(
            sub.subscribe_opts(&[(&t, options), (&sentinel, 0)], &[])
                .await,
            vec![1, 0]
        );
        // The same subscription again: no longer new.
        assert_eq!(sub.subscribe_opts(&[(&t, options)], &[]).await, vec![1]);
        live.publish_simple(&sentinel, 0, b"sentinel").await;
        let count = sub.payloads_until(b"sentinel").await.len();
        let expected = match handling {
            0 => 2, // at every SUBSCRIBE
            1 => 1, // only when the subscription is new
            _ => 0, // never
        };
        assert_eq!(count, expected, "retain handling {handling}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retain_as_published() {
    let broker = start_default().await;
    let base = topic("rap");
    let t = format!("{base}/t");
    let mut keep_flag = RawClient::connect(broker.addr, V5, &client_id("rap")).await;
    keep_flag
        .subscribe_opts(&[(&t, sub_options(1, false, true, 0))], &[])
        .await;
    let mut clear_flag = RawClient::connect(broker.addr, V5, &client_id("norap")).await;
    clear_flag
        .subscribe_opts(&[(&t, sub_options(1, false, false, 0))], &[])
        .await;

    let mut publisher = RawClient::connect(broker.addr, V5, &client_id("pub")).await;
    publisher
        .publish(PublishSpec::new(&t, 1, b"flagged").retain())
        .await;
    publisher.publish_simple(&t, 1, b"plain").await;

    let got = |p: crate::common::wire::Publish| (p.payload, p.retain);
    assert_eq!(
        got(keep_flag.recv_publish().await),
        (b"flagged".to_vec(), true)
    );
    assert_eq!(
        got(keep_flag.recv_publish().await),
        (b"plain".to_vec(), false)
    );
    assert_eq!(
        got(clear_flag.recv_publish().await),
        (b"flagged".to_vec(), false)
    );
    assert_eq!(
        got(clear_flag.recv_publish().await),
        (b"plain".to_vec(), false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_no_local() {
    let broker = start_default().await;
    let base = topic("nolocal");
    let quiet = format!("{base}/quiet");
    let echo = format!("{base}/echo");
    let mut c = RawClient::connect(broker.addr, V5, &client_id("c")).await;
    let codes = c
        .subscribe_opts(
            &[
                (&quiet, sub_options(1, true, false, 0)),
                (&echo, sub_options(1, false, false, 0)),
            ],
            &[],
        )
        .await;
    assert_eq!(codes, vec![1, 1]);
    let mut other = RawClient::connect(broker.addr, V5, &client_id("other")).await;

    c.publish_simple(&quiet, 1, b"own, suppressed").await;
    other.publish_simple(&quiet, 1, b"foreign").await;
    c.publish_simple(&echo, 1, b"own, echoed").await;
    other.publish_simple(&echo, 1, b"sentinel").await;
    let seen = c.payloads_until(b"sentinel").await;
    assert_eq!(seen, vec![b"foreign".to_vec(), b"own, echoed".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_subscriber_gets_retained() {
    let broker = start_default().await;
    let t = topic("libret");
    publish_retained(broker.addr, V311, &t, 2, b"for the library").await;
    let (mut c, _) = V4Client::connect(broker.addr, &client_id("lib")).await;
    c.subscribe(&t, 2).await;
    let p = c.next_publish().await;
    assert_eq!(
        (p.payload.as_ref(), p.retain, p.qos),
        (&b"for the library"[..], true, rumqttc::QoS::ExactlyOnce)
    );
}
