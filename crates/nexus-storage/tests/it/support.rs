//! Shared helpers: loud skips, a throwaway loop-mounted btrfs, sample trees and their
//! comparison.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Says loudly that a test could not check what it covers on this machine. With
/// `NEXUS_REQUIRE_BTRFS=1` a skip is a failure instead (for CI machines that must run
/// everything).
#[expect(
    clippy::print_stderr,
    reason = "a skipped test must say so in the test output"
)]
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("NEXUS_REQUIRE_BTRFS").is_some_and(|value| value == "1") {
        panic!("{test} cannot run and NEXUS_REQUIRE_BTRFS=1: {reason}");
    }
    eprintln!("SKIP: {test}: {reason}");
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs a command, returning its stdout, panicking with its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A btrfs filesystem in a sparse image file, loop-mounted for one test. Dropping it
/// unmounts (lazily, so a stray open file cannot leak the mount) and detaches the loop
/// device.
#[derive(Debug)]
pub struct BtrfsMount {
    mountpoint: PathBuf,
    device: String,
    _dir: tempfile::TempDir,
}

impl BtrfsMount {
    /// Makes and mounts a btrfs of `size_mib` MiB, or says why not (root, btrfs-progs,
    /// loop devices) and returns `None`.
    pub fn new(test: &str, size_mib: u64) -> Option<Self> {
        if !is_root() {
            skip(test, "needs root to loop-mount a btrfs image");
            return None;
        }
        if Command::new("mkfs.btrfs")
            .arg("--version")
            .output()
            .is_err()
        {
            skip(
                test,
                "mkfs.btrfs not found: install btrfs-progs (apt-get install -y btrfs-progs)",
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let image = dir.path().join("btrfs.img");
        let mountpoint = dir.path().join("mnt");
        fs::create_dir(&mountpoint).expect("mount point");
        fs::File::create(&image)
            .and_then(|file| file.set_len(size_mib << 20))
            .expect("sparse image");
        let image_arg = image.to_str().expect("UTF-8 path");
        let mkfs = Command::new("mkfs.btrfs")
            .args(["-q", "-f", image_arg])
            .output()
            .expect("mkfs.btrfs runs");
        if !mkfs.status.success() {
            skip(
                test,
                &format!(
                    "mkfs.btrfs failed: {}",
                    String::from_utf8_lossy(&mkfs.stderr)
                ),
            );
            return None;
        }
        let losetup = Command::new("losetup")
            .args(["--find", "--show", image_arg])
            .output()
            .expect("losetup runs");
        if !losetup.status.success() {
            skip(
                test,
                &format!(
                    "no loop device: {}",
                    String::from_utf8_lossy(&losetup.stderr)
                ),
            );
            return None;
        }
        let device = String::from_utf8_lossy(&losetup.stdout).trim().to_owned();
        // From here on, Drop cleans up.
        let mount = BtrfsMount {
            mountpoint,
            device,
            _dir: dir,
        };
        let mounted = Command::new("mount")
            .args(["-t", "btrfs", &mount.device])
            .arg(&mount.mountpoint)
            .output()
            .expect("mount runs");
        if !mounted.status.success() {
            skip(
                test,
                &format!(
                    "cannot mount btrfs: {}",
                    String::from_utf8_lossy(&mounted.stderr)
                ),
            );
            return None;
        }
        Some(mount)
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        // Failures are ignored: the first fails harmlessly when mount() itself failed.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// The owner given to one file of the sample tree when running as root.
pub const OTHER_UID: u32 = 1234;
/// The group given to one file of the sample tree when running as root.
pub const OTHER_GID: u32 = 5678;

/// Fills the empty directory `root` with one of everything a copy must keep: modes
/// (private, executable, setuid, a read-only directory), an empty file, a sparse file,
/// hard links, nested directories, symlinks (relative, absolute to `/etc/shadow` and
/// `/etc`, dangling), a FIFO, old mtimes, and another owner when root.
pub fn build_sample_tree(root: &Path) {
    fs::write(root.join("file.txt"), "hello\n").expect("write");
    write_mode(&root.join("script.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write_mode(&root.join("private"), b"secret", 0o600);
    write_mode(&root.join("setuid"), b"suid", 0o4755);
    fs::write(root.join("empty"), "").expect("write");
    let mut sparse = fs::File::create(root.join("sparse")).expect("create");
    sparse.seek(SeekFrom::Start(1 << 20)).expect("seek");
    sparse.write_all(&[b'X'; 4096]).expect("write");
    sparse.set_len(3 << 20).expect("truncate");
    drop(sparse);
    fs::write(root.join("hard1"), "linked\n").expect("write");
    fs::hard_link(root.join("hard1"), root.join("hard2")).expect("link");
    fs::create_dir_all(root.join("nested/deeper/deepest")).expect("mkdir");
    fs::write(root.join("nested/deeper/deepest/leaf.txt"), "leaf\n").expect("write");
    fs::create_dir(root.join("readonly_dir")).expect("mkdir");
    fs::write(root.join("readonly_dir/inner.txt"), "inner\n").expect("write");
    symlink("file.txt", root.join("link_rel")).expect("symlink");
    symlink("/etc/shadow", root.join("link_shadow")).expect("symlink");
    symlink("/etc", root.join("link_etc")).expect("symlink");
    symlink("does-not-exist", root.join("dangling")).expect("symlink");
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");
    if is_root() {
        std::os::unix::fs::chown(root.join("private"), Some(OTHER_UID), Some(OTHER_GID))
            .expect("chown");
        fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for file in ["file.txt", "sparse", "nested/deeper/deepest/leaf.txt"] {
        fs::File::options()
            .write(true)
            .open(root.join(file))
            .and_then(|file| file.set_modified(old))
            .expect("set mtime");
    }
    for dir in ["nested/deeper", "readonly_dir"] {
        fs::File::open(root.join(dir))
            .and_then(|file| file.set_modified(old))
            .expect("set mtime");
    }
    fs::set_permissions(root.join("readonly_dir"), fs::Permissions::from_mode(0o555))
        .expect("chmod");
}

/// Writes `content` to a new file with `mode`.
fn write_mode(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Asserts that the trees `expected` and `actual` hold the same entries with the same
/// kinds, modes, owners, mtimes, contents, symlink targets and hard-link structure.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let mut links = Vec::new();
    compare(expected, actual, Path::new(""), &mut links);
    // Names that are one inode in `expected` are one inode in `actual`, and vice versa.
    for (i, (a_ino, b_ino, name)) in links.iter().enumerate() {
        for (c_ino, d_ino, other) in &links[i + 1..] {
            assert_eq!(
                a_ino == c_ino,
                b_ino == d_ino,
                "hard-link structure differs for {name:?} and {other:?}"
            );
        }
    }
}

fn compare(expected: &Path, actual: &Path, relative: &Path, links: &mut Vec<(u64, u64, PathBuf)>) {
    let a = fs::symlink_metadata(expected.join(relative)).expect("stat expected");
    let b = fs::symlink_metadata(actual.join(relative))
        .unwrap_or_else(|error| panic!("{relative:?} missing from the copy: {error}"));
    let what = relative.display();
    assert_eq!(a.file_type(), b.file_type(), "kind of {what}");
    assert_eq!(a.mode(), b.mode(), "mode of {what}");
    assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "owner of {what}");
    assert_eq!(
        (a.mtime(), a.mtime_nsec()),
        (b.mtime(), b.mtime_nsec()),
        "mtime of {what}"
    );
    if a.file_type().is_symlink() {
        assert_eq!(
            fs::read_link(expected.join(relative)).expect("readlink"),
            fs::read_link(actual.join(relative)).expect("readlink"),
            "target of {what}"
        );
    } else if a.file_type().is_file() {
        assert_eq!(a.len(), b.len(), "size of {what}");
        assert!(
            fs::read(expected.join(relative)).expect("read")
                == fs::read(actual.join(relative)).expect("read"),
            "content of {what}"
        );
        if a.nlink() > 1 || b.nlink() > 1 {
            links.push((a.ino(), b.ino(), relative.to_owned()));
        }
    } else if a.file_type().is_dir() {
        let mut names_a = names(&expected.join(relative));
        let mut names_b = names(&actual.join(relative));
        names_a.sort();
        names_b.sort();
        assert_eq!(names_a, names_b, "entries of {what}");
        for name in names_a {
            compare(expected, actual, &relative.join(name), links);
        }
    }
}

fn names(dir: &Path) -> Vec<std::ffi::OsString> {
    fs::read_dir(dir)
        .expect("read_dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect()
}

/// Bytes allocated to a file (its blocks).
pub fn allocated(path: &Path) -> u64 {
    fs::symlink_metadata(path).expect("stat").blocks() * 512
}

/// Whether `path` is the root of a btrfs subvolume (inode 256), the way btrfs-progs
/// tells.
pub fn is_subvolume_root(path: &Path) -> bool {
    let meta = fs::symlink_metadata(path).expect("stat");
    meta.is_dir() && meta.ino() == 256
}
