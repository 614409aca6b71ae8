//! The storage backends and their detection from the filesystem of the root.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::sys::statfs::{
    BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, FUSE_SUPER_MAGIC, FsType,
    NFS_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC, fstatfs,
};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::btrfs;
use crate::error::{Result, StorageError, sys};

/// How trees are stored, snapshotted and cloned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Trees are btrfs subvolumes; snapshots are read-only subvolume snapshots and clones
    /// writable snapshots of them: O(1) in the size of the tree.
    Btrfs,
    /// Copies recreate directories, symlinks and metadata and clone every regular file
    /// with `ioctl(FICLONE)`: O(number of files), no data copied.
    Reflink,
    /// Plain recursive copy: O(size of the tree).
    Copy,
}

impl Backend {
    /// The lowercase name: `btrfs`, `reflink` or `copy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Btrfs => "btrfs",
            Backend::Reflink => "reflink",
            Backend::Copy => "copy",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the filesystem of a directory supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Capabilities {
    /// A human name of the filesystem (`ext4`, `xfs`, `overlay`, ...).
    pub(crate) filesystem: String,
    /// The filesystem is btrfs.
    pub(crate) btrfs: bool,
    /// `FICLONE` works between two files of the directory.
    pub(crate) reflink: bool,
}

impl Capabilities {
    /// Probes the filesystem of the directory `root` (shown as `path`); the reflink
    /// probe clones a small temporary file inside it.
    pub(crate) fn probe(root: BorrowedFd<'_>, path: &Path) -> Result<Self> {
        let magic = fstatfs(root)
            .map_err(sys("statfs", path))?
            .filesystem_type();
        let btrfs = btrfs::is_btrfs(root).map_err(sys("statfs", path))?;
        Ok(Capabilities {
            filesystem: filesystem_name(magic),
            btrfs,
            reflink: btrfs || probe_reflink(root, path)?,
        })
    }

    /// The backend for this filesystem and why.
    pub(crate) fn best(&self) -> (Backend, String) {
        let fs = &self.filesystem;
        if self.btrfs {
            (
                Backend::Btrfs,
                format!("{fs}: trees are subvolumes, snapshots are O(1)"),
            )
        } else if self.reflink {
            (
                Backend::Reflink,
                format!("{fs}: files are reflinked, cost grows with the number of files"),
            )
        } else {
            (
                Backend::Copy,
                format!("{fs}: plain copy, cost grows with size"),
            )
        }
    }

    /// Why `backend` was forced, or why it cannot work here.
    pub(crate) fn check(&self, backend: Backend, root: &Path) -> Result<String> {
        let fs = &self.filesystem;
        let unsupported = |reason: String| StorageError::BackendUnsupported {
            backend,
            root: root.to_owned(),
            reason,
        };
        match backend {
            Backend::Btrfs if !self.btrfs => Err(unsupported(format!("{fs} is not btrfs"))),
            Backend::Reflink if !self.reflink => {
                Err(unsupported(format!("{fs} does not support FICLONE")))
            }
            Backend::Btrfs => Ok(format!("{fs}: trees are subvolumes, snapshots are O(1)")),
            Backend::Reflink => Ok(format!(
                "{fs}: files are reflinked (forced), cost grows with the number of files"
            )),
            Backend::Copy => Ok(format!("{fs}: plain copy (forced), cost grows with size")),
        }
    }
}

/// Clones a small file inside `root` to see whether the filesystem supports FICLONE.
/// Leftovers of an interrupted probe are `.tmp-` entries, swept as garbage.
fn probe_reflink(root: BorrowedFd<'_>, path: &Path) -> Result<bool> {
    let suffix = format!("{:016x}", rand::random::<u64>());
    let source_name = format!(".tmp-reflink-probe-{suffix}-a");
    let dest_name = format!(".tmp-reflink-probe-{suffix}-b");
    let create = |name: &str| {
        nix::fcntl::openat(
            root,
            name,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(sys("create", &path.join(name)))
    };
    let source = create(&source_name)?;
    let result = (|| {
        nix::unistd::write(&source, &[0x5a; 4096])
            .map_err(sys("write", &path.join(&source_name)))?;
        let dest = create(&dest_name)?;
        Ok(btrfs::clone_file(source.as_fd(), dest.as_fd()).is_ok())
    })();
    for name in [&source_name, &dest_name] {
        // Best effort: a leftover is garbage that `collect_garbage` removes.
        let _ = unlinkat(root, name.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// A human name for a `statfs` magic number.
fn filesystem_name(magic: FsType) -> String {
    let known = [
        (EXT4_SUPER_MAGIC, "ext4"),
        (BTRFS_SUPER_MAGIC, "btrfs"),
        (XFS_SUPER_MAGIC, "xfs"),
        (TMPFS_MAGIC, "tmpfs"),
        (OVERLAYFS_SUPER_MAGIC, "overlay"),
        (F2FS_SUPER_MAGIC, "f2fs"),
        (NFS_SUPER_MAGIC, "nfs"),
        (FUSE_SUPER_MAGIC, "fuse"),
    ];
    known
        .iter()
        .find(|(candidate, _)| *candidate == magic)
        .map_or_else(
            || format!("filesystem {:#x}", magic.0),
            |(_, name)| (*name).to_owned(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forcing_names_what_is_missing() {
        let ext4 = Capabilities {
            filesystem: "ext4".to_owned(),
            btrfs: false,
            reflink: false,
        };
        let root = Path::new("/r");
        assert_eq!(ext4.best().0, Backend::Copy);
        assert_eq!(ext4.best().1, "ext4: plain copy, cost grows with size");
        let error = ext4.check(Backend::Btrfs, root).expect_err("not btrfs");
        assert_eq!(
            error.to_string(),
            "backend btrfs cannot be used for /r: ext4 is not btrfs"
        );
        assert!(ext4.check(Backend::Reflink, root).is_err());
        assert!(ext4.check(Backend::Copy, root).is_ok());
    }

    #[test]
    fn names_common_filesystems() {
        assert_eq!(filesystem_name(EXT4_SUPER_MAGIC), "ext4");
        assert_eq!(filesystem_name(BTRFS_SUPER_MAGIC), "btrfs");
        assert_eq!(filesystem_name(FsType(0x1234)), "filesystem 0x1234");
    }
}
