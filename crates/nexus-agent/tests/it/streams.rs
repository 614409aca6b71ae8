//! Output streaming: live delivery, backpressure with bounded agent memory, re-attaching
//! after a reconnect, and the kept window.

use std::time::{Duration, Instant};

use futures::StreamExt;
use nexus_agent_proto::{OutputEvent, OutputOffsets, ProcessState, StreamKind};

use crate::harness::{TestAgent, collect, proc_status, sh};

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let value = proc_status(pid, "VmRSS").expect("the agent is alive");
    value
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .expect("VmRSS is a number of kB")
}

#[tokio::test]
async fn output_streams_live_before_exit() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let handle = client
        .exec(sh("echo first; sleep 2; echo second"))
        .await
        .unwrap();
    let mut stream = handle.output(OutputOffsets::START).await.unwrap();
    let started = Instant::now();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(
        first,
        OutputEvent::Stdout {
            offset: 0,
            bytes: "first\n".into()
        }
    );
    assert!(started.elapsed() < Duration::from_millis(1500), "not live");
    let rest = collect(stream, (6, 0)).await;
    assert_eq!(rest.stdout, b"second\n");
}

#[tokio::test]
async fn slow_reader_holds_the_process_back_and_agent_memory_stays_bounded() {
    const TOTAL: u64 = 100_000_000;
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let baseline = rss_kib(agent.pid());
    let mut request = sh(&format!("head -c {TOTAL} /dev/zero; echo done >&2"));
    request.max_output_bytes = 2 * TOTAL;
    let (handle, mut stream) = client.exec_attached(request).await.unwrap();

    // Nobody reads: the process must be held back, not buffered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let peak = rss_kib(agent.pid());
    let listed = client.list().await.unwrap();
    assert_eq!(
        listed[0].state,
        ProcessState::Running,
        "the writer should be blocked on a full pipe"
    );
    assert!(
        peak < 64 * 1024,
        "agent RSS {peak} KiB (baseline {baseline} KiB) while 100 MB wait unread"
    );

    // Now read it all: nothing lost, nothing skipped.
    let mut stdout = 0u64;
    let mut zeros = true;
    let exit = loop {
        match stream.next().await.unwrap().unwrap() {
            OutputEvent::Stdout { offset, bytes } => {
                assert_eq!(offset, stdout);
                zeros &= bytes.iter().all(|b| *b == 0);
                stdout += bytes.len() as u64;
            }
            OutputEvent::Stderr { bytes, .. } => assert_eq!(&bytes[..], b"done\n"),
            OutputEvent::Skipped { .. } => panic!("an attached reader must never skip"),
            OutputEvent::Exit(exit) => break exit,
        }
    };
    assert_eq!(stdout, TOTAL);
    assert!(zeros);
    assert_eq!(exit.exit_code, Some(0));
    assert_eq!(exit.stdout_bytes, TOTAL);
    let after = rss_kib(agent.pid());
    assert!(after < 64 * 1024, "agent RSS {after} KiB after streaming");
    handle.forget().await.unwrap();
}

#[tokio::test]
async fn reattach_after_dropping_the_connection_loses_nothing() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let handle = client
        .exec(sh("for i in 1 2 3; do echo $i; sleep 0.2; done"))
        .await
        .unwrap();
    let id = handle.id;
    drop(handle);
    drop(client);

    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = agent.connect().await;
    let out = collect(
        client.output(id, OutputOffsets::START).await.unwrap(),
        (0, 0),
    )
    .await;
    assert_eq!(out.stdout, b"1\n2\n3\n");
    assert!(out.skipped.is_empty());
    assert_eq!(out.exit.unwrap().exit_code, Some(0));

    // And from an offset: only the rest, then the exit again.
    let from = OutputOffsets {
        stdout: 2,
        stderr: 0,
    };
    let out = collect(client.output(id, from).await.unwrap(), (2, 0)).await;
    assert_eq!(out.stdout, b"2\n3\n");
}

#[tokio::test]
async fn dropping_a_stream_midway_releases_the_process() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let mut request = sh("head -c 20000000 /dev/zero");
    request.max_output_bytes = 100_000_000;
    let (handle, mut stream) = client.exec_attached(request).await.unwrap();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    // With the reader gone the agent drains the pipe itself, so the process finishes.
    let exit = tokio::time::timeout(Duration::from_secs(20), handle.wait())
        .await
        .expect("the process was still held back after its reader left")
        .unwrap();
    assert_eq!(exit.exit_code, Some(0));
    assert_eq!(exit.stdout_bytes, 20_000_000);
}

#[tokio::test]
async fn unread_output_beyond_the_window_is_reported_as_skipped() {
    let agent = TestAgent::start_with(&["--window-bytes", "1000"]);
    let client = agent.connect().await;
    let mut request = sh("head -c 5000 /dev/zero; printf tail");
    request.max_output_bytes = 1_000_000;
    let handle = client.exec(request).await.unwrap();
    let exit = handle.wait().await.unwrap();
    assert_eq!(exit.stdout_bytes, 5004);
    let out = collect(handle.output(OutputOffsets::START).await.unwrap(), (0, 0)).await;
    assert_eq!(
        out.skipped,
        [OutputEvent::Skipped {
            stream: StreamKind::Stdout,
            offset: 0,
            bytes: 4004
        }]
    );
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout.ends_with(b"tail"));

    let err = client
        .output(
            handle.id,
            OutputOffsets {
                stdout: 9999,
                stderr: 0,
            },
        )
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.remote_code(),
        Some(nexus_agent_proto::ErrorCode::BadRequest),
        "{err}"
    );
}
