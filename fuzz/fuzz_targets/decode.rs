//! The packet decoder on arbitrary bytes, for every protocol version and before CONNECT
//! (version unknown): it must never panic, never return a packet larger than the limit,
//! and every packet it returns must encode and decode back to itself.

#![no_main]

use bytes::BytesMut;
use fleetmq::protocol::{decode, encode, ProtocolVersion};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let version = match selector % 4 {
        0 => None,
        1 => Some(ProtocolVersion::V3_1),
        2 => Some(ProtocolVersion::V3_1_1),
        _ => Some(ProtocolVersion::V5),
    };
    // A small maximum now and then, so the size check is exercised too.
    let max_packet_size = if selector & 0x80 != 0 { 64 } else { 1024 * 1024 };
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(packet)) = decode(&mut buf, version, max_packet_size) {
        // A CONNECT carries its own version, whatever the connection assumed.
        let Some(version) = (match &packet {
            fleetmq::protocol::Packet::Connect(connect) => Some(connect.protocol),
            _ => version,
        }) else {
            break;
        };
        let mut encoded = BytesMut::new();
        encode(&packet, version, &mut encoded);
        let again = decode(&mut encoded, Some(version), u32::MAX);
        assert_eq!(again.ok().flatten().as_ref(), Some(&packet), "re-encoding changed the packet");
    }
});
