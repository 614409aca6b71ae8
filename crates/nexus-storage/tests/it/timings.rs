//! Measures (prints, never asserts) how long snapshot and clone of a ~200 MiB tree take
//! with each backend. Run with `cargo nextest run -p nexus-storage --no-capture timings`.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nexus_storage::{Backend, WorkspaceStorage};

use crate::support::{BtrfsMount, skip};

/// 1000 files of 200 KiB in 20 directories: 195 MiB.
const DIRS: usize = 20;
const FILES_PER_DIR: usize = 50;
const FILE_SIZE: usize = 200 << 10;

#[test]
fn timings_of_snapshot_and_clone_of_a_200_mib_tree() {
    let local = tempfile::tempdir().expect("temporary directory");
    let mut rows = vec![measure(&local.path().join("storage"), Backend::Copy)];
    if let Some(mount) = BtrfsMount::new("timings (btrfs and reflink rows)", 2048) {
        rows.push(measure(&mount.path().join("btrfs"), Backend::Btrfs));
        rows.push(measure(&mount.path().join("reflink"), Backend::Reflink));
    } else {
        skip("timings", "only the copy backend measured");
    }
    eprintln!(
        "\nsnapshot and clone of a tree of {DIRS}x{FILES_PER_DIR} files of {} KiB:",
        FILE_SIZE >> 10
    );
    eprintln!(
        "{:<8} {:<60} {:>10} {:>12} {:>12}",
        "backend", "why", "tree MiB", "snapshot", "clone"
    );
    for row in rows {
        eprintln!(
            "{:<8} {:<60} {:>10.1} {:>12?} {:>12?}",
            row.backend.as_str(),
            row.describe,
            row.bytes as f64 / f64::from(1 << 20),
            row.snapshot,
            row.clone,
        );
    }
}

struct Row {
    backend: Backend,
    describe: String,
    bytes: u64,
    snapshot: Duration,
    clone: Duration,
}

fn measure(root: &Path, backend: Backend) -> Row {
    let storage = WorkspaceStorage::open_with(root, backend).expect("open");
    let tree = storage.create_tree("bench", 1).expect("create");
    fill(&tree);
    let bytes = nexus_storage::size(&tree).expect("size");
    // Flush the tree first so the copy backends' syncfs measures their own writes.
    nix::unistd::sync();
    let started = Instant::now();
    storage.snapshot("bench", 1, "s").expect("snapshot");
    let snapshot = started.elapsed();
    let started = Instant::now();
    storage
        .clone_snapshot("bench", "s", "bench", 2)
        .expect("clone");
    let clone = started.elapsed();
    storage.delete_workspace("bench").expect("delete");
    Row {
        backend,
        describe: storage.describe().to_owned(),
        bytes,
        snapshot,
        clone,
    }
}

fn fill(tree: &Path) {
    let mut content = vec![0u8; FILE_SIZE];
    for dir in 0..DIRS {
        let path = tree.join(format!("d{dir}"));
        fs::create_dir(&path).expect("mkdir");
        for file in 0..FILES_PER_DIR {
            // Distinct, non-zero content per file.
            content.fill(u8::try_from((dir * FILES_PER_DIR + file) % 251 + 1).expect("fits"));
            fs::write(path.join(format!("f{file}")), &content).expect("write");
        }
    }
}
