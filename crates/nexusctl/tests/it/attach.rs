//! `nexusctl attach` driven inside tmux, as a person at a terminal would use it: typing,
//! resizing, Ctrl-C, detaching and re-attaching, Ctrl-D; the terminal restored after.

use std::path::Path;
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::harness::{Env, bwrap_usable};

/// How long a screen may take to show what a step expects before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// A tmux server of its own (`-L`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        Self {
            socket: format!("nexus-attach-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let output = StdCommand::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A detached session `name`, 100x30, running `command` with `sh -c`.
    fn start(&self, name: &str, command: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "100",
            "-y",
            "30",
            command,
        ]);
    }

    fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", name];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-J", "-S", "-200", "-t", name])
    }

    /// Waits until the screen shows `text`; the screen it found, or a failure with it.
    fn wait_for(&self, name: &str, text: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen(name);
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the screen never showed {text:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = StdCommand::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// Whether tmux is installed; the test says SKIPPED otherwise.
#[allow(clippy::print_stderr)] // a skip must be seen in the test output
fn tmux_usable() -> bool {
    let usable = StdCommand::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        eprintln!("SKIPPED: tmux is not installed (scripts/test.sh installs it)");
    }
    usable
}

/// The shell line that runs `nexusctl attach ARGS` with `env`'s directories, then says
/// how it exited and whether the terminal is back in canonical mode with echo.
fn attach_line(env: &Env, url: &str, args: &str) -> String {
    let nexusctl = Path::new(env!("CARGO_BIN_EXE_nexusctl"));
    let var = |name: &str, sub: &str| format!("{name}='{}'", env.path(sub).display());
    format!(
        "env -i PATH=/usr/bin:/bin TERM=xterm {} {} {} {} {} NEXUS_URL='{url}' '{}' attach {args}; \
         echo EXITED=$?; echo TTY=$(stty -a | tr ' ;' '\\n\\n' | grep -x -e '-\\?icanon' -e '-\\?echo' | tr '\\n' ,); \
         sleep 600",
        var("HOME", "home"),
        var("XDG_CONFIG_HOME", "config"),
        var("XDG_STATE_HOME", "state"),
        var("XDG_DATA_HOME", "data"),
        var("XDG_RUNTIME_DIR", "run"),
        nexusctl.display(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_types_resizes_interrupts_detaches_and_reattaches() {
    if !bwrap_usable() || !tmux_usable() {
        return;
    }
    let env = Env::new();
    let daemon = env.start_daemon().await;
    let url = format!("http://{}", daemon.addr());
    let nxc = |args: &[&str]| {
        let mut cmd = env.nexusctl(&url);
        cmd.args(args);
        cmd
    };
    nxc(&["sandbox", "create", "term"]).assert().success();
    // Sandboxes outlive the daemon: a failed assertion must not leave this one running.
    let _cleanup = Cleanup(|| {
        let _ = env
            .nexusctl(&url)
            .args(["sandbox", "delete", "--force", "term"])
            .output();
    });
    let tmux = Tmux::new();

    // Typing: the command runs in the sandbox (its hostname) and its output shows.
    tmux.start("a", &attach_line(&env, &url, "term"));
    tmux.keys("a", &["echo out-$((6*7))-$(hostname)", "Enter"]);
    tmux.wait_for("a", "out-42-term");

    // The window size at start, then after a resize (SIGWINCH).
    tmux.keys("a", &["stty size", "Enter"]);
    tmux.wait_for("a", "30 100");
    tmux.run(&["resize-window", "-t", "a", "-x", "120", "-y", "40"]);
    // Resizes race the next command only in the sense that the size may arrive after
    // `stty` ran: ask until it shows.
    let start = Instant::now();
    loop {
        tmux.keys("a", &["stty size", "Enter"]);
        std::thread::sleep(Duration::from_millis(300));
        if tmux.screen("a").contains("40 120") {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{}", tmux.screen("a"));
    }

    // Ctrl-C reaches the sandbox's foreground process, not nexusctl.
    tmux.keys("a", &["sleep 1000", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.keys("a", &["C-c"]);
    tmux.keys("a", &["echo status-$?", "Enter"]);
    tmux.wait_for("a", "status-130");

    // Detach: nexusctl exits 0 with the terminal restored, the shell keeps running.
    tmux.keys("a", &["C-p", "C-q"]);
    let screen = tmux.wait_for("a", "TTY=");
    assert!(screen.contains("EXITED=0"), "{screen}");
    assert!(screen.contains("TTY=icanon,echo,"), "{screen}");
    let session = screen
        .split("--session ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no session id in:\n{screen}"))
        .to_owned();

    // Re-attach: the earlier screen is replayed, and the shell is the same one.
    tmux.start(
        "b",
        &attach_line(&env, &url, &format!("term --session {session}")),
    );
    tmux.wait_for("b", "out-42-term");
    tmux.wait_for("b", "status-130");
    // Ctrl-D ends the shell, and with it the session and nexusctl, with its status.
    tmux.keys("b", &["C-d"]);
    let screen = tmux.wait_for("b", "TTY=");
    assert!(screen.contains("EXITED=0"), "{screen}");
    assert!(screen.contains("shell exited with status 0"), "{screen}");
    assert!(screen.contains("TTY=icanon,echo,"), "{screen}");

    // An ended session stays listed until deleted; re-attaching shows how it ended.
    nxc(&["attach", "term", "--session", &session])
        .assert()
        .success()
        .stderr(predicate::str::contains("shell exited with status 0"));
    nxc(&["attach", "term", "--session", "999"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("terminal_not_found"));

    // An unusable detach sequence is refused before anything happens.
    nxc(&["attach", "term", "--detach-keys", "ctrl-1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("invalid detach key \"ctrl-1\""));

    // A stopped sandbox: the same 409 as exec.
    nxc(&["sandbox", "stop", "term"]).assert().success();
    nxc(&["attach", "term"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("sandbox_not_running"));
}

/// Runs its closure when dropped, also when the test panics.
struct Cleanup<F: FnMut()>(F);

impl<F: FnMut()> Drop for Cleanup<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
