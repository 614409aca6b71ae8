//! The handshake: HELLO (client's version range) → WELCOME (agent's pick and facts about
//! itself) or ERROR (no common version, named on both sides). Both halves live here so the
//! agent and the client cannot drift apart.

use std::ops::RangeInclusive;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use crate::{
    AgentInfo, CONTROL_CHANNEL, ConnectionError, ErrorCode, Frame, FrameCodec, FrameType, Hello,
    MAGIC, ProtoError,
};

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 4;

/// The oldest protocol version this build speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The first version with the file API (`fs_*` operations, FILE_DATA and UPLOAD frames).
pub const FS_PROTOCOL_VERSION: u16 = 2;

/// The first version with terminal sessions (the `term_*` operations, TERM_INPUT frames).
pub const TERMINAL_PROTOCOL_VERSION: u16 = 3;

/// The first version that answers `fs_stat` with a PACKED frame ([`crate::packed`]).
pub const PACKED_PROTOCOL_VERSION: u16 = 4;

/// The versions this build speaks.
pub const SUPPORTED_VERSIONS: RangeInclusive<u16> = MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION;

/// How long either side waits for the other's handshake frame.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The version an agent speaking `agent` picks for `hello`: the newest both speak.
pub fn negotiate(hello: &Hello, agent: &RangeInclusive<u16>) -> Result<u16, ConnectionError> {
    let low = hello.min_version.max(*agent.start());
    let high = hello.max_version.min(*agent.end());
    if low <= high {
        return Ok(high);
    }
    Err(ConnectionError {
        code: ErrorCode::VersionMismatch,
        message: format!(
            "protocol version mismatch: client supports {}..={}, agent supports {}..={}",
            hello.min_version,
            hello.max_version,
            agent.start(),
            agent.end()
        ),
        agent_min: Some(*agent.start()),
        agent_max: Some(*agent.end()),
    })
}

/// The client half: sends HELLO for `versions`, returns the agent's WELCOME.
pub async fn client_handshake<S>(
    framed: &mut Framed<S, FrameCodec>,
    versions: RangeInclusive<u16>,
    client: &str,
) -> Result<AgentInfo, ProtoError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = Hello {
        magic: MAGIC.to_owned(),
        min_version: *versions.start(),
        max_version: *versions.end(),
        client: client.to_owned(),
    };
    let exchange = async {
        framed
            .send(Frame::json(FrameType::Hello, CONTROL_CHANNEL, &hello))
            .await?;
        framed.next().await.ok_or(ProtoError::Closed)?
    };
    let frame = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| ProtoError::Timeout(HANDSHAKE_TIMEOUT))??;
    match frame.kind {
        FrameType::Welcome => {
            let info: AgentInfo = frame.parse()?;
            if !versions.contains(&info.protocol_version) {
                return Err(ProtoError::Protocol(format!(
                    "agent picked protocol version {} outside the offered {}..={}",
                    info.protocol_version,
                    versions.start(),
                    versions.end()
                )));
            }
            Ok(info)
        }
        FrameType::Error => {
            let error: ConnectionError = frame.parse()?;
            match (error.code, error.agent_min, error.agent_max) {
                (ErrorCode::VersionMismatch, Some(agent_min), Some(agent_max)) => {
                    Err(ProtoError::VersionMismatch {
                        client_min: *versions.start(),
                        client_max: *versions.end(),
                        agent_min,
                        agent_max,
                    })
                }
                _ => Err(ProtoError::Fatal {
                    code: error.code,
                    message: error.message,
                }),
            }
        }
        other => Err(ProtoError::Protocol(format!(
            "expected WELCOME, got a {other:?} frame"
        ))),
    }
}

/// The agent half: reads HELLO, picks a version from `versions`, answers WELCOME with
/// `info(version)`, or ERROR (and returns the error) when the client is not acceptable.
pub async fn accept_handshake<S, F>(
    framed: &mut Framed<S, FrameCodec>,
    versions: RangeInclusive<u16>,
    info: F,
) -> Result<(Hello, AgentInfo), ProtoError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(u16) -> AgentInfo,
{
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next())
        .await
        .map_err(|_| ProtoError::Timeout(HANDSHAKE_TIMEOUT))?
        .ok_or(ProtoError::Closed)?;
    let hello = match first {
        Ok(frame) if frame.kind == FrameType::Hello => frame.parse::<Hello>(),
        Ok(frame) => Err(ProtoError::Protocol(format!(
            "expected HELLO, got a {:?} frame",
            frame.kind
        ))),
        Err(err) => Err(err),
    }
    .and_then(|hello| {
        if hello.magic == MAGIC {
            Ok(hello)
        } else {
            Err(ProtoError::Protocol(format!(
                "HELLO magic {:?} is not {MAGIC:?}",
                hello.magic
            )))
        }
    });
    let hello = match hello {
        Ok(hello) => hello,
        Err(err) => {
            refuse(framed, ErrorCode::ProtocolError, err.to_string()).await;
            return Err(err);
        }
    };
    match negotiate(&hello, &versions) {
        Ok(version) => {
            let info = info(version);
            framed
                .send(Frame::json(FrameType::Welcome, CONTROL_CHANNEL, &info))
                .await?;
            Ok((hello, info))
        }
        Err(error) => {
            // Best effort: the client may already be gone.
            let send = framed.send(Frame::json(FrameType::Error, CONTROL_CHANNEL, &error));
            let _ = tokio::time::timeout(Duration::from_secs(1), send).await;
            Err(ProtoError::VersionMismatch {
                client_min: hello.min_version,
                client_max: hello.max_version,
                agent_min: *versions.start(),
                agent_max: *versions.end(),
            })
        }
    }
}

/// Sends an ERROR frame to the peer, best effort (it may be gone or not reading); the
/// caller closes the connection next.
pub async fn refuse<S>(framed: &mut Framed<S, FrameCodec>, code: ErrorCode, message: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let error = ConnectionError {
        code,
        message,
        agent_min: None,
        agent_max: None,
    };
    let send = framed.send(Frame::json(FrameType::Error, CONTROL_CHANNEL, &error));
    let _ = tokio::time::timeout(Duration::from_secs(1), send).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: u16) -> AgentInfo {
        AgentInfo {
            protocol_version: version,
            agent_version: "test".into(),
            pid: 1,
            uid: 1000,
            pid1: true,
            subreaper: false,
            dumpable: false,
            window_bytes: 1024,
        }
    }

    fn hello(min: u16, max: u16) -> Hello {
        Hello {
            magic: MAGIC.into(),
            min_version: min,
            max_version: max,
            client: "test".into(),
        }
    }

    #[test]
    fn negotiation_picks_the_newest_common_version() {
        assert_eq!(negotiate(&hello(1, 5), &(2..=3)), Ok(3));
        assert_eq!(negotiate(&hello(3, 3), &(1..=3)), Ok(3));
        assert_eq!(negotiate(&hello(1, 1), &(1..=4)), Ok(1));
        let err = negotiate(&hello(5, 6), &(1..=2)).unwrap_err();
        assert_eq!(err.code, ErrorCode::VersionMismatch);
        assert_eq!(
            err.message,
            "protocol version mismatch: client supports 5..=6, agent supports 1..=2"
        );
    }

    async fn pair(
        client_versions: RangeInclusive<u16>,
        agent_versions: RangeInclusive<u16>,
    ) -> (
        Result<AgentInfo, ProtoError>,
        Result<(Hello, AgentInfo), ProtoError>,
    ) {
        let (a, b) = tokio::io::duplex(4096);
        let mut client = Framed::new(a, FrameCodec::new());
        let mut agent = Framed::new(b, FrameCodec::new());
        tokio::join!(
            client_handshake(&mut client, client_versions, "test-client"),
            accept_handshake(&mut agent, agent_versions, info)
        )
    }

    #[tokio::test]
    async fn handshake_agrees_on_a_version() {
        let (client, agent) = pair(1..=3, 1..=2).await;
        assert_eq!(client.unwrap().protocol_version, 2);
        let (hello, info) = agent.unwrap();
        assert_eq!(hello.client, "test-client");
        assert_eq!(info.protocol_version, 2);
    }

    #[tokio::test]
    async fn version_mismatch_names_both_ranges_on_both_sides() {
        let (client, agent) = pair(7..=9, 1..=2).await;
        let client = client.unwrap_err();
        assert!(
            matches!(
                client,
                ProtoError::VersionMismatch {
                    client_min: 7,
                    client_max: 9,
                    agent_min: 1,
                    agent_max: 2
                }
            ),
            "{client:?}"
        );
        assert_eq!(
            client.to_string(),
            "protocol version mismatch: client supports 7..=9, agent supports 1..=2"
        );
        assert_eq!(agent.unwrap_err().to_string(), client.to_string());
    }

    #[tokio::test]
    async fn agent_refuses_a_first_frame_that_is_not_hello() {
        let (a, b) = tokio::io::duplex(4096);
        let mut client = Framed::new(a, FrameCodec::new());
        let mut agent = Framed::new(b, FrameCodec::new());
        client
            .send(Frame::json(FrameType::Request, 1, &crate::Request::Ping))
            .await
            .unwrap();
        let err = accept_handshake(&mut agent, 1..=1, info).await.unwrap_err();
        assert!(matches!(err, ProtoError::Protocol(_)), "{err}");
        let reply = client.next().await.unwrap().unwrap();
        assert_eq!(reply.kind, FrameType::Error);
        let error: ConnectionError = reply.parse().unwrap();
        assert_eq!(error.code, ErrorCode::ProtocolError);
        assert!(
            error.message.contains("expected HELLO"),
            "{}",
            error.message
        );
    }
}
