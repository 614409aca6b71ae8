//! Pure protocol parsing for the egress proxy: the first bytes of a TLS connection, an
//! HTTP/1 request head, and the server side of a SOCKS5 handshake.
//!
//! Nothing here opens a connection or consults the policy: these functions only say where
//! a client wants to go, so that the proxy can ask the policy and act.

pub mod http;
pub mod socks5;
pub mod tls;

pub use http::{
    CONNECT_ESTABLISHED, MAX_HEAD, ProxyRequest, RequestHead, bad_gateway_response,
    bad_request_response, forbidden_response, origin_target, proxy_target, request_head,
};
pub use socks5::{Reply, Socks5Error};
pub use tls::{MAX_CLIENT_HELLO, client_hello_sni};

use crate::target::HostError;

/// What sniffing the first bytes of a stream found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff<T> {
    /// The bytes so far are a valid beginning: read more and ask again.
    NeedMore,
    /// The bytes are not this protocol, are malformed, or exceed a size cap.
    NotThis,
    /// The bytes are this protocol, and this is what they say.
    Found(T),
}

impl<T> Sniff<T> {
    /// Applies `f` to a found value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Sniff<U> {
        match self {
            Self::NeedMore => Sniff::NeedMore,
            Self::NotThis => Sniff::NotThis,
            Self::Found(value) => Sniff::Found(f(value)),
        }
    }
}

/// Why a well-formed request cannot be served by the proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A forward proxy needs `scheme://host/path`; this is origin-form (`/path`) or `*`.
    #[error(
        "request target {target:?} is not in absolute form (http://host/path), which a forward proxy needs"
    )]
    NotAbsoluteForm {
        /// The request target as received.
        target: String,
    },
    /// Only `http://` is forwarded; TLS goes through `CONNECT`.
    #[error("scheme {scheme:?} cannot be forwarded: only http:// can (https goes through CONNECT)")]
    UnsupportedScheme {
        /// The scheme, lowercased.
        scheme: String,
    },
    /// The authority has a `user@` part. The text is left out so that it is never logged.
    #[error("request target carries user credentials before the host, which are not accepted")]
    Credentials,
    /// The authority (host and port) does not parse.
    #[error("bad host or port {authority:?} in request target")]
    BadAuthority {
        /// The authority as received.
        authority: String,
        /// What is wrong with it.
        #[source]
        source: HostError,
    },
}
