//! Round trips of every record type, byte-exact layouts that the schema documents, and
//! decoding of arbitrary bytes without panics.

use bytes::Bytes;
use bytestring::ByteString;
use proptest::prelude::*;

use super::*;
use crate::protocol::{PublishProperties, QoS, RetainHandling, SubscriptionOptions, Will};

fn full_message() -> StoredMessage {
    StoredMessage {
        topic: ByteString::from("fleet/truck-7/gps"),
        payload: Bytes::from_static(b"\x00\x01payload"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            topic_alias: Some(3),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"corr")),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            subscription_identifiers: vec![1, 268_435_455],
            content_type: Some("application/json".into()),
        },
        expires_at: Some(1_800_000_000_000),
        cluster_id: Some(crate::message::ClusterMessageId {
            node: 3,
            sequence: 1_700_000_000_000_042,
        }),
    }
}

fn full_session() -> SessionRecord {
    SessionRecord {
        client_id: "truck-7".into(),
        protocol: ProtocolVersion::V5,
        expiry_interval: 3600,
        will: Some(Will {
            topic: "fleet/truck-7/status".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(5),
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(600),
                content_type: Some("text/plain".into()),
                response_topic: Some("r".into()),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: vec![("a".into(), "b".into())],
            },
        }),
        disconnected_at: Some(1_700_000_000_123),
    }
}

#[test]
fn every_record_round_trips() {
    let message = full_message();
    assert_eq!(decode_message(&encode_message(&message)), Ok(message));
    let plain = StoredMessage {
        properties: PublishProperties::default(),
        expires_at: None,
        cluster_id: None,
        ..full_message()
    };
    assert_eq!(decode_message(&encode_message(&plain)), Ok(plain));

    let session = full_session();
    let encoded = encode_session(&session);
    assert_eq!(decode_session("truck-7".into(), &encoded), Ok(session));
    let bare = SessionRecord {
        client_id: "c".into(),
        protocol: ProtocolVersion::V3_1,
        expiry_interval: 0,
        will: None,
        disconnected_at: None,
    };
    assert_eq!(decode_session("c".into(), &encode_session(&bare)), Ok(bare));

    for retain_handling in [
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendIfNew,
        RetainHandling::DoNotSend,
    ] {
        let entry = SubscriptionEntry {
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: false,
                retain_handling,
            },
            subscription_id: Some(42),
        };
        assert_eq!(decode_subscription(&encode_subscription(&entry)), Ok(entry));
    }

    let value = QueueValue {
        message_id: 9,
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![7, 8],
    };
    assert_eq!(decode_queued(&encode_queued(&value)), Ok(value.clone()));
    for state in [
        InflightState::AwaitingPubAck,
        InflightState::AwaitingPubRec,
        InflightState::AwaitingPubComp,
    ] {
        let encoded = encode_inflight(&value, 65535, state);
        assert_eq!(decode_inflight(&encoded), Ok((value.clone(), 65535, state)));
    }
    assert_eq!(decode_incoming(&encode_incoming(None)), Ok(None));
    let id = crate::message::ClusterMessageId {
        node: 3,
        sequence: u64::MAX - 1,
    };
    assert_eq!(decode_incoming(&encode_incoming(Some(id))), Ok(Some(id)));
    // A version 1 entry (every entry a single node or an older build wrote) reads as
    // one without an id.
    assert_eq!(decode_incoming(&[FORMAT_VERSION]), Ok(None));
}

#[test]
fn layouts_are_as_documented() {
    let value = QueueValue {
        message_id: 0x0102,
        qos: QoS::ExactlyOnce,
        retain: true,
        subscription_ids: vec![5],
    };
    assert_eq!(
        encode_queued(&value),
        [1, 0, 0, 0, 0, 0, 0, 1, 2, 2, 1, 0, 0, 0, 1, 0, 0, 0, 5]
    );
    assert_eq!(
        encode_inflight(&value, 0x0A0B, InflightState::AwaitingPubComp)[19..],
        [0x0A, 0x0B, 3]
    );
    assert_eq!(
        sequence_key("ab", 1),
        [0, 2, b'a', b'b', 0, 0, 0, 0, 0, 0, 0, 1]
    );
    assert_eq!(incoming_key("ab", 0x0102), [0, 2, b'a', b'b', 1, 2]);
    assert_eq!(
        subscription_key("ab", "x/#"),
        [0, 2, b'a', b'b', b'x', b'/', b'#']
    );
    let entry = SubscriptionEntry {
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        },
        subscription_id: None,
    };
    assert_eq!(encode_subscription(&entry), [1, 0b0010_1101, 0]);
}

#[test]
fn keys_of_one_client_sort_by_sequence_and_do_not_mix_with_longer_ids() {
    let mut keys = vec![
        sequence_key("a", 256),
        sequence_key("ab", 0),
        sequence_key("a", 1),
        sequence_key("a", u64::MAX),
    ];
    keys.sort();
    assert_eq!(
        keys,
        vec![
            sequence_key("a", 1),
            sequence_key("a", 256),
            sequence_key("a", u64::MAX),
            sequence_key("ab", 0),
        ]
    );
    let key = sequence_key("ab", 7);
    let (client, rest) = split_client_key(&key).unwrap();
    assert_eq!(client, "ab");
    assert_eq!(decode_u64_key(rest), Ok(7));
}

#[test]
fn damaged_records_are_errors() {
    let encoded = encode_message(&full_message());
    for len in 0..encoded.len() {
        assert!(
            decode_message(&encoded[..len]).is_err(),
            "truncated to {len}"
        );
    }
    let mut trailing = encoded.clone();
    trailing.push(0);
    assert!(decode_message(&trailing).is_err());
    let mut newer = encoded.clone();
    newer[0] = MESSAGE_WITH_ID_VERSION + 1;
    assert_eq!(
        decode_message(&newer),
        Err(DecodeError(
            "record format version is newer than this build"
        ))
    );
    let mut bad_qos = encoded;
    bad_qos[1] = 3;
    assert!(decode_message(&bad_qos).is_err());
    assert!(decode_session("x".into(), &[1, 6, 0, 0, 0, 0, 0, 0]).is_err());
    assert!(decode_subscription(&[1, 0b0011_0000, 0]).is_err());
    assert!(decode_inflight(&[]).is_err());
    assert!(split_client_key(&[0, 5, b'a']).is_err());
    assert!(split_client_key(&[0, 1, 0xFF]).is_err());
}

#[test]
fn a_huge_list_count_is_refused_without_allocating() {
    // Version, message id, QoS, retain, then a count of 4 billion subscription ids.
    let value = [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0xFF, 0xFF, 0xFF, 0xFF];
    assert_eq!(
        decode_queued(&value),
        Err(DecodeError("list count exceeds the record"))
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_message(&bytes);
        let _ = decode_session("c".into(), &bytes);
        let _ = decode_subscription(&bytes);
        let _ = decode_queued(&bytes);
        let _ = decode_inflight(&bytes);
        let _ = decode_incoming(&bytes);
        let _ = split_client_key(&bytes);
    }

    #[test]
    fn flipped_bytes_never_panic(index in 0usize..200, value in any::<u8>()) {
        let mut encoded = encode_message(&full_message());
        let index = index % encoded.len();
        encoded[index] = value;
        let _ = decode_message(&encoded);
        let mut encoded = encode_session(&full_session());
        let index = index % encoded.len();
        encoded[index] = value;
        let _ = decode_session("c".into(), &encoded);
    }
}
