//! Running processes: output, exit statuses, environment, timeouts, caps, stdin, signals,
//! concurrency.

use std::time::{Duration, Instant};

use nexus_agent_proto::{ErrorCode, ProcessState};

use crate::harness::{TestAgent, collect, eventually, req, sh};

#[tokio::test]
async fn echo_hi() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let done = client.run(req(&["echo", "hi"])).await.unwrap();
    assert_eq!(done.stdout, b"hi\n");
    assert_eq!(done.stderr, b"");
    assert_eq!(done.exit.exit_code, Some(0));
    assert_eq!(done.exit.signal, None);
    assert!(!done.exit.timed_out && !done.exit.output_truncated);
    assert_eq!(done.exit.stdout_bytes, 3);
    // run() forgets its process.
    assert!(client.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn output_is_binary_safe() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("random");
    let mut request = sh(&format!(
        "head -c 1000000 /dev/urandom | tee {}",
        file.display()
    ));
    request.max_output_bytes = 2_000_000;
    let done = client.run(request).await.unwrap();
    assert_eq!(done.exit.exit_code, Some(0));
    let expected = std::fs::read(&file).unwrap();
    assert_eq!(expected.len(), 1_000_000);
    assert!(
        done.stdout == expected,
        "stdout differs from the file byte for byte"
    );

    let done = client
        .run(req(&["printf", "a\\000b\\377\\376\\n"]))
        .await
        .unwrap();
    assert_eq!(done.stdout, b"a\0b\xff\xfe\n");
}

#[tokio::test]
async fn stderr_is_separate_from_stdout() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let done = client
        .run(sh("echo out; echo err >&2; echo out2; echo err2 >&2"))
        .await
        .unwrap();
    assert_eq!(done.stdout, b"out\nout2\n");
    assert_eq!(done.stderr, b"err\nerr2\n");
    assert_eq!(done.exit.stderr_bytes, 9);
}

#[tokio::test]
async fn exit_code_and_signal() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let done = client.run(sh("exit 42")).await.unwrap();
    assert_eq!((done.exit.exit_code, done.exit.signal), (Some(42), None));
    let done = client.run(sh("kill -9 $$")).await.unwrap();
    assert_eq!((done.exit.exit_code, done.exit.signal), (None, Some(9)));
}

#[tokio::test]
async fn environment_is_exactly_the_defaults_plus_the_request() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let mut request = req(&["env"]);
    request.env.insert("FOO".into(), "bar baz".into());
    request.env.insert("HOME".into(), "/home/x".into());
    let done = client.run(request).await.unwrap();
    let mut lines: Vec<String> = String::from_utf8(done.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "FOO=bar baz",
            "HOME=/home/x",
            "LANG=C.UTF-8",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ],
        "nothing of the agent's own environment (NEXUS_AGENT_LOG) leaks"
    );
    let done = client.run(req(&["sh", "-c", "echo $HOME"])).await.unwrap();
    assert_eq!(done.stdout, b"/workspace\n");
}

#[tokio::test]
async fn cwd_is_honoured_and_a_missing_one_refused() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let mut request = req(&["pwd"]);
    request.cwd = Some(dir.path().display().to_string());
    let done = client.run(request).await.unwrap();
    assert_eq!(
        done.stdout,
        format!("{}\n", dir.path().display()).as_bytes()
    );
    let mut request = req(&["pwd"]);
    request.cwd = Some("/no/such/dir".into());
    let err = client.exec(request).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::SpawnFailed), "{err}");
}

#[tokio::test]
async fn timeout_kills_the_whole_group_including_grandchildren() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let mut request = sh("sleep 100 & echo $!; sleep 100");
    request.timeout_ms = Some(300);
    let started = Instant::now();
    let done = client.run(request).await.unwrap();
    let elapsed = started.elapsed();
    assert!(done.exit.timed_out);
    assert_eq!(done.exit.signal, Some(9));
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(done.exit.duration_ms >= 300, "{}", done.exit.duration_ms);
    let grandchild: u32 = String::from_utf8(done.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = eventually(Duration::from_secs(3), || {
        crate::harness::proc_status(grandchild, "State").is_none_or(|s| s.starts_with('Z'))
    })
    .await;
    assert!(
        gone,
        "the background sleep {grandchild} survived the timeout"
    );
}

#[tokio::test]
async fn output_cap_truncates_without_killing() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("finished");
    let mut request = sh(&format!(
        "head -c 300000 /dev/zero; echo tail >&2; touch {}",
        marker.display()
    ));
    request.max_output_bytes = 1000;
    let done = client.run(request).await.unwrap();
    assert!(done.exit.output_truncated);
    assert_eq!(done.exit.exit_code, Some(0), "the process is not killed");
    assert_eq!(done.stdout.len(), 1000);
    assert!(done.stderr.is_empty(), "stderr came after the cap");
    assert_eq!(
        done.exit.stdout_bytes, 300_000,
        "written bytes are still counted"
    );
    assert!(marker.exists(), "the process ran to its end");

    let done = client.run(req(&["echo", "small"])).await.unwrap();
    assert!(!done.exit.output_truncated);
}

#[tokio::test]
async fn stdin_write_and_close() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let mut request = req(&["cat"]);
    request.stdin = true;
    let handle = client.exec(request).await.unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    handle.write_stdin(&payload).await.unwrap();
    handle.write_stdin(b"\0end").await.unwrap();
    handle.close_stdin().await.unwrap();
    let out = collect(
        handle
            .output(nexus_agent_proto::OutputOffsets::START)
            .await
            .unwrap(),
        (0, 0),
    )
    .await;
    let mut expected = payload;
    expected.extend_from_slice(b"\0end");
    assert!(out.stdout == expected, "cat echoed what was written");
    assert_eq!(out.exit.unwrap().exit_code, Some(0));
    let err = handle.write_stdin(b"late").await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::StdinClosed), "{err}");
}

#[tokio::test]
async fn stdin_is_dev_null_unless_asked() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let done = client.run(req(&["cat"])).await.unwrap();
    assert_eq!(done.exit.exit_code, Some(0));
    assert!(done.stdout.is_empty());
    let handle = client.exec(req(&["true"])).await.unwrap();
    let err = handle.write_stdin(b"x").await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::StdinClosed), "{err}");
}

#[tokio::test]
async fn twenty_concurrent_execs_on_one_connection() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let runs = (0..20).map(|i| {
        let client = client.clone();
        async move {
            let done = client
                .run(sh(&format!("sleep 0.2; echo {i}; exit {i}")))
                .await
                .unwrap();
            (i, done)
        }
    });
    let started = Instant::now();
    let results = futures::future::join_all(runs).await;
    for (i, done) in results {
        assert_eq!(done.stdout, format!("{i}\n").as_bytes());
        assert_eq!(done.exit.exit_code, Some(i), "status of run {i}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "runs were serialised: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn signal_list_wait_and_forget() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let handle = client.exec(req(&["sleep", "30"])).await.unwrap();
    let listed = client.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, ProcessState::Running);
    assert_eq!(listed[0].argv, ["sleep", "30"]);
    assert_eq!(listed[0].pid, handle.pid);
    let err = handle.forget().await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::StillRunning), "{err}");

    handle.signal(libc::SIGTERM).await.unwrap();
    let exit = handle.wait().await.unwrap();
    assert_eq!(
        exit.signal,
        Some(libc::SIGTERM),
        "the child got SIGTERM's default back"
    );
    let listed = client.list().await.unwrap();
    assert_eq!(listed[0].state, ProcessState::Exited);
    assert_eq!(listed[0].exit.as_ref(), Some(&exit));
    let err = handle.signal(libc::SIGTERM).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::NotRunning), "{err}");
    handle.forget().await.unwrap();
    assert!(client.list().await.unwrap().is_empty());
    let err = handle.wait().await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::UnknownProcess), "{err}");
}

#[tokio::test]
async fn terminate_all_escalates_to_sigkill() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let polite = client.exec(req(&["sleep", "30"])).await.unwrap();
    let stubborn = client
        .exec(sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"))
        .await
        .unwrap();
    let mut ready = stubborn
        .output(nexus_agent_proto::OutputOffsets::START)
        .await
        .unwrap();
    futures::StreamExt::next(&mut ready).await.unwrap().unwrap();
    drop(ready);
    let started = Instant::now();
    let report = client
        .terminate_all(Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(report.signalled, 2);
    assert_eq!(
        report.killed, 1,
        "only the process ignoring SIGTERM needed SIGKILL"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(polite.wait().await.unwrap().signal, Some(libc::SIGTERM));
    assert_eq!(stubborn.wait().await.unwrap().signal, Some(libc::SIGKILL));
    assert_eq!(client.ping().await.unwrap().running, 0);
}
