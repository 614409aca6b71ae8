//! The server side of a SOCKS5 handshake (RFC 1928), without authentication and for
//! `CONNECT` only: it reads where the client wants to go and leaves the answer to the
//! caller, who asks the policy first.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::target::{Host, HostError, Target};

/// The answer to a SOCKS5 request (RFC 1928, section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The connection is open: relay bytes from now on.
    Succeeded,
    /// `0x01`: general SOCKS server failure.
    GeneralFailure,
    /// `0x02`: connection not allowed by ruleset (the policy said no).
    NotAllowed,
    /// `0x03`
    NetworkUnreachable,
    /// `0x04`
    HostUnreachable,
    /// `0x05`
    ConnectionRefused,
    /// `0x06`
    TtlExpired,
    /// `0x07`: sent by [`accept`] for `BIND` and `UDP ASSOCIATE`.
    CommandNotSupported,
    /// `0x08`: sent by [`accept`] for an unknown address type.
    AddressTypeNotSupported,
}

impl Reply {
    /// The `REP` byte.
    pub fn code(self) -> u8 {
        match self {
            Self::Succeeded => 0x00,
            Self::GeneralFailure => 0x01,
            Self::NotAllowed => 0x02,
            Self::NetworkUnreachable => 0x03,
            Self::HostUnreachable => 0x04,
            Self::ConnectionRefused => 0x05,
            Self::TtlExpired => 0x06,
            Self::CommandNotSupported => 0x07,
            Self::AddressTypeNotSupported => 0x08,
        }
    }
}

/// Why a SOCKS5 handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum Socks5Error {
    /// Reading or writing failed, or the client closed the stream mid-handshake
    /// (`UnexpectedEof`).
    #[error("socks5 handshake i/o failed")]
    Io(#[from] io::Error),
    /// The client speaks another SOCKS version (4 for SOCKS4 and SOCKS4a).
    #[error("client speaks socks version {0}, not 5")]
    Version(u8),
    /// The client does not offer "no authentication"; it was sent `0xFF`.
    #[error("client offers no acceptable authentication method (only \"no authentication\" is)")]
    NoAcceptableMethod,
    /// `BIND` (2), `UDP ASSOCIATE` (3) or unknown; the client was sent `0x07`.
    #[error("socks5 command {0:#04x} is not supported (only connect is)")]
    UnsupportedCommand(u8),
    /// An address type other than IPv4, domain name and IPv6; the client was sent `0x08`.
    #[error("socks5 address type {0:#04x} is not supported")]
    UnsupportedAddressType(u8),
    /// The domain name is not a valid host name; the client was sent `0x04`.
    #[error("bad domain name in socks5 request")]
    BadDomain(#[source] HostError),
    /// The request names port 0; the client was sent `0x01`.
    #[error("socks5 request names port 0")]
    ZeroPort,
}

/// Runs the handshake up to the request and returns its target.
///
/// Sends the method selection (`0x00`, or `0xFF` and an error when the client does not
/// offer it) and, when the request is refused here, the failure reply. It does not send
/// the success reply: the caller checks the policy, connects, and then calls [`reply`].
/// It reads at most 255 bytes at a time whatever the client claims; bounding how long
/// it waits is the caller's job.
pub async fn accept<S>(stream: &mut S) -> Result<Target, Socks5Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    select_method(stream).await?;
    read_request(stream).await
}

/// Sends the reply to a request, with `0.0.0.0:0` as the bound address (clients of a
/// `CONNECT` have no use for it, and the real one would tell the sandbox about the host).
pub async fn reply<S>(stream: &mut S, reply: Reply) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let [version, rep, reserved, atyp] = [VERSION, reply.code(), 0, ATYP_IPV4];
    stream
        .write_all(&[version, rep, reserved, atyp, 0, 0, 0, 0, 0, 0])
        .await?;
    stream.flush().await
}

const VERSION: u8 = 5;
const METHOD_NO_AUTH: u8 = 0x00;
const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
const CMD_CONNECT: u8 = 1;
const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// Reads the greeting (`VER NMETHODS METHODS`) and answers it.
async fn select_method<S>(stream: &mut S) -> Result<(), Socks5Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let [version, count] = read_array(stream).await?;
    if version != VERSION {
        return Err(Socks5Error::Version(version));
    }
    let mut buffer = [0_u8; 255];
    let methods = buffer
        .get_mut(..usize::from(count))
        .expect("a u8 count is at most 255");
    stream.read_exact(methods).await?;
    if !methods.contains(&METHOD_NO_AUTH) {
        // The client is told, though it is refused either way.
        stream
            .write_all(&[VERSION, METHOD_NONE_ACCEPTABLE])
            .await
            .ok();
        stream.flush().await.ok();
        return Err(Socks5Error::NoAcceptableMethod);
    }
    stream.write_all(&[VERSION, METHOD_NO_AUTH]).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads the request (`VER CMD RSV ATYP DST.ADDR DST.PORT`).
async fn read_request<S>(stream: &mut S) -> Result<Target, Socks5Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // RSV is ignored, as most servers do.
    let [version, command, _, address_type] = read_array(stream).await?;
    if version != VERSION {
        return Err(Socks5Error::Version(version));
    }
    if command != CMD_CONNECT {
        return refuse(
            stream,
            Reply::CommandNotSupported,
            Socks5Error::UnsupportedCommand(command),
        )
        .await;
    }
    let host = match address_type {
        ATYP_IPV4 => Host::Ip(IpAddr::V4(Ipv4Addr::from(read_array(stream).await?))),
        ATYP_IPV6 => Host::Ip(IpAddr::V6(Ipv6Addr::from(read_array(stream).await?)).to_canonical()),
        ATYP_DOMAIN => match read_domain(stream).await? {
            Ok(host) => host,
            Err(error) => {
                return refuse(
                    stream,
                    Reply::HostUnreachable,
                    Socks5Error::BadDomain(error),
                )
                .await;
            }
        },
        other => {
            return refuse(
                stream,
                Reply::AddressTypeNotSupported,
                Socks5Error::UnsupportedAddressType(other),
            )
            .await;
        }
    };
    let port = u16::from_be_bytes(read_array(stream).await?);
    if port == 0 {
        return refuse(stream, Reply::GeneralFailure, Socks5Error::ZeroPort).await;
    }
    Ok(Target::new(host, port))
}

/// Reads a length-prefixed domain name; the outer error is I/O, the inner a bad name.
async fn read_domain<S>(stream: &mut S) -> io::Result<Result<Host, HostError>>
where
    S: AsyncRead + Unpin,
{
    let [len] = read_array(stream).await?;
    let mut buffer = [0_u8; 255];
    let name = buffer
        .get_mut(..usize::from(len))
        .expect("a u8 length is at most 255");
    stream.read_exact(name).await?;
    Ok(std::str::from_utf8(name)
        .map_err(|_| HostError("domain name is not utf-8".into()))
        .and_then(Host::parse))
}

/// Sends a failure reply, as a courtesy that may fail, and returns `error`.
async fn refuse<S, T>(stream: &mut S, failure: Reply, error: Socks5Error) -> Result<T, Socks5Error>
where
    S: AsyncWrite + Unpin,
{
    reply(stream, failure).await.ok();
    Err(error)
}

async fn read_array<S, const N: usize>(stream: &mut S) -> io::Result<[u8; N]>
where
    S: AsyncRead + Unpin,
{
    let mut bytes = [0_u8; N];
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::duplex;

    use super::*;

    const GREETING: &[u8] = &[5, 1, 0];
    const CHOSE_NO_AUTH: &[u8] = &[5, 0];

    /// Runs `accept` against a client that sends `input` and then closes its side; returns
    /// the result and every byte the server sent. A hang fails the test.
    async fn handshake(input: &[u8]) -> (Result<Target, Socks5Error>, Vec<u8>) {
        let (mut client, mut server) = duplex(1024);
        client.write_all(input).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let result = tokio::time::timeout(Duration::from_secs(5), accept(&mut server))
            .await
            .expect("accept must not hang");
        drop(server);
        let mut sent = Vec::new();
        client.read_to_end(&mut sent).await.expect("read");
        (result, sent)
    }

    fn request(address: &[u8], port: u16) -> Vec<u8> {
        [GREETING, &[5, 1, 0], address, &port.to_be_bytes()].concat()
    }

    fn domain(name: &[u8]) -> Vec<u8> {
        [
            &[ATYP_DOMAIN, u8::try_from(name.len()).expect("short")][..],
            name,
        ]
        .concat()
    }

    fn failure(code: u8) -> Vec<u8> {
        vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
    }

    #[tokio::test]
    async fn a_domain_request_gives_its_target_and_no_reply_yet() {
        let (result, sent) = handshake(&request(&domain(b"PyPI.org"), 443)).await;
        let target = result.expect("accepted");
        assert_eq!(target, Target::new(Host::Name("pypi.org".into()), 443));
        assert_eq!(sent, CHOSE_NO_AUTH, "only the method selection is sent");
    }

    #[tokio::test]
    async fn an_ipv4_request_gives_its_target() {
        let (result, _) = handshake(&request(&[ATYP_IPV4, 10, 1, 2, 3], 8080)).await;
        let target = result.expect("accepted");
        assert_eq!(target.to_string(), "10.1.2.3:8080");
    }

    #[tokio::test]
    async fn an_ipv6_request_gives_its_canonical_target() {
        let v6: Ipv6Addr = "2001:db8::7".parse().expect("ip");
        let (result, _) = handshake(&request(&[&[ATYP_IPV6][..], &v6.octets()].concat(), 22)).await;
        assert_eq!(result.expect("accepted").to_string(), "[2001:db8::7]:22");

        let mapped: Ipv6Addr = "::ffff:10.0.0.1".parse().expect("ip");
        let (result, _) =
            handshake(&request(&[&[ATYP_IPV6][..], &mapped.octets()].concat(), 22)).await;
        assert_eq!(result.expect("accepted").to_string(), "10.0.0.1:22");
    }

    #[tokio::test]
    async fn no_auth_among_several_methods_is_chosen() {
        let input = [
            &[5, 3, 2, 1, 0][..],
            &request(&[ATYP_IPV4, 1, 1, 1, 1], 53)[3..],
        ]
        .concat();
        let (result, sent) = handshake(&input).await;
        assert_eq!(result.expect("accepted").to_string(), "1.1.1.1:53");
        assert_eq!(sent, CHOSE_NO_AUTH);
    }

    #[tokio::test]
    async fn a_client_without_no_auth_is_refused() {
        // Username/password (2) and GSSAPI (1) only.
        let (result, sent) = handshake(&[5, 2, 2, 1]).await;
        assert!(
            matches!(result, Err(Socks5Error::NoAcceptableMethod)),
            "{result:?}"
        );
        assert_eq!(sent, [5, 0xFF]);
        let (result, sent) = handshake(&[5, 0]).await;
        assert!(
            matches!(result, Err(Socks5Error::NoAcceptableMethod)),
            "{result:?}"
        );
        assert_eq!(sent, [5, 0xFF], "an empty method list too");
    }

    #[tokio::test]
    async fn bind_and_udp_associate_are_refused_with_0x07() {
        for command in [2, 3, 9] {
            let input = [GREETING, &[5, command, 0, ATYP_IPV4, 1, 2, 3, 4, 0, 80]].concat();
            let (result, sent) = handshake(&input).await;
            assert!(
                matches!(result, Err(Socks5Error::UnsupportedCommand(c)) if c == command),
                "{result:?}"
            );
            assert_eq!(sent, [CHOSE_NO_AUTH, &failure(0x07)].concat());
        }
    }

    #[tokio::test]
    async fn an_unknown_address_type_is_refused_with_0x08() {
        let (result, sent) = handshake(&request(&[2, 1, 2, 3, 4], 80)).await;
        assert!(
            matches!(result, Err(Socks5Error::UnsupportedAddressType(2))),
            "{result:?}"
        );
        assert_eq!(sent, [CHOSE_NO_AUTH, &failure(0x08)].concat());
    }

    #[tokio::test]
    async fn a_bad_domain_is_refused() {
        for name in [&b"exa mple.com"[..], b"", b"a..b", b"\xff\xfe"] {
            let (result, sent) = handshake(&request(&domain(name), 80)).await;
            assert!(
                matches!(result, Err(Socks5Error::BadDomain(_))),
                "{name:?}: {result:?}"
            );
            assert_eq!(sent, [CHOSE_NO_AUTH, &failure(0x04)].concat());
        }
    }

    #[tokio::test]
    async fn port_zero_is_refused() {
        let (result, sent) = handshake(&request(&[ATYP_IPV4, 1, 2, 3, 4], 0)).await;
        assert!(matches!(result, Err(Socks5Error::ZeroPort)), "{result:?}");
        assert_eq!(sent, [CHOSE_NO_AUTH, &failure(0x01)].concat());
    }

    #[tokio::test]
    async fn a_socks4_client_is_refused_without_a_reply() {
        // SOCKS4a CONNECT to example.com:80.
        let (result, sent) =
            handshake(b"\x04\x01\x00\x50\x00\x00\x00\x01user\x00example.com\x00").await;
        assert!(matches!(result, Err(Socks5Error::Version(4))), "{result:?}");
        assert!(sent.is_empty());
        // A SOCKS4 request after a SOCKS5 greeting.
        let (result, _) = handshake(&[GREETING, &[4, 1, 0, 1]].concat()).await;
        assert!(matches!(result, Err(Socks5Error::Version(4))), "{result:?}");
    }

    #[tokio::test]
    async fn every_truncated_handshake_ends_in_an_error() {
        for whole in [
            request(&domain(b"example.com"), 443),
            request(&[ATYP_IPV4, 10, 0, 0, 1], 80),
            request(&[&[ATYP_IPV6][..], &[0; 16]].concat(), 80),
        ] {
            for len in 0..whole.len() {
                let (result, _) = handshake(&whole[..len]).await;
                match result {
                    Err(Socks5Error::Io(error)) => {
                        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "prefix {len}");
                    }
                    other => panic!("prefix of {len}: {other:?}"),
                }
            }
            assert!(handshake(&whole).await.0.is_ok());
        }
    }

    #[tokio::test]
    async fn replies_carry_their_code_and_an_empty_address() {
        let cases = [
            (Reply::Succeeded, 0),
            (Reply::GeneralFailure, 1),
            (Reply::NotAllowed, 2),
            (Reply::NetworkUnreachable, 3),
            (Reply::HostUnreachable, 4),
            (Reply::ConnectionRefused, 5),
            (Reply::TtlExpired, 6),
            (Reply::CommandNotSupported, 7),
            (Reply::AddressTypeNotSupported, 8),
        ];
        for (answer, code) in cases {
            let (mut client, mut server) = duplex(64);
            reply(&mut server, answer).await.expect("reply");
            drop(server);
            let mut sent = Vec::new();
            client.read_to_end(&mut sent).await.expect("read");
            assert_eq!(sent, failure(code), "{answer:?}");
        }
    }
}
