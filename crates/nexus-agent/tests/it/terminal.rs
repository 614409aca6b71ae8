//! Terminal sessions against the real agent (protocol version 3): a login shell on a
//! pseudo-terminal, input, resize, re-attach with replay, exit, close, list, and the
//! refusal of terminal operations on older connections.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use nexus_agent_proto::{
    AgentClient, ClientOptions, ErrorCode, ProtoError, TermEvent, TermSize, TerminalId,
    TerminalStream,
};
use tokio::net::UnixStream;

use crate::harness::TestAgent;

/// Reads the stream until `needle` has appeared in what it delivered; returns all of it.
async fn read_until(stream: &mut TerminalStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = stream.next().await {
            match event.expect("terminal event") {
                TermEvent::Output { bytes, .. } => seen.extend_from_slice(&bytes),
                TermEvent::Exit(exit) => panic!("shell exited ({exit}) before {needle:?}"),
            }
            if String::from_utf8_lossy(&seen).contains(needle) {
                return;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(found.is_ok(), "{needle:?} never came; got {text:?}");
    text
}

async fn open(client: &AgentClient, cols: u16, rows: u16) -> TerminalId {
    client
        .term_open(TermSize { cols, rows }, BTreeMap::new())
        .await
        .expect("term_open")
        .id
}

#[tokio::test]
async fn a_shell_runs_on_a_terminal_and_follows_its_size() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let mut env = BTreeMap::new();
    env.insert("NEXUS_GREETING".to_owned(), "from-env".to_owned());
    let info = client
        .term_open(
            TermSize {
                cols: 100,
                rows: 30,
            },
            env,
        )
        .await
        .expect("term_open");
    assert!(info.alive);
    assert_eq!(
        info.size,
        TermSize {
            cols: 100,
            rows: 30
        }
    );
    let (attached, mut stream) = client.term_attach(info.id).await.expect("attach");
    assert_eq!(attached.attached, 1, "this stream is attached");

    // Arithmetic, so the answer is not the echo of what was typed.
    client
        .term_input(
            info.id,
            b"echo \"r=$((6*7)) $TERM $NEXUS_GREETING\"; tty; stty size\r",
        )
        .await
        .expect("input");
    let text = read_until(&mut stream, "30 100").await;
    assert!(text.contains("r=42 xterm-256color from-env"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "stdin is a terminal: {text:?}");

    client
        .term_resize(
            info.id,
            TermSize {
                cols: 132,
                rows: 43,
            },
        )
        .await
        .expect("resize");
    client
        .term_input(info.id, b"stty size\r")
        .await
        .expect("input");
    read_until(&mut stream, "43 132").await;
    // Absurd sizes are clamped, not refused.
    client
        .term_resize(
            info.id,
            TermSize {
                cols: 0,
                rows: 60000,
            },
        )
        .await
        .expect("resize");
    client
        .term_input(info.id, b"stty size\r")
        .await
        .expect("input");
    read_until(&mut stream, "1000 1").await;

    client
        .term_input(info.id, b"exit 7\r")
        .await
        .expect("input");
    let exit = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await.expect("an item").expect("event") {
                TermEvent::Exit(exit) => return exit,
                TermEvent::Output { .. } => {}
            }
        }
    })
    .await
    .expect("the shell exits");
    assert_eq!(exit.exit_code, Some(7));
    let listed = client.term_list().await.expect("list");
    let ended = listed
        .iter()
        .find(|t| t.id == info.id)
        .expect("still listed");
    assert!(!ended.alive);
    assert_eq!(ended.exit, Some(exit));
    let err = client.term_input(info.id, b"x").await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::NotRunning), "{err}");
    assert_eq!(
        client
            .term_close(info.id, Duration::from_millis(100))
            .await
            .expect("close"),
        exit
    );
    assert!(client.term_list().await.expect("list").is_empty());
}

#[tokio::test]
async fn a_session_outlives_its_connection_and_replays_on_reattach() {
    let agent = TestAgent::start();
    let first = agent.connect().await;
    let id = open(&first, 80, 24).await;
    let (_, mut stream) = first.term_attach(id).await.expect("attach");
    first
        .term_input(id, b"echo one-$((1+1))\r")
        .await
        .expect("input");
    read_until(&mut stream, "one-2").await;
    drop(stream);
    drop(first);

    // While nobody is attached the shell keeps running and printing.
    let second = agent.connect().await;
    second
        .term_input(id, b"seq 1 20000 | sed 's/^/n/'; echo two-$((2+2))\r")
        .await
        .expect("input");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed = second.term_list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attached, 0);
    assert!(listed[0].alive);

    let (_, mut stream) = second.term_attach(id).await.expect("re-attach");
    let text = read_until(&mut stream, "two-4").await;
    assert!(text.contains("n20000"), "{text:?}");
    assert!(
        !text.contains("one-2"),
        "older output than the window is gone"
    );

    // A second session at the same time is independent.
    let other = open(&second, 80, 24).await;
    assert_ne!(other, id);
    let (_, mut other_stream) = second.term_attach(other).await.expect("attach");
    second
        .term_input(other, b"echo other-$((3+3))\r")
        .await
        .expect("input");
    read_until(&mut other_stream, "other-6").await;

    // Closing ends the shell and what runs in it.
    second.term_input(id, b"sleep 1000\r").await.expect("input");
    let exit = second
        .term_close(id, Duration::from_millis(500))
        .await
        .expect("close");
    assert!(exit.signal.is_some() || exit.exit_code.is_some(), "{exit}");
    let ids: Vec<TerminalId> = second
        .term_list()
        .await
        .expect("list")
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec![other]);
    let err = second.term_attach(id).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::UnknownTerminal), "{err}");
    agent.shutdown().await;
}

#[tokio::test]
async fn a_stalled_reader_holds_the_shell_back_instead_of_buffering() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let id = open(&client, 80, 24).await;
    let (_, mut stream) = client.term_attach(id).await.expect("attach");
    client.term_input(id, b"yes\r").await.expect("input");
    // Never read: the agent may send one window and keep one ring, no more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    };
    let before = rss(agent.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss(agent.pid());
    assert!(
        after < before + 4096,
        "agent RSS grew from {before} kB to {after} kB with a stalled reader"
    );
    // Reading again gets the output flowing, and Ctrl-C stops `yes`.
    read_until(&mut stream, "y\r\ny").await;
    client.term_input(id, b"\x03").await.expect("ctrl-c");
    client
        .term_input(id, b"echo done-$((5+5))\r")
        .await
        .expect("input");
    read_until(&mut stream, "done-10").await;
    agent.shutdown().await;
}

#[tokio::test]
async fn terminal_operations_need_protocol_version_3() {
    let agent = TestAgent::start();
    let stream = UnixStream::connect(&agent.socket).await.expect("connect");
    let options = ClientOptions {
        versions: 1..=2,
        ..ClientOptions::default()
    };
    let (client, info) = AgentClient::handshake_with(stream, options)
        .await
        .expect("handshake");
    assert_eq!(info.protocol_version, 2);
    let err = client.term_list().await.unwrap_err();
    assert!(
        matches!(
            err,
            ProtoError::Unsupported {
                needed: 3,
                negotiated: 2,
                ..
            }
        ),
        "{err:?}"
    );
    client.ping().await.expect("older operations still work");
}
