//! Reading the server name (SNI) from the ClientHello that opens a TLS connection, so
//! that the proxy can check a name against the policy without terminating TLS.

use std::net::IpAddr;

use super::Sniff;
use crate::target::normalise_name;

/// The largest ClientHello accepted, in bytes of handshake body; a longer claim is
/// `NotThis`. Real ones, post-quantum key shares included, are under 2 KiB.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// Sniffs the ClientHello at the start of `buf` (the first bytes a client sent) and
/// returns its server name, lowercased and validated.
///
/// The ClientHello may span several TLS records; their fragments are reassembled.
/// `Found(None)` is a valid ClientHello without a `server_name` extension. A server
/// name that is not a valid host name (or is an address literal, which RFC 6066
/// forbids), a duplicated `server_name`, or any malformation is `NotThis`.
pub fn client_hello_sni(buf: &[u8]) -> Sniff<Option<String>> {
    match reassemble(buf) {
        Sniff::NeedMore => Sniff::NeedMore,
        Sniff::NotThis => Sniff::NotThis,
        Sniff::Found(body) => parse_client_hello(&body).map_or(Sniff::NotThis, Sniff::Found),
    }
}

/// Record content type of handshake messages.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Bytes of a record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// Bytes of a handshake header: type, 24-bit length.
const HANDSHAKE_HEADER: usize = 4;
/// The largest record fragment allowed (RFC 8446, section 5.1).
const MAX_FRAGMENT: usize = 1 << 14;
/// Extension type `server_name` (RFC 6066).
const EXT_SERVER_NAME: usize = 0;
/// `NameType` of a DNS host name in a `server_name` extension.
const NAME_HOST: u8 = 0;

/// Joins the fragments of the first handshake message from consecutive handshake records,
/// and returns its body (without the handshake header).
fn reassemble(buf: &[u8]) -> Sniff<Vec<u8>> {
    let mut message = Vec::new();
    let mut rest = buf;
    loop {
        let fragment_len = match record_header(rest) {
            Sniff::Found(len) => len,
            Sniff::NeedMore => return Sniff::NeedMore,
            Sniff::NotThis => return Sniff::NotThis,
        };
        let after = rest.get(RECORD_HEADER..).unwrap_or_default();
        let Some((fragment, next)) = after.split_at_checked(fragment_len) else {
            // A partial record: still reject early what its first bytes already rule out.
            message.extend_from_slice(after);
            return match handshake_len(&message) {
                Sniff::NotThis => Sniff::NotThis,
                Sniff::NeedMore | Sniff::Found(_) => Sniff::NeedMore,
            };
        };
        message.extend_from_slice(fragment);
        match handshake_len(&message) {
            Sniff::NotThis => return Sniff::NotThis,
            Sniff::NeedMore => {}
            Sniff::Found(body_len) => {
                let end = HANDSHAKE_HEADER + body_len;
                if let Some(body) = message.get(HANDSHAKE_HEADER..end) {
                    return Sniff::Found(body.to_vec());
                }
            }
        }
        rest = next;
    }
}

/// Checks a record header byte by byte, so that garbage is rejected as soon as it shows,
/// and returns the fragment length.
fn record_header(rest: &[u8]) -> Sniff<usize> {
    let checks: [fn(u8) -> bool; 3] = [
        |t| t == CONTENT_HANDSHAKE,
        // legacy_record_version: 3.0 to 3.4, in practice 3.1 (TLS 1.0) or 3.3.
        |major| major == 3,
        |minor| minor <= 4,
    ];
    for (index, check) in checks.iter().enumerate() {
        match rest.get(index) {
            None => return Sniff::NeedMore,
            Some(&byte) if check(byte) => {}
            Some(_) => return Sniff::NotThis,
        }
    }
    let (Some(&high), Some(&low)) = (rest.get(3), rest.get(4)) else {
        return Sniff::NeedMore;
    };
    match usize::from(u16::from_be_bytes([high, low])) {
        // Zero-length handshake fragments are forbidden (RFC 8446, section 5.1).
        0 => Sniff::NotThis,
        len if len > MAX_FRAGMENT => Sniff::NotThis,
        len => Sniff::Found(len),
    }
}

/// Checks the handshake header at the start of `message` and returns the body length.
fn handshake_len(message: &[u8]) -> Sniff<usize> {
    match message.first() {
        None => return Sniff::NeedMore,
        Some(&CLIENT_HELLO) => {}
        Some(_) => return Sniff::NotThis,
    }
    let Some(&[a, b, c]) = message.get(1..HANDSHAKE_HEADER) else {
        return Sniff::NeedMore;
    };
    match usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c) {
        len if len > MAX_CLIENT_HELLO => Sniff::NotThis,
        len => Sniff::Found(len),
    }
}

/// Walks a ClientHello body (RFC 8446, section 4.1.2) to its server name; `None` if it
/// is malformed or its server name is not acceptable.
fn parse_client_hello(body: &[u8]) -> Option<Option<String>> {
    let mut hello = Reader(body);
    let legacy_version = hello.u16()?;
    if legacy_version >> 8 != 3 {
        return None;
    }
    hello.take(32)?; // random
    let session_id = usize::from(hello.u8()?);
    if session_id > 32 {
        return None;
    }
    hello.take(session_id)?;
    let cipher_suites = hello.u16()?;
    if cipher_suites < 2 || cipher_suites % 2 != 0 {
        return None;
    }
    hello.take(cipher_suites)?;
    let compression_methods = usize::from(hello.u8()?);
    if compression_methods == 0 {
        return None;
    }
    hello.take(compression_methods)?;
    if hello.is_empty() {
        // Before TLS 1.3 the extensions block is optional.
        return Some(None);
    }
    let extensions_len = hello.u16()?;
    let mut extensions = Reader(hello.take(extensions_len)?);
    if !hello.is_empty() {
        return None;
    }
    let mut server_name = None;
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let len = extensions.u16()?;
        let data = extensions.take(len)?;
        if kind == EXT_SERVER_NAME {
            if server_name.is_some() {
                return None;
            }
            server_name = Some(host_name(data)?);
        }
    }
    Some(server_name)
}

/// The host name in a `server_name` extension (RFC 6066, section 3), normalised.
fn host_name(data: &[u8]) -> Option<String> {
    let mut extension = Reader(data);
    let list_len = extension.u16()?;
    let mut list = Reader(extension.take(list_len)?);
    if !extension.is_empty() {
        return None;
    }
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8()?;
        let len = list.u16()?;
        let name = list.take(len)?;
        if kind == NAME_HOST {
            // At most one name of a type: two could make the proxy and the server disagree.
            if host.is_some() {
                return None;
            }
            host = Some(name);
        }
    }
    let name = std::str::from_utf8(host?).ok()?;
    if name.parse::<IpAddr>().is_ok() {
        return None;
    }
    normalise_name(name).ok()
}

/// A cursor over untrusted bytes whose reads fail instead of running past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<usize> {
        let bytes = <[u8; 2]>::try_from(self.take(2)?).ok()?;
        Some(usize::from(u16::from_be_bytes(bytes)))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello captured from `curl 7.88.1` (OpenSSL 3.0.19) connecting to
    /// `https://pypi.org:18443/`: one record of 517 bytes.
    const CURL_HELLO: &[&str] = &[
        "1603010200010001fc03032f04413cbbece1c6b53ce474f853d4cd86d9ee50aab475545d8c69877e",
        "1913f82005092c8d2e0968d5ba215a0b77757ca356efb6c3a0ad536eb17a2694481c476c003e1302",
        "13031301c02cc030009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039",
        "c009c0130033009d009c003d003c0035002f00ff010001750000000d000b000008707970692e6f72",
        "67000b000403000102000a00160014001d0017001e00190018010001010102010301040010000e00",
        "0c02683208687474702f312e31001600000017000000310000000d002a0028040305030603080708",
        "080809080a080b080408050806040105010601030303010302040205020602002b00090803040303",
        "03020301002d00020101003300260024001d00207a8191d70b15adcfa6a04999c21eff77f65c377e",
        "942b39af6d256dd4ed717c59001500b5000000000000000000000000000000000000000000000000",
        "00000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "00000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "00000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "00000000000000000000000000000000000000000000000000000000000000000000000000",
    ];

    fn curl_hello() -> Vec<u8> {
        let hex: String = CURL_HELLO.concat();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn u16_len(bytes: &[u8]) -> [u8; 2] {
        u16::try_from(bytes.len()).expect("short").to_be_bytes()
    }

    /// Builds ClientHellos field by field, as RFC 8446 lays them out.
    struct Hello {
        extensions: Vec<(u16, Vec<u8>)>,
        omit_extensions_block: bool,
    }

    impl Hello {
        /// A TLS 1.3-style hello with the extensions a browser sends, and the given SNI
        /// placed among them (not first, so that the walk over others is exercised).
        fn with_sni(name: Option<&str>) -> Self {
            let mut extensions = vec![
                (10, vec![0, 4, 0, 0x1d, 0, 0x17]),     // supported_groups
                (16, [&[0, 3, 2][..], b"h2"].concat()), // ALPN
                (43, vec![4, 3, 4, 3, 3]),              // supported_versions
                (51, [&[0, 36, 0, 0x1d, 0, 32][..], &[7; 32]].concat()), // key_share
            ];
            if let Some(name) = name {
                extensions.insert(2, (0, sni_extension(&[(0, name.as_bytes())])));
            }
            extensions.push((21, vec![0; 100])); // padding
            Self {
                extensions,
                omit_extensions_block: false,
            }
        }

        /// The handshake message: header and body.
        fn message(&self) -> Vec<u8> {
            let mut body = vec![3, 3];
            body.extend_from_slice(&[0xAB; 32]); // random
            body.push(32);
            body.extend_from_slice(&[0xCD; 32]); // legacy_session_id
            body.extend_from_slice(&[0, 6, 0x13, 1, 0x13, 2, 0x13, 3]); // cipher suites
            body.extend_from_slice(&[1, 0]); // compression: null
            if !self.omit_extensions_block {
                let mut extensions = Vec::new();
                for (kind, data) in &self.extensions {
                    extensions.extend_from_slice(&kind.to_be_bytes());
                    extensions.extend_from_slice(&u16_len(data));
                    extensions.extend_from_slice(data);
                }
                body.extend_from_slice(&u16_len(&extensions));
                body.extend_from_slice(&extensions);
            }
            let len = u32::try_from(body.len()).expect("short").to_be_bytes();
            [&[CLIENT_HELLO, len[1], len[2], len[3]][..], &body].concat()
        }

        /// The message in one record.
        fn bytes(&self) -> Vec<u8> {
            records(&self.message(), MAX_FRAGMENT)
        }
    }

    fn sni_extension(names: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in names {
            list.push(*kind);
            list.extend_from_slice(&u16_len(name));
            list.extend_from_slice(name);
        }
        [&u16_len(&list)[..], &list].concat()
    }

    /// Cuts a handshake message into handshake records of at most `size` bytes.
    fn records(message: &[u8], size: usize) -> Vec<u8> {
        message
            .chunks(size)
            .flat_map(|chunk| [&[CONTENT_HANDSHAKE, 3, 1][..], &u16_len(chunk), chunk].concat())
            .collect()
    }

    fn found(name: &str) -> Sniff<Option<String>> {
        Sniff::Found(Some(name.to_owned()))
    }

    #[test]
    fn reads_the_server_name_curl_sent() {
        let hello = curl_hello();
        assert_eq!(hello.len(), 517);
        assert_eq!(client_hello_sni(&hello), found("pypi.org"));
    }

    #[test]
    fn reads_the_server_name_among_other_extensions() {
        let hello = Hello::with_sni(Some("api.example.com")).bytes();
        assert_eq!(client_hello_sni(&hello), found("api.example.com"));
    }

    #[test]
    fn server_names_are_lowercased_and_lose_a_trailing_dot() {
        let hello = Hello::with_sni(Some("PyPI.Org.")).bytes();
        assert_eq!(client_hello_sni(&hello), found("pypi.org"));
    }

    #[test]
    fn bytes_after_the_hello_are_ignored() {
        // TLS 1.3 clients may send early data or ChangeCipherSpec right behind the hello.
        let mut bytes = Hello::with_sni(Some("example.com")).bytes();
        bytes.extend_from_slice(&[20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 5]);
        assert_eq!(client_hello_sni(&bytes), found("example.com"));
    }

    #[test]
    fn a_hello_split_across_records_is_reassembled() {
        let message = Hello::with_sni(Some("example.com")).message();
        for size in [1, 2, 3, 4, 5, 7, 40, 100, message.len() - 1] {
            let bytes = records(&message, size);
            assert!(
                bytes.len() > message.len() + RECORD_HEADER,
                "{size} makes several records"
            );
            assert_eq!(
                client_hello_sni(&bytes),
                found("example.com"),
                "records of {size}"
            );
        }
        // The curl hello, cut in two records where the SNI value straddles the cut.
        let curl = curl_hello();
        let message = curl.get(RECORD_HEADER..).expect("record");
        assert_eq!(client_hello_sni(&records(message, 130)), found("pypi.org"));
    }

    #[test]
    fn every_prefix_of_a_hello_needs_more() {
        let whole = [
            curl_hello(),
            Hello::with_sni(Some("example.com")).bytes(),
            records(&Hello::with_sni(Some("example.com")).message(), 50),
            records(&Hello::with_sni(None).message(), 1),
        ];
        for bytes in whole {
            assert_ne!(client_hello_sni(&bytes), Sniff::NeedMore);
            for len in 0..bytes.len() {
                assert_eq!(
                    client_hello_sni(&bytes[..len]),
                    Sniff::NeedMore,
                    "prefix of {len} bytes of {}",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn a_hello_without_server_name_is_found_empty() {
        assert_eq!(
            client_hello_sni(&Hello::with_sni(None).bytes()),
            Sniff::Found(None)
        );
        let bare = Hello {
            extensions: Vec::new(),
            omit_extensions_block: true,
        };
        assert_eq!(client_hello_sni(&bare.bytes()), Sniff::Found(None));
        let empty_block = Hello {
            extensions: Vec::new(),
            omit_extensions_block: false,
        };
        assert_eq!(client_hello_sni(&empty_block.bytes()), Sniff::Found(None));
    }

    #[test]
    fn an_invalid_server_name_is_not_this() {
        for name in [
            "exa mple.com",
            "a..b",
            "-x.com",
            "",
            "10.0.0.1",
            "::1",
            "é.com",
        ] {
            let hello = Hello::with_sni(Some(name)).bytes();
            assert_eq!(client_hello_sni(&hello), Sniff::NotThis, "{name:?}");
        }
        let mut hello = Hello::with_sni(None);
        hello
            .extensions
            .push((0, sni_extension(&[(0, b"\xff\xfe.com")])));
        assert_eq!(
            client_hello_sni(&hello.bytes()),
            Sniff::NotThis,
            "not utf-8"
        );
    }

    #[test]
    fn ambiguous_server_names_are_not_this() {
        // A proxy that read the first of two names could approve one while the server
        // serves the other.
        let mut two_extensions = Hello::with_sni(Some("allowed.com"));
        two_extensions
            .extensions
            .push((0, sni_extension(&[(0, b"denied.com")])));
        assert_eq!(client_hello_sni(&two_extensions.bytes()), Sniff::NotThis);

        let mut two_names = Hello::with_sni(None);
        two_names
            .extensions
            .push((0, sni_extension(&[(0, b"allowed.com"), (0, b"denied.com")])));
        assert_eq!(client_hello_sni(&two_names.bytes()), Sniff::NotThis);

        // A name of another type beside the host name is skipped.
        let mut other_type = Hello::with_sni(None);
        other_type
            .extensions
            .push((0, sni_extension(&[(7, b"whatever"), (0, b"allowed.com")])));
        assert_eq!(client_hello_sni(&other_type.bytes()), found("allowed.com"));
    }

    #[test]
    fn a_server_name_extension_without_a_host_name_is_not_this() {
        let mut hello = Hello::with_sni(None);
        hello.extensions.push((0, Vec::new()));
        assert_eq!(
            client_hello_sni(&hello.bytes()),
            Sniff::NotThis,
            "empty extension"
        );
        let mut hello = Hello::with_sni(None);
        hello.extensions.push((0, sni_extension(&[])));
        assert_eq!(
            client_hello_sni(&hello.bytes()),
            Sniff::NotThis,
            "empty list"
        );
    }

    #[test]
    fn a_hello_claiming_more_than_the_cap_is_not_this_at_once() {
        // Only the two headers: the claim alone is enough to give up.
        let headers = |claim: usize| {
            let [_, a, b, c] = u32::try_from(claim).expect("small").to_be_bytes();
            [22, 3, 1, 0x40, 0, CLIENT_HELLO, a, b, c]
        };
        assert_eq!(
            client_hello_sni(&headers(MAX_CLIENT_HELLO + 1)),
            Sniff::NotThis
        );
        // Exactly at the cap is still a valid prefix.
        assert_eq!(
            client_hello_sni(&headers(MAX_CLIENT_HELLO)),
            Sniff::NeedMore
        );
    }

    #[test]
    fn other_protocols_are_not_this() {
        let inputs: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            &[5, 1, 0],             // SOCKS5 greeting
            &[0x80, 0x2e, 1, 3, 1], // SSLv2-compatible hello
            &[22, 2, 0],            // not version 3.x
        ];
        for input in inputs {
            assert_eq!(client_hello_sni(input), Sniff::NotThis, "{input:?}");
        }
    }

    #[test]
    fn other_tls_messages_are_not_this() {
        let hello = Hello::with_sni(Some("example.com")).bytes();
        let mut alert = hello.clone();
        alert[0] = 21;
        assert_eq!(client_hello_sni(&alert), Sniff::NotThis, "alert record");
        let mut server_hello = hello.clone();
        server_hello[RECORD_HEADER] = 2;
        assert_eq!(
            client_hello_sni(&server_hello),
            Sniff::NotThis,
            "server hello"
        );
        assert_eq!(
            client_hello_sni(&server_hello[..RECORD_HEADER + 1]),
            Sniff::NotThis,
            "rejected from its first byte"
        );
        let zero_length = [22, 3, 1, 0, 0];
        assert_eq!(
            client_hello_sni(&zero_length),
            Sniff::NotThis,
            "empty record"
        );
        let oversized = [22, 3, 1, 0x40, 1];
        assert_eq!(
            client_hello_sni(&oversized),
            Sniff::NotThis,
            "record over 2^14"
        );
    }

    #[test]
    fn a_foreign_record_inside_a_split_hello_is_not_this() {
        let message = Hello::with_sni(Some("example.com")).message();
        let (first, second) = message.split_at(60);
        let bytes = [
            records(first, 60),
            vec![23, 3, 3, 0, 2, 0, 0], // application data in the middle
            records(second, 60),
        ]
        .concat();
        assert_eq!(client_hello_sni(&bytes), Sniff::NotThis);
    }

    #[test]
    fn malformed_hellos_are_not_this() {
        let valid = Hello::with_sni(Some("example.com")).message();
        let body_len = valid.len() - HANDSHAKE_HEADER;
        let with_body = |body: &[u8]| {
            let len = u32::try_from(body.len()).expect("short").to_be_bytes();
            records(
                &[&[CLIENT_HELLO, len[1], len[2], len[3]][..], body].concat(),
                1000,
            )
        };
        let body = &valid[HANDSHAKE_HEADER..];
        // Trailing bytes after the extensions block.
        assert_eq!(
            client_hello_sni(&with_body(&[body, &[0]].concat())),
            Sniff::NotThis
        );
        // Message shorter than its extensions block says.
        assert_eq!(
            client_hello_sni(&with_body(&body[..body_len - 1])),
            Sniff::NotThis
        );
        // A session id longer than 32 bytes.
        let mut long_session = body.to_vec();
        long_session[34] = 33;
        assert_eq!(client_hello_sni(&with_body(&long_session)), Sniff::NotThis);
        // An odd cipher suites length.
        let mut odd_suites = body.to_vec();
        odd_suites[68] = 5;
        assert_eq!(client_hello_sni(&with_body(&odd_suites)), Sniff::NotThis);
        // No compression method.
        let mut no_compression = body.to_vec();
        no_compression[75] = 0;
        assert_eq!(
            client_hello_sni(&with_body(&no_compression)),
            Sniff::NotThis
        );
        // A too-short message.
        assert_eq!(client_hello_sni(&with_body(&[3, 3, 0])), Sniff::NotThis);
        // The layout the indices above assume.
        assert_eq!(client_hello_sni(&with_body(body)), found("example.com"));
        assert_eq!((body[34], body[68], body[75]), (32, 6, 1));
    }

    #[test]
    fn corrupted_hellos_never_panic() {
        // A small xorshift generator: deterministic, so a failure reproduces.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let originals = [
            curl_hello(),
            records(&Hello::with_sni(Some("example.com")).message(), 33),
        ];
        let mut outcomes = [0_usize; 3];
        for original in &originals {
            for _ in 0..20_000 {
                let mut bytes = original.clone();
                for _ in 0..=next() % 4 {
                    let at = usize::try_from(next() % bytes.len() as u64).expect("fits");
                    bytes[at] = u8::try_from(next() & 0xFF).expect("byte");
                }
                // Whole half the time, cut anywhere otherwise.
                let cut = if next() % 2 == 0 {
                    bytes.len()
                } else {
                    usize::try_from(next() % bytes.len() as u64).expect("fits")
                };
                let index = match client_hello_sni(&bytes[..cut]) {
                    Sniff::NeedMore => 0,
                    Sniff::NotThis => 1,
                    Sniff::Found(name) => {
                        // Whatever comes out is a valid name in normal form.
                        if let Some(name) = name {
                            assert_eq!(normalise_name(&name).as_ref(), Ok(&name));
                        }
                        2
                    }
                };
                outcomes[index] += 1;
            }
        }
        // Every outcome shows up, so the corruption reached past the first checks.
        assert!(outcomes.iter().all(|count| *count > 100), "{outcomes:?}");
    }
}
