//! HTTP/1 request heads as a forward proxy and a transparent capture see them: parsing
//! (with `httparse`), finding where a request goes, rewriting it for the origin server,
//! and the few responses the proxy writes itself.

use super::{Sniff, WireError};
use crate::target::Target;

/// The largest request head accepted, in bytes; a longer one is `NotThis`.
pub const MAX_HEAD: usize = 64 * 1024;

/// The reply to a `CONNECT` once the upstream connection is open.
pub const CONNECT_ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// A parsed request line and header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The request target: origin-form (`/path`), absolute-form (`http://host/path`),
    /// authority-form (`host:port`, for `CONNECT`) or `*`.
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The value of the first `Host` header, trimmed, if it is UTF-8.
    pub host: Option<String>,
    /// Every header in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The length of the head, blank line included: the body starts at this offset.
    pub head_len: usize,
}

/// What a client of a forward proxy asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyRequest {
    /// `CONNECT host:port`: a tunnel, to be answered with [`CONNECT_ESTABLISHED`].
    Connect(Target),
    /// An absolute-form `http://` request, to be sent to `target` as `origin_head`
    /// followed by the rest of the client's bytes (the body, unchanged).
    Forward {
        /// Where the request goes (port 80 unless the URI says otherwise).
        target: Target,
        /// The head rewritten for the origin server; see [`proxy_target`].
        origin_head: Vec<u8>,
    },
}

/// Parses the request head at the start of `buf`.
///
/// `NeedMore` while `buf` is a valid but incomplete head under [`MAX_HEAD`]; `NotThis`
/// for anything that is not an HTTP/1.x request head, or is longer than the cap.
pub fn request_head(buf: &[u8]) -> Sniff<RequestHead> {
    let capped = buf.get(..MAX_HEAD).unwrap_or(buf);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(capped) {
        Ok(httparse::Status::Complete(head_len)) => {
            let (Some(method), Some(target), Some(version)) =
                (request.method, request.path, request.version)
            else {
                return Sniff::NotThis;
            };
            let headers: Vec<(String, Vec<u8>)> = request
                .headers
                .iter()
                .map(|header| (header.name.to_owned(), header.value.to_vec()))
                .collect();
            let host = values(&headers, "host")
                .next()
                .and_then(|value| std::str::from_utf8(value).ok())
                .map(|value| value.trim().to_owned());
            Sniff::Found(RequestHead {
                method: method.to_owned(),
                target: target.to_owned(),
                version,
                host,
                headers,
                head_len,
            })
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Sniff::NeedMore,
        Ok(httparse::Status::Partial) | Err(_) => Sniff::NotThis,
    }
}

/// Classifies a request received by the forward proxy.
///
/// A `Forward` carries the head rewritten in origin-form (`GET /path?q HTTP/1.1`):
/// - `Host` is set from the URI, replacing any `Host` the client sent, as RFC 9112
///   (section 3.2.2) requires; a different `Host` would let a client reach a name the
///   policy never saw on an address it approved (domain fronting).
/// - Hop-by-hop headers are dropped: `Connection`, `Proxy-Connection`, `Keep-Alive`,
///   `Proxy-Authorization`, `TE`, `Upgrade`, and those named in `Connection` (except
///   `Content-Length` and `Transfer-Encoding`, which frame the body the proxy relays).
/// - `Connection: close` is added. The proxy sends one request per upstream connection:
///   it relays bytes without parsing bodies, so it could not tell where a second request
///   on the same connection begins, nor check where that one goes.
///
/// The HTTP version is the client's, because the response is relayed to it untouched.
pub fn proxy_target(head: &RequestHead) -> Result<ProxyRequest, WireError> {
    if head.method == "CONNECT" {
        return parse_authority(&head.target, None).map(ProxyRequest::Connect);
    }
    let uri = AbsoluteUri::split(&head.target)?;
    if !uri.scheme.eq_ignore_ascii_case("http") {
        return Err(WireError::UnsupportedScheme {
            scheme: uri.scheme.to_ascii_lowercase(),
        });
    }
    let target = parse_authority(uri.authority, Some(DEFAULT_HTTP_PORT))?;
    let host = if target.port == DEFAULT_HTTP_PORT {
        target.host.to_string()
    } else {
        target.to_string()
    };
    let origin_head = origin_head(head, &uri.path_and_query(), &host);
    Ok(ProxyRequest::Forward {
        target,
        origin_head,
    })
}

/// Where a request caught by a transparent capture goes: its `Host` header, with
/// `default_port` (the port the connection was made to) when the header has none.
///
/// `None` when there is no `Host` (HTTP/1.0 clients may omit it), when there are
/// several, when it does not parse, or when the request is in absolute-form and its URI
/// names another target than `Host` does (servers obey the URI, so checking `Host`
/// alone could be bypassed). An absolute-form request without `Host` goes by its URI.
pub fn origin_target(head: &RequestHead, default_port: u16) -> Option<Target> {
    let mut hosts = values(&head.headers, "host");
    let from_header = match (hosts.next(), hosts.next()) {
        (Some(value), None) => {
            let value = std::str::from_utf8(value).ok()?.trim();
            Some(parse_authority(value, Some(default_port)).ok()?)
        }
        (None, _) => None,
        (Some(_), Some(_)) => return None,
    };
    let from_uri = match AbsoluteUri::split(&head.target) {
        Ok(uri) => Some(parse_authority(uri.authority, Some(default_port)).ok()?),
        Err(_) => None,
    };
    match (from_header, from_uri) {
        (Some(header), Some(uri)) => (header == uri).then_some(header),
        (header, uri) => header.or(uri),
    }
}

/// `403 Forbidden` with `reason` as a plain-text body.
pub fn forbidden_response(reason: &str) -> Vec<u8> {
    response("403 Forbidden", reason)
}

/// `502 Bad Gateway` with `reason` as a plain-text body.
pub fn bad_gateway_response(reason: &str) -> Vec<u8> {
    response("502 Bad Gateway", reason)
}

/// `400 Bad Request` with `reason` as a plain-text body.
pub fn bad_request_response(reason: &str) -> Vec<u8> {
    response("400 Bad Request", reason)
}

/// Headers beyond this many make a head `NotThis` (browsers send about twenty).
const MAX_HEADERS: usize = 128;

const DEFAULT_HTTP_PORT: u16 = 80;

/// Headers that concern one connection only, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "te",
    "upgrade",
];

/// Headers kept even when `Connection` names them: they frame the body that is relayed
/// as it is, and dropping them would make the origin read the body as another request.
const FRAMING: &[&str] = &["content-length", "transfer-encoding"];

/// An absolute-form request target cut into its parts.
struct AbsoluteUri<'a> {
    scheme: &'a str,
    authority: &'a str,
    /// From the first `/` or `?` after the authority, fragment removed; may be empty.
    rest: &'a str,
}

impl<'a> AbsoluteUri<'a> {
    fn split(target: &'a str) -> Result<Self, WireError> {
        let not_absolute = || WireError::NotAbsoluteForm {
            target: target.to_owned(),
        };
        let (scheme, after) = target.split_once("://").ok_or_else(not_absolute)?;
        if !is_scheme(scheme) {
            return Err(not_absolute());
        }
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        Ok(Self {
            scheme,
            authority,
            rest,
        })
    }

    fn path_and_query(&self) -> String {
        if self.rest.starts_with('/') {
            self.rest.to_owned()
        } else {
            format!("/{}", self.rest)
        }
    }
}

/// RFC 3986: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `Target::parse_authority`, refusing credentials without echoing them.
fn parse_authority(authority: &str, default_port: Option<u16>) -> Result<Target, WireError> {
    if authority.contains('@') {
        return Err(WireError::Credentials);
    }
    Target::parse_authority(authority, default_port).map_err(|source| WireError::BadAuthority {
        authority: authority.to_owned(),
        source,
    })
}

/// The values of the headers called `name` (lowercase), in order.
fn values<'h>(
    headers: &'h [(String, Vec<u8>)],
    name: &'h str,
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |(header, _)| header.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_slice())
}

/// The head for the origin server; see [`proxy_target`].
fn origin_head(head: &RequestHead, path_and_query: &str, host: &str) -> Vec<u8> {
    let named_in_connection: Vec<String> = ["connection", "proxy-connection"]
        .into_iter()
        .flat_map(|name| values(&head.headers, name))
        .flat_map(|value| value.split(|byte| *byte == b','))
        .filter_map(|option| std::str::from_utf8(option).ok())
        .map(|option| option.trim().to_ascii_lowercase())
        .filter(|option| !FRAMING.contains(&option.as_str()))
        .collect();
    let dropped = |name: &str| {
        let name = name.to_ascii_lowercase();
        name == "host" || HOP_BY_HOP.contains(&name.as_str()) || named_in_connection.contains(&name)
    };
    let mut out = Vec::with_capacity(head.head_len + host.len() + 32);
    out.extend_from_slice(
        format!(
            "{} {path_and_query} HTTP/1.{}\r\nHost: {host}\r\n",
            head.method, head.version
        )
        .as_bytes(),
    );
    for (name, value) in head.headers.iter().filter(|(name, _)| !dropped(name)) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// A complete response with a plain-text body (`reason` and a newline) that closes the
/// connection.
fn response(status: &str, reason: &str) -> Vec<u8> {
    let body = format!("{reason}\n");
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Host;

    fn parse(text: &str) -> RequestHead {
        match request_head(text.as_bytes()) {
            Sniff::Found(head) => head,
            other => panic!("{text:?} did not parse: {other:?}"),
        }
    }

    fn forward(text: &str) -> (Target, String) {
        match proxy_target(&parse(text)) {
            Ok(ProxyRequest::Forward {
                target,
                origin_head,
            }) => (target, String::from_utf8(origin_head).expect("utf-8")),
            other => panic!("{text:?} is not a forward: {other:?}"),
        }
    }

    fn authority(text: &str) -> Target {
        Target::parse_authority(text, None).expect("target")
    }

    #[test]
    fn a_head_parses_into_its_parts() {
        let bytes: &[u8] = b"POST /upload?x=1 HTTP/1.1\r\nHost:  Example.com:8080 \r\nX-Bin: \xff\r\nContent-Length: 4\r\n\r\nbody";
        let Sniff::Found(head) = request_head(bytes) else {
            panic!("no head");
        };
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/upload?x=1");
        assert_eq!(head.version, 1);
        assert_eq!(head.host.as_deref(), Some("Example.com:8080"));
        assert_eq!(
            head.headers,
            [
                ("Host".to_owned(), b"Example.com:8080".to_vec()),
                ("X-Bin".to_owned(), b"\xff".to_vec()),
                ("Content-Length".to_owned(), b"4".to_vec()),
            ]
        );
        assert_eq!(&bytes[head.head_len..], b"body");
    }

    #[test]
    fn http_1_0_without_host_parses() {
        let head = parse("GET / HTTP/1.0\r\n\r\n");
        assert_eq!((head.version, head.host), (0, None));
    }

    #[test]
    fn every_prefix_of_a_head_needs_more() {
        let text = "GET http://example.com/a HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
        for len in 0..text.len() {
            assert_eq!(
                request_head(&text.as_bytes()[..len]),
                Sniff::NeedMore,
                "prefix of {len} bytes"
            );
        }
        assert_eq!(parse(text).head_len, text.len());
    }

    #[test]
    fn other_protocols_are_not_this() {
        let inputs: [&[u8]; 5] = [
            &[22, 3, 1, 2, 0, 1, 0, 1, 0xfc],
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/3.0\r\n\r\n",
            b"GET /\x00 HTTP/1.1\r\n\r\n",
        ];
        for input in inputs {
            assert_eq!(request_head(input), Sniff::NotThis, "{input:?}");
        }
    }

    #[test]
    fn heads_over_the_cap_are_not_this() {
        let filler = "x".repeat(MAX_HEAD);
        let unfinished = format!("GET / HTTP/1.1\r\nX-Filler: {filler}");
        assert_eq!(request_head(unfinished.as_bytes()), Sniff::NotThis);
        let complete = format!("{unfinished}\r\n\r\n");
        assert_eq!(request_head(complete.as_bytes()), Sniff::NotThis);
        // A head just under the cap is fine.
        let fits = format!(
            "GET / HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
            "x".repeat(MAX_HEAD - 30)
        );
        assert!(fits.len() <= MAX_HEAD);
        assert_eq!(parse(&fits).head_len, fits.len());
    }

    #[test]
    fn too_many_headers_are_not_this() {
        let headers = "X: y\r\n".repeat(MAX_HEADERS + 1);
        let text = format!("GET / HTTP/1.1\r\n{headers}\r\n");
        assert_eq!(request_head(text.as_bytes()), Sniff::NotThis);
    }

    #[test]
    fn connect_names_its_target() {
        let head = parse("CONNECT Example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        assert_eq!(
            proxy_target(&head),
            Ok(ProxyRequest::Connect(authority("example.com:443")))
        );
        let head = parse("CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n");
        assert_eq!(
            proxy_target(&head),
            Ok(ProxyRequest::Connect(authority("[2001:db8::1]:8443")))
        );
    }

    #[test]
    fn connect_needs_a_port_and_a_valid_host() {
        for request in [
            "CONNECT example.com HTTP/1.1\r\n\r\n",
            "CONNECT exa_mple..com:443 HTTP/1.1\r\n\r\n",
            "CONNECT example.com:0 HTTP/1.1\r\n\r\n",
        ] {
            let error = proxy_target(&parse(request)).expect_err(request);
            assert!(
                matches!(error, WireError::BadAuthority { .. }),
                "{request:?}: {error:?}"
            );
        }
    }

    #[test]
    fn credentials_in_the_target_are_refused_and_not_repeated() {
        for request in [
            "CONNECT user:secret@example.com:443 HTTP/1.1\r\n\r\n",
            "GET http://user:secret@example.com/ HTTP/1.1\r\n\r\n",
        ] {
            let error = proxy_target(&parse(request)).expect_err(request);
            assert_eq!(error, WireError::Credentials);
            assert!(!error.to_string().contains("secret"));
        }
    }

    #[test]
    fn absolute_form_is_rewritten_to_origin_form() {
        let (target, head) = forward(
            "GET http://Example.com:8080/a/b?q=1#frag HTTP/1.1\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
        );
        assert_eq!(target, authority("example.com:8080"));
        assert_eq!(
            head,
            "GET /a/b?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn absolute_form_defaults_to_port_80_and_path_slash() {
        let (target, head) = forward("GET http://example.com HTTP/1.1\r\n\r\n");
        assert_eq!(target, authority("example.com:80"));
        assert_eq!(
            head,
            "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        );
        let (_, head) = forward("GET HTTP://example.com?q HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("GET /?q HTTP/1.1\r\n"), "{head}");
        let (target, head) = forward("GET http://[::1]:8000/x HTTP/1.1\r\n\r\n");
        assert_eq!(target, authority("[::1]:8000"));
        assert!(head.contains("\r\nHost: [::1]:8000\r\n"), "{head}");
    }

    #[test]
    fn forwarding_keeps_the_client_version_and_method() {
        let (_, head) = forward("PUT http://example.com/x HTTP/1.0\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(
            head,
            "PUT /x HTTP/1.0\r\nHost: example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn forwarding_drops_proxy_and_hop_by_hop_headers() {
        let (_, head) = forward(
            "GET http://example.com/ HTTP/1.1\r\n\
             Proxy-Connection: keep-alive\r\n\
             proxy-authorization: Basic c2VjcmV0\r\n\
             Connection: keep-alive, X-Hop, Content-Length, Upgrade\r\n\
             Keep-Alive: timeout=5\r\n\
             X-Hop: 1\r\n\
             Upgrade: websocket\r\n\
             TE: trailers\r\n\
             Content-Length: 0\r\n\
             X-Kept: 2\r\n\r\n",
        );
        assert_eq!(
            head,
            "GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\nX-Kept: 2\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn forwarding_replaces_a_host_header_that_disagrees_with_the_uri() {
        // Regression guard for domain fronting: the policy checks the URI's host, so the
        // origin must see that host and no other.
        let (target, head) = forward(
            "GET http://allowed.example/ HTTP/1.1\r\nHost: denied.example\r\nhost: denied.example\r\n\r\n",
        );
        assert_eq!(target, authority("allowed.example:80"));
        assert!(!head.contains("denied"), "{head}");
        assert_eq!(
            head.matches("Host: allowed.example\r\n").count(),
            1,
            "{head}"
        );
    }

    #[test]
    fn other_schemes_are_named_in_the_error() {
        for (request, scheme) in [
            ("GET https://example.com/ HTTP/1.1\r\n\r\n", "https"),
            ("GET FTP://example.com/f HTTP/1.1\r\n\r\n", "ftp"),
        ] {
            let error = proxy_target(&parse(request)).expect_err(request);
            assert_eq!(
                error,
                WireError::UnsupportedScheme {
                    scheme: scheme.to_owned()
                }
            );
            assert!(error.to_string().contains(scheme), "{error}");
        }
    }

    #[test]
    fn origin_form_is_not_for_a_forward_proxy() {
        for request in [
            "GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "GET /redirect?to=http://example.com HTTP/1.1\r\n\r\n",
        ] {
            let error = proxy_target(&parse(request)).expect_err(request);
            assert!(
                matches!(error, WireError::NotAbsoluteForm { .. }),
                "{request:?}: {error:?}"
            );
        }
        let error = proxy_target(&parse("GET http:///x HTTP/1.1\r\n\r\n")).expect_err("empty");
        assert!(matches!(error, WireError::BadAuthority { .. }), "{error:?}");
    }

    #[test]
    fn origin_target_comes_from_the_host_header() {
        let head = parse("GET /x HTTP/1.1\r\nHost: Example.com\r\n\r\n");
        assert_eq!(origin_target(&head, 80), Some(authority("example.com:80")));
        let head = parse("GET /x HTTP/1.1\r\nHOST: example.com:8080\r\n\r\n");
        assert_eq!(
            origin_target(&head, 80),
            Some(authority("example.com:8080"))
        );
        let head = parse("GET /x HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n");
        assert_eq!(
            origin_target(&head, 8000),
            Some(Target::new(Host::Ip("10.0.0.1".parse().expect("ip")), 8000))
        );
    }

    #[test]
    fn origin_target_refuses_missing_repeated_or_bad_hosts() {
        for request in [
            "GET /x HTTP/1.0\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a.example\r\nhost: a.example\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: \r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
        ] {
            assert_eq!(origin_target(&parse(request), 80), None, "{request:?}");
        }
    }

    #[test]
    fn origin_target_checks_an_absolute_uri_against_host() {
        let agree = parse("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(origin_target(&agree, 80), Some(authority("a.example:80")));
        let disagree = parse("GET http://b.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(origin_target(&disagree, 80), None);
        let uri_only = parse("GET http://b.example:81/ HTTP/1.0\r\n\r\n");
        assert_eq!(
            origin_target(&uri_only, 80),
            Some(authority("b.example:81"))
        );
    }

    #[test]
    fn responses_are_complete_and_close() {
        let response =
            String::from_utf8(forbidden_response("example.com:443 is not allowed")).expect("utf-8");
        assert_eq!(
            response,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 31\r\nConnection: close\r\n\r\nexample.com:443 is not allowed\n"
        );
        for (bytes, status) in [
            (bad_gateway_response("refused"), "502 Bad Gateway"),
            (bad_request_response("héllo"), "400 Bad Request"),
        ] {
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut parsed = httparse::Response::new(&mut headers);
            let Ok(httparse::Status::Complete(head_len)) = parsed.parse(&bytes) else {
                panic!("{status} does not parse");
            };
            assert_eq!(
                format!(
                    "{} {}",
                    parsed.code.unwrap_or(0),
                    parsed.reason.unwrap_or("")
                ),
                status
            );
            let length = parsed
                .headers
                .iter()
                .find(|h| h.name == "Content-Length")
                .map(|h| String::from_utf8_lossy(h.value).parse::<usize>());
            assert_eq!(length, Some(Ok(bytes.len() - head_len)), "{status}");
            assert!(bytes.ends_with(b"\n"));
        }
    }
}
