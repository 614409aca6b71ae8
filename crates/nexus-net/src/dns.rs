//! The DNS messages of the sandbox's resolver: parsing a query and building the answer or
//! the refusal to it, as pure functions over UDP payloads (the socket loop is the caller's).
//!
//! Every packet is untrusted input from the sandbox: nothing here panics on it, and every
//! response fits the classic 512-byte DNS-over-UDP limit, so a stub resolver never needs
//! to retry over TCP.

use std::net::IpAddr;

use hickory_proto::ProtoError;
use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::target::normalise_name;

/// The largest response built, in bytes: what every DNS client accepts over UDP without EDNS.
pub const MAX_RESPONSE_LEN: usize = 512;

/// The one question of a query, as the resolver needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The query's id, echoed in the response.
    pub id: u16,
    /// The queried name, normalised by [`normalise_name`]: lowercase, no trailing dot.
    pub name: String,
    /// What the query asks for.
    pub kind: QueryKind,
}

/// What a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// IPv4 addresses (type A, class IN).
    A,
    /// IPv6 addresses (type AAAA, class IN).
    Aaaa,
    /// Anything else, with its type code: the resolver answers these with no records or a
    /// refusal. An A or AAAA query in a class other than IN is `Other` too.
    Other(u16),
}

/// The response codes a query can be refused with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The server will not answer this query (REFUSED), e.g. the policy forbids the name.
    Refused,
    /// The server could not answer (SERVFAIL), e.g. the upstream lookup failed.
    ServFail,
    /// The query is malformed (FORMERR).
    FormErr,
    /// The server does not implement this kind of query (NOTIMP), e.g. another opcode.
    NotImp,
}

/// Why a packet could not be parsed as a query or answered.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct DnsError {
    /// The packet's id, when at least its header could be read.
    pub id: Option<u16>,
    /// How a server should respond (pass it to [`refuse`]); `None` when it must stay silent:
    /// the packet is too short to answer, or is itself a response (answering responses
    /// lets two servers bounce packets between them forever).
    pub refusal: Option<Refusal>,
    /// What is wrong, for the log.
    pub reason: String,
    /// The decoder's or encoder's error, when one caused this.
    #[source]
    pub source: Option<ProtoError>,
}

/// Parses a query: exactly one question, opcode QUERY, QR clear, a name that
/// [`normalise_name`] accepts.
pub fn parse_query(packet: &[u8]) -> Result<Question, DnsError> {
    parse(packet).map(|parsed| parsed.question)
}

/// The response to a query: its question echoed, RD copied, RA set, NOERROR, and one
/// record per address of the asked family (A records for an A query, AAAA for an AAAA
/// query; other addresses and other query kinds give no records, i.e. NODATA).
/// IPv4-mapped IPv6 addresses count as IPv4 and duplicates are dropped. When the
/// addresses do not all fit in [`MAX_RESPONSE_LEN`] bytes, only those that fit are sent,
/// without the TC bit: a subset of the addresses is a working answer, while TC would
/// send the client to TCP, which the sandbox's resolver does not serve.
pub fn answer(packet: &[u8], addrs: &[IpAddr], ttl: u32) -> Result<Vec<u8>, DnsError> {
    let Parsed {
        header,
        query,
        question,
    } = parse(packet)?;
    let mut kept: Vec<IpAddr> = Vec::new();
    for ip in addrs.iter().map(IpAddr::to_canonical) {
        if kept.len() >= MAX_RECORDS {
            break;
        }
        let wanted = matches!(
            (question.kind, ip),
            (QueryKind::A, IpAddr::V4(_)) | (QueryKind::Aaaa, IpAddr::V6(_))
        );
        if wanted && !kept.contains(&ip) {
            kept.push(ip);
        }
    }
    let mut response = Message::new();
    response.set_header(response_header(&header, ResponseCode::NoError));
    response.insert_answers(
        kept.into_iter()
            .map(|ip| Record::from_rdata(query.name().clone(), ttl, rdata(ip)))
            .collect(),
    );
    response.add_query(query);
    encode_fitting(response)
}

/// A response refusing the packet with `code`, echoing its id, opcode, RD and (when it
/// has exactly one that can be read) its question. `None` when the packet is too short
/// to hold a DNS header or is itself a response, which must not be answered.
pub fn refuse(packet: &[u8], code: Refusal) -> Option<Vec<u8>> {
    let mut decoder = BinDecoder::new(packet);
    let request = Header::read(&mut decoder).ok()?;
    if request.message_type() != MessageType::Query {
        return None;
    }
    let query = if request.query_count() == 1 {
        Query::read(&mut decoder).ok()
    } else {
        None
    };
    let mut response = Message::new();
    response.set_header(response_header(&request, code.response_code()));
    if let Some(query) = query {
        response.add_query(query);
        if let Ok(bytes) = response.to_vec() {
            return Some(bytes);
        }
        // A question that decodes but does not encode again: refuse without it.
        response.take_queries();
    }
    response.to_vec().ok()
}

impl Refusal {
    /// The DNS response code this refusal is sent as.
    pub fn response_code(self) -> ResponseCode {
        match self {
            Self::NxDomain => ResponseCode::NXDomain,
            Self::Refused => ResponseCode::Refused,
            Self::ServFail => ResponseCode::ServFail,
            Self::FormErr => ResponseCode::FormErr,
            Self::NotImp => ResponseCode::NotImp,
        }
    }
}

impl DnsError {
    fn new(id: Option<u16>, refusal: Option<Refusal>, reason: impl Into<String>) -> Self {
        Self {
            id,
            refusal,
            reason: reason.into(),
            source: None,
        }
    }
}

/// The smallest answer record: a compressed owner name (2 bytes), type, class, TTL and
/// length (10 bytes) and an IPv4 address (4 bytes).
const MIN_RECORD_LEN: usize = 16;

/// More records than can ever fit in a response; longer address lists are cut here first.
const MAX_RECORDS: usize = MAX_RESPONSE_LEN / MIN_RECORD_LEN;

/// A query taken apart: its header and question as sent (for echoing) and as understood.
struct Parsed {
    header: Header,
    query: Query,
    question: Question,
}

/// Parses and checks a query.
fn parse(packet: &[u8]) -> Result<Parsed, DnsError> {
    let header = Header::read(&mut BinDecoder::new(packet)).map_err(|_| {
        DnsError::new(
            None,
            None,
            format!(
                "dns packet of {} bytes is shorter than a dns header",
                packet.len()
            ),
        )
    })?;
    let id = Some(header.id());
    if header.message_type() != MessageType::Query {
        return Err(DnsError::new(
            id,
            None,
            "dns packet is a response, not a query",
        ));
    }
    if header.op_code() != OpCode::Query {
        return Err(DnsError::new(
            id,
            Some(Refusal::NotImp),
            format!(
                "dns opcode {} is not supported, only QUERY",
                u8::from(header.op_code())
            ),
        ));
    }
    if header.query_count() != 1 {
        return Err(DnsError::new(
            id,
            Some(Refusal::FormErr),
            format!(
                "dns query has {} questions instead of one",
                header.query_count()
            ),
        ));
    }
    let mut message = Message::from_vec(packet).map_err(|source| DnsError {
        source: Some(source),
        ..DnsError::new(id, Some(Refusal::FormErr), "dns query is malformed")
    })?;
    let Some(query) = message.take_queries().into_iter().next() else {
        return Err(DnsError::new(
            id,
            Some(Refusal::FormErr),
            "dns query has no question",
        ));
    };
    let name = host_name(query.name())
        .map_err(|reason| DnsError::new(id, Some(Refusal::Refused), reason))?;
    let kind = match (query.query_type(), query.query_class()) {
        (RecordType::A, DNSClass::IN) => QueryKind::A,
        (RecordType::AAAA, DNSClass::IN) => QueryKind::Aaaa,
        (other, _) => QueryKind::Other(u16::from(other)),
    };
    let question = Question {
        id: header.id(),
        name,
        kind,
    };
    Ok(Parsed {
        header,
        query,
        question,
    })
}

/// The text of a queried name, if it is a host name the resolver serves. Labels are
/// checked one by one, so a label holding a `.` cannot pass for two labels.
fn host_name(name: &Name) -> Result<String, String> {
    let mut text = String::new();
    for label in name.iter() {
        let label = std::str::from_utf8(label)
            .ok()
            .filter(|label| !label.contains('.'))
            .ok_or_else(|| format!("dns query name {:?} is not a host name", name.to_ascii()))?;
        if !text.is_empty() {
            text.push('.');
        }
        text.push_str(label);
    }
    normalise_name(&text).map_err(|err| format!("dns query name is not a host name: {err}"))
}

/// A response header for `request`: id, opcode, RD and CD copied, RA set.
fn response_header(request: &Header, code: ResponseCode) -> Header {
    let mut header = Header::response_from_request(request);
    header.set_recursion_available(true).set_response_code(code);
    header
}

/// The record data for an address.
fn rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// Encodes a response, dropping answers from the end until it fits [`MAX_RESPONSE_LEN`].
fn encode_fitting(mut response: Message) -> Result<Vec<u8>, DnsError> {
    loop {
        let bytes = response.to_vec().map_err(|source| DnsError {
            source: Some(source),
            ..DnsError::new(
                Some(response.id()),
                Some(Refusal::ServFail),
                "could not encode the dns response",
            )
        })?;
        if bytes.len() <= MAX_RESPONSE_LEN || response.answers_mut().pop().is_none() {
            return Ok(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::op::Edns;

    use super::*;

    fn query_message(id: u16, name: &str, rtype: RecordType) -> Message {
        let mut message = Message::new();
        message
            .set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(
                Name::from_ascii(name).expect("test name"),
                rtype,
            ));
        message
    }

    fn query(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
        query_message(id, name, rtype)
            .to_vec()
            .expect("encode query")
    }

    fn decode(bytes: &[u8]) -> Message {
        assert!(
            bytes.len() <= MAX_RESPONSE_LEN,
            "response of {} bytes",
            bytes.len()
        );
        Message::from_vec(bytes).expect("decode response")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn answer_addrs(message: &Message) -> Vec<IpAddr> {
        message
            .answers()
            .iter()
            .map(|record| match record.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                other => panic!("unexpected record {other:?}"),
            })
            .collect()
    }

    #[test]
    fn queries_parse_to_a_normalised_question() {
        let question = parse_query(&query(0x1234, "Allowed.Test.", RecordType::A)).expect("A");
        assert_eq!(
            question,
            Question {
                id: 0x1234,
                name: "allowed.test".into(),
                kind: QueryKind::A,
            }
        );
        let question = parse_query(&query(7, "example.com", RecordType::AAAA)).expect("AAAA");
        assert_eq!(question.kind, QueryKind::Aaaa);
        assert_eq!(question.name, "example.com");
        let question = parse_query(&query(7, "example.com.", RecordType::MX)).expect("MX");
        assert_eq!(question.kind, QueryKind::Other(15));
    }

    #[test]
    fn queries_with_edns_parse() {
        let mut message = query_message(9, "example.com.", RecordType::A);
        message.set_edns(Edns::new());
        let packet = message.to_vec().expect("encode");
        assert_eq!(parse_query(&packet).expect("edns query").kind, QueryKind::A);
        let response = decode(&answer(&packet, &[ip("192.0.2.1")], 60).expect("answer"));
        assert_eq!(answer_addrs(&response), vec![ip("192.0.2.1")]);
    }

    #[test]
    fn address_queries_outside_class_in_are_other() {
        let mut message = query_message(3, "example.com.", RecordType::A);
        message.queries_mut()[0].set_query_class(DNSClass::CH);
        let packet = message.to_vec().expect("encode");
        assert_eq!(
            parse_query(&packet).expect("CH query").kind,
            QueryKind::Other(1)
        );
        let response = decode(&answer(&packet, &[ip("192.0.2.1")], 60).expect("answer"));
        assert!(response.answers().is_empty());
    }

    #[test]
    fn responses_are_rejected_and_never_answered() {
        let mut message = query_message(0x4242, "example.com.", RecordType::A);
        message.set_message_type(MessageType::Response);
        let packet = message.to_vec().expect("encode");
        let err = parse_query(&packet).expect_err("a response is not a query");
        assert_eq!(err.id, Some(0x4242));
        assert_eq!(err.refusal, None);
        assert!(answer(&packet, &[ip("192.0.2.1")], 60).is_err());
        assert_eq!(refuse(&packet, Refusal::FormErr), None);
    }

    #[test]
    fn other_opcodes_are_not_implemented() {
        for op_code in [OpCode::Status, OpCode::Notify, OpCode::Update] {
            let mut message = query_message(5, "example.com.", RecordType::A);
            message.set_op_code(op_code);
            let packet = message.to_vec().expect("encode");
            let err = parse_query(&packet).expect_err("opcode");
            assert_eq!(err.id, Some(5));
            assert_eq!(err.refusal, Some(Refusal::NotImp));
            let response = decode(&refuse(&packet, Refusal::NotImp).expect("refusal"));
            assert_eq!(response.op_code(), op_code);
            assert_eq!(response.response_code(), ResponseCode::NotImp);
        }
    }

    #[test]
    fn queries_need_exactly_one_question() {
        let mut none = query_message(11, "example.com.", RecordType::A);
        none.take_queries();
        let mut two = query_message(12, "example.com.", RecordType::A);
        two.add_query(Query::query(
            Name::from_ascii("example.org.").expect("name"),
            RecordType::A,
        ));
        for (message, id) in [(none, 11), (two, 12)] {
            let packet = message.to_vec().expect("encode");
            let err = parse_query(&packet).expect_err("question count");
            assert_eq!(err.id, Some(id));
            assert_eq!(err.refusal, Some(Refusal::FormErr));
            let response = decode(&refuse(&packet, Refusal::FormErr).expect("refusal"));
            assert_eq!(response.id(), id);
            assert_eq!(response.response_code(), ResponseCode::FormErr);
            assert!(response.queries().is_empty());
        }
    }

    #[test]
    fn names_that_are_not_host_names_are_refused() {
        let bad_names = [
            Name::root(),
            Name::from_labels(vec![&b"a b"[..], b"com"]).expect("space"),
            Name::from_labels(vec![&b"*"[..], b"example", b"com"]).expect("wildcard"),
            Name::from_labels(vec![&b"\xff"[..], b"com"]).expect("binary"),
        ];
        for name in bad_names {
            let mut message = Message::new();
            message
                .set_id(21)
                .add_query(Query::query(name.clone(), RecordType::A));
            let packet = message.to_vec().expect("encode");
            let err = parse_query(&packet).expect_err("bad name");
            assert_eq!(err.id, Some(21), "{name:?}");
            assert_eq!(err.refusal, Some(Refusal::Refused), "{name:?}");
        }
    }

    #[test]
    fn a_label_holding_a_dot_is_not_two_labels() {
        // One label "allowed.test" on the wire, which must not pass for the name allowed.test.
        let mut packet = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 12];
        packet.extend_from_slice(b"allowed.test");
        packet.extend_from_slice(&[0, 0, 1, 0, 1]);
        let err = parse_query(&packet).expect_err("dotted label");
        assert_eq!(err.refusal, Some(Refusal::Refused));
        // The same name written as two labels is fine.
        let mut packet = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7];
        packet.extend_from_slice(b"allowed\x04test");
        packet.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(
            parse_query(&packet).expect("two labels").name,
            "allowed.test"
        );
    }

    #[test]
    fn a_answers_carry_the_ipv4_addresses() {
        let packet = query(0xbeef, "Allowed.TEST.", RecordType::A);
        let addrs = [
            ip("192.0.2.1"),
            ip("2001:db8::1"),
            ip("::ffff:192.0.2.2"),
            ip("192.0.2.1"),
        ];
        let response = decode(&answer(&packet, &addrs, 30).expect("answer"));
        assert_eq!(response.id(), 0xbeef);
        assert_eq!(response.message_type(), MessageType::Response);
        assert_eq!(response.op_code(), OpCode::Query);
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.recursion_desired());
        assert!(response.recursion_available());
        assert!(!response.truncated());
        assert!(!response.authoritative());
        // The question is echoed as asked, case and all (resolvers may check it).
        let request = Message::from_vec(&packet).expect("decode query");
        assert_eq!(response.queries(), request.queries());
        assert_eq!(
            answer_addrs(&response),
            vec![ip("192.0.2.1"), ip("192.0.2.2")]
        );
        for record in response.answers() {
            assert_eq!(record.name(), request.queries()[0].name());
            assert_eq!(record.record_type(), RecordType::A);
            assert_eq!(record.dns_class(), DNSClass::IN);
            assert_eq!(record.ttl(), 30);
        }
    }

    #[test]
    fn aaaa_answers_carry_the_ipv6_addresses() {
        let packet = query(1, "example.com.", RecordType::AAAA);
        let addrs = [
            ip("127.0.0.1"),
            ip("::1"),
            ip("2001:db8::2"),
            ip("::ffff:10.0.0.1"),
        ];
        let response = decode(&answer(&packet, &addrs, 5).expect("answer"));
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert_eq!(answer_addrs(&response), vec![ip("::1"), ip("2001:db8::2")]);
        assert!(
            response
                .answers()
                .iter()
                .all(|r| r.record_type() == RecordType::AAAA)
        );
    }

    #[test]
    fn no_matching_addresses_is_nodata() {
        let cases = [
            (RecordType::A, vec![ip("::1")]),
            (RecordType::AAAA, vec![ip("127.0.0.1")]),
            (RecordType::A, vec![]),
            (RecordType::MX, vec![ip("127.0.0.1"), ip("::1")]),
        ];
        for (rtype, addrs) in cases {
            let response =
                decode(&answer(&query(2, "example.com.", rtype), &addrs, 5).expect("answer"));
            assert_eq!(response.response_code(), ResponseCode::NoError, "{rtype}");
            assert!(response.answers().is_empty(), "{rtype}");
            assert_eq!(response.queries().len(), 1, "{rtype}");
        }
    }

    #[test]
    fn recursion_desired_is_copied_not_set() {
        let mut message = query_message(3, "example.com.", RecordType::A);
        message.set_recursion_desired(false);
        let packet = message.to_vec().expect("encode");
        let response = decode(&answer(&packet, &[ip("192.0.2.1")], 5).expect("answer"));
        assert!(!response.recursion_desired());
        assert!(response.recursion_available());
        let response = decode(&refuse(&packet, Refusal::Refused).expect("refusal"));
        assert!(!response.recursion_desired());
    }

    #[test]
    fn long_address_lists_are_cut_to_fit_512_bytes() {
        let v4: Vec<IpAddr> = (0..=255u8)
            .map(|n| IpAddr::V4(Ipv4Addr::new(198, 51, 100, n)))
            .collect();
        let v6: Vec<IpAddr> = (0..=255u16)
            .map(|n| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n)))
            .collect();
        let long_name = format!(
            "{}.{}.{}.example",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63)
        );
        for name in ["example.com.", long_name.as_str()] {
            for (rtype, addrs, size) in [(RecordType::A, &v4, 16), (RecordType::AAAA, &v6, 28)] {
                let bytes = answer(&query(4, name, rtype), addrs, 5).expect("answer");
                let response = decode(&bytes);
                let sent = answer_addrs(&response);
                assert!(!sent.is_empty(), "{name} {rtype}");
                assert_eq!(
                    sent[..],
                    addrs[..sent.len()],
                    "{name} {rtype}: the first ones"
                );
                // As many as fit: one more would not have.
                assert!(
                    bytes.len() + size > MAX_RESPONSE_LEN,
                    "{name} {rtype}: {} bytes",
                    bytes.len()
                );
                assert!(!response.truncated());
            }
        }
    }

    #[test]
    fn answer_rejects_what_parse_query_rejects() {
        let mut message = query_message(77, "example.com.", RecordType::A);
        message.set_op_code(OpCode::Update);
        let err =
            answer(&message.to_vec().expect("encode"), &[ip("192.0.2.1")], 5).expect_err("update");
        assert_eq!(err.id, Some(77));
        assert_eq!(err.refusal, Some(Refusal::NotImp));
        let err = answer(&[0, 1, 2], &[ip("192.0.2.1")], 5).expect_err("short");
        assert_eq!(err.id, None);
        assert_eq!(err.refusal, None);
    }

    #[test]
    fn refusals_carry_the_code_id_and_question() {
        let packet = query(0x0a0b, "Denied.Example.", RecordType::AAAA);
        let request = Message::from_vec(&packet).expect("decode query");
        let codes = [
            (Refusal::NxDomain, ResponseCode::NXDomain),
            (Refusal::Refused, ResponseCode::Refused),
            (Refusal::ServFail, ResponseCode::ServFail),
            (Refusal::FormErr, ResponseCode::FormErr),
            (Refusal::NotImp, ResponseCode::NotImp),
        ];
        for (refusal, code) in codes {
            let response = decode(&refuse(&packet, refusal).expect("refusal"));
            assert_eq!(response.id(), 0x0a0b);
            assert_eq!(response.message_type(), MessageType::Response);
            assert_eq!(response.response_code(), code);
            assert!(response.recursion_desired());
            assert!(response.recursion_available());
            assert_eq!(response.queries(), request.queries());
            assert!(response.answers().is_empty());
        }
    }

    #[test]
    fn a_bare_header_is_refused_without_a_question() {
        // A header announcing one question that is not there.
        let packet = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let err = parse_query(&packet).expect_err("no question");
        assert_eq!(err.id, Some(0x1234));
        assert_eq!(err.refusal, Some(Refusal::FormErr));
        assert!(std::error::Error::source(&err).is_some());
        let response = decode(&refuse(&packet, Refusal::FormErr).expect("refusal"));
        assert_eq!(response.id(), 0x1234);
        assert_eq!(response.response_code(), ResponseCode::FormErr);
        assert!(response.queries().is_empty());
        assert_eq!(refuse(&packet[..11], Refusal::FormErr), None);
        assert_eq!(refuse(&[], Refusal::FormErr), None);
    }

    #[test]
    fn compression_loops_are_errors() {
        // The question's name is a pointer to itself.
        let packet = [0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
        let err = parse_query(&packet).expect_err("pointer loop");
        assert_eq!(err.refusal, Some(Refusal::FormErr));
        let response = decode(&refuse(&packet, Refusal::FormErr).expect("refusal"));
        assert_eq!(response.id(), 9);
    }

    #[test]
    fn truncated_and_garbled_packets_never_panic() {
        let mut message = query_message(0x5151, "www.example.com.", RecordType::A);
        message.set_edns(Edns::new());
        let packet = message.to_vec().expect("encode");
        let addrs = [ip("192.0.2.1"), ip("2001:db8::1")];
        for len in 0..packet.len() {
            let prefix = &packet[..len];
            let err = parse_query(prefix).expect_err("a prefix is not a whole query");
            assert_eq!(err.id.is_some(), len >= 12, "prefix of {len}");
            assert!(answer(prefix, &addrs, 5).is_err(), "prefix of {len}");
            assert_eq!(
                refuse(prefix, Refusal::FormErr).is_some(),
                len >= 12,
                "prefix of {len}"
            );
        }
        // Every single-bit flip of a valid query, then pseudo-random bytes.
        let mut inputs = Vec::new();
        for bit in 0..packet.len() * 8 {
            let mut flipped = packet.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            inputs.push(flipped);
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let len = usize::try_from(state % 80).expect("small");
            let bytes = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()[0]
                })
                .collect();
            inputs.push(bytes);
        }
        for input in inputs {
            if let Ok(bytes) = answer(&input, &addrs, 5) {
                assert!(bytes.len() <= MAX_RESPONSE_LEN);
                assert!(Message::from_vec(&bytes).is_ok());
            }
            let _ = parse_query(&input);
            for refusal in [Refusal::FormErr, Refusal::ServFail] {
                if let Some(bytes) = refuse(&input, refusal) {
                    assert!(bytes.len() <= MAX_RESPONSE_LEN);
                    let response = Message::from_vec(&bytes).expect("decode refusal");
                    assert_eq!(response.response_code(), refusal.response_code());
                }
            }
        }
    }
}
