//! Copies of whole trees for the reflink and plain-copy backends.
//!
//! The walk is descriptor-relative (`openat` with `O_NOFOLLOW`, `fstatat` without
//! following), so a symlink in the source is recreated as a symlink and never followed,
//! even if a process inside a running sandbox swaps a directory for a symlink while the
//! copy runs: the swap makes the copy fail, it never makes it read outside the tree.
//! Directories get their metadata after their content, so their mtimes survive.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmodat, fstat, fstatat, mkdirat,
    mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, Whence, fchownat, ftruncate, linkat, lseek, symlinkat};

use crate::error::{Result, StorageError, sys};
use crate::{btrfs, remove};

/// How file contents are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileData {
    /// `ioctl(FICLONE)`: the copy shares extents with the original (falls back to a
    /// data copy for a file the filesystem refuses to clone).
    Reflink,
    /// Data copied with `copy_file_range`, holes kept.
    Copy,
}

/// Copies the content and metadata of the directory `source` (shown as `source_path`)
/// into the empty directory `dest` (shown as `dest_path`).
pub(crate) fn copy_tree(
    source: BorrowedFd<'_>,
    source_path: &Path,
    dest: BorrowedFd<'_>,
    dest_path: &Path,
    data: FileData,
) -> Result<()> {
    let mut copier = Copier {
        data,
        as_root: nix::unistd::geteuid().is_root(),
        dest_root: dest,
        dest_root_path: dest_path,
        linked: HashMap::new(),
    };
    let mut relative = PathBuf::new();
    copier.copy_dir(source, source_path, dest, &mut relative)?;
    let stat = fstat(source).map_err(sys("stat", source_path))?;
    copier.apply_metadata(dest, OsStr::new("."), &stat, dest_path)
}

/// State of one tree copy.
struct Copier<'a> {
    data: FileData,
    as_root: bool,
    dest_root: BorrowedFd<'a>,
    dest_root_path: &'a Path,
    /// Files with several links already copied: (device, inode) to their path relative
    /// to the destination root, so later names become hard links again.
    linked: HashMap<(u64, u64), PathBuf>,
}

impl Copier<'_> {
    /// Copies every entry of `source` into `dest`; `relative` is their common path
    /// relative to the roots.
    fn copy_dir(
        &mut self,
        source: BorrowedFd<'_>,
        source_root: &Path,
        dest: BorrowedFd<'_>,
        relative: &mut PathBuf,
    ) -> Result<()> {
        let source_dir = source_root.join(&*relative);
        for name in remove::entry_names(source, &source_dir)? {
            relative.push(&name);
            let result = self.copy_entry(source, source_root, dest, &name, relative);
            relative.pop();
            result?;
        }
        Ok(())
    }

    /// Copies the entry `name` of `source` into `dest`.
    fn copy_entry(
        &mut self,
        source: BorrowedFd<'_>,
        source_root: &Path,
        dest: BorrowedFd<'_>,
        name: &OsStr,
        relative: &mut PathBuf,
    ) -> Result<()> {
        let source_path = source_root.join(&*relative);
        let dest_path = self.dest_root_path.join(&*relative);
        let stat = fstatat(source, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(sys("stat", &source_path))?;
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        let stat = if kind == SFlag::S_IFDIR {
            let child = remove::open_dir(source, name, &source_path)?;
            let stat = fstat(&child).map_err(sys("stat", &source_path))?;
            mkdirat(dest, name, Mode::from_bits_truncate(0o700))
                .map_err(sys("create", &dest_path))?;
            let dest_child = remove::open_dir(dest, name, &dest_path)?;
            self.copy_dir(child.as_fd(), source_root, dest_child.as_fd(), relative)?;
            stat
        } else if kind == SFlag::S_IFREG {
            if stat.st_nlink > 1
                && let Some(first) = self.linked.get(&(stat.st_dev, stat.st_ino))
            {
                return linkat(self.dest_root, first, dest, name, AtFlags::empty())
                    .map_err(sys("link", &dest_path));
            }
            let stat = self.copy_file(source, name, &source_path, dest, &dest_path)?;
            if stat.st_nlink > 1 {
                self.linked
                    .insert((stat.st_dev, stat.st_ino), relative.clone());
            }
            stat
        } else if kind == SFlag::S_IFLNK {
            let target =
                nix::fcntl::readlinkat(source, name).map_err(sys("read link", &source_path))?;
            symlinkat(target.as_os_str(), dest, name).map_err(sys("create link", &dest_path))?;
            stat
        } else {
            // FIFOs, sockets and device nodes are recreated, not opened.
            mknodat(
                dest,
                name,
                kind,
                Mode::from_bits_truncate(0o600),
                stat.st_rdev,
            )
            .map_err(sys("create node", &dest_path))?;
            stat
        };
        self.apply_metadata(dest, name, &stat, &dest_path)
    }

    /// Copies the regular file `name` of `source` to a new file `name` in `dest`, returning
    /// the status of the file actually opened.
    fn copy_file(
        &self,
        source: BorrowedFd<'_>,
        name: &OsStr,
        source_path: &Path,
        dest: BorrowedFd<'_>,
        dest_path: &Path,
    ) -> Result<FileStat> {
        // O_NONBLOCK: if the entry was swapped for a FIFO since the stat, do not hang.
        let input = nix::fcntl::openat(
            source,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("open", source_path))?;
        let stat = fstat(&input).map_err(sys("stat", source_path))?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(StorageError::io(
                "copy (it changed type during the copy)",
                source_path,
                Errno::EAGAIN,
            ));
        }
        let output = nix::fcntl::openat(
            dest,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(sys("create", dest_path))?;
        let cloned = self.data == FileData::Reflink
            && btrfs::clone_file(input.as_fd(), output.as_fd()).is_ok();
        if !cloned {
            copy_data(&input, &output, stat.st_size)
                .map_err(|errno| StorageError::io("copy", source_path, errno))?;
        }
        Ok(stat)
    }

    /// Gives `name` in `dir` the owner (when root), mode and times of `stat`.
    fn apply_metadata(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        stat: &FileStat,
        path: &Path,
    ) -> Result<()> {
        let is_link = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK;
        // Owner first: chown clears set-id bits, the chmod below restores them.
        if self.as_root {
            fchownat(
                dir,
                name,
                Some(Uid::from_raw(stat.st_uid)),
                Some(Gid::from_raw(stat.st_gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(sys("chown", path))?;
        }
        if !is_link {
            // `name` is ours and not a symlink, so following it is harmless.
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(stat.st_mode & 0o7777),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(sys("chmod", path))?;
        }
        let atime = TimeSpec::new(stat.st_atime, stat.st_atime_nsec);
        let mtime = TimeSpec::new(stat.st_mtime, stat.st_mtime_nsec);
        utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(sys("set times of", path))
    }
}

/// Copies the data of `input` (`size` bytes) to the empty `output`, skipping holes, so a
/// sparse file stays sparse.
fn copy_data(input: &OwnedFd, output: &OwnedFd, size: i64) -> nix::Result<()> {
    let mut position = 0;
    while position < size {
        let data = match lseek(input, position, Whence::SeekData) {
            Ok(offset) => offset,
            Err(Errno::ENXIO) => break,
            // No SEEK_DATA support: all of the rest is data.
            Err(Errno::EINVAL) => position,
            Err(errno) => return Err(errno),
        };
        let hole = match lseek(input, data, Whence::SeekHole) {
            Ok(offset) => offset,
            Err(Errno::EINVAL) => size,
            Err(errno) => return Err(errno),
        };
        if hole <= data {
            break;
        }
        copy_range(input, output, data, hole - data)?;
        position = hole;
    }
    ftruncate(output, size)
}

/// Copies `length` bytes at `offset` from `input` to the same offset of `output`.
fn copy_range(input: &OwnedFd, output: &OwnedFd, offset: i64, length: i64) -> nix::Result<()> {
    let mut offset_in = offset;
    let mut offset_out = offset;
    let end = offset + length;
    while offset_in < end {
        let chunk = usize::try_from(end - offset_in).unwrap_or(usize::MAX);
        match nix::fcntl::copy_file_range(
            input,
            Some(&mut offset_in),
            output,
            Some(&mut offset_out),
            chunk,
        ) {
            Ok(0) => return Ok(()), // The file shrank meanwhile.
            Ok(_) => {}
            Err(Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                return copy_range_by_reading(input, output, offset_in, end);
            }
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

/// `pread`/`pwrite` loop for filesystems without `copy_file_range`.
fn copy_range_by_reading(
    input: &OwnedFd,
    output: &OwnedFd,
    mut offset: i64,
    end: i64,
) -> nix::Result<()> {
    let mut buffer = vec![0u8; 1 << 20];
    while offset < end {
        let want = usize::try_from(end - offset)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let read = nix::sys::uio::pread(input, &mut buffer[..want], offset)?;
        if read == 0 {
            return Ok(());
        }
        let mut written = 0;
        while written < read {
            written += nix::sys::uio::pwrite(
                output,
                &buffer[written..read],
                offset + i64::try_from(written).map_err(|_| Errno::EOVERFLOW)?,
            )?;
        }
        offset += i64::try_from(read).map_err(|_| Errno::EOVERFLOW)?;
    }
    Ok(())
}
