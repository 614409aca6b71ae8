//! Disk usage of a tree, counted like `du -s --block-size=1`.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

use crate::error::{Result, StorageError, sys};
use crate::remove;

/// The bytes allocated to `path` and everything below it: the blocks of every file,
/// directory and symlink (symlinks are not followed), a file with several hard links
/// counted once. Holes of sparse files take no space, shared (reflinked or snapshotted)
/// extents are counted in every tree that references them.
pub fn size(path: &Path) -> Result<u64> {
    let root = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_PATH,
        Mode::empty(),
    )
    .map_err(|errno| match errno {
        nix::errno::Errno::ENOENT => StorageError::NotFound {
            path: path.to_owned(),
        },
        errno => StorageError::io("open", path, errno),
    })?;
    let stat = fstat(&root).map_err(sys("stat", path))?;
    let mut counter = Counter {
        seen: HashSet::new(),
        total: 0,
    };
    counter.add(&stat);
    if is_dir(&stat) {
        let dir = remove::open_dir(root.as_fd(), ".".as_ref(), path)?;
        counter.walk(dir.as_fd(), path)?;
    }
    Ok(counter.total)
}

/// Running total of one walk.
struct Counter {
    /// (device, inode) of files with several links already counted.
    seen: HashSet<(u64, u64)>,
    total: u64,
}

impl Counter {
    /// Counts the blocks of `stat` unless its inode was counted already.
    fn add(&mut self, stat: &FileStat) {
        if stat.st_nlink > 1 && !is_dir(stat) && !self.seen.insert((stat.st_dev, stat.st_ino)) {
            return;
        }
        self.total += u64::try_from(stat.st_blocks).unwrap_or(0) * 512;
    }

    /// Counts everything inside the directory `dir` (shown as `path`).
    fn walk(&mut self, dir: BorrowedFd<'_>, path: &Path) -> Result<()> {
        for name in remove::entry_names(dir, path)? {
            let child = path.join(&name);
            let stat = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(sys("stat", &child))?;
            self.add(&stat);
            if is_dir(&stat) {
                let sub = remove::open_dir(dir, &name, &child)?;
                self.walk(sub.as_fd(), &child)?;
            }
        }
        Ok(())
    }
}

fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}
