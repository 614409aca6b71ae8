//! What sandboxed code can see and do: uid, files, processes, network, privileges.

use nexus_sandbox::bwrap::ReadOnlyBind;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::{Harness, Options, PYTHON, status_field};

#[test]
fn runs_as_uid_1000_inside_and_a_dedicated_unprivileged_uid_outside() {
    let Some(h) = Harness::new("uid_mapping") else {
        return;
    };
    let (running, _) = h
        .start(
            "id -u > ids; id -g >> ids; touch ready; sleep 30",
            &Options::default(),
        )
        .expect("launch");
    assert!(
        running.wait_for_file("ready", Duration::from_secs(10)),
        "{}",
        running.log()
    );
    let inside = std::fs::read_to_string(running.workspace.join("ids")).expect("ids");
    assert_eq!(inside, "1000\n1000\n");
    let init = running.launched().process.init_pid;
    let uid = running.uid.to_string();
    let expected = [uid.as_str(); 4].join("\t");
    assert_eq!(
        status_field(init, "Uid").as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(
        status_field(init, "Gid").as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(status_field(init, "Groups").as_deref(), Some(""));
    // bwrap itself runs unprivileged too.
    let bwrap = running.launched().process.bwrap_pid;
    assert_eq!(
        status_field(bwrap, "Uid").as_deref(),
        Some(expected.as_str())
    );
    // Files the sandbox writes belong to its host uid.
    let meta = std::fs::metadata(running.workspace.join("ids")).expect("stat");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), running.uid);
}

/// Fails without the masks: the planted token is world-readable, so only the mask
/// hides it; /root would be unlistable (EACCES) instead of an empty directory; another
/// sandbox's world-readable workspace sits in the masked data directory.
#[test]
fn host_secrets_nexus_files_and_other_workspaces_are_masked() {
    let Some(h) = Harness::new("masks") else {
        return;
    };
    let secret_dir = h.dir.path().join("config");
    std::fs::create_dir(&secret_dir).expect("mkdir");
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let token = secret_dir.join("token");
    std::fs::write(&token, "NEXUS-TOKEN-123").expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let other = h.workspace("other");
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(other.join("private.txt"), "OTHER-SANDBOX-DATA").expect("write");
    std::fs::set_permissions(
        other.join("private.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    // A read-only bind into /etc makes /etc a shadow directory: its entries are bound
    // again, and the masks in it must survive that.
    let shared = h.workspace("shared");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let script = format!(
        "cat {token} 2>&1; cat {other}/private.txt 2>&1; \
         ls -A /root; echo root_rc=$?; echo home=[$(ls -A /home)]; \
         cat /etc/shadow 2>&1; stat -c 'shadow=%F' /etc/shadow; \
         echo ssh=[$(ls -A /etc/ssh)]; echo run=[$(ls -A /run)]; echo own=$(cat /workspace/mine); \
         test -d /etc/nexus-ref && echo shadowed",
        token = token.display(),
        other = other.display(),
    );
    // Both ways of making the root: bwrap alone, and the launcher's tree (a root daemon).
    for tree in [None, Some(h.root_tree())] {
        let (id, _) = h.ids();
        let workspace = h.workspace(&id);
        std::fs::write(workspace.join("mine"), "visible").expect("write");
        let finished = h.run(
            &script,
            &Options {
                extra_masks: vec![secret_dir.clone()],
                workspace: Some(workspace),
                read_only: vec![ReadOnlyBind {
                    source: shared.clone(),
                    target: "/etc/nexus-ref".into(),
                }],
                tree: tree.clone(),
                ..Options::default()
            },
        );
        let log = finished.log;
        let mode = if tree.is_some() { "tree" } else { "bwrap" };
        assert!(log.contains("shadowed"), "{mode}: {log}");
        assert!(!log.contains("NEXUS-TOKEN-123"), "{mode}: {log}");
        assert!(!log.contains("OTHER-SANDBOX-DATA"), "{mode}: {log}");
        assert!(
            log.contains("\nroot_rc=0\n"),
            "{mode}: /root lists, empty: {log}"
        );
        assert!(log.contains("home=[]"), "{mode}: {log}");
        assert!(
            log.contains("shadow=character special file"),
            "{mode}: /dev/null over it: {log}"
        );
        assert!(log.contains("ssh=[]"), "{mode}: {log}");
        assert!(
            log.contains("run=[]"),
            "{mode}: nothing of the host's /run: {log}"
        );
        assert!(
            log.contains("own=visible"),
            "{mode}: the workspace is bound after the masks: {log}"
        );
    }
}

/// Fails without the read-only root, the `--remount-ro` of masks, /run and /dev, or
/// with a writable bind of the image.
#[test]
fn writes_succeed_only_in_workspace_and_tmp() {
    let Some(h) = Harness::new("read_only") else {
        return;
    };
    let script = "for d in / /etc /usr /var/tmp /root /home /run /dev /etc/ssh /sys /proc/sys/kernel; do \
                    if touch $d/nexus-probe 2>/dev/null; then echo WROTE $d; fi; done; \
                  touch /workspace/ok && echo workspace-ok; touch /tmp/ok && echo tmp-ok; \
                  touch /dev/shm/ok && echo shm-ok";
    for tree in [None, Some(h.root_tree())] {
        let finished = h.run(
            script,
            &Options {
                tree,
                ..Options::default()
            },
        );
        assert!(!finished.log.contains("WROTE"), "{}", finished.log);
        for ok in ["workspace-ok", "tmp-ok", "shm-ok"] {
            assert!(finished.log.contains(ok), "{}", finished.log);
        }
    }
}

/// Fails without `--size` on /tmp.
#[test]
fn tmp_is_size_limited() {
    let Some(h) = Harness::new("tmp_size") else {
        return;
    };
    let options = Options {
        tmp_mib: Some(4),
        ..Options::default()
    };
    let finished = h.run(
        "dd if=/dev/zero of=/tmp/fill bs=1M count=16 2>&1; echo dd=$?",
        &options,
    );
    assert!(
        finished.log.contains("No space left on device"),
        "{}",
        finished.log
    );
    assert!(finished.log.contains("dd=1"), "{}", finished.log);
}

/// Fails without `--unshare-net`: the sandbox would reach the host's listener.
#[test]
fn only_loopback_and_no_host_listener_is_reachable() {
    let Some(h) = Harness::new("network") else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let (id, _) = h.ids();
    let workspace = h.workspace(&id);
    let connect = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    \
         print('CONNECTED')\nexcept OSError as e:\n    print('refused', e.errno)\n"
    );
    std::fs::write(workspace.join("connect.py"), connect).expect("write");
    let script = format!(
        "{PYTHON} connect.py; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '; echo"
    );
    let options = Options {
        workspace: Some(workspace),
        ..Options::default()
    };
    let finished = h.run(&script, &options);
    assert!(finished.log.contains("refused"), "{}", finished.log);
    assert!(!finished.log.contains("CONNECTED"), "{}", finished.log);
    let interfaces = finished
        .log
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert_eq!(interfaces, "lo", "{}", finished.log);
    assert!(listener.accept().is_err(), "nothing connected to the host");
}

/// Fails without `--unshare-pid` (host processes would be listed).
#[test]
fn host_processes_are_invisible() {
    let Some(h) = Harness::new("pid_namespace") else {
        return;
    };
    let script = "echo self=$$; echo count=$(ls /proc | grep -c '^[0-9]*$'); \
                  kill -0 1 && echo init-visible; cat /proc/1/comm";
    let finished = h.run(script, &Options::default());
    assert!(
        finished.log.contains("self=1"),
        "the payload is PID 1: {}",
        finished.log
    );
    let count: u32 = finished
        .log
        .lines()
        .find_map(|l| l.strip_prefix("count="))
        .and_then(|n| n.trim().parse().ok())
        .expect("count");
    assert!(count <= 4, "only the sandbox's processes: {}", finished.log);
    assert!(!finished.log.contains("systemd") && !finished.log.contains("nexus_sandbox"));
}

/// Fails without `--cap-drop ALL` (bwrap keeps none for unprivileged callers anyway; the
/// bounding set proves it), without seccomp (Seccomp: 2) or without no_new_privs.
#[test]
fn no_capabilities_no_new_privileges_and_a_seccomp_filter() {
    let Some(h) = Harness::new("privileges") else {
        return;
    };
    let script = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
                  su -c id root </dev/null 2>&1 | head -1; echo su=$?; id -u";
    let finished = h.run(script, &Options::default());
    let log = &finished.log;
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            log.contains(&format!("{cap}:\t0000000000000000")),
            "{cap}: {log}"
        );
    }
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    assert!(log.contains("Seccomp:\t2"), "{log}");
    assert_eq!(
        log.lines().last(),
        Some("1000"),
        "su changed nothing: {log}"
    );
    assert!(!log.contains("uid=0"), "{log}");
}

/// Fails without the seccomp filter: ptrace(PTRACE_TRACEME) succeeds and io_uring_setup
/// gets EFAULT for its NULL params; without the filter and `--disable-userns`,
/// `unshare -U` succeeds.
#[test]
fn ptrace_mount_unshare_and_io_uring_are_denied_inside() {
    let Some(h) = Harness::new("seccomp_inside") else {
        return;
    };
    let (id, _) = h.ids();
    let workspace = h.workspace(&id);
    std::fs::write(workspace.join("probe.py"), PROBE).expect("write");
    let script = format!(
        "{PYTHON} /workspace/probe.py 2>&1; unshare -U true 2>&1; echo unshare=$?; \
         unshare -n true 2>&1; echo unshare_net=$?"
    );
    let options = Options {
        workspace: Some(workspace),
        ..Options::default()
    };
    let finished = h.run(&script, &options);
    let log = &finished.log;
    let eperm = libc::EPERM;
    for name in ["ptrace", "io_uring_setup", "mount"] {
        assert!(
            log.contains(&format!("{name} -1 {eperm}\n")),
            "{name}: {log}"
        );
    }
    assert!(
        log.contains(&format!("clone3 -1 {}\n", libc::ENOSYS)),
        "{log}"
    );
    assert!(
        log.contains("threads ok"),
        "threads start (clone fallback): {log}"
    );
    assert!(log.contains("fork ok"), "{log}");
    assert!(log.contains("unshare=1"), "{log}");
    assert!(log.contains("unshare_net=1"), "{log}");
}

const PROBE: &str = r#"
import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
def probe(name, nr, *args):
    r = libc.syscall(nr, *args)
    print(name, r, ctypes.get_errno(), flush=True)
probe("ptrace", 101, 0, 0, 0, 0)
probe("io_uring_setup", 425, 1, 0)
probe("mount", 165, b"none", b"/tmp", b"tmpfs", 0, 0)
probe("clone3", 435, 0, 0)
t = threading.Thread(target=lambda: None)
t.start()
t.join()
print("threads ok", flush=True)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("fork ok", flush=True)
"#;

/// The listening socket arrives as fd 3 and works; nothing else of ours leaks in.
#[test]
fn the_listening_socket_is_fd_3_and_nothing_else_is_inherited() {
    let Some(h) = Harness::new("descriptors") else {
        return;
    };
    let (id, _) = h.ids();
    let workspace = h.workspace(&id);
    std::fs::write(
        workspace.join("serve.py"),
        "import socket\ns = socket.socket(fileno=3)\nc, _ = s.accept()\nc.sendall(b'hello from inside')\n",
    )
    .expect("write");
    let script = format!("ls /proc/self/fd | tr '\\n' ' ' > fds; {PYTHON} serve.py");
    let options = Options {
        workspace: Some(workspace),
        ..Options::default()
    };
    let (running, _) = h.start(&script, &options).expect("launch");
    let mut stream = None;
    for _ in 0..200 {
        match std::os::unix::net::UnixStream::connect(&running.launched().socket_path) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let mut stream = stream.expect("connects to the agent socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    assert_eq!(text, "hello from inside");
    let fds = std::fs::read_to_string(running.workspace.join("fds")).expect("fds");
    // 0-2, the socket, and the directory `ls` reads: no seccomp memfd, no info pipe.
    assert_eq!(fds.trim(), "0 1 2 3 4", "{fds}");
    let code = running.finish(Duration::from_secs(10)).code;
    assert_eq!(code, 0);
}

/// Unmounts the host mount it names when dropped, even when the test fails.
struct HostMount(std::path::PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The launcher assembles a root once and shares it (`launch::template`); a mount made on
/// the host after that must still be seen by the next sandbox. Fails when the shared root
/// is reused without watching the host's mount table (on a host whose mounts are private,
/// as here, the copy never hears of the new mount).
#[test]
fn a_host_mount_made_after_a_sandbox_started_is_seen_by_the_next_one() {
    let Some(h) = Harness::new("host_mount_after_start") else {
        return;
    };
    let point = h.dir.path().join("mounted-later");
    std::fs::create_dir(&point).expect("mkdir");
    std::fs::set_permissions(&point, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let options = Options {
        tree: Some(h.root_tree()),
        ..Options::default()
    };
    let script = format!("cat {}/marker 2>&1; echo done", point.display());
    let before = h.run(&script, &options);
    assert!(before.log.contains("No such file"), "{}", before.log);

    nix::mount::mount(
        Some("tmpfs"),
        &point,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=0755,size=64k"),
    )
    .expect("mount a tmpfs on the host");
    let _mounted = HostMount(point.clone());
    std::fs::write(point.join("marker"), "from-the-host-mount\n").expect("write marker");
    std::fs::set_permissions(point.join("marker"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod marker");

    let after = h.run(&script, &options);
    assert!(after.log.contains("from-the-host-mount"), "{}", after.log);
}

/// `/dev` works the same whichever way the root is made, and each sandbox has a devpts
/// instance of its own: a terminal opened in one is invisible in another. With the
/// launcher's tree, `/dev` comes from a shared namespace; mounting `devpts` there instead
/// of in each launch's copy would show one sandbox's terminals to the next (fails then).
#[test]
fn dev_works_and_each_sandbox_has_its_own_terminals() {
    let Some(h) = Harness::new("dev_and_devpts") else {
        return;
    };
    let devices = format!(
        "echo x > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c; \
         head -c 4 /dev/urandom | wc -c; ls -l /dev/ptmx; \
         {PYTHON} -c 'import os; m, s = os.openpty(); print(\"pty\", os.ttyname(s))'; \
         touch /dev/nexus-probe 2>/dev/null && echo WROTE-DEV; ls /dev/pts | tr \"\\n\" \" \"; echo"
    );
    for tree in [None, Some(h.root_tree())] {
        let mode = if tree.is_some() { "tree" } else { "bwrap" };
        let options = Options {
            tree,
            ..Options::default()
        };
        let finished = h.run(&devices, &options);
        let log = finished.log;
        assert!(log.contains("null-ok\n4\n4\n"), "{mode}: {log}");
        assert!(log.contains("/dev/ptmx -> pts/ptmx"), "{mode}: {log}");
        assert!(log.contains("pty /dev/pts/0"), "{mode}: {log}");
        assert!(
            !log.contains("WROTE-DEV"),
            "{mode}: /dev is read-only: {log}"
        );

        // A sandbox holding a terminal open, and another one looking at /dev/pts.
        let holder = format!(
            "{PYTHON} -c 'import os, time; m, s = os.openpty(); open(\"ready\", \"w\").close(); time.sleep(30)'"
        );
        let (running, _) = h.start(&holder, &options).expect("launch the holder");
        assert!(
            running.wait_for_file("ready", Duration::from_secs(10)),
            "{mode}: {}",
            running.log()
        );
        let other = h.run("ls /dev/pts | tr '\\n' ' '; echo end", &options);
        assert!(
            other.log.lines().any(|line| line.trim() == "ptmx end"),
            "{mode}: another sandbox's terminal is visible: {}",
            other.log
        );
        drop(running);
    }
}
