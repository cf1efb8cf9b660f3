//! Topic matching through the broker: `+`, `#`, `$` topics, overlapping subscriptions,
//! subscription identifiers and UNSUBSCRIBE.

use crate::both_versions;
use crate::common::raw::RawClient;
use crate::common::wire::{self, prop, Prop, V311, V5};
use crate::common::{client_id, start_default, topic};

both_versions!(
    single_level_wildcard,
    multi_level_wildcard,
    dollar_topics_not_matched_by_leading_wildcards,
    overlapping_subscriptions_deliver_once_at_max_qos,
    unsubscribe_stops_delivery,
);

/// Subscribes to `filter`, publishes each of `topics` (then a sentinel on `sentinel`,
/// which the filter must match) and returns the topics received before the sentinel.
async fn matched_topics(
    version: u8,
    filter: &str,
    topics: &[String],
    sentinel: &str,
) -> Vec<String> {
    let broker = start_default().await;
    let mut sub = RawClient::connect(broker.addr, version, &client_id("sub")).await;
    sub.subscribe(filter, 0).await;
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;
    for t in topics {
        publisher.publish_simple(t, 0, t.as_bytes()).await;
    }
    publisher.publish_simple(sentinel, 0, b"sentinel").await;
    let mut seen = Vec::new();
    loop {
        let p = sub.recv_publish().await;
        if p.payload == b"sentinel" {
            assert_eq!(p.topic, sentinel);
            return seen;
        }
        assert_eq!(
            p.payload,
            p.topic.as_bytes(),
            "payload names the topic it was sent to"
        );
        seen.push(p.topic);
    }
}

async fn single_level_wildcard(version: u8) {
    let base = topic("plus");
    let t = |s: &str| format!("{base}/{s}");
    let sent = [
        t("a/x"),
        t("a/b/x"),
        t("b/x"),
        t("a/x/c"),
        t("a"),
        t("/x"),
        t("a//x"),
    ];
    let seen = matched_topics(version, &format!("{base}/+/x"), &sent, &t("z/x")).await;
    // `+` matches an empty level too.
    assert_eq!(seen, vec![t("a/x"), t("b/x"), t("/x")]);

    let seen = matched_topics(version, &format!("{base}/+"), &sent, &t("z")).await;
    assert_eq!(seen, vec![t("a")]);
}

async fn multi_level_wildcard(version: u8) {
    let base = topic("hash");
    let t = |s: &str| format!("{base}/{s}");
    let sent = [
        base.clone(),
        t("a"),
        t("a/b/c"),
        t(""),
        format!("{base}x/a"),
    ];
    // `base/#` also matches `base` itself (the parent level).
    let seen = matched_topics(version, &format!("{base}/#"), &sent, &t("z")).await;
    assert_eq!(seen, vec![base.clone(), t("a"), t("a/b/c"), t("")]);
}

async fn dollar_topics_not_matched_by_leading_wildcards(version: u8) {
    let broker = start_default().await;
    // Clients may not publish to `$` topics, so the broker's own retained `$SYS` topics
    // are the `$` messages here. Waiting for one on an explicit subscription proves they
    // exist before the wildcard subscriptions are made.
    let mut explicit = RawClient::connect(broker.addr, version, &client_id("explicit")).await;
    explicit.subscribe("$SYS/broker/version", 0).await;
    let p = explicit.recv_publish().await;
    assert_eq!(p.topic.as_str(), "$SYS/broker/version");

    // Retained messages are matched on subscribe by the same rule as live ones.
    let mut wild = RawClient::connect(broker.addr, version, &client_id("wild")).await;
    assert_eq!(
        wild.subscribe_opts(&[("#", 0), ("+/broker/version", 0)], &[])
            .await,
        vec![0, 0]
    );
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;
    publisher.publish_simple("s/x", 0, b"sentinel").await;
    let seen = wild.payloads_until(b"sentinel").await;
    assert!(
        seen.is_empty(),
        "`#` and `+/broker/version` must not match `$` topics: got {seen:?}"
    );
}

async fn overlapping_subscriptions_deliver_once_at_max_qos(version: u8) {
    let broker = start_default().await;
    let base = topic("overlap");
    let exact = format!("{base}/a/b");
    let mut sub = RawClient::connect(broker.addr, version, &client_id("sub")).await;
    let codes = sub
        .subscribe_opts(
            &[
                (exact.as_str(), 0),
                (&format!("{base}/+/b"), 2),
                (&format!("{base}/#"), 1),
            ],
            &[],
        )
        .await;
    assert_eq!(codes, vec![0, 2, 1]);

    let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;
    publisher.publish_simple(&exact, 2, b"once").await;
    publisher.publish_simple(&exact, 0, b"sentinel").await;

    let p = sub.recv_publish().await;
    assert_eq!(
        (p.payload.as_slice(), p.qos),
        (&b"once"[..], 2),
        "one copy at the highest granted QoS"
    );
    let p = sub.recv_publish().await;
    assert_eq!(
        p.payload, b"sentinel",
        "no second copy for the overlapping subscriptions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_overlapping_subscriptions_carry_every_identifier() {
    let broker = start_default().await;
    let base = topic("subid");
    let exact = format!("{base}/a");
    let mut sub = RawClient::connect(broker.addr, V5, &client_id("sub")).await;
    let with_id = |id| [Prop::VarInt(prop::SUBSCRIPTION_IDENTIFIER, id)];
    assert_eq!(
        sub.subscribe_opts(&[(exact.as_str(), 1)], &with_id(7))
            .await,
        vec![1]
    );
    assert_eq!(
        sub.subscribe_opts(&[(&format!("{base}/+"), 0)], &with_id(300))
            .await,
        vec![0]
    );
    // A third overlapping subscription without an identifier.
    assert_eq!(
        sub.subscribe_opts(&[(&format!("{base}/#"), 0)], &[]).await,
        vec![0]
    );

    let mut publisher = RawClient::connect(broker.addr, V5, &client_id("pub")).await;
    publisher.publish_simple(&exact, 1, b"ids").await;
    publisher
        .publish_simple(&format!("{base}/other"), 0, b"sentinel")
        .await;

    let p = sub.recv_publish().await;
    assert_eq!((p.payload.as_slice(), p.qos), (&b"ids"[..], 1));
    assert_eq!(p.props.subscription_ids(), vec![7, 300]);
    let p = sub.recv_publish().await;
    assert_eq!(
        p.payload, b"sentinel",
        "one delivery for three overlapping subscriptions"
    );
    assert_eq!(
        p.props.subscription_ids(),
        vec![300],
        "only `+` (id 300) and `#` (none) match"
    );
}

async fn unsubscribe_stops_delivery(version: u8) {
    let broker = start_default().await;
    let base = topic("unsub");
    let gone = format!("{base}/gone");
    let kept = format!("{base}/kept");
    let mut sub = RawClient::connect(broker.addr, version, &client_id("sub")).await;
    sub.subscribe(&gone, 1).await;
    sub.subscribe(&kept, 1).await;
    let codes = sub.unsubscribe(&[&gone]).await;
    if version == V5 {
        assert_eq!(codes, vec![0x00]);
    } else {
        assert!(codes.is_empty());
    }

    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    publisher.publish_simple(&gone, 1, b"unwanted").await;
    publisher.publish_simple(&kept, 1, b"sentinel").await;
    let seen = sub.payloads_until(b"sentinel").await;
    assert!(seen.is_empty(), "delivered after UNSUBSCRIBE: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_unsuback_reports_no_subscription_existed() {
    let broker = start_default().await;
    let base = topic("unsuback");
    let mut c = RawClient::connect(broker.addr, V5, &client_id("c")).await;
    c.subscribe(&format!("{base}/a"), 0).await;
    let codes = c
        .unsubscribe(&[&format!("{base}/a"), &format!("{base}/never")])
        .await;
    assert_eq!(codes, vec![0x00, 0x11]);
    // Unsubscribing again: the subscription is gone now.
    let codes = c.unsubscribe(&[&format!("{base}/a")]).await;
    assert_eq!(codes, vec![0x11]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_unsuback_exact_bytes() {
    let broker = start_default().await;
    let mut c = RawClient::connect(broker.addr, V311, &client_id("c")).await;
    c.send(&wire::unsubscribe(V311, 0x1234, &["never/subscribed"]))
        .await;
    assert_eq!(c.recv_bytes().await, [0xB0, 0x02, 0x12, 0x34]);
}
