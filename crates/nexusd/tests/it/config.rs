//! Configuration: flag > environment > file > default, and refusals of bad input.

use crate::harness::{Daemon, Dirs, free_port, run_to_exit};

#[test]
fn the_file_sets_the_address_when_nothing_else_does() {
    let dirs = Dirs::new();
    let port = free_port();
    dirs.write_config(&format!("listen: 127.0.0.1:{port}\n"));
    let daemon = Daemon::spawn({
        let mut cmd = dirs.command();
        cmd.args(["--log-format", "json"]);
        cmd
    });
    assert_eq!(daemon.addr, format!("127.0.0.1:{port}"));
}

#[test]
fn env_beats_file_and_flag_beats_env() {
    let dirs = Dirs::new();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    dirs.write_config(&format!("listen: 127.0.0.1:{file_port}\n"));

    let mut cmd = dirs.command();
    cmd.env("NEXUS_LISTEN", format!("127.0.0.1:{env_port}"))
        .args(["--log-format", "json"]);
    let daemon = Daemon::spawn(cmd);
    assert_eq!(daemon.addr, format!("127.0.0.1:{env_port}"));
    daemon.stop();

    let mut cmd = dirs.command();
    cmd.env("NEXUS_LISTEN", format!("127.0.0.1:{env_port}"))
        .args([
            "--listen",
            &format!("127.0.0.1:{flag_port}"),
            "--log-format",
            "json",
        ]);
    let daemon = Daemon::spawn(cmd);
    assert_eq!(daemon.addr, format!("127.0.0.1:{flag_port}"));
}

#[test]
fn an_explicit_config_path_is_used() {
    let dirs = Dirs::new();
    let port = free_port();
    let path = dirs.path("elsewhere.yaml");
    std::fs::write(
        &path,
        format!("listen: 127.0.0.1:{port}\nshutdown_timeout: 2s\n"),
    )
    .expect("write");
    let mut cmd = dirs.command();
    cmd.args([
        "--config",
        path.to_str().expect("utf-8"),
        "--log-format",
        "json",
    ]);
    let daemon = Daemon::spawn(cmd);
    assert_eq!(daemon.addr, format!("127.0.0.1:{port}"));
}

#[test]
fn a_broken_config_file_names_path_line_and_field() {
    let dirs = Dirs::new();
    let path = dirs.write_config("log_level: info\nlisten: nowhere\n");
    let (status, stderr) = run_to_exit(dirs.command());
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(stderr.contains("listen"), "{stderr}");
    assert!(
        !dirs.db_file().exists(),
        "a refused start created the database"
    );
}

#[test]
fn an_unknown_config_key_is_refused() {
    let dirs = Dirs::new();
    dirs.write_config("listne: 127.0.0.1:1\n");
    let (status, stderr) = run_to_exit(dirs.command());
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("listne"), "{stderr}");
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let dirs = Dirs::new();
    let mut cmd = dirs.command();
    cmd.args(["--config", "/nonexistent/nexus.yaml"]);
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/nexus.yaml"), "{stderr}");
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let dirs = Dirs::new();
    let mut cmd = dirs.command();
    cmd.arg("--no-such-flag");
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");

    let mut cmd = dirs.command();
    cmd.env("NEXUS_LISTEN", "not-an-address");
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not-an-address"), "{stderr}");

    let mut cmd = dirs.command();
    cmd.args(["--log-format", "xml"]);
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("xml"), "{stderr}");
}

#[test]
fn text_logs_are_the_default() {
    let dirs = Dirs::new();
    let mut cmd = dirs.command();
    cmd.args(["--listen", "127.0.0.1:0"]);
    let mut child = cmd.spawn().expect("spawn");
    // Give it time to start, then stop it and read what it wrote.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !dirs.path("run").join("nexus").join("nexusd.pid").exists() {
        assert!(std::time::Instant::now() < deadline, "nexusd did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let output = std::mem::replace(
        &mut child,
        dirs.command().arg("--version").spawn().expect("spawn"),
    );
    let output = output.wait_with_output().expect("wait");
    let _ = child.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("INFO") && stderr.contains("listening"),
        "{stderr}"
    );
    assert!(
        !stderr.trim_start().starts_with('{'),
        "default logs are JSON: {stderr}"
    );
}
