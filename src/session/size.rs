//! The encoded size of an outgoing PUBLISH, computed from its fields.
//!
//! MQTT 5 lets a client cap the packets it accepts (Maximum Packet Size); a PUBLISH over
//! that cap must be discarded, not sent. Computing the size from the fields avoids
//! encoding every message twice; the codec tests check it against the real encoder.

use crate::protocol::{ProtocolVersion, Publish, PublishProperties, QoS};

/// The largest Remaining Length a fixed header can express (four variable-byte digits).
pub(crate) const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Bytes the variable byte integer encoding of `value` takes.
fn variable_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A UTF-8 string or binary data field: two length bytes and the data.
fn prefixed_len(len: usize) -> usize {
    2 + len
}

/// The property block of a MQTT 5 PUBLISH, without its own length prefix.
fn properties_len(properties: &PublishProperties) -> usize {
    let mut len = 0;
    if properties.payload_format_indicator.is_some() {
        len += 1 + 1;
    }
    if properties.message_expiry_interval.is_some() {
        len += 1 + 4;
    }
    if properties.topic_alias.is_some() {
        len += 1 + 2;
    }
    if let Some(topic) = &properties.response_topic {
        len += 1 + prefixed_len(topic.len());
    }
    if let Some(data) = &properties.correlation_data {
        len += 1 + prefixed_len(data.len());
    }
    for (name, value) in &properties.user_properties {
        len += 1 + prefixed_len(name.len()) + prefixed_len(value.len());
    }
    for id in &properties.subscription_identifiers {
        len += 1 + variable_int_len(*id as usize);
    }
    if let Some(content_type) = &properties.content_type {
        len += 1 + prefixed_len(content_type.len());
    }
    len
}

/// The Remaining Length of `publish` encoded for `version`.
pub(crate) fn publish_remaining_length(publish: &Publish, version: ProtocolVersion) -> usize {
    let mut len = prefixed_len(publish.topic.len()) + publish.payload.len();
    if publish.qos != QoS::AtMostOnce {
        len += 2;
    }
    if version.is_v5() {
        let properties = properties_len(&publish.properties);
        len += variable_int_len(properties) + properties;
    }
    len
}

/// The whole encoded size of `publish` for `version`: fixed header included.
pub(crate) fn publish_packet_size(publish: &Publish, version: ProtocolVersion) -> usize {
    let remaining = publish_remaining_length(publish, version);
    1 + variable_int_len(remaining) + remaining
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn variable_int_boundaries() {
        assert_eq!(variable_int_len(0), 1);
        assert_eq!(variable_int_len(127), 1);
        assert_eq!(variable_int_len(128), 2);
        assert_eq!(variable_int_len(16_383), 2);
        assert_eq!(variable_int_len(16_384), 3);
        assert_eq!(variable_int_len(2_097_151), 3);
        assert_eq!(variable_int_len(2_097_152), 4);
    }

    #[test]
    fn qos0_v3_publish_size() {
        let publish = Publish {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            ..Publish::default()
        };
        // 1 type byte, 1 length byte, 2+3 topic, 5 payload.
        assert_eq!(publish_packet_size(&publish, ProtocolVersion::V3_1_1), 12);
    }

    #[test]
    fn qos1_v5_publish_size_counts_properties() {
        let publish = Publish {
            qos: QoS::AtLeastOnce,
            packet_id: 7,
            topic: "t".into(),
            payload: Bytes::from_static(b"xy"),
            properties: PublishProperties {
                message_expiry_interval: Some(30),
                topic_alias: Some(1),
                user_properties: vec![("k".into(), "vv".into())],
                subscription_identifiers: vec![1, 200],
                ..PublishProperties::default()
            },
            ..Publish::default()
        };
        // properties: 5 + 3 + (1+3+4) + (1+1) + (1+2) = 21; body: 3 + 2 + (1+21) + 2 = 29.
        assert_eq!(publish_remaining_length(&publish, ProtocolVersion::V5), 29);
        assert_eq!(publish_packet_size(&publish, ProtocolVersion::V5), 31);
        // Properties are not encoded for 3.x.
        assert_eq!(publish_packet_size(&publish, ProtocolVersion::V3_1_1), 9);
    }
}
