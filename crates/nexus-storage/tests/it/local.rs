//! The storage layer on the machine's temporary filesystem (ext4, tmpfs, overlay, xfs:
//! whatever `/tmp` is), with the backend it detects and with the plain copy forced.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use nexus_storage::{Backend, IdKind, IdProblem, QuotaOutcome, StorageError, WorkspaceStorage};

use crate::support::{
    OTHER_GID, OTHER_UID, allocated, assert_same_tree, build_sample_tree, is_root, run,
};

/// A storage root in a fresh temporary directory, with the detected backend.
fn storage() -> (tempfile::TempDir, WorkspaceStorage) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let storage = WorkspaceStorage::open(&dir.path().join("root")).expect("open");
    (dir, storage)
}

/// A storage root in a fresh temporary directory, plain copy forced.
fn copy_storage() -> (tempfile::TempDir, WorkspaceStorage) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let storage =
        WorkspaceStorage::open_with(&dir.path().join("root"), Backend::Copy).expect("open");
    (dir, storage)
}

#[test]
fn detected_backend_matches_what_the_filesystem_can_do() {
    let (dir, storage) = storage();
    let filesystem = run("stat", &["-f", "-c", "%T", &dir.path().to_string_lossy()]);
    // Independent reflink probe: GNU cp.
    fs::write(dir.path().join("a"), "x").expect("write");
    let reflink = Command::new("cp")
        .args(["--reflink=always"])
        .arg(dir.path().join("a"))
        .arg(dir.path().join("b"))
        .status()
        .expect("cp runs")
        .success();
    let expected = if filesystem.trim() == "btrfs" {
        Backend::Btrfs
    } else if reflink {
        Backend::Reflink
    } else {
        Backend::Copy
    };
    assert_eq!(storage.backend(), expected, "{}", storage.describe());
    if expected == Backend::Copy {
        assert!(
            storage
                .describe()
                .ends_with(": plain copy, cost grows with size"),
            "{}",
            storage.describe()
        );
    }
    let leftovers: Vec<_> = fs::read_dir(storage.root())
        .expect("read root")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert!(leftovers.is_empty(), "the probe left {leftovers:?}");
}

#[test]
fn forcing_an_unsupported_backend_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let filesystem = run("stat", &["-f", "-c", "%T", &dir.path().to_string_lossy()]);
    if filesystem.trim() == "btrfs" {
        return; // Both would be supported: nothing to refuse here.
    }
    let error = WorkspaceStorage::open_with(dir.path(), Backend::Btrfs).expect_err("not btrfs");
    assert!(
        matches!(
            error,
            StorageError::BackendUnsupported {
                backend: Backend::Btrfs,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("is not btrfs"), "{error}");
}

#[test]
fn snapshot_is_independent_of_later_writes_to_the_tree() {
    for (_dir, storage) in [storage(), copy_storage()] {
        let tree = storage.create_tree("ws", 1).expect("create");
        assert_eq!(tree, storage.root().join("ws/trees/1"));
        fs::write(tree.join("a.txt"), "before").expect("write");
        let snapshot = storage.snapshot("ws", 1, "s1").expect("snapshot");
        assert_eq!(snapshot, storage.root().join("ws/snapshots/s1"));
        fs::write(tree.join("a.txt"), "after").expect("write");
        fs::write(tree.join("b.txt"), "new").expect("write");
        assert_eq!(
            fs::read_to_string(snapshot.join("a.txt")).expect("read"),
            "before"
        );
        assert!(!snapshot.join("b.txt").exists());
    }
}

#[test]
fn clone_of_a_snapshot_is_an_independent_writable_copy_with_all_metadata() {
    for (_dir, storage) in [storage(), copy_storage()] {
        let tree = storage.create_tree("ws", 1).expect("create");
        build_sample_tree(&tree);
        let snapshot = storage.snapshot("ws", 1, "s1").expect("snapshot");
        assert_same_tree(&tree, &snapshot);

        // Restore: the same workspace, next generation.
        let restored = storage
            .clone_snapshot("ws", "s1", "ws", 2)
            .expect("restore");
        assert_eq!(restored, storage.root().join("ws/trees/2"));
        assert_same_tree(&snapshot, &restored);
        // Fork: another workspace, generation 1.
        let forked = storage.clone_snapshot("ws", "s1", "fork", 1).expect("fork");
        assert_same_tree(&snapshot, &forked);

        assert!(
            allocated(&restored.join("sparse")) < 1 << 20,
            "holes kept ({} bytes allocated for 4 KiB of data)",
            allocated(&restored.join("sparse"))
        );
        if is_root() {
            let meta = fs::metadata(restored.join("private")).expect("stat");
            assert_eq!((meta.uid(), meta.gid()), (OTHER_UID, OTHER_GID));
        }
        assert_eq!(
            fs::metadata(restored.join("setuid")).expect("stat").mode() & 0o7777,
            0o4755
        );
        assert_eq!(
            fs::metadata(restored.join("hard1")).expect("stat").ino(),
            fs::metadata(restored.join("hard2")).expect("stat").ino(),
            "hard links stay hard links"
        );

        fs::write(restored.join("file.txt"), "changed").expect("write to the clone");
        fs::write(forked.join("hard1"), "changed").expect("write to the fork");
        assert_eq!(
            fs::read_to_string(snapshot.join("file.txt")).expect("read"),
            "hello\n"
        );
        assert_eq!(
            fs::read_to_string(tree.join("file.txt")).expect("read"),
            "hello\n"
        );
        assert_eq!(
            fs::read_to_string(snapshot.join("hard2")).expect("read"),
            "linked\n"
        );
        assert_eq!(
            fs::read_to_string(restored.join("hard2")).expect("read"),
            "linked\n"
        );
    }
}

#[test]
fn a_symlink_to_etc_shadow_is_copied_as_a_link_never_its_target() {
    for (_dir, storage) in [storage(), copy_storage()] {
        let tree = storage.create_tree("ws", 1).expect("create");
        std::os::unix::fs::symlink("/etc/shadow", tree.join("shadow")).expect("symlink");
        std::os::unix::fs::symlink("/etc", tree.join("etc")).expect("symlink");
        let snapshot = storage.snapshot("ws", 1, "s").expect("snapshot");
        let clone = storage.clone_snapshot("ws", "s", "ws", 2).expect("clone");
        for copy in [&snapshot, &clone] {
            let meta = fs::symlink_metadata(copy.join("shadow")).expect("lstat");
            assert!(meta.file_type().is_symlink(), "{copy:?}/shadow is a link");
            assert_eq!(
                fs::read_link(copy.join("shadow")).expect("readlink"),
                Path::new("/etc/shadow")
            );
            assert!(
                fs::symlink_metadata(copy.join("etc"))
                    .expect("lstat")
                    .is_symlink()
            );
            // Nothing else appeared: the /etc directory was not copied through the link.
            let mut names: Vec<_> = fs::read_dir(copy)
                .expect("read_dir")
                .map(|entry| entry.expect("entry").file_name())
                .collect();
            names.sort();
            assert_eq!(names, ["etc", "shadow"]);
        }
    }
}

#[test]
fn deleting_a_workspace_removes_its_trees_and_snapshots() {
    let (_dir, storage) = copy_storage();
    let tree = storage.create_tree("ws", 1).expect("create");
    build_sample_tree(&tree);
    storage.snapshot("ws", 1, "s1").expect("snapshot");
    storage.snapshot("ws", 1, "s2").expect("snapshot");
    storage
        .clone_snapshot("ws", "s1", "ws", 2)
        .expect("restore");
    storage.create_tree("other", 1).expect("create");
    assert_eq!(storage.workspaces().expect("list"), ["other", "ws"]);
    assert_eq!(storage.trees("ws").expect("list"), [1, 2]);
    assert_eq!(storage.snapshots("ws").expect("list"), ["s1", "s2"]);

    storage.delete_workspace("ws").expect("delete");
    assert!(!storage.root().join("ws").exists());
    assert_eq!(storage.workspaces().expect("list"), ["other"]);
    let entries: Vec<_> = fs::read_dir(storage.root())
        .expect("read root")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(entries, ["other"], "no temporary left behind");

    let error = storage.delete_workspace("ws").expect_err("gone");
    assert!(matches!(error, StorageError::NotFound { .. }), "{error}");
}

#[test]
fn deleting_trees_and_snapshots_one_by_one() {
    let (_dir, storage) = copy_storage();
    let tree = storage.create_tree("ws", 1).expect("create");
    build_sample_tree(&tree);
    let snapshot = storage.snapshot("ws", 1, "s1").expect("snapshot");
    storage.delete_tree("ws", 1).expect("delete tree");
    assert!(!tree.exists());
    assert!(
        snapshot.join("file.txt").exists(),
        "the snapshot outlives its tree"
    );
    storage
        .delete_snapshot("ws", "s1")
        .expect("delete snapshot");
    assert!(!snapshot.exists());
    let error = storage.delete_snapshot("ws", "s1").expect_err("gone");
    match error {
        StorageError::NotFound { path } => assert_eq!(path, snapshot),
        other => panic!("{other}"),
    }
}

#[test]
fn missing_sources_are_not_found_and_existing_destinations_are_kept() {
    let (_dir, storage) = copy_storage();
    let missing = storage.snapshot("ws", 1, "s").expect_err("no tree");
    match missing {
        StorageError::NotFound { path } => assert_eq!(path, storage.root().join("ws/trees/1")),
        other => panic!("{other}"),
    }
    let missing = storage
        .clone_snapshot("ws", "nope", "ws", 2)
        .expect_err("no snapshot");
    match missing {
        StorageError::NotFound { path } => {
            assert_eq!(path, storage.root().join("ws/snapshots/nope"));
        }
        other => panic!("{other}"),
    }
    assert!(matches!(
        storage.set_quota("ws", 9, 1 << 20),
        Err(StorageError::NotFound { .. })
    ));

    let tree = storage.create_tree("ws", 1).expect("create");
    fs::write(tree.join("keep"), "original").expect("write");
    let exists = storage.create_tree("ws", 1).expect_err("exists");
    assert!(
        matches!(exists, StorageError::AlreadyExists { ref path } if *path == tree),
        "{exists}"
    );
    storage.snapshot("ws", 1, "s").expect("snapshot");
    assert!(matches!(
        storage.snapshot("ws", 1, "s"),
        Err(StorageError::AlreadyExists { .. })
    ));
    assert!(matches!(
        storage.clone_snapshot("ws", "s", "ws", 1),
        Err(StorageError::AlreadyExists { .. })
    ));
    assert_eq!(
        fs::read_to_string(tree.join("keep")).expect("read"),
        "original"
    );
    let entries: Vec<_> = fs::read_dir(storage.root().join("ws/trees"))
        .expect("read")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(entries, ["1"], "refused operations leave no temporary");
}

#[test]
fn invalid_ids_are_rejected_before_touching_the_disk() {
    let (dir, storage) = copy_storage();
    storage.create_tree("ws", 1).expect("create");
    let bad = [
        ("", IdProblem::Empty),
        ("a/b", IdProblem::Slash),
        ("../escape", IdProblem::Slash),
        ("a\0b", IdProblem::Nul),
        ("..", IdProblem::DotDot),
        ("x..y", IdProblem::DotDot),
        (".tmp-1", IdProblem::LeadingDot),
    ];
    for (id, problem) in bad {
        let workspace_errors = [
            storage.create_tree(id, 1).map(drop),
            storage.snapshot(id, 1, "s").map(drop),
            storage.clone_snapshot("ws", "s", id, 1).map(drop),
            storage.delete_workspace(id),
            storage.tree_path(id, 1).map(drop),
        ];
        for result in workspace_errors {
            match result {
                Err(StorageError::InvalidId {
                    kind,
                    problem: found,
                    ..
                }) => {
                    assert_eq!((kind, found), (IdKind::Workspace, problem), "{id:?}");
                }
                other => panic!("{id:?} accepted as a workspace id: {other:?}"),
            }
        }
        let snapshot_errors = [
            storage.snapshot("ws", 1, id).map(drop),
            storage.clone_snapshot("ws", id, "ws", 2).map(drop),
            storage.delete_snapshot("ws", id),
        ];
        for result in snapshot_errors {
            match result {
                Err(StorageError::InvalidId {
                    kind,
                    problem: found,
                    ..
                }) => {
                    assert_eq!((kind, found), (IdKind::Snapshot, problem), "{id:?}");
                }
                other => panic!("{id:?} accepted as a snapshot id: {other:?}"),
            }
        }
    }
    let error = storage.create_tree("a/b", 1).expect_err("refused");
    assert_eq!(
        error.to_string(),
        r#"invalid workspace id "a/b": it contains '/'"#
    );
    let mut outside: Vec<_> = fs::read_dir(dir.path())
        .expect("read")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    outside.sort();
    assert_eq!(outside, ["root"], "nothing created next to the root");
}

#[test]
fn garbage_collection_removes_leftovers_of_interrupted_operations() {
    let (_dir, storage) = copy_storage();
    let tree = storage.create_tree("ws", 1).expect("create");
    build_sample_tree(&tree);
    storage.snapshot("ws", 1, "s1").expect("snapshot");
    let root = storage.root();
    // What a kill -9 in the middle of each operation leaves behind.
    let leftovers = [
        root.join(".tmp-reflink-probe-0123456789abcdef-a"),
        root.join(".tmp-gone-0123456789abcdef"),
        root.join("ws/trees/.tmp-2-0123456789abcdef"),
        root.join("ws/snapshots/.tmp-s2-0123456789abcdef"),
        root.join("ws/.tmp-x-0123456789abcdef"),
    ];
    fs::write(&leftovers[0], "probe").expect("write");
    for dir in &leftovers[1..] {
        fs::create_dir(dir).expect("mkdir");
        build_sample_tree(dir); // Half a copy, with a read-only directory inside.
    }
    let mut removed = storage.collect_garbage().expect("collect");
    removed.sort();
    let mut expected = leftovers.to_vec();
    expected.sort();
    assert_eq!(removed, expected);
    for leftover in &leftovers {
        assert!(!leftover.exists(), "{leftover:?} still there");
    }
    assert_eq!(storage.trees("ws").expect("list"), [1]);
    assert_eq!(storage.snapshots("ws").expect("list"), ["s1"]);
    assert_same_tree(&tree, &root.join("ws/snapshots/s1"));
    assert!(storage.collect_garbage().expect("collect").is_empty());
}

#[test]
fn prune_removes_results_whose_metadata_was_never_committed() {
    let (_dir, storage) = copy_storage();
    storage.create_tree("ws", 1).expect("create");
    storage.snapshot("ws", 1, "known").expect("snapshot");
    storage.snapshot("ws", 1, "orphan").expect("snapshot");
    storage
        .clone_snapshot("ws", "known", "ws", 2)
        .expect("restore");
    let removed = storage.prune("ws", &[1], &["known"]).expect("prune");
    assert_eq!(
        removed,
        [
            storage.root().join("ws/trees/2"),
            storage.root().join("ws/snapshots/orphan")
        ]
    );
    assert_eq!(storage.trees("ws").expect("list"), [1]);
    assert_eq!(storage.snapshots("ws").expect("list"), ["known"]);
    assert!(
        storage
            .prune("nothing", &[], &[])
            .expect("prune")
            .is_empty()
    );
}

#[test]
fn size_agrees_with_du() {
    let (_dir, storage) = copy_storage();
    let tree = storage.create_tree("ws", 1).expect("create");
    build_sample_tree(&tree);
    fs::write(tree.join("big"), vec![7u8; 3 << 20]).expect("write");
    let before_link = nexus_storage::size(&tree).expect("size");
    fs::hard_link(tree.join("big"), tree.join("big-again")).expect("link");
    assert_eq!(
        nexus_storage::size(&tree).expect("size"),
        before_link,
        "a second name of a file takes no space"
    );
    for i in 0..2000 {
        let dir = tree.join(format!("many/{}", i % 20));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(i.to_string()), vec![1u8; i]).expect("write");
    }
    let du = run("du", &["-s", "-B1", &tree.to_string_lossy()]);
    let du: u64 = du
        .split_whitespace()
        .next()
        .expect("a number")
        .parse()
        .expect("bytes");
    let ours = nexus_storage::size(&tree).expect("size");
    assert_eq!(ours, du, "size vs du -s -B1");
    assert!(matches!(
        nexus_storage::size(&tree.join("nope")),
        Err(StorageError::NotFound { .. })
    ));
    // A symlink is measured, not followed.
    let link_size = nexus_storage::size(&tree.join("link_etc")).expect("size of a link");
    assert!(link_size < 1 << 16, "{link_size}");
}

#[test]
fn quota_off_btrfs_is_not_enforced_and_says_why() {
    let (_dir, storage) = storage();
    if storage.backend() == Backend::Btrfs {
        return; // Covered by the btrfs tests.
    }
    storage.create_tree("ws", 1).expect("create");
    match storage.set_quota("ws", 1, 1 << 30).expect("set") {
        QuotaOutcome::NotEnforced { reason } => {
            assert!(reason.contains("btrfs"), "{reason}");
        }
        QuotaOutcome::Enforced => panic!("no filesystem here enforces it"),
    }
    assert!(matches!(
        storage.enable_quotas().expect("enable"),
        QuotaOutcome::NotEnforced { .. }
    ));
}

#[test]
fn created_trees_are_empty_directories_with_mode_0755() {
    let (_dir, storage) = storage();
    let tree = storage.create_tree("ws", 7).expect("create");
    let meta = fs::metadata(&tree).expect("stat");
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(fs::read_dir(&tree).expect("read").count(), 0);
    assert_eq!(
        fs::metadata(storage.root().join("ws"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o711
    );
}

/// Environment variable telling [`crash_child`] which storage root to snapshot in.
const CRASH_CHILD_ROOT: &str = "NEXUS_STORAGE_CRASH_CHILD_ROOT";

/// Not a test of its own: the child process of
/// [`kill_9_during_a_snapshot_leaves_nothing_at_the_final_path_and_garbage_to_collect`],
/// which runs this test binary again with only this test selected. Without the
/// environment variable it does nothing.
#[test]
fn crash_child() {
    let Some(root) = std::env::var_os(CRASH_CHILD_ROOT) else {
        return;
    };
    let storage = WorkspaceStorage::open_with(Path::new(&root), Backend::Copy).expect("open");
    storage.snapshot("ws", 1, "s").expect("snapshot");
}

#[test]
fn kill_9_during_a_snapshot_leaves_nothing_at_the_final_path_and_garbage_to_collect() {
    let (_dir, storage) = copy_storage();
    let tree = storage.create_tree("ws", 1).expect("create");
    let content = vec![0x5au8; 256 << 10];
    for i in 0..400 {
        fs::write(tree.join(format!("f{i}")), &content).expect("write");
    }
    let snapshots = storage.root().join("ws/snapshots");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "local::crash_child", "--nocapture"])
        .env(CRASH_CHILD_ROOT, storage.root())
        .spawn()
        .expect("spawn the child");
    // Kill it as soon as its temporary holds some of the copy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let temporary = loop {
        let partial = fs::read_dir(&snapshots).ok().and_then(|entries| {
            entries
                .map(|entry| entry.expect("entry").path())
                .find(|path| fs::read_dir(path).is_ok_and(|mut files| files.nth(10).is_some()))
        });
        if let Some(partial) = partial {
            break Some(partial);
        }
        if std::time::Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    let Some(temporary) = temporary else {
        panic!("the child finished ({status:?}) before it could be killed mid-copy");
    };
    let name = temporary
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with(".tmp-s-"), "{name}");

    let final_path = snapshots.join("s");
    if final_path.exists() {
        // Killed between the rename and the end: then it must be complete.
        assert_same_tree(&tree, &final_path);
    } else {
        assert_eq!(storage.snapshots("ws").expect("list"), Vec::<String>::new());
        assert!(temporary.exists(), "the partial copy is garbage, not gone");
        let removed = storage.collect_garbage().expect("collect");
        assert_eq!(removed, [temporary]);
        let snapshot = storage
            .snapshot("ws", 1, "s")
            .expect("snapshot after the crash");
        assert_same_tree(&tree, &snapshot);
    }
}
