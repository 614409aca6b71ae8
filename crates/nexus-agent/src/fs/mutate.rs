//! `fs_mkdir`, `fs_move`, `fs_remove`, `fs_copy`: each on directory descriptors and final
//! components (`mkdirat`, `renameat2`, `unlinkat`), recursive ones walking descriptors
//! without following symlinks.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use nexus_agent_proto::ErrorCode;
use nexus_agent_proto::fs::{
    CopyRequest, FileStat, FileType, HashMode, MkdirRequest, MoveRequest, RemoveRequest,
    RemoveSummary, TreeSummary,
};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, readlinkat, renameat, renameat2};
use nix::sys::stat::{Mode, fchmod, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

use super::path::{FsPath, errno_refusal, open_at, open_path, open_subdir, read_dir_names};
use super::stat::{file_type, stat_at};
use crate::procs::Refusal;

/// Permission bits of directories made without a mode.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

/// `fs_mkdir`: the new (or, with `parents`, existing) directory's stat.
pub fn mkdir(workdir: &Path, request: &MkdirRequest) -> Result<FileStat, Refusal> {
    let path = FsPath::new(workdir, &request.path)?;
    let mode = request.mode.unwrap_or(DEFAULT_DIR_MODE);
    if request.parents {
        mkdir_all(&path, mode)?;
    } else {
        let (dir, name) = path.open_parent()?;
        make_dir_at(&dir, &name, mode, &path.raw)?;
    }
    let (dir, name) = path.open_parent()?;
    stat_at(&dir, &name, &path.abs_string(), HashMode::Never)
}

/// `mkdir -p`: every missing component is made with `mode` (applied exactly, whatever the
/// umask); existing directories (or symlinks to them) are kept. Returns the last one.
pub fn mkdir_all(path: &FsPath, mode: u32) -> Result<OwnedFd, Refusal> {
    let mut dir = open_path(Path::new("/"), OFlag::O_PATH | OFlag::O_DIRECTORY)
        .map_err(|e| errno_refusal(e, "open", "/"))?;
    for component in path.abs.components() {
        let name: &OsStr = match component {
            Component::Normal(name) => name,
            Component::ParentDir => OsStr::new(".."),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
        };
        let next = open_at(dir.as_fd(), name, OFlag::O_PATH | OFlag::O_DIRECTORY, 0);
        dir = match next {
            Ok(next) => next,
            Err(Errno::ENOENT) => {
                match make_dir_at(&dir, name, mode, &path.raw) {
                    Ok(()) => {}
                    // Made by someone else meanwhile: fine, it is opened below.
                    Err(refusal) if refusal.code == ErrorCode::Exists => {}
                    Err(refusal) => return Err(refusal),
                }
                open_at(dir.as_fd(), name, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
                    .map_err(|e| errno_refusal(e, "open", &path.raw))?
            }
            Err(errno) => return Err(errno_refusal(errno, "make directory", &path.raw)),
        };
    }
    Ok(dir)
}

/// `mkdirat` with exactly `mode`.
fn make_dir_at(dir: &OwnedFd, name: &OsStr, mode: u32, display: &str) -> Result<(), Refusal> {
    mkdirat(dir, name, Mode::from_bits_truncate(0o700))
        .map_err(|e| errno_refusal(e, "make directory", display))?;
    let made = open_subdir(dir, name).map_err(|e| errno_refusal(e, "open", display))?;
    fchmod(&made, Mode::from_bits_truncate(mode))
        .map_err(|e| errno_refusal(e, "set the mode of", display))
}

/// `fs_move`: `renameat2(RENAME_NOREPLACE)` unless `overwrite`; the destination's stat.
pub fn rename(workdir: &Path, request: &MoveRequest) -> Result<FileStat, Refusal> {
    let from = FsPath::new(workdir, &request.from)?;
    let to = FsPath::new(workdir, &request.to)?;
    let (from_dir, from_name) = from.open_parent()?;
    let (to_dir, to_name) = to.open_parent()?;
    let display = format!("{} to {}", from.raw, to.raw);
    let result = if request.overwrite {
        renameat(&from_dir, &*from_name, &to_dir, &*to_name)
    } else {
        match renameat2(
            &from_dir,
            &*from_name,
            &to_dir,
            &*to_name,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            // A file system without RENAME_NOREPLACE: check, then rename (not atomic).
            Err(Errno::EINVAL) => match fstatat(&to_dir, &*to_name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(_) => Err(Errno::EEXIST),
                Err(Errno::ENOENT) => renameat(&from_dir, &*from_name, &to_dir, &*to_name),
                Err(errno) => Err(errno),
            },
            other => other,
        }
    };
    result.map_err(|errno| match errno {
        Errno::EEXIST if !request.overwrite => Refusal::new(
            ErrorCode::Exists,
            format!(
                "move {display}: {} already exists (set overwrite to replace it)",
                to.raw
            ),
        ),
        // A non-empty directory as the destination.
        Errno::EEXIST => errno_refusal(Errno::ENOTEMPTY, "move", &display),
        other => errno_refusal(other, "move", &display),
    })?;
    stat_at(&to_dir, &to_name, &to.abs_string(), HashMode::Never)
}

/// `fs_remove`.
pub fn remove(workdir: &Path, request: &RemoveRequest) -> Result<RemoveSummary, Refusal> {
    let path = FsPath::new(workdir, &request.path)?;
    let (dir, name) = path.open_parent()?;
    let raw = fstatat(&dir, &*name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| errno_refusal(e, "remove", &path.raw))?;
    let mut summary = RemoveSummary::default();
    if file_type(&raw) == FileType::Dir {
        if request.recursive {
            remove_tree(&dir, &name, &path.raw, &mut summary)?;
        } else {
            unlinkat(&dir, &*name, UnlinkatFlags::RemoveDir).map_err(|errno| match errno {
                Errno::ENOTEMPTY | Errno::EEXIST => Refusal::new(
                    ErrorCode::NotEmpty,
                    format!(
                        "remove {}: directory not empty (set recursive to remove it all)",
                        path.raw
                    ),
                ),
                other => errno_refusal(other, "remove", &path.raw),
            })?;
            summary.removed += 1;
        }
    } else {
        unlinkat(&dir, &*name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| errno_refusal(e, "remove", &path.raw))?;
        summary.removed += 1;
    }
    Ok(summary)
}

/// Removes directory `name` of `dir` and everything in it, never following a symlink.
pub fn remove_tree(
    dir: &OwnedFd,
    name: &OsStr,
    display: &str,
    summary: &mut RemoveSummary,
) -> Result<(), Refusal> {
    let sub = open_subdir(dir, name).map_err(|e| errno_refusal(e, "remove", display))?;
    let names = read_dir_names(&sub).map_err(|e| errno_refusal(e, "remove", display))?;
    for child in names {
        let child_display = format!("{display}/{}", child.to_string_lossy());
        let raw = match fstatat(&sub, &*child, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(raw) => raw,
            Err(Errno::ENOENT) => continue,
            Err(errno) => return Err(errno_refusal(errno, "remove", &child_display)),
        };
        if file_type(&raw) == FileType::Dir {
            remove_tree(&sub, &child, &child_display, summary)?;
        } else {
            match unlinkat(&sub, &*child, UnlinkatFlags::NoRemoveDir) {
                Ok(()) => summary.removed += 1,
                Err(Errno::ENOENT) => {}
                Err(errno) => return Err(errno_refusal(errno, "remove", &child_display)),
            }
        }
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
        .map_err(|e| errno_refusal(e, "remove", display))?;
    summary.removed += 1;
    Ok(())
}

/// `fs_copy`: a file, symlink (as a symlink) or directory tree. Sockets, FIFOs and devices
/// inside a tree are skipped.
pub fn copy(workdir: &Path, request: &CopyRequest) -> Result<TreeSummary, Refusal> {
    let from = FsPath::new(workdir, &request.from)?;
    let to = FsPath::new(workdir, &request.to)?;
    if to.abs.starts_with(&from.abs) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "copy {} to {}: the destination is inside the source",
                from.raw, to.raw
            ),
        ));
    }
    let (from_dir, from_name) = from.open_parent()?;
    let (to_dir, to_name) = to.open_parent()?;
    match fstatat(&to_dir, &*to_name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(_) if !request.overwrite => {
            return Err(Refusal::new(
                ErrorCode::Exists,
                format!(
                    "copy to {}: it already exists (set overwrite to replace it)",
                    to.raw
                ),
            ));
        }
        Ok(raw) => {
            let mut removed = RemoveSummary::default();
            if file_type(&raw) == FileType::Dir {
                remove_tree(&to_dir, &to_name, &to.raw, &mut removed)?;
            } else {
                unlinkat(&to_dir, &*to_name, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| errno_refusal(e, "replace", &to.raw))?;
            }
        }
        Err(Errno::ENOENT) => {}
        Err(errno) => return Err(errno_refusal(errno, "copy to", &to.raw)),
    }
    let mut summary = TreeSummary::default();
    copy_entry(
        (&from_dir, &from_name),
        (&to_dir, &to_name),
        &from.raw,
        &mut summary,
    )?;
    Ok(summary)
}

fn copy_entry(
    (src_dir, src_name): (&OwnedFd, &OsStr),
    (dst_dir, dst_name): (&OwnedFd, &OsStr),
    display: &str,
    summary: &mut TreeSummary,
) -> Result<(), Refusal> {
    let raw = fstatat(src_dir, src_name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| errno_refusal(e, "copy", display))?;
    let mode = raw.st_mode & 0o7777;
    match file_type(&raw) {
        FileType::File => {
            let src = open_at(
                src_dir.as_fd(),
                src_name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
                0,
            )
            .map_err(|e| errno_refusal(e, "copy", display))?;
            let dst = open_at(
                dst_dir.as_fd(),
                dst_name,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                0o600,
            )
            .map_err(|e| errno_refusal(e, "create the copy of", display))?;
            let mut src = std::fs::File::from(src);
            let mut dst = std::fs::File::from(dst);
            let bytes = std::io::copy(&mut src, &mut dst)
                .map_err(|e| super::path::io_refusal(&e, "copy", display))?;
            fchmod(&dst, Mode::from_bits_truncate(mode))
                .map_err(|e| errno_refusal(e, "set the mode of the copy of", display))?;
            summary.files += 1;
            summary.bytes += bytes;
        }
        FileType::Symlink => {
            let target =
                readlinkat(src_dir, src_name).map_err(|e| errno_refusal(e, "copy", display))?;
            symlinkat(&*target, dst_dir, dst_name)
                .map_err(|e| errno_refusal(e, "create the copy of", display))?;
            summary.symlinks += 1;
        }
        FileType::Dir => {
            mkdirat(dst_dir, dst_name, Mode::from_bits_truncate(0o700))
                .map_err(|e| errno_refusal(e, "create the copy of", display))?;
            let src =
                open_subdir(src_dir, src_name).map_err(|e| errno_refusal(e, "copy", display))?;
            let dst = open_subdir(dst_dir, dst_name)
                .map_err(|e| errno_refusal(e, "open the copy of", display))?;
            summary.dirs += 1;
            let names = read_dir_names(&src).map_err(|e| errno_refusal(e, "copy", display))?;
            for name in names {
                let child = format!("{display}/{}", name.to_string_lossy());
                copy_entry((&src, &name), (&dst, &name), &child, summary)?;
            }
            fchmod(&dst, Mode::from_bits_truncate(mode))
                .map_err(|e| errno_refusal(e, "set the mode of the copy of", display))?;
        }
        FileType::Other => {}
    }
    Ok(())
}
