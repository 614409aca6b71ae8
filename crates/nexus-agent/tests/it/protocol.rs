//! The protocol against the real agent: handshake, version mismatch, malformed frames,
//! many operations on one connection, many connections.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nexus_agent_proto::{
    AgentClient, ClientOptions, ConnectionError, ErrorCode, Frame, FrameCodec, FrameType,
    PROTOCOL_VERSION, ProtoError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use crate::harness::{TestAgent, req, sh};

#[tokio::test]
async fn handshake_reports_version_and_agent_facts() {
    let agent = TestAgent::start();
    let (client, info) = agent.connect_info().await;
    assert_eq!(info.protocol_version, PROTOCOL_VERSION);
    assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.pid, agent.pid());
    assert!(!info.pid1, "a child of the test is not PID 1");
    assert!(
        info.subreaper,
        "when not PID 1 the agent must be a child subreaper"
    );
    assert_eq!(info.window_bytes, 1024 * 1024);
    let pong = client.ping().await.unwrap();
    assert_eq!(pong.pid, agent.pid());
    assert_eq!(pong.running, 0);
}

#[tokio::test]
async fn listen_path_works_too() {
    let agent = TestAgent::start_on_path();
    let client = agent.connect().await;
    let done = client.run(req(&["echo", "path"])).await.unwrap();
    assert_eq!(done.stdout, b"path\n");
}

#[tokio::test]
async fn version_mismatch_is_a_clear_error_naming_both_ranges() {
    let agent = TestAgent::start();
    let stream = UnixStream::connect(&agent.socket).await.unwrap();
    let options = ClientOptions {
        versions: 90..=99,
        ..ClientOptions::default()
    };
    let err = AgentClient::handshake_with(stream, options)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "protocol version mismatch: client supports 90..=99, agent supports 1..={PROTOCOL_VERSION}"
        )
    );
    // The agent is unharmed.
    agent.connect().await.ping().await.unwrap();
}

#[tokio::test]
async fn unknown_frame_type_gets_an_error_frame_and_the_connection_closes() {
    let agent = TestAgent::start();
    let (client, _) = agent.connect_info().await;
    drop(client);
    let stream = UnixStream::connect(&agent.socket).await.unwrap();
    let mut framed = Framed::new(stream, FrameCodec::new());
    framed
        .send(Frame::json(
            FrameType::Hello,
            0,
            &nexus_agent_proto::Hello {
                magic: nexus_agent_proto::MAGIC.into(),
                min_version: 1,
                max_version: PROTOCOL_VERSION,
                client: "raw".into(),
            },
        ))
        .await
        .unwrap();
    let welcome = framed.next().await.unwrap().unwrap();
    assert_eq!(welcome.kind, FrameType::Welcome);
    let mut stream = framed.into_inner();
    // length 5, type 0x7e, channel 1.
    stream
        .write_all(&[0, 0, 0, 5, 0x7e, 0, 0, 0, 1])
        .await
        .unwrap();
    let mut framed = Framed::new(stream, FrameCodec::new());
    let reply = framed.next().await.unwrap().unwrap();
    assert_eq!(reply.kind, FrameType::Error);
    let error: ConnectionError = reply.parse().unwrap();
    assert_eq!(error.code, ErrorCode::ProtocolError);
    assert_eq!(error.message, "unknown frame type 0x7e");
    let mut rest = Vec::new();
    let mut stream = framed.into_inner();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the agent closes the connection")
        .unwrap();
    assert!(rest.is_empty());
    agent.connect().await.ping().await.unwrap();
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() {
    let agent = TestAgent::start();
    let survivor = agent.connect().await;
    let mut stream = UnixStream::connect(&agent.socket).await.unwrap();
    stream.write_all(&[0x7f, 0, 0, 0, 0x01]).await.unwrap();
    let mut framed = Framed::new(stream, FrameCodec::new());
    let reply = tokio::time::timeout(Duration::from_secs(5), framed.next())
        .await
        .unwrap();
    if let Some(Ok(frame)) = reply {
        assert_eq!(frame.kind, FrameType::Error);
    }
    survivor.ping().await.unwrap();
}

#[tokio::test]
async fn malformed_request_is_refused_on_its_channel_only() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    // An unknown process is a per-operation error; the connection stays usable.
    let err = client
        .wait(nexus_agent_proto::ProcessId(424242))
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::UnknownProcess), "{err}");
    let err = client.exec(req(&[])).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::BadRequest), "{err}");
    let err = client
        .exec(req(&["/definitely/not/a/program"]))
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::SpawnFailed), "{err}");
    assert!(
        err.to_string().contains("/definitely/not/a/program"),
        "{err}"
    );
    client.ping().await.unwrap();
}

#[tokio::test]
async fn many_connections_share_the_processes() {
    let agent = TestAgent::start();
    let a = agent.connect().await;
    let b = agent.connect().await;
    let handle = a.exec(sh("echo shared")).await.unwrap();
    let exit = b.wait(handle.id).await.unwrap();
    assert_eq!(exit.exit_code, Some(0));
    let listed = b.list().await.unwrap();
    assert!(listed.iter().any(|p| p.id == handle.id));
}

#[tokio::test]
async fn closed_connection_fails_calls_cleanly() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    drop(agent);
    let err = tokio::time::timeout(Duration::from_secs(5), client.ping())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, ProtoError::Closed | ProtoError::Io(_)),
        "{err:?}"
    );
    assert!(client.is_closed());
}
