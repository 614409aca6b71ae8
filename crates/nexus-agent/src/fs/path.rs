//! Path rules of the file API: validation, resolution against the workdir, and every open
//! through `openat2(RESOLVE_NO_MAGICLINKS)`, so `/proc` magic links (`/proc/1/root`,
//! `/proc/self/fd/N`) are refused instead of followed. Resolution happens in the agent's
//! own mount namespace: the sandbox's view. Operations that create, rename or remove work
//! on the parent directory's descriptor plus the final component (`*at` calls), never on
//! a path checked first and used later.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nexus_agent_proto::ErrorCode;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use crate::procs::Refusal;

/// A validated path: what the client wrote, and the absolute path it names.
#[derive(Clone, Debug)]
pub struct FsPath {
    /// As requested, for messages and echoed results.
    pub raw: String,
    /// Absolute (the workdir joined to a relative path), trailing slashes removed.
    pub abs: PathBuf,
}

impl FsPath {
    /// Validates `raw` and makes it absolute against `workdir`.
    pub fn new(workdir: &Path, raw: &str) -> Result<Self, Refusal> {
        if raw.is_empty() {
            return Err(Refusal::new(ErrorCode::InvalidPath, "the path is empty"));
        }
        if raw.contains('\0') {
            return Err(Refusal::new(
                ErrorCode::InvalidPath,
                format!("path {raw:?} contains a NUL byte"),
            ));
        }
        let path = Path::new(raw);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            workdir.join(path)
        };
        // `components` drops trailing slashes and `.` in the middle; keep it lexical
        // otherwise (`..` is resolved by the kernel, inside the view).
        let abs: PathBuf = abs.components().collect();
        Ok(Self {
            raw: raw.to_owned(),
            abs,
        })
    }

    /// The absolute path as text (lossy for non-UTF-8 names).
    pub fn abs_string(&self) -> String {
        self.abs.to_string_lossy().into_owned()
    }

    /// The final component when it is a plain name (not `/`, `.` or `..`).
    pub fn final_name(&self) -> Option<&OsStr> {
        match self.abs.components().next_back() {
            Some(Component::Normal(name)) => Some(name),
            _ => None,
        }
    }

    /// The parent directory, opened (`O_PATH`), and the final component; `invalid_path`
    /// when there is no final name (`/`, `..`).
    pub fn open_parent(&self) -> Result<(OwnedFd, OsString), Refusal> {
        let Some(name) = self.final_name() else {
            return Err(Refusal::new(
                ErrorCode::InvalidPath,
                format!("path {} names no entry of a directory", self.raw),
            ));
        };
        let parent = self.abs.parent().unwrap_or_else(|| Path::new("/"));
        let dir = open_path(parent, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(|errno| errno_refusal(errno, "open the parent of", &self.raw))?;
        Ok((dir, name.to_owned()))
    }

    /// Opens the path itself with `flags` (the final symlink followed unless `flags`
    /// has `O_NOFOLLOW`).
    pub fn open(&self, flags: OFlag) -> Result<OwnedFd, Refusal> {
        open_path(&self.abs, flags).map_err(|errno| errno_refusal(errno, "open", &self.raw))
    }

    /// `self` joined with a relative entry path, for results.
    pub fn child(&self, rel: &Path) -> Self {
        let abs = self.abs.join(rel);
        Self {
            raw: abs.to_string_lossy().into_owned(),
            abs,
        }
    }
}

/// The resolve flags of every open: no magic links.
fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// `openat2(AT_FDCWD, path, flags | O_CLOEXEC, RESOLVE_NO_MAGICLINKS)`.
pub fn open_path(path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve());
    retry(|| openat2(nix::fcntl::AT_FDCWD, path, how))
}

/// `openat2(dir, name, flags | O_CLOEXEC, mode, RESOLVE_NO_MAGICLINKS)`.
pub fn open_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: OFlag,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode))
        .resolve(resolve());
    retry(|| openat2(dir, name, how))
}

/// Opens a subdirectory `name` of `dir` for reading entries, never following a symlink.
pub fn open_subdir(dir: impl AsFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    open_at(
        dir.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        0,
    )
}

/// The names in directory `dir` (without `.` and `..`), sorted bytewise.
pub fn read_dir_names(dir: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    // A fresh open description, so reading does not move `dir`'s offset.
    let fd = open_at(
        dir.as_fd(),
        OsStr::new("."),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        0,
    )?;
    let mut handle = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in handle.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn retry<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    loop {
        match f() {
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            other => return other,
        }
    }
}

/// The refusal for `errno` while doing `action` on `path`; the message names both.
pub fn errno_refusal(errno: Errno, action: &str, path: &str) -> Refusal {
    let (code, problem) = match errno {
        Errno::ENOENT => (ErrorCode::NotFound, "no such file or directory".to_owned()),
        Errno::EEXIST => (ErrorCode::Exists, "already exists".to_owned()),
        Errno::ENOTDIR => (ErrorCode::NotADirectory, "not a directory".to_owned()),
        Errno::EISDIR => (ErrorCode::IsADirectory, "is a directory".to_owned()),
        Errno::ENOTEMPTY => (ErrorCode::NotEmpty, "directory not empty".to_owned()),
        Errno::EACCES | Errno::EPERM => {
            (ErrorCode::PermissionDenied, "permission denied".to_owned())
        }
        Errno::EROFS => (ErrorCode::ReadOnly, "read-only file system".to_owned()),
        Errno::ENOSPC => (ErrorCode::NoSpace, "no space left on device".to_owned()),
        Errno::EDQUOT => (ErrorCode::NoSpace, "disk quota exceeded".to_owned()),
        Errno::ELOOP => (
            ErrorCode::SymlinkRefused,
            "refused: the path goes through a /proc magic link, a symlink loop, or a final \
             symlink where none may be"
                .to_owned(),
        ),
        Errno::ENAMETOOLONG => (ErrorCode::InvalidPath, "name too long".to_owned()),
        Errno::EXDEV => (
            ErrorCode::BadRequest,
            "crosses file systems (not supported)".to_owned(),
        ),
        Errno::EINVAL => (ErrorCode::BadRequest, "invalid argument".to_owned()),
        other => (ErrorCode::Internal, other.desc().to_owned()),
    };
    Refusal::new(code, format!("{action} {path}: {problem}"))
}

/// The refusal for an `std::io::Error` (from the tar and ripgrep crates) on `path`.
pub fn io_refusal(err: &std::io::Error, action: &str, path: &str) -> Refusal {
    match err.raw_os_error() {
        Some(raw) => errno_refusal(Errno::from_raw(raw), action, path),
        None => Refusal::new(ErrorCode::Internal, format!("{action} {path}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_validated_and_made_absolute() {
        let workdir = Path::new("/workspace");
        let err = FsPath::new(workdir, "").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPath);
        let err = FsPath::new(workdir, "a\0b").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPath);
        assert!(err.message.contains("NUL"), "{}", err.message);

        let path = FsPath::new(workdir, "src/./main.rs/").unwrap();
        assert_eq!(path.abs, Path::new("/workspace/src/main.rs"));
        assert_eq!(path.final_name(), Some(OsStr::new("main.rs")));
        let root = FsPath::new(workdir, "/").unwrap();
        assert_eq!(root.final_name(), None);
        assert_eq!(root.open_parent().unwrap_err().code, ErrorCode::InvalidPath);
        assert_eq!(FsPath::new(workdir, "a/..").unwrap().final_name(), None);
    }

    #[test]
    fn errnos_map_to_codes_and_name_the_path() {
        let refusal = errno_refusal(Errno::EDQUOT, "write", "/w/f");
        assert_eq!(refusal.code, ErrorCode::NoSpace);
        assert_eq!(refusal.message, "write /w/f: disk quota exceeded");
        assert_eq!(
            errno_refusal(Errno::ELOOP, "open", "x").code,
            ErrorCode::SymlinkRefused
        );
    }

    #[test]
    fn magic_links_are_refused_but_plain_symlinks_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/proc/self/root", dir.path().join("root")).unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("link")).unwrap();
        let err = open_path(&dir.path().join("root/etc"), OFlag::O_PATH).unwrap_err();
        assert_eq!(err, Errno::ELOOP);
        open_path(&dir.path().join("link"), OFlag::O_RDONLY).unwrap();
    }
}
