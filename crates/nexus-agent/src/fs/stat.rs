//! `fs_stat` and `fs_list`: `lstat` semantics through the parent directory's descriptor,
//! symlink targets, SHA-256 of regular files, and the bounded, sorted directory walk.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nexus_agent_proto::ErrorCode;
use nexus_agent_proto::fs::{
    FileStat, FileType, HASH_SIZE_CAP, HashMode, ItemError, ListRequest, ListResult, Outcome,
    StatRequest, StatResult,
};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, readlinkat};
use nix::sys::stat::{FileStat as RawStat, fstat, fstatat};
use sha2::{Digest, Sha256};

use super::path::{FsPath, errno_refusal, open_at, open_subdir, read_dir_names};
use crate::procs::Refusal;

/// `fs_stat`: one result per path, a failure of one never failing the others.
///
/// Consecutive paths in one directory share one open of it (stats of a directory's files
/// are the common case); each path is still resolved inside the sandbox's view.
pub fn stat_many(workdir: &Path, request: &StatRequest) -> Vec<StatResult> {
    let mut parent: Option<(PathBuf, OwnedFd)> = None;
    request
        .paths
        .iter()
        .map(|raw| {
            let result = FsPath::new(workdir, raw).and_then(|path| match path.final_name() {
                Some(name) => {
                    let dir_path = path.abs.parent().unwrap_or_else(|| Path::new("/"));
                    let dir = match parent.take() {
                        Some((open_path, fd)) if open_path == dir_path => fd,
                        _ => path.open_parent()?.0,
                    };
                    let stat = stat_at(&dir, name, &path.raw, request.hash);
                    parent = Some((dir_path.to_path_buf(), dir));
                    stat
                }
                None => stat_path(&path, request.hash),
            });
            StatResult {
                path: raw.clone(),
                result: match result {
                    Ok(stat) => Outcome::Ok(stat),
                    Err(refusal) => Outcome::Error(item_error(refusal)),
                },
            }
        })
        .collect()
}

/// The stat of one path, `lstat` semantics (a final symlink is described, not followed);
/// `path` in the result is the path as requested.
pub fn stat_path(path: &FsPath, hash: HashMode) -> Result<FileStat, Refusal> {
    match path.final_name() {
        Some(_) => {
            let (dir, name) = path.open_parent()?;
            stat_at(&dir, &name, &path.raw, hash)
        }
        // `/`, or a path ending in `..`: a directory, opened itself.
        None => {
            let fd = path.open(OFlag::O_PATH)?;
            let raw = fstat(&fd).map_err(|e| errno_refusal(e, "stat", &path.raw))?;
            Ok(from_raw(path.raw.clone(), &raw, None, None))
        }
    }
}

/// The stat of entry `name` of directory `dir`, reported as `display`.
pub fn stat_at(
    dir: &OwnedFd,
    name: &OsStr,
    display: &str,
    hash: HashMode,
) -> Result<FileStat, Refusal> {
    let raw = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| errno_refusal(e, "stat", display))?;
    let file_type = file_type(&raw);
    let target = match file_type {
        FileType::Symlink => Some(
            readlinkat(dir, name)
                .map_err(|e| errno_refusal(e, "read the symlink", display))?
                .to_string_lossy()
                .into_owned(),
        ),
        _ => None,
    };
    let wants_hash = match hash {
        HashMode::Never => false,
        HashMode::Auto => raw.st_size as u64 <= HASH_SIZE_CAP,
        HashMode::Always => true,
    };
    let sha256 = if file_type == FileType::File && wants_hash {
        match super::hash_cache::get(&raw) {
            Some(known) => Some(known),
            None => {
                let sha256 = hash_at(dir, name, &raw, display)?;
                super::hash_cache::put(&raw, &sha256);
                Some(sha256)
            }
        }
    } else {
        None
    };
    Ok(from_raw(display.to_owned(), &raw, target, sha256))
}

/// SHA-256 (lowercase hex) of regular file `name` in `dir`, which must still be the file
/// `expected` describes.
fn hash_at(
    dir: &OwnedFd,
    name: &OsStr,
    expected: &RawStat,
    display: &str,
) -> Result<String, Refusal> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    // A stat does not touch the file's access time (which would also cost an inode
    // write on every read after a change); O_NOATIME needs the file's owner, so anyone
    // else's file is opened without it.
    let fd = match open_at(dir.as_fd(), name, flags | OFlag::O_NOATIME, 0) {
        Err(Errno::EPERM) => open_at(dir.as_fd(), name, flags, 0),
        other => other,
    }
    .map_err(|e| errno_refusal(e, "open for hashing", display))?;
    let now = fstat(&fd).map_err(|e| errno_refusal(e, "stat", display))?;
    if now.st_ino != expected.st_ino || now.st_dev != expected.st_dev {
        return Err(Refusal::new(
            ErrorCode::Internal,
            format!("hash {display}: the file was replaced while it was read"),
        ));
    }
    sha256_of(std::fs::File::from(fd), now.st_size as u64)
        .map_err(|e| super::path::io_refusal(&e, "hash", display))
}

/// SHA-256 (lowercase hex) of a file's content as `reader` yields it: up to the end, or
/// up to `size` bytes when `size` (the file's `st_size` at the open) is not 0.
///
/// Stopping at `size` spares the read that would only find the end, one of the five
/// system calls a small file costs: the hash is then of the content the stat describes
/// (a file still being appended to changes its ctime, so the next stat hashes it again).
/// A size of 0 says nothing (files in `/proc` report 0 and have content), so those are
/// read to the end. `size` also sizes the read buffer, so hashing many small files does
/// not allocate and clear a large buffer for each.
pub fn sha256_of(mut reader: impl std::io::Read, size: u64) -> std::io::Result<String> {
    const MAX_BUFFER: u64 = 256 * 1024;
    let mut hasher = Sha256::new();
    let capacity = size.saturating_add(1).clamp(4096, MAX_BUFFER);
    let mut buf = vec![0u8; usize::try_from(capacity).unwrap_or(4096)];
    let mut total = 0u64;
    while size == 0 || total < size {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        let take = if size == 0 {
            n
        } else {
            usize::try_from(size - total).map_or(n, |left| n.min(left))
        };
        hasher.update(&buf[..take]);
        total += take as u64;
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// What `raw` describes.
pub fn file_type(raw: &RawStat) -> FileType {
    match raw.st_mode & libc::S_IFMT {
        libc::S_IFREG => FileType::File,
        libc::S_IFDIR => FileType::Dir,
        libc::S_IFLNK => FileType::Symlink,
        _ => FileType::Other,
    }
}

/// A [`FileStat`] from a raw `stat`.
pub fn from_raw(
    path: String,
    raw: &RawStat,
    symlink_target: Option<String>,
    sha256: Option<String>,
) -> FileStat {
    let nsec = u32::try_from(raw.st_mtime_nsec).unwrap_or(0);
    FileStat {
        path,
        file_type: file_type(raw),
        size: u64::try_from(raw.st_size).unwrap_or(0),
        mode: raw.st_mode & 0o7777,
        uid: raw.st_uid,
        gid: raw.st_gid,
        mtime_ms: raw.st_mtime * 1000 + i64::from(nsec / 1_000_000),
        mtime_sec: raw.st_mtime,
        mtime_nsec: nsec,
        symlink_target,
        sha256,
    }
}

/// An item error from a refusal.
pub fn item_error(refusal: Refusal) -> ItemError {
    ItemError {
        code: refusal.code,
        message: refusal.message,
    }
}

/// `fs_list`: entries down to `depth`, sorted by absolute path, at most `max_entries`.
/// Symlinked directories are listed but not entered; subdirectories that cannot be read
/// are listed but not entered either.
pub fn list(workdir: &Path, request: &ListRequest) -> Result<ListResult, Refusal> {
    if request.depth == 0 {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "depth must be at least 1",
        ));
    }
    let root = FsPath::new(workdir, &request.path)?;
    let dir = root.open(OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let mut walk = ListWalk {
        root: &root,
        hash: request.hash,
        max: request.max_entries as usize,
        entries: Vec::new(),
        truncated: false,
    };
    walk.dir(&dir, PathBuf::new(), 1, request.depth)?;
    // Depth-first over sorted names is not bytewise order of full paths (`a/b` vs `a.b`).
    walk.entries
        .sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(ListResult {
        entries: walk.entries,
        truncated: walk.truncated,
    })
}

struct ListWalk<'a> {
    root: &'a FsPath,
    hash: HashMode,
    max: usize,
    entries: Vec<FileStat>,
    truncated: bool,
}

impl ListWalk<'_> {
    fn dir(&mut self, dir: &OwnedFd, rel: PathBuf, level: u32, depth: u32) -> Result<(), Refusal> {
        let names = read_dir_names(dir)
            .map_err(|e| errno_refusal(e, "list", &self.root.child(&rel).raw))?;
        for name in names {
            if self.entries.len() >= self.max {
                self.truncated = true;
                return Ok(());
            }
            let rel = rel.join(&name);
            let child = self.root.child(&rel);
            let stat = match stat_at(dir, &name, &child.raw, self.hash) {
                Ok(stat) => stat,
                // Gone since the directory was read.
                Err(refusal) if refusal.code == ErrorCode::NotFound => continue,
                Err(refusal) => return Err(refusal),
            };
            let is_dir = stat.file_type == FileType::Dir;
            self.entries.push(stat);
            if is_dir && level < depth {
                match open_subdir(dir, &name) {
                    Ok(sub) => self.dir(&sub, rel, level + 1, depth)?,
                    Err(Errno::EACCES | Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => {}
                    Err(errno) => return Err(errno_refusal(errno, "list", &child.raw)),
                }
                if self.truncated {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_of(&b"abc"[..], 3).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_hash_covers_the_size_given_or_everything_when_it_is_0() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let whole = hex(&Sha256::digest(&data));
        // 0 (as `/proc` files report), the exact size, and more than there is (a file
        // that shrank after its stat): everything there is.
        for size in [0, 700_000, 700_001, u64::MAX] {
            assert_eq!(sha256_of(&data[..], size).unwrap(), whole, "size {size}");
        }
        // Less (a file that grew after its stat): what the stat described.
        for size in [1, 4096, 300_000] {
            let prefix = hex(&Sha256::digest(&data[..size as usize]));
            assert_eq!(sha256_of(&data[..], size).unwrap(), prefix, "size {size}");
        }
    }

    #[test]
    fn stat_is_lstat_with_target_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"abc").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let request = StatRequest {
            paths: vec!["f".into(), "l".into(), "missing".into()],
            hash: HashMode::Auto,
        };
        let results = stat_many(dir.path(), &request);
        let Outcome::Ok(file) = &results[0].result else {
            panic!("{results:?}")
        };
        assert_eq!((file.file_type, file.size), (FileType::File, 3));
        assert!(file.sha256.as_deref().unwrap().starts_with("ba7816bf"));
        let Outcome::Ok(link) = &results[1].result else {
            panic!("{results:?}")
        };
        assert_eq!(link.file_type, FileType::Symlink);
        assert_eq!(link.symlink_target.as_deref(), Some("f"));
        assert!(link.sha256.is_none());
        let Outcome::Error(missing) = &results[2].result else {
            panic!("{results:?}")
        };
        assert_eq!(missing.code, ErrorCode::NotFound);
        assert!(missing.message.contains("missing"), "{}", missing.message);
    }
}
