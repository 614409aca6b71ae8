//! Persistent workspaces: which host uid a sandbox on a workspace tree gets (the tree's
//! owner when it can, else a fresh uid and a `chown`), read-only mounts of other
//! workspaces (readable only through the supplementary group, never writable), the
//! drivers honouring `SandboxMounts`, and a running sandbox's tree swapped under it.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nexus_core::{
    Driver, DriverError, DriverKind, ReadOnlyMount, Sandbox, SandboxId, SandboxMounts, SandboxName,
    SandboxSpec, SandboxState, Timestamp, WorkspaceId, WorkspaceMount, WorkspaceSwap,
};
use nexus_sandbox::bwrap::ReadOnlyBind;
use nexus_sandbox::driver::{BwrapDriver, BwrapDriverConfig, HostDriver, Layout};
use nexus_sandbox::launch::{HostIds, HostUser, supplementary_groups};

use crate::support::{Harness, Options};

/// Uids for this test process's allocators: above the ones `Harness::ids` hands out
/// (`base + n`, n small), unique among live processes like those.
fn range() -> RangeInclusive<u32> {
    let base = 1_000_000 + std::process::id() * 128;
    base + 100..=base + 127
}

/// `<data>/workspaces/<ws>/trees/<generation>` as `nexus-storage` makes it: parents
/// 0711, the tree 0755 owned by the daemon.
fn tree(h: &Harness, ws: &str, generation: u64) -> PathBuf {
    let workspace = h.dir.path().join("data/workspaces").join(ws);
    let path = workspace.join("trees").join(generation.to_string());
    std::fs::create_dir_all(&path).expect("mkdir tree");
    for dir in [&workspace, &workspace.join("trees")] {
        chmod(dir, 0o711);
    }
    chmod(&path, 0o755);
    path
}

fn data_dir(h: &Harness) -> PathBuf {
    h.dir.path().join("data")
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
    if std::fs::symlink_metadata(path).expect("stat").is_dir() {
        for entry in std::fs::read_dir(path).expect("readdir") {
            chown_tree(&entry.expect("entry").path(), uid);
        }
    }
}

fn dedicated(user: HostUser) -> u32 {
    match user {
        HostUser::Dedicated(uid) => uid,
        HostUser::Current => panic!("the daemon is root: uids are dedicated"),
    }
}

/// (uid, gid, mode bits, ctime in ns): ctime moves on any `chown` or `chmod`.
fn stat(path: &Path) -> (u32, u32, u32, i128) {
    let meta = std::fs::symlink_metadata(path).expect("stat");
    (
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777,
        i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
    )
}

fn on_tree(tree: &Path, uid: u32) -> Options {
    Options {
        workspace: Some(tree.to_path_buf()),
        uid: Some(uid),
        ..Options::default()
    }
}

/// Fails when the tree's owner is not reused (a fresh uid and a `chown` on every
/// restart) or when the tree is handed over although its owner could run it.
#[test]
fn a_later_sandbox_on_the_same_tree_runs_as_the_same_uid_without_a_chown() {
    let Some(h) = Harness::new("tree_owner_reused") else {
        return;
    };
    let mut ids = HostIds::new(range()).expect("range");
    let ws = tree(&h, "keep", 1);
    let first = dedicated(HostUser::for_workspace(&mut ids, &data_dir(&h), &ws).expect("uid"));
    let run = h.run(
        "echo one > /workspace/kept; mkdir /workspace/sub; echo two > /workspace/sub/file",
        &on_tree(&ws, first),
    );
    assert_eq!(run.code, 0, "{}", run.log);
    ids.release(first); // what the driver does when the sandbox is cleaned up

    let (uid, gid, mode, _) = stat(&ws);
    assert_eq!((uid, gid, mode), (first, first, 0o750), "handed over once");
    let before: Vec<_> = ["", "kept", "sub", "sub/file"]
        .iter()
        .map(|p| stat(&ws.join(p)))
        .collect();

    let second = dedicated(HostUser::for_workspace(&mut ids, &data_dir(&h), &ws).expect("uid"));
    assert_eq!(
        second, first,
        "the tree's owner is free and owns nothing else"
    );
    // The launch itself (prepare_workspace included) must not touch the tree either.
    let run = h.run(
        "cat /workspace/kept /workspace/sub/file",
        &on_tree(&ws, second),
    );
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(run.log.contains("one\ntwo"), "{}", run.log);
    let after: Vec<_> = ["", "kept", "sub", "sub/file"]
        .iter()
        .map(|p| stat(&ws.join(p)))
        .collect();
    assert_eq!(before, after, "no chown or chmod: ctimes unchanged");
}

/// Fails when a uid that still owns another workspace is handed out again (that
/// sandbox could then write the other workspace after an escape).
#[test]
fn a_tree_whose_owner_owns_another_workspace_gets_a_fresh_uid_and_is_handed_over() {
    let Some(h) = Harness::new("tree_owner_shared") else {
        return;
    };
    let shared = *range().start();
    let a = tree(&h, "a", 1);
    let b = tree(&h, "b", 1);
    std::fs::write(a.join("secret"), "a").expect("write");
    std::fs::create_dir(b.join("d")).expect("mkdir");
    std::fs::write(b.join("d/f"), "b").expect("write");
    // As after a fork: both trees belong to the same (stopped) sandbox uid.
    chown_tree(&a, shared);
    chown_tree(&b, shared);

    let mut ids = HostIds::new(range()).expect("range");
    let fresh = dedicated(HostUser::for_workspace(&mut ids, &data_dir(&h), &b).expect("uid"));
    assert_ne!(fresh, shared, "{shared} also owns workspace a");
    let run = h.run(
        "cat /workspace/d/f && echo new > /workspace/d/g",
        &on_tree(&b, fresh),
    );
    assert_eq!(run.code, 0, "{}", run.log);
    for path in [&b, &b.join("d"), &b.join("d/f"), &b.join("d/g")] {
        let (uid, gid, _, _) = stat(path);
        assert_eq!((uid, gid), (fresh, fresh), "{}", path.display());
    }
    assert_eq!(stat(&b).2, 0o750);
    assert_eq!(stat(&a.join("secret")).0, shared, "a is left alone");

    // Now `shared` owns only a: a sandbox on a gets it back without a chown.
    let again = dedicated(HostUser::for_workspace(&mut ids, &data_dir(&h), &a).expect("uid"));
    assert_eq!(again, shared);
    // And a fresh uid never owns anything: not `shared`, not `fresh`.
    let c = tree(&h, "c", 1);
    let other = dedicated(HostUser::for_workspace(&mut ids, &data_dir(&h), &c).expect("uid"));
    ids.release(fresh);
    ids.release(shared);
    let another = dedicated(HostUser::for_workspace(&mut ids, &data_dir(&h), &c).expect("uid"));
    for uid in [other, another] {
        assert!(uid != shared && uid != fresh, "{uid}");
    }
}

/// Fails without the supplementary group (sandbox B cannot enter A's 0750 tree: the
/// second half shows it), and fails if the mount were writable.
#[test]
fn a_read_only_mount_of_another_workspace_is_readable_through_its_group_and_never_writable() {
    let Some(h) = Harness::new("read_only_mount") else {
        return;
    };
    if Path::new("/mnt/data").exists() || !Path::new("/mnt").is_dir() {
        crate::support::skipped(
            "read_only_mount",
            "needs a host /mnt without /mnt/data (the shadowed mount point)",
        );
        return;
    }
    let range = range();
    let mut ids = HostIds::new(range.clone()).expect("range");
    let a = tree(&h, "a", 1);
    let ua = dedicated(HostUser::for_workspace(&mut ids, &data_dir(&h), &a).expect("uid"));
    let run = h.run(
        "umask 022; echo from-a > /workspace/data.txt; mkdir /workspace/sub; echo deep > /workspace/sub/f",
        &on_tree(&a, ua),
    );
    assert_eq!(run.code, 0, "{}", run.log);
    ids.release(ua);
    assert_eq!(stat(&a).2, 0o750, "group may enter, others not");
    assert_eq!(stat(&a.join("data.txt")).2, 0o644);

    let b = tree(&h, "b", 1);
    let ub = dedicated(HostUser::for_workspace(&mut ids, &data_dir(&h), &b).expect("uid"));
    assert_ne!(ub, ua);
    let groups = supplementary_groups(&[a.as_path()], &range, ub).expect("groups");
    assert_eq!(groups, [ua]);
    let read_only = ["/mnt/data", "/workspace/ref", "/data"]
        .into_iter()
        .map(|target| ReadOnlyBind {
            source: a.clone(),
            target: target.into(),
        })
        .collect::<Vec<_>>();
    let script = "id -G > groups; \
        cat /mnt/data/data.txt /workspace/ref/sub/f /data/data.txt > read 2>&1; \
        (echo x > /mnt/data/new) 2> write-err; (echo x >> /mnt/data/data.txt) 2>> write-err; \
        (mkdir /workspace/ref/d) 2>> write-err; (touch /data/sub/x) 2>> write-err; \
        (touch /mnt/other) 2>> write-err; ls -A /mnt > listing";
    // Both ways of making the root: bwrap alone, and the launcher's tree (a root daemon),
    // where `/data` is a mount point the tree must provide.
    for tree in [None, Some(h.root_tree())] {
        let options = Options {
            read_only: read_only.clone(),
            groups: groups.clone(),
            tree: tree.clone(),
            ..on_tree(&b, ub)
        };
        let run = h.run(script, &options);
        assert_eq!(run.code, 0, "{}", run.log);
        let read = |name: &str| std::fs::read_to_string(b.join(name)).expect(name);
        assert_eq!(read("read"), "from-a\ndeep\nfrom-a\n");
        assert_eq!(
            read("groups"),
            "1000 65534\n",
            "A's group is unmapped inside"
        );
        let errors = read("write-err");
        assert_eq!(errors.lines().count(), 5, "{errors}");
        for line in errors.lines() {
            assert!(
                line.contains("Read-only file system") || line.contains("Permission denied"),
                "{line}"
            );
        }
        assert!(!a.join("new").exists() && !a.join("d").exists());
        assert_eq!(
            std::fs::read_to_string(a.join("data.txt")).expect("a"),
            "from-a\n"
        );
        // /mnt is the host's, seen through the shadow, plus the mount point; the host's
        // own /mnt is untouched. The mount point under /workspace is made in B's tree.
        let mut expected: Vec<String> = std::fs::read_dir("/mnt")
            .expect("/mnt")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .chain(["data".to_owned()])
            .collect();
        expected.sort();
        let mut listed: Vec<String> = read("listing").lines().map(str::to_owned).collect();
        listed.sort();
        assert_eq!(listed, expected);
        assert!(!Path::new("/mnt/data").exists());
        assert!(b.join("ref").is_dir());
    }

    // The same mount without the group: A's tree (0750) cannot even be entered.
    let options = Options {
        read_only,
        groups: Vec::new(),
        ..on_tree(&b, ub)
    };
    let run = h.run("cat /mnt/data/data.txt", &options);
    assert_ne!(run.code, 0, "{}", run.log);
    assert!(run.log.contains("Permission denied"), "{}", run.log);
}

const AGENT: &str = "#!/bin/sh\n\
    n=$(hostname)\n\
    id -u > \"uid-$n\"; pwd > \"cwd-$n\"; id -G > \"groups-$n\"\n\
    ls /mnt/data > \"ro-$n\" 2>&1\n\
    exec sleep 1000\n";

/// A stand-in agent (the real one is another crate's binary): records what it sees
/// into its working directory and sleeps.
fn fake_agent(h: &Harness) -> PathBuf {
    let path = h.dir.path().join("agent.sh");
    std::fs::write(&path, AGENT).expect("write agent");
    chmod(&path, 0o755);
    path
}

fn layout(h: &Harness) -> Layout {
    Layout {
        runtime_dir: h.dir.path().join("run"),
        data_dir: data_dir(h),
    }
}

fn sandbox(name: &str, driver: DriverKind) -> Sandbox {
    Sandbox {
        id: SandboxId::generate(),
        spec: SandboxSpec {
            name: SandboxName::parse(name).expect("name"),
            image: "host".into(),
            driver,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            limits: nexus_core::Limits::default(),
            ttl_seconds: None,
            workspace: None,
            mounts: Vec::new(),
            network: Default::default(),
        },
        state: SandboxState::Created,
        crash_reason: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        started_at: None,
        runtime: None,
    }
}

fn wait_for(path: &Path) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

/// The bwrap driver end to end: the tree is the workspace, a restarted sandbox keeps
/// its uid, a read-only mount works through the driver's groups, legacy sandboxes keep
/// their private directory, and destroy never removes a tree.
#[tokio::test(flavor = "multi_thread")]
async fn the_bwrap_driver_honours_the_mounts_and_destroy_keeps_the_trees() {
    let Some(h) = Harness::new("bwrap_driver_mounts") else {
        return;
    };
    let layout = layout(&h);
    let driver = BwrapDriver::new(BwrapDriverConfig {
        egress: None,
        layout: layout.clone(),
        bwrap: h.bwrap.clone(),
        agent: fake_agent(&h),
        masked: vec![layout.data_dir.clone(), layout.runtime_dir.clone()],
        uid_range: range(),
    })
    .expect("driver");
    let ws = tree(&h, "main", 1);
    let on_ws = SandboxMounts {
        workspace: Some(ws.clone()),
        image_root: None,
        read_only: Vec::new(),
    };
    let stop =
        |sandbox: Sandbox, runtime: String| stop_and_destroy(&driver, &layout, sandbox, runtime);

    let first = sandbox("first", DriverKind::Bwrap);
    let started = driver.start(&first, &on_ws).await.expect("start");
    let uid = started.isolation.uid_host.expect("uid");
    assert_eq!(wait_for(&ws.join("cwd-first")), "/workspace\n");
    assert_eq!(wait_for(&ws.join("uid-first")), "1000\n");
    assert_eq!(stat(&ws.join("uid-first")).0, uid);
    assert!(
        !layout.workspace(first.id.as_str()).exists(),
        "no private workspace"
    );
    stop(first, started.runtime).await;
    assert!(ws.join("uid-first").exists(), "destroy keeps the tree");
    let kept = stat(&ws.join("uid-first"));

    let second = sandbox("second", DriverKind::Bwrap);
    let started = driver.start(&second, &on_ws).await.expect("start");
    assert_eq!(
        started.isolation.uid_host,
        Some(uid),
        "the tree's owner again"
    );
    wait_for(&ws.join("uid-second"));
    assert_eq!(stat(&ws.join("uid-first")), kept, "no chown");

    // A read-only mount of `ws` (owned by the running second sandbox's uid).
    let other = tree(&h, "other", 1);
    let reader = sandbox("reader", DriverKind::Bwrap);
    let mounts = SandboxMounts {
        workspace: Some(other.clone()),
        image_root: None,
        read_only: vec![ReadOnlyMount {
            source: ws.clone(),
            target: "/mnt/data".into(),
        }],
    };
    let reader_started = driver.start(&reader, &mounts).await.expect("start");
    let reader_uid = reader_started.isolation.uid_host.expect("uid");
    assert_ne!(reader_uid, uid);
    wait_for(&other.join("groups-reader"));
    assert_eq!(
        std::fs::read_to_string(other.join("groups-reader")).expect("groups"),
        "1000 65534\n"
    );
    let listing = wait_for(&other.join("ro-reader"));
    assert!(listing.contains("uid-first"), "{listing}");

    // Legacy: no workspace given, the private directory as before.
    let legacy = sandbox("legacy", DriverKind::Bwrap);
    let legacy_started = driver
        .start(&legacy, &SandboxMounts::default())
        .await
        .expect("start");
    let private = layout.workspace(legacy.id.as_str());
    assert_eq!(wait_for(&private.join("cwd-legacy")), "/workspace\n");
    let legacy_uid = legacy_started.isolation.uid_host.expect("uid");
    assert!(legacy_uid != uid && legacy_uid != reader_uid);

    stop(legacy, legacy_started.runtime).await;
    assert!(!private.exists());
    stop(reader, reader_started.runtime).await;
    stop(second, started.runtime).await;
    assert!(ws.join("uid-second").exists() && other.join("uid-reader").exists());
}

/// A stand-in agent for the swap: copies what `/workspace/mark` and `mark` (relative
/// to its working directory, which bwrap set to `/workspace` at start) say into the tree
/// at `/workspace`, over and over.
const LOOPING_AGENT: &str = "#!/bin/sh\n\
    while :; do\n\
    cat /workspace/mark > /workspace/seen.tmp && mv /workspace/seen.tmp /workspace/seen\n\
    cat mark > /workspace/cwd.tmp && mv /workspace/cwd.tmp /workspace/cwd\n\
    sleep 0.05\n\
    done\n";

/// A root daemon swaps the tree under a running sandbox: the same processes go on, see
/// the new tree at `/workspace` (handed to their uid first) and write into it, while a
/// working directory inside the old tree keeps the old files. Swapping the same tree
/// again changes nothing; a sandbox with a mount inside `/workspace` is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_bwrap_driver_swaps_the_workspace_under_a_running_sandbox() {
    let Some(h) = Harness::new("bwrap_driver_swap") else {
        return;
    };
    let layout = layout(&h);
    let agent = h.dir.path().join("looping-agent.sh");
    std::fs::write(&agent, LOOPING_AGENT).expect("write agent");
    chmod(&agent, 0o755);
    let driver = BwrapDriver::new(BwrapDriverConfig {
        egress: None,
        layout: layout.clone(),
        bwrap: h.bwrap.clone(),
        agent,
        masked: vec![layout.data_dir.clone(), layout.runtime_dir.clone()],
        uid_range: range(),
    })
    .expect("driver");
    let old = tree(&h, "swap", 1);
    std::fs::write(old.join("mark"), "old\n").expect("write");
    // The restored tree, as a clone leaves it: the daemon's, not the sandbox's.
    let new = tree(&h, "swap", 2);
    std::fs::write(new.join("mark"), "new\n").expect("write");

    let running = sandbox("swapped", DriverKind::Bwrap);
    let mounts = SandboxMounts {
        workspace: Some(old.clone()),
        image_root: None,
        read_only: Vec::new(),
    };
    let started = driver.start(&running, &mounts).await.expect("start");
    let uid = started.isolation.uid_host.expect("uid");
    assert_eq!(wait_for(&old.join("seen")), "old\n");

    let swapped = driver
        .replace_workspace(&running, &started.runtime, &new)
        .await
        .expect("swap");
    assert_eq!(swapped, WorkspaceSwap::Replaced);
    assert_eq!(
        wait_for(&new.join("seen")),
        "new\n",
        "new lookups find the new tree"
    );
    assert_eq!(
        wait_for(&new.join("cwd")),
        "old\n",
        "the old working directory stays"
    );
    assert_eq!(stat(&new).0, uid, "the new tree was handed to the sandbox");
    assert!(
        driver.is_alive(&started.runtime).await,
        "the same processes run on"
    );
    let again = driver
        .replace_workspace(&running, &started.runtime, &new)
        .await
        .expect("again");
    assert_eq!(again, WorkspaceSwap::AlreadyThere);

    let nested = Sandbox {
        spec: SandboxSpec {
            mounts: vec![WorkspaceMount {
                workspace: WorkspaceId::generate(),
                path: "/workspace/ref".into(),
                read_only: true,
            }],
            ..running.spec.clone()
        },
        ..running.clone()
    };
    let refused = driver
        .replace_workspace(&nested, &started.runtime, &old)
        .await
        .expect_err("a mount inside /workspace");
    assert!(
        matches!(refused, DriverError::Unsupported { .. }),
        "{refused}"
    );
    stop_and_destroy(&driver, &layout, running, started.runtime).await;
}

async fn stop_and_destroy(
    driver: &BwrapDriver,
    layout: &Layout,
    sandbox: Sandbox,
    runtime: String,
) {
    driver
        .stop(&sandbox, &runtime, Duration::from_millis(100))
        .await
        .expect("stop");
    driver.destroy(&sandbox).await.expect("destroy");
    assert!(!layout.sandbox_data(sandbox.id.as_str()).exists());
}

/// The host driver runs in the tree, refuses read-only mounts it could not enforce,
/// and keeps the tree on destroy.
#[tokio::test(flavor = "multi_thread")]
async fn the_host_driver_runs_in_the_tree_and_refuses_read_only_mounts() {
    let Some(h) = Harness::new("host_driver_mounts") else {
        return;
    };
    let layout = layout(&h);
    let driver = HostDriver::new(layout.clone(), fake_agent(&h));
    let ws = tree(&h, "host", 1);

    let refused = driver
        .start(
            &sandbox("refused", DriverKind::Host),
            &SandboxMounts {
                workspace: Some(ws.clone()),
                image_root: None,
                read_only: vec![ReadOnlyMount {
                    source: tree(&h, "other", 1),
                    target: "/mnt/data".into(),
                }],
            },
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(&refused, DriverError::Unsupported { what, .. } if what == "mount other workspaces"),
        "{refused}"
    );

    let on_tree = sandbox("on-tree", DriverKind::Host);
    let mounts = SandboxMounts {
        workspace: Some(ws.clone()),
        image_root: None,
        read_only: Vec::new(),
    };
    let started = driver.start(&on_tree, &mounts).await.expect("start");
    let host = nix::unistd::gethostname().expect("hostname");
    let cwd = wait_for(&ws.join(format!("cwd-{}", host.to_string_lossy())));
    assert_eq!(cwd.trim_end(), ws.to_str().expect("utf-8"));
    driver
        .stop(&on_tree, &started.runtime, Duration::from_millis(100))
        .await
        .expect("stop");
    driver.destroy(&on_tree).await.expect("destroy");
    assert!(ws.is_dir(), "destroy keeps the tree");
    assert!(!layout.sandbox_data(on_tree.id.as_str()).exists());

    let legacy = sandbox("legacy", DriverKind::Host);
    let started = driver
        .start(&legacy, &SandboxMounts::default())
        .await
        .expect("start");
    let private = layout.workspace(legacy.id.as_str());
    wait_for(&private.join(format!("cwd-{}", host.to_string_lossy())));
    driver
        .stop(&legacy, &started.runtime, Duration::from_millis(100))
        .await
        .expect("stop");
    driver.destroy(&legacy).await.expect("destroy");
    assert!(!private.exists());
}
