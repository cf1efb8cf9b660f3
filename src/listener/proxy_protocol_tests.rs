//! The PROXY protocol parser on bytes: every form HAProxy sends, and what must be refused.

use super::*;

fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = V2_SIGNATURE.to_vec();
    bytes.push(0x20 | command);
    bytes.push(family);
    bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn ipv4_block(source: [u8; 4], destination: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
    let mut block = source.to_vec();
    block.extend_from_slice(&destination);
    block.extend_from_slice(&ports.0.to_be_bytes());
    block.extend_from_slice(&ports.1.to_be_bytes());
    block
}

fn proxied(text: &str) -> Header {
    Header::Proxied(text.parse().unwrap())
}

#[test]
fn v1_tcp4_and_tcp6_give_the_source() {
    let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 1883\r\n";
    assert_eq!(
        parse(line),
        Ok(Some((proxied("203.0.113.7:56324"), line.len())))
    );
    let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 8883\r\n";
    assert_eq!(
        parse(line),
        Ok(Some((proxied("[2001:db8::7]:4000"), line.len())))
    );
}

#[test]
fn v1_header_is_measured_without_what_follows() {
    let mut bytes = b"PROXY TCP4 10.1.2.3 10.0.0.1 1 2\r\n".to_vec();
    let length = bytes.len();
    bytes.extend_from_slice(&[0x10, 0x0c, 0x00, 0x04]);
    assert_eq!(parse(&bytes), Ok(Some((proxied("10.1.2.3:1"), length))));
}

#[test]
fn v1_unknown_keeps_the_socket_address() {
    assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((Header::Local, 15))));
    let line = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    assert_eq!(parse(line), Ok(Some((Header::Local, line.len()))));
}

#[test]
fn v1_incomplete_lines_ask_for_more() {
    for partial in [
        &b""[..],
        b"PRO",
        b"PROXY TCP4 10.1.2.3",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r",
    ] {
        assert_eq!(parse(partial), Ok(None), "{partial:?}");
    }
}

#[test]
fn v1_malformed_lines_are_refused() {
    for bad in [
        &b"PROXY TCP4 10.1.2.3 10.0.0.1 1\r\n"[..],
        b"PROXY TCP4 10.1.2.3 10.0.0.1 1 2 3\r\n",
        b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
        b"PROXY TCP6 10.1.2.3 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 10.1.2.3 10.0.0.1 65536 2\r\n",
        b"PROXY TCP4 10.1.2.3 10.0.0.1 01 2\r\n",
        b"PROXY TCP4 10.1.2.3 10.0.0.1 -1 2\r\n",
        b"PROXY TCP4  10.1.2.3 10.0.0.1 1 2\r\n",
        b"PROXY UDP4 10.1.2.3 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 10.1.2.3 10.0.0.1 1 2\n",
        b"PROXY TCP4 300.1.2.3 10.0.0.1 1 2\r\n",
    ] {
        assert!(
            matches!(parse(bad), Err(ProxyHeaderError::V1(_))),
            "{:?} gave {:?}",
            String::from_utf8_lossy(bad),
            parse(bad)
        );
    }
}

#[test]
fn v1_longer_than_107_bytes_is_refused_without_a_line_end() {
    let mut long = b"PROXY TCP6 ".to_vec();
    long.resize(V1_MAX_LEN, b'a');
    assert!(matches!(parse(&long), Err(ProxyHeaderError::V1(_))));
    let mut just_under = b"PROXY TCP6 ".to_vec();
    just_under.resize(V1_MAX_LEN - 1, b'a');
    assert_eq!(parse(&just_under), Ok(None));
}

#[test]
fn anything_else_is_a_missing_header() {
    // A plain MQTT CONNECT, a TLS ClientHello, an HTTP request.
    for other in [
        &[0x10u8, 0x0c, 0x00, 0x04, b'M'][..],
        &[0x16, 0x03, 0x01],
        b"GET /mqtt HTTP/1.1",
    ] {
        assert_eq!(parse(other), Err(ProxyHeaderError::Missing));
    }
}

#[test]
fn v2_proxy_over_ipv4_and_ipv6() {
    let header = v2(
        0x1,
        0x11,
        &ipv4_block([198, 51, 100, 9], [10, 0, 0, 1], (40000, 1883)),
    );
    assert_eq!(
        parse(&header),
        Ok(Some((proxied("198.51.100.9:40000"), 28)))
    );
    let mut block = "2001:db8::9".parse::<Ipv6Addr>().unwrap().octets().to_vec();
    block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&5000u16.to_be_bytes());
    block.extend_from_slice(&8883u16.to_be_bytes());
    let header = v2(0x1, 0x21, &block);
    assert_eq!(
        parse(&header),
        Ok(Some((proxied("[2001:db8::9]:5000"), 52)))
    );
}

#[test]
fn v2_tlvs_are_skipped() {
    let mut payload = ipv4_block([192, 0, 2, 44], [10, 0, 0, 1], (1234, 1883));
    // PP2_TYPE_UNIQUE_ID and PP2_TYPE_SSL with a sub-TLV, as HAProxy sends them.
    payload.extend_from_slice(&[0x05, 0x00, 0x03, b'a', b'b', b'c']);
    payload.extend_from_slice(&[0x20, 0x00, 0x05, 0x01, 0x00, 0x00, 0x00, 0x00]);
    let mut bytes = v2(0x1, 0x11, &payload);
    let length = bytes.len();
    bytes.extend_from_slice(&[0x16, 0x03, 0x01]);
    assert_eq!(
        parse(&bytes),
        Ok(Some((proxied("192.0.2.44:1234"), length)))
    );
}

#[test]
fn v2_local_unspecified_and_unix_keep_the_socket_address() {
    assert_eq!(parse(&v2(0x0, 0x00, &[])), Ok(Some((Header::Local, 16))));
    // LOCAL ignores whatever address block comes with it.
    let block = ipv4_block([1, 2, 3, 4], [5, 6, 7, 8], (1, 2));
    assert_eq!(parse(&v2(0x0, 0x11, &block)), Ok(Some((Header::Local, 28))));
    assert_eq!(parse(&v2(0x1, 0x00, &[])), Ok(Some((Header::Local, 16))));
    assert_eq!(
        parse(&v2(0x1, 0x31, &[0u8; 216])),
        Ok(Some((Header::Local, 232)))
    );
}

#[test]
fn v2_incomplete_headers_ask_for_more() {
    let header = v2(0x1, 0x11, &ipv4_block([1, 2, 3, 4], [5, 6, 7, 8], (1, 2)));
    for cut in [1, 11, 12, 15, 16, 27] {
        assert_eq!(parse(&header[..cut]), Ok(None), "cut at {cut}");
    }
}

#[test]
fn v2_malformed_headers_are_refused() {
    let block = ipv4_block([1, 2, 3, 4], [5, 6, 7, 8], (1, 2));
    let mut wrong_version = v2(0x1, 0x11, &block);
    wrong_version[12] = 0x11;
    let cases = [
        wrong_version,
        v2(0x2, 0x11, &block),
        v2(0x1, 0x11, &block[..11]),
        v2(0x1, 0x21, &block),
        v2(0x1, 0x41, &block),
        v2(0x1, 0x13, &block),
    ];
    for bad in cases {
        assert!(
            matches!(parse(&bad), Err(ProxyHeaderError::V2(_))),
            "{bad:?} gave {:?}",
            parse(&bad)
        );
    }
    let mut too_long = v2(0x1, 0x11, &[]);
    too_long[14..16].copy_from_slice(&((V2_MAX_PAYLOAD + 1) as u16).to_be_bytes());
    assert!(matches!(parse(&too_long), Err(ProxyHeaderError::V2(_))));
}

#[tokio::test]
async fn read_header_takes_exactly_the_header() {
    let header = v2(
        0x1,
        0x11,
        &ipv4_block([198, 51, 100, 9], [10, 0, 0, 1], (40000, 1883)),
    );
    for prefix in [
        header,
        b"PROXY TCP4 198.51.100.9 10.0.0.1 40000 1883\r\n".to_vec(),
    ] {
        let mut bytes = prefix.clone();
        bytes.extend_from_slice(b"MQTT");
        let mut stream = &bytes[..];
        assert_eq!(
            read_header(&mut stream).await,
            Ok(proxied("198.51.100.9:40000"))
        );
        assert_eq!(stream, b"MQTT");
    }
    let mut short = &b"PROXY TCP4 1.2.3.4"[..];
    assert_eq!(
        read_header(&mut short).await,
        Err(ProxyHeaderError::Truncated)
    );
    let mut unknown_then_mqtt = &b"PROXY UNKNOWN\r\n\x10"[..];
    assert_eq!(read_header(&mut unknown_then_mqtt).await, Ok(Header::Local));
    assert_eq!(unknown_then_mqtt, b"\x10");
}

#[test]
fn cidr_blocks_contain_their_addresses() {
    let block = Cidr::parse("10.0.0.0/8").unwrap();
    assert!(block.contains("10.255.1.2".parse().unwrap()));
    assert!(!block.contains("11.0.0.1".parse().unwrap()));
    assert!(block.contains("::ffff:10.1.1.1".parse().unwrap()));
    let single = Cidr::parse("127.0.0.1").unwrap();
    assert!(single.contains("127.0.0.1".parse().unwrap()));
    assert!(!single.contains("127.0.0.2".parse().unwrap()));
    let odd = Cidr::parse("192.168.4.0/22").unwrap();
    assert!(odd.contains("192.168.7.255".parse().unwrap()));
    assert!(!odd.contains("192.168.8.0".parse().unwrap()));
    let v6 = Cidr::parse("2001:db8::/32").unwrap();
    assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
    assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    assert!(Cidr::parse("0.0.0.0/0")
        .unwrap()
        .contains("8.8.8.8".parse().unwrap()));
    for bad in ["10.0.0.0/33", "nowhere", "10.0.0.0/x", "::/129", ""] {
        assert!(Cidr::parse(bad).is_err(), "{bad}");
    }
}
