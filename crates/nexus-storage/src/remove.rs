//! Removal of whole trees, subvolumes included, without following symlinks.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::btrfs;
use crate::error::{Result, sys};

/// Removes the entry `name` of the directory `parent` (shown as `path` in errors) with
/// everything below it. `on_btrfs` says whether subvolumes may be met.
pub(crate) fn remove_entry(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    on_btrfs: bool,
) -> Result<()> {
    let stat = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(sys("stat", path))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).map_err(sys("remove", path));
    }
    if on_btrfs && btrfs::is_subvolume(&stat) {
        return btrfs::delete_subvolume(parent, name, path);
    }
    let dir = open_dir(parent, name, path)?;
    remove_contents(dir.as_fd(), path, on_btrfs)?;
    drop(dir);
    unlinkat(parent, name, UnlinkatFlags::RemoveDir).map_err(sys("remove", path))
}

/// Removes everything inside the directory `dir` (shown as `path`), keeping `dir`.
pub(crate) fn remove_contents(dir: BorrowedFd<'_>, path: &Path, on_btrfs: bool) -> Result<()> {
    // A directory without owner write or search permission cannot be emptied by a
    // daemon that is not root; it is going away, so its mode does not matter.
    let mode = fstat(dir).map_err(sys("stat", path))?.st_mode;
    if mode & 0o700 != 0o700 {
        fchmod(dir, Mode::from_bits_truncate(0o700)).map_err(sys("chmod", path))?;
    }
    for name in entry_names(dir, path)? {
        let child = path.join(&name);
        remove_entry(dir, &name, &child, on_btrfs)?;
    }
    Ok(())
}

/// The names in the directory `dir` (shown as `path`), without `.` and `..`, read in full
/// before the caller changes the directory.
pub(crate) fn entry_names(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<OsString>> {
    let mut reader = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open", path))?;
    let mut names = Vec::new();
    for entry in reader.iter() {
        let entry = entry.map_err(sys("read directory", path))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}

/// Opens the directory `name` of `parent`, refusing to follow a symlink.
pub(crate) fn open_dir(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
) -> Result<std::os::fd::OwnedFd> {
    nix::fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open", path))
}
