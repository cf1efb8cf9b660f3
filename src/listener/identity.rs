//! The identity of a client certificate: its subject Common Name or first Subject
//! Alternative Name, read from the DER the TLS handshake has already verified.
//!
//! A minimal DER walk over `Certificate -> TBSCertificate -> subject / extensions`; any
//! structure it does not expect yields no identity (the client is then refused as
//! having none), never a panic.

/// OID 2.5.4.3 (id-at-commonName).
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// OID 2.5.29.17 (id-ce-subjectAltName).
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element: tag and contents; the rest of the input after it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let mut length = 0usize;
        for &byte in &rest[..count] {
            length = (length << 8) | usize::from(byte);
        }
        rest = &rest[count..];
        length
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

/// The elements inside a constructed element's contents.
fn children(mut contents: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, value, rest) = element(contents)?;
        contents = rest;
        Some((tag, value))
    })
}

/// The identity of certificate `der`: the first SAN (DNS name, e-mail or URI) when
/// `san`, else the subject's Common Name.
pub fn extract(der: &[u8], san: bool) -> Option<String> {
    let (_, certificate, _) = element(der)?;
    let (_, tbs) = children(certificate).next()?;
    let mut fields = children(tbs).peekable();
    // Optional explicit version [0].
    if fields.peek().map(|(tag, _)| *tag) == Some(0xa0) {
        fields.next();
    }
    // serial, signature algorithm, issuer, validity, subject, public key, then optional
    // issuer/subject unique ids and [3] extensions.
    let mut fields = fields.skip(4);
    let (_, subject) = fields.next()?;
    if !san {
        return common_name(subject);
    }
    let (_, extensions) = fields.find(|(tag, _)| *tag == 0xa3)?;
    let (_, list) = children(extensions).next()?;
    for (_, extension) in children(list) {
        let mut parts = children(extension);
        let (_, oid) = parts.next()?;
        if oid != SUBJECT_ALT_NAME {
            continue;
        }
        // Skip the optional critical flag; the value is an OCTET STRING holding DER.
        let (_, value) = parts.find(|(tag, _)| *tag == 0x04)?;
        let (_, names, _) = element(value)?;
        return children(names)
            // [1] rfc822Name, [2] dNSName, [6] uniformResourceIdentifier.
            .find(|(tag, _)| matches!(tag, 0x81 | 0x82 | 0x86))
            .and_then(|(_, name)| std::str::from_utf8(name).ok().map(str::to_string));
    }
    None
}

fn common_name(subject: &[u8]) -> Option<String> {
    for (_, set) in children(subject) {
        for (_, attribute) in children(set) {
            let mut parts = children(attribute);
            let (_, oid) = parts.next()?;
            if oid == COMMON_NAME {
                let (_, value) = parts.next()?;
                return std::str::from_utf8(value).ok().map(str::to_string);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(cn: &str, sans: Vec<String>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "fleet");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn common_name_and_first_san_are_read() {
        let der = certificate(
            "device-42",
            vec!["d42.fleet.example".into(), "other".into()],
        );
        assert_eq!(extract(&der, false).as_deref(), Some("device-42"));
        assert_eq!(extract(&der, true).as_deref(), Some("d42.fleet.example"));
    }

    #[test]
    fn no_san_and_garbage_give_no_identity() {
        let der = certificate("only-cn", vec![]);
        assert_eq!(extract(&der, true), None);
        for garbage in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x05, 0x30],
        ] {
            assert_eq!(extract(garbage, false), None);
        }
        for cut in 0..der.len() {
            let _ = extract(&der[..cut], false);
            let _ = extract(&der[..cut], true);
        }
    }
}
