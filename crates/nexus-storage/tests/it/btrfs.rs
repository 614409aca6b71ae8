//! The storage layer on a real btrfs (a loop-mounted image made per test), checked with
//! btrfs-progs as independent evidence.

use std::fs;
use std::io::Write;
use std::path::Path;

use nexus_storage::{Backend, QuotaOutcome, WorkspaceStorage};

use crate::support::{BtrfsMount, assert_same_tree, build_sample_tree, is_subvolume_root, run};

/// Whether `btrfs property get -ts <path> ro` says read-only.
fn read_only(path: &Path) -> bool {
    let output = run(
        "btrfs",
        &["property", "get", "-ts", &path.to_string_lossy(), "ro"],
    );
    match output.trim() {
        "ro=true" => true,
        "ro=false" => false,
        other => panic!("unexpected btrfs property output {other:?}"),
    }
}

/// The paths of the subvolumes `btrfs subvolume list` reports under `mount`.
fn subvolumes(mount: &Path) -> Vec<String> {
    run(
        "btrfs",
        &["subvolume", "list", "-o", &mount.to_string_lossy()],
    )
    .lines()
    .filter_map(|line| line.split(" path ").nth(1))
    .map(str::to_owned)
    .collect()
}

#[test]
fn btrfs_is_detected_and_trees_and_snapshots_are_subvolumes() {
    let Some(mount) = BtrfsMount::new(
        "btrfs_is_detected_and_trees_and_snapshots_are_subvolumes",
        512,
    ) else {
        return;
    };
    let storage = WorkspaceStorage::open(&mount.path().join("storage")).expect("open");
    assert_eq!(storage.backend(), Backend::Btrfs);
    assert_eq!(
        storage.describe(),
        "btrfs: trees are subvolumes, snapshots are O(1)"
    );

    let tree = storage.create_tree("ws", 1).expect("create");
    run("btrfs", &["subvolume", "show", &tree.to_string_lossy()]);
    assert!(is_subvolume_root(&tree));
    assert!(!read_only(&tree));
    fs::write(tree.join("a.txt"), "before").expect("write");

    let snapshot = storage.snapshot("ws", 1, "s1").expect("snapshot");
    run("btrfs", &["subvolume", "show", &snapshot.to_string_lossy()]);
    assert!(is_subvolume_root(&snapshot));
    assert!(read_only(&snapshot), "snapshots are read-only subvolumes");
    let write = fs::write(snapshot.join("new.txt"), "x");
    assert!(write.is_err(), "even root cannot write into the snapshot");
    assert_eq!(
        write.expect_err("refused").raw_os_error(),
        Some(libc::EROFS)
    );
    assert!(fs::write(snapshot.join("a.txt"), "overwritten").is_err());

    fs::write(tree.join("a.txt"), "after").expect("write");
    assert_eq!(
        fs::read_to_string(snapshot.join("a.txt")).expect("read"),
        "before"
    );

    let listed = subvolumes(mount.path());
    assert!(
        listed.contains(&"storage/ws/trees/1".to_owned()),
        "{listed:?}"
    );
    assert!(
        listed.contains(&"storage/ws/snapshots/s1".to_owned()),
        "{listed:?}"
    );
    assert_eq!(listed.len(), 2, "no temporary subvolume left: {listed:?}");
}

#[test]
fn btrfs_clone_is_an_independent_writable_subvolume_with_the_snapshot_content() {
    let Some(mount) = BtrfsMount::new(
        "btrfs_clone_is_an_independent_writable_subvolume_with_the_snapshot_content",
        512,
    ) else {
        return;
    };
    let storage = WorkspaceStorage::open(&mount.path().join("storage")).expect("open");
    let tree = storage.create_tree("ws", 1).expect("create");
    build_sample_tree(&tree);
    let snapshot = storage.snapshot("ws", 1, "s1").expect("snapshot");
    assert_same_tree(&tree, &snapshot);

    let restored = storage
        .clone_snapshot("ws", "s1", "ws", 2)
        .expect("restore");
    let forked = storage.clone_snapshot("ws", "s1", "fork", 1).expect("fork");
    for clone in [&restored, &forked] {
        assert!(is_subvolume_root(clone));
        assert!(!read_only(clone), "clones are writable");
        assert_same_tree(&snapshot, clone);
        assert_eq!(
            fs::read_link(clone.join("link_shadow")).expect("a link"),
            Path::new("/etc/shadow")
        );
    }
    fs::write(restored.join("file.txt"), "changed").expect("write to the clone");
    fs::write(restored.join("added"), "x").expect("add to the clone");
    assert_eq!(
        fs::read_to_string(snapshot.join("file.txt")).expect("read"),
        "hello\n"
    );
    assert_eq!(
        fs::read_to_string(forked.join("file.txt")).expect("read"),
        "hello\n"
    );
    assert!(!snapshot.join("added").exists());
    assert!(!forked.join("added").exists());
}

#[test]
fn btrfs_deletes_nested_and_read_only_subvolumes() {
    let Some(mount) = BtrfsMount::new("btrfs_deletes_nested_and_read_only_subvolumes", 512) else {
        return;
    };
    let storage = WorkspaceStorage::open(&mount.path().join("storage")).expect("open");
    let tree = storage.create_tree("ws", 1).expect("create");
    build_sample_tree(&tree);
    // What a sandbox user could do inside its workspace: nested subvolumes, one inside
    // another, one read-only, one deep in an ordinary directory.
    let path = |relative: &str| tree.join(relative).to_string_lossy().into_owned();
    run("btrfs", &["subvolume", "create", &path("inner")]);
    fs::write(tree.join("inner/data"), "inner").expect("write");
    run("btrfs", &["subvolume", "create", &path("inner/innermost")]);
    run(
        "btrfs",
        &[
            "subvolume",
            "snapshot",
            "-r",
            &path("inner"),
            &path("nested/ro-snap"),
        ],
    );
    assert!(read_only(&tree.join("nested/ro-snap")));
    storage.snapshot("ws", 1, "s1").expect("snapshot");
    storage.snapshot("ws", 1, "s2").expect("snapshot");

    // A read-only snapshot alone.
    storage
        .delete_snapshot("ws", "s2")
        .expect("delete a read-only snapshot");
    assert!(!storage.root().join("ws/snapshots/s2").exists());

    // A tree holding nested subvolumes, one of them read-only.
    storage
        .delete_tree("ws", 1)
        .expect("delete a tree with nested subvolumes");
    assert!(!tree.exists());

    // A read-only subvolume that itself holds a nested subvolume.
    let tree2 = storage
        .clone_snapshot("ws", "s1", "ws", 2)
        .expect("restore");
    let path2 = |relative: &str| tree2.join(relative).to_string_lossy().into_owned();
    run("btrfs", &["subvolume", "create", &path2("nested/sub")]);
    run(
        "btrfs",
        &["property", "set", "-ts", &path2(""), "ro", "true"],
    );
    assert!(read_only(&tree2));
    storage
        .delete_tree("ws", 2)
        .expect("delete a read-only tree with a nested subvolume");
    assert!(!tree2.exists());

    storage.create_tree("ws", 3).expect("create");
    storage
        .delete_workspace("ws")
        .expect("delete the workspace with its snapshots");
    assert!(!storage.root().join("ws").exists());
    assert_eq!(subvolumes(mount.path()), Vec::<String>::new());
}

#[test]
fn btrfs_garbage_collection_removes_leftover_subvolumes() {
    let Some(mount) = BtrfsMount::new("btrfs_garbage_collection_removes_leftover_subvolumes", 512)
    else {
        return;
    };
    let storage = WorkspaceStorage::open(&mount.path().join("storage")).expect("open");
    let tree = storage.create_tree("ws", 1).expect("create");
    fs::write(tree.join("a"), "a").expect("write");
    storage.snapshot("ws", 1, "s1").expect("snapshot");
    // A subvolume created but not renamed yet, and a read-only snapshot likewise.
    let leftover_tree = storage.root().join("ws/trees/.tmp-2-00000000000000aa");
    let leftover_snapshot = storage.root().join("ws/snapshots/.tmp-s2-00000000000000bb");
    run(
        "btrfs",
        &["subvolume", "create", &leftover_tree.to_string_lossy()],
    );
    fs::write(leftover_tree.join("half"), "half").expect("write");
    run(
        "btrfs",
        &[
            "subvolume",
            "snapshot",
            "-r",
            &tree.to_string_lossy(),
            &leftover_snapshot.to_string_lossy(),
        ],
    );
    let mut removed = storage.collect_garbage().expect("collect");
    removed.sort();
    let mut expected = vec![leftover_tree.clone(), leftover_snapshot.clone()];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(!leftover_tree.exists() && !leftover_snapshot.exists());
    let mut listed = subvolumes(mount.path());
    listed.sort();
    assert_eq!(listed, ["storage/ws/snapshots/s1", "storage/ws/trees/1"]);
}

#[test]
fn reflink_backend_on_btrfs_shares_extents() {
    let Some(mount) = BtrfsMount::new("reflink_backend_on_btrfs_shares_extents", 512) else {
        return;
    };
    let storage =
        WorkspaceStorage::open_with(&mount.path().join("storage"), Backend::Reflink).expect("open");
    assert_eq!(storage.backend(), Backend::Reflink);
    assert!(
        storage.describe().contains("reflinked"),
        "{}",
        storage.describe()
    );
    let tree = storage.create_tree("ws", 1).expect("create");
    assert!(
        !is_subvolume_root(&tree),
        "reflink trees are plain directories"
    );
    build_sample_tree(&tree);
    fs::write(tree.join("big"), vec![0x42u8; 32 << 20]).expect("write");
    let snapshot = storage.snapshot("ws", 1, "s1").expect("snapshot");
    let clone = storage.clone_snapshot("ws", "s1", "ws", 2).expect("clone");
    assert!(!is_subvolume_root(&snapshot) && !is_subvolume_root(&clone));
    assert_same_tree(&tree, &snapshot);
    assert_same_tree(&snapshot, &clone);

    run("sync", &[]);
    // `btrfs filesystem du` columns: Total, Exclusive, Set shared, Filename.
    let du = run(
        "btrfs",
        &[
            "filesystem",
            "du",
            "-s",
            "--raw",
            &clone.join("big").to_string_lossy(),
        ],
    );
    let numbers: Vec<u64> = du
        .lines()
        .nth(1)
        .expect("a result line")
        .split_whitespace()
        .take(2)
        .map(|n| n.parse().expect("a number"))
        .collect();
    assert_eq!(numbers[0], 32 << 20, "{du}");
    assert_eq!(numbers[1], 0, "the clone owns no extent of its own: {du}");

    fs::write(clone.join("big"), "rewritten").expect("write");
    assert_eq!(
        fs::read(snapshot.join("big")).expect("read").len(),
        32 << 20
    );
    assert_eq!(set_quota_reason(&storage), "plain directory");
}

/// The reason given for not enforcing a quota on tree 1 of `ws`, shortened.
fn set_quota_reason(storage: &WorkspaceStorage) -> &'static str {
    match storage.set_quota("ws", 1, 1 << 20).expect("set") {
        QuotaOutcome::NotEnforced { reason } if reason.contains("plain directory") => {
            "plain directory"
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn btrfs_quota_is_enforced_once_quotas_are_enabled() {
    let Some(mount) = BtrfsMount::new("btrfs_quota_is_enforced_once_quotas_are_enabled", 512)
    else {
        return;
    };
    let storage = WorkspaceStorage::open(&mount.path().join("storage")).expect("open");
    let tree = storage.create_tree("ws", 1).expect("create");
    match storage.set_quota("ws", 1, 1 << 20).expect("set") {
        QuotaOutcome::NotEnforced { reason } => {
            assert!(reason.contains("quotas are not enabled"), "{reason}");
        }
        QuotaOutcome::Enforced => panic!("quotas are off on a fresh filesystem"),
    }
    assert_eq!(
        storage.enable_quotas().expect("enable"),
        QuotaOutcome::Enforced
    );
    run(
        "btrfs",
        &["quota", "rescan", "-w", &mount.path().to_string_lossy()],
    );
    assert_eq!(
        storage.set_quota("ws", 1, 4 << 20).expect("set"),
        QuotaOutcome::Enforced
    );
    let limits = run(
        "btrfs",
        &["qgroup", "show", "-r", "--raw", &tree.to_string_lossy()],
    );
    assert!(limits.contains(&(4u64 << 20).to_string()), "{limits}");

    let mut file = fs::File::create(tree.join("big")).expect("create");
    let chunk = vec![0x33u8; 1 << 20];
    let mut failure = None;
    for _ in 0..16 {
        if let Err(error) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            failure = Some(error);
            break;
        }
    }
    let failure = failure.expect("writing 16 MiB into a 4 MiB quota fails");
    assert_eq!(failure.raw_os_error(), Some(libc::EDQUOT), "{failure}");
}

#[test]
fn btrfs_backend_snapshots_a_plain_directory_tree_by_cloning() {
    let Some(mount) = BtrfsMount::new(
        "btrfs_backend_snapshots_a_plain_directory_tree_by_cloning",
        512,
    ) else {
        return;
    };
    let root = mount.path().join("storage");
    // A tree made by the copy backend, later opened with the btrfs backend.
    let copy = WorkspaceStorage::open_with(&root, Backend::Copy).expect("open");
    let tree = copy.create_tree("ws", 1).expect("create");
    assert!(!is_subvolume_root(&tree));
    build_sample_tree(&tree);
    let storage = WorkspaceStorage::open(&root).expect("open");
    assert_eq!(storage.backend(), Backend::Btrfs);
    let snapshot = storage.snapshot("ws", 1, "s1").expect("snapshot");
    assert_same_tree(&tree, &snapshot);
    let clone = storage.clone_snapshot("ws", "s1", "ws", 2).expect("clone");
    assert_same_tree(&tree, &clone);
    storage.delete_workspace("ws").expect("delete");
}
