//! The agent as an init: reaping orphans, not leaking descriptors, not dumpable, deaf
//! to the signals sandboxed code could send it.

use std::time::Duration;

use crate::harness::{TestAgent, eventually, proc_status, req, sh, skipped};

#[tokio::test]
async fn orphans_are_reaped_by_the_agent() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    // The inner shell starts a sleep and exits at once: the sleep is orphaned and, the
    // agent being a subreaper, re-parented to it.
    let done = client
        .run(sh("sh -c 'sleep 1 >/dev/null 2>&1 & echo $!'"))
        .await
        .unwrap();
    let orphan: u32 = String::from_utf8(done.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        proc_status(orphan, "PPid").as_deref(),
        Some(agent.pid().to_string().as_str()),
        "the orphan was re-parented to the agent"
    );
    let reaped = eventually(Duration::from_secs(5), || {
        proc_status(orphan, "State").is_none()
    })
    .await;
    assert!(
        reaped,
        "orphan {orphan} is left as {:?} under the agent",
        proc_status(orphan, "State")
    );
    // Reaping orphans never steals our own children's statuses.
    let done = client.run(sh("exit 3")).await.unwrap();
    assert_eq!(done.exit.exit_code, Some(3));
}

#[tokio::test]
async fn children_inherit_no_descriptor_of_the_agent() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    // More sockets open in the agent while the command runs.
    let _other = agent.connect().await;
    let mut request = req(&["ls", "/proc/self/fd"]);
    request.stdin = true;
    let done = client.run(request).await.unwrap();
    // 0-2 are the child's own pipes, 3 is the directory ls is reading.
    assert_eq!(String::from_utf8(done.stdout).unwrap(), "0\n1\n2\n3\n");
    let done = client
        .run(req(&["readlink", "/proc/self/fd/0", "/proc/self/fd/1"]))
        .await
        .unwrap();
    let links = String::from_utf8(done.stdout).unwrap();
    assert!(links.starts_with("/dev/null\npipe:"), "{links}");
}

#[tokio::test]
async fn agent_is_not_dumpable() {
    let agent = TestAgent::start();
    let (client, info) = agent.connect_info().await;
    assert!(!info.dumpable, "PR_SET_DUMPABLE 0 was not applied");
    assert!(!client.ping().await.unwrap().dumpable);
}

#[tokio::test]
async fn agent_ignores_termination_signals() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.pid()).unwrap());
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        nix::sys::signal::kill(pid, signal).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.ping().await.unwrap();
    // And from a process it runs, too.
    let done = client
        .run(sh(&format!("kill -TERM {} && echo sent", agent.pid())))
        .await
        .unwrap();
    assert_eq!(done.stdout, b"sent\n");
    client.ping().await.unwrap();
}

#[tokio::test]
async fn processes_run_in_their_own_session_and_group() {
    let agent = TestAgent::start();
    let client = agent.connect().await;
    let handle = client.exec(req(&["sleep", "5"])).await.unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", handle.pid)).unwrap();
    // Fields after the command: state ppid pgrp session.
    let after = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    assert_eq!(fields[1], agent.pid().to_string(), "parent is the agent");
    assert_eq!(fields[2], handle.pid.to_string(), "own process group");
    assert_eq!(fields[3], handle.pid.to_string(), "own session");
    agent.shutdown().await;
}

#[tokio::test]
async fn as_pid1_it_reaps_orphans_and_survives_kill_from_inside() {
    let Some(agent) = TestAgent::start_as_pid1() else {
        skipped(
            "as_pid1_it_reaps_orphans_and_survives_kill_from_inside",
            "unshare --pid --fork --mount-proc does not work here",
        );
        return;
    };
    let (client, info) = agent.connect_info().await;
    assert!(info.pid1 && info.pid == 1, "{info:?}");
    assert!(!info.dumpable);

    // An orphan is re-parented to PID 1, the agent, which must reap it.
    let done = client
        .run(sh("sh -c 'sleep 0.2 >/dev/null 2>&1 &'; sleep 1; \
                 grep -l '^State:.*Z' /proc/[0-9]*/status; true"))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&done.stdout), "", "zombies left");

    // Signals to PID 1 from inside the namespace do nothing.
    let done = client
        .run(sh("kill -KILL 1; kill -TERM 1; kill -INT 1; echo tried"))
        .await
        .unwrap();
    assert_eq!(done.stdout, b"tried\n");
    client.ping().await.unwrap();

    // kill -9 -1 kills everything else in the namespace, but not the agent.
    let victim = client.exec(req(&["sleep", "30"])).await.unwrap();
    client.run(sh("kill -9 -1; true")).await.unwrap();
    assert_eq!(victim.wait().await.unwrap().signal, Some(libc::SIGKILL));
    client.ping().await.unwrap();
    let done = client.run(req(&["echo", "still here"])).await.unwrap();
    assert_eq!(done.stdout, b"still here\n");
}
