//! Start, stop and restart: signals, an existing database, refusals at start.

use nix::sys::signal::Signal;

use crate::harness::{Daemon, Dirs, run_to_exit};

#[test]
fn sigterm_shuts_down_gracefully() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let pid_file = dirs.path("run").join("nexus").join("nexusd.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file").trim(),
        daemon.pid().to_string()
    );
    let logs = daemon.stop();
    assert!(
        logs.contains("shutdown requested") && logs.contains("SIGTERM"),
        "{logs}"
    );
    assert!(logs.contains("shutdown complete"), "{logs}");
    assert!(!pid_file.exists(), "the pid file outlived the daemon");
}

#[test]
fn sigint_shuts_down_gracefully() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    daemon.signal(Signal::SIGINT);
    let (status, logs) = daemon.wait();
    assert!(status.success(), "{status}: {logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
}

#[test]
fn a_restart_keeps_the_existing_database() {
    let dirs = Dirs::new();
    Daemon::start(&dirs).stop();
    // Leave a mark in the database while the daemon is down.
    {
        let conn = rusqlite::Connection::open(dirs.db_file()).expect("open");
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('test_mark', 'kept')",
            [],
        )
        .expect("insert");
    }
    let second = Daemon::start(&dirs);
    let logs = second.stop();
    assert!(
        !logs.contains("migration applied"),
        "migrations ran again on a current database: {logs}"
    );
    let conn = rusqlite::Connection::open(dirs.db_file()).expect("open");
    let mark: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'test_mark'", [], |r| {
            r.get(0)
        })
        .expect("the mark survived the restart");
    assert_eq!(mark, "kept");
}

#[test]
fn a_database_from_a_newer_build_is_refused_and_left_alone() {
    let dirs = Dirs::new();
    Daemon::start(&dirs).stop();
    {
        let conn = rusqlite::Connection::open(dirs.db_file()).expect("open");
        conn.pragma_update(None, "user_version", 999)
            .expect("bump version");
    }
    let before = std::fs::read(dirs.db_file()).expect("read db");
    let mut cmd = dirs.command();
    cmd.args(["--listen", "127.0.0.1:0"]);
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("schema version 999"), "{stderr}");
    assert!(
        stderr.contains(&dirs.db_file().display().to_string()),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(dirs.db_file()).expect("read db"),
        before,
        "the database was modified"
    );
}

#[test]
fn a_second_daemon_on_the_same_database_is_refused() {
    let dirs = Dirs::new();
    let first = Daemon::start(&dirs);
    let mut cmd = dirs.command();
    cmd.args(["--listen", "127.0.0.1:0"]);
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another nexusd"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    // The first one is unharmed.
    first.stop();
}

#[test]
fn a_busy_address_is_a_clear_error() {
    let dirs = Dirs::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut cmd = dirs.command();
    cmd.args(["--listen", &addr]);
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_request_finish() {
    if !crate::harness::bwrap_usable() {
        crate::harness::skip("bubblewrap cannot run sandboxes on this host");
        return;
    }
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let api = crate::harness::Api::new(&daemon, &dirs);
    api.create(serde_json::json!({"name": "slow"})).await;
    let request = tokio::spawn(async move {
        api.post(
            "/v1/sandboxes/slow/exec",
            serde_json::json!({"argv": ["sh", "-c", "sleep 1; echo done"]}),
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    daemon.signal(Signal::SIGTERM);
    let (status, body) = request.await.expect("request task");
    assert_eq!(
        (status, body["stdout"].as_str()),
        (200, Some("done\n")),
        "{body}"
    );
    let (exit, logs) = tokio::task::spawn_blocking(move || daemon.wait())
        .await
        .expect("wait");
    assert!(exit.success(), "{exit}: {logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
}

/// The soft limit of `pid` on open descriptors, and its hard limit, from `/proc`.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[test]
fn the_daemon_raises_its_open_file_limit_to_the_hard_one() {
    let dirs = Dirs::new();
    let mut cmd = dirs.command();
    cmd.args(["--listen", "127.0.0.1:0", "--log-format", "json"]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = limit.rlim_max.min(256);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let daemon = Daemon::spawn(cmd);
    let (soft, hard) = open_file_limits(daemon.pid());
    assert_eq!(
        soft, hard,
        "the soft limit (started at 256) is raised to the hard one"
    );
}
