//! Writing files: [`Writer`] does an atomic replace (a temporary file in the same
//! directory, fsync, rename, fsync of the directory) or an append. A replace that does not
//! reach [`Writer::commit`] (an error, ENOSPC, a cancelled upload) removes its temporary
//! file, so the old file keeps its old content. Also `fs_batch`, which runs in one go.

use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use nexus_agent_proto::ErrorCode;
use nexus_agent_proto::fs::{
    BatchOp, BatchOutput, BatchRequest, ContentEncoding, FileType, HASH_SIZE_CAP, HashMode,
    ItemError, Outcome, WriteRequest, WriteResult,
};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, renameat};
use nix::sys::stat::{Mode, fchmod, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, fchown, fsync, unlinkat};
use sha2::{Digest, Sha256};

use super::mutate::{self, DEFAULT_DIR_MODE};
use super::path::{FsPath, errno_refusal, io_refusal, open_at};
use super::stat::{self, file_type, from_raw, item_error, stat_at};
use crate::procs::Refusal;

/// Permission bits of new files written without a mode.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// Distinguishes the temporary files of concurrent writes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A write in progress.
#[derive(Debug)]
pub struct Writer {
    path: FsPath,
    dir: OwnedFd,
    name: OsString,
    file: std::fs::File,
    /// For a replace: the temporary file's name, removed on drop unless committed.
    temp: Option<OsString>,
    mode: Option<u32>,
    /// Owner to give the new file (that of the file replaced), best effort.
    owner: Option<(u32, u32)>,
    written: u64,
    /// Hash of what was written, while it stays under the hash cap (replace only).
    hasher: Option<Sha256>,
}

impl Writer {
    /// Opens the write `request` describes.
    pub fn begin(workdir: &Path, request: &WriteRequest) -> Result<Self, Refusal> {
        let path = FsPath::new(workdir, &request.path)?;
        if request.create_parents
            && let Some(parent) = path.abs.parent()
        {
            let parent = FsPath::new(workdir, &parent.to_string_lossy())?;
            mutate::mkdir_all(&parent, DEFAULT_DIR_MODE)?;
        }
        let (dir, name) = path.open_parent()?;
        if request.append {
            Self::begin_append(path, dir, name, request.mode)
        } else {
            Self::begin_replace(path, dir, name, request.mode)
        }
    }

    fn begin_append(
        path: FsPath,
        dir: OwnedFd,
        name: OsString,
        mode: Option<u32>,
    ) -> Result<Self, Refusal> {
        let fd = open_at(
            dir.as_fd(),
            &name,
            OFlag::O_WRONLY
                | OFlag::O_APPEND
                | OFlag::O_CREAT
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY,
            mode.unwrap_or(DEFAULT_FILE_MODE),
        )
        .map_err(|e| errno_refusal(e, "open for appending", &path.raw))?;
        let raw = fstat(&fd).map_err(|e| errno_refusal(e, "stat", &path.raw))?;
        if file_type(&raw) != FileType::File {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("append to {}: not a regular file", path.raw),
            ));
        }
        Ok(Self {
            path,
            dir,
            name,
            file: std::fs::File::from(fd),
            temp: None,
            mode,
            owner: None,
            written: 0,
            hasher: None,
        })
    }

    fn begin_replace(
        path: FsPath,
        dir: OwnedFd,
        name: OsString,
        mode: Option<u32>,
    ) -> Result<Self, Refusal> {
        let (mode, owner) = match fstatat(&dir, &*name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(old) if file_type(&old) == FileType::Dir => {
                return Err(errno_refusal(Errno::EISDIR, "write", &path.raw));
            }
            Ok(old) if file_type(&old) == FileType::File => (
                mode.unwrap_or(old.st_mode & 0o7777),
                Some((old.st_uid, old.st_gid)),
            ),
            Ok(_) | Err(Errno::ENOENT) => (mode.unwrap_or(DEFAULT_FILE_MODE), None),
            Err(errno) => return Err(errno_refusal(errno, "write", &path.raw)),
        };
        let (temp, fd) = loop {
            let temp = temp_name(&name);
            match open_at(
                dir.as_fd(),
                &temp,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                0o600,
            ) {
                Ok(fd) => break (temp, fd),
                Err(Errno::EEXIST) => continue,
                Err(errno) => {
                    return Err(errno_refusal(
                        errno,
                        "create a temporary file for",
                        &path.raw,
                    ));
                }
            }
        };
        Ok(Self {
            path,
            dir,
            name,
            file: std::fs::File::from(fd),
            temp: Some(temp),
            mode: Some(mode),
            owner,
            written: 0,
            hasher: Some(Sha256::new()),
        })
    }

    /// Appends `bytes` to what is being written.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        self.file
            .write_all(bytes)
            .map_err(|e| io_refusal(&e, "write", &self.path.raw))?;
        self.written += bytes.len() as u64;
        if self.written > HASH_SIZE_CAP {
            self.hasher = None;
        } else if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
        Ok(())
    }

    /// Makes the write durable and visible: fsync, mode, rename over the old file (for a
    /// replace), fsync of the directory. Returns the file's stat.
    pub fn commit(mut self) -> Result<WriteResult, Refusal> {
        let raw = &self.path.raw;
        if let Some(mode) = self.mode {
            fchmod(&self.file, Mode::from_bits_truncate(mode))
                .map_err(|e| errno_refusal(e, "set the mode of", raw))?;
        }
        if let Some((uid, gid)) = self.owner {
            // Keeping the old owner needs privilege; without it the writer owns the file.
            let _ = fchown(&self.file, Some(uid.into()), Some(gid.into()));
        }
        fsync(&self.file).map_err(|e| errno_refusal(e, "sync", raw))?;
        let display = self.path.abs_string();
        let Some(temp) = self.temp.clone() else {
            let stat = stat_after_append(&self.dir, &self.name, &display)?;
            return Ok(WriteResult {
                stat,
                bytes: self.written,
            });
        };
        renameat(&self.dir, &*temp, &self.dir, &*self.name)
            .map_err(|e| errno_refusal(e, "replace", raw))?;
        self.temp = None;
        sync_dir(&self.dir);
        let hash = self.hasher.take().map(|h| stat::hex(&h.finalize()));
        let mut stat = stat_at(&self.dir, &self.name, &display, HashMode::Never)?;
        if stat.size == self.written {
            stat.sha256 = hash;
        }
        Ok(WriteResult {
            stat,
            bytes: self.written,
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take()
            && let Err(errno) = unlinkat(&self.dir, &*temp, UnlinkatFlags::NoRemoveDir)
        {
            tracing::warn!(path = %self.path.raw, %errno, "removing an abandoned temporary file failed");
        }
    }
}

/// `.NAME.nexus-PID-N.tmp`, hidden and recognisable.
fn temp_name(name: &OsStr) -> OsString {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".nexus-{}-{n}.tmp", std::process::id()));
    temp
}

/// fsync of a directory (so a rename survives a crash), best effort: an `O_PATH`
/// descriptor cannot be synced, so the directory is opened again for it.
fn sync_dir(dir: &OwnedFd) {
    if let Ok(fd) = open_at(
        dir.as_fd(),
        OsStr::new("."),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        0,
    ) {
        let _ = fsync(&fd);
    }
}

/// The stat of an appended file (following a final symlink, as the append did), hashed
/// when under the cap.
fn stat_after_append(
    dir: &OwnedFd,
    name: &OsStr,
    display: &str,
) -> Result<nexus_agent_proto::fs::FileStat, Refusal> {
    let fd = open_at(
        dir.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
        0,
    )
    .map_err(|e| errno_refusal(e, "stat", display))?;
    let raw = fstat(&fd).map_err(|e| errno_refusal(e, "stat", display))?;
    let sha256 = if raw.st_size as u64 <= HASH_SIZE_CAP {
        Some(
            stat::sha256_of(std::fs::File::from(fd), raw.st_size as u64)
                .map_err(|e| io_refusal(&e, "hash", display))?,
        )
    } else {
        None
    };
    Ok(from_raw(display.to_owned(), &raw, None, sha256))
}

/// `fs_batch`: the operations in order, one result each.
pub fn batch(workdir: &Path, request: &BatchRequest) -> Vec<Outcome<BatchOutput>> {
    let mut results = Vec::with_capacity(request.ops.len());
    let mut failed = false;
    for op in &request.ops {
        if failed && request.stop_on_error {
            results.push(Outcome::Error(ItemError {
                code: ErrorCode::Cancelled,
                message: "not run: an earlier operation of the batch failed".into(),
            }));
            continue;
        }
        let result = batch_op(workdir, op);
        failed |= result.is_err();
        results.push(match result {
            Ok(output) => Outcome::Ok(output),
            Err(refusal) => Outcome::Error(item_error(refusal)),
        });
    }
    results
}

fn batch_op(workdir: &Path, op: &BatchOp) -> Result<BatchOutput, Refusal> {
    Ok(match op {
        BatchOp::Write {
            request,
            content,
            encoding,
        } => {
            let bytes = match encoding {
                ContentEncoding::Text => content.as_bytes().to_vec(),
                ContentEncoding::Base64 => base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .map_err(|e| {
                        Refusal::new(
                            ErrorCode::BadRequest,
                            format!("write {}: content is not valid base64: {e}", request.path),
                        )
                    })?,
            };
            let mut writer = Writer::begin(workdir, request)?;
            writer.write(&bytes)?;
            let result = writer.commit()?;
            BatchOutput::Written {
                stat: result.stat,
                bytes: result.bytes,
            }
        }
        BatchOp::Mkdir(request) => BatchOutput::Stat {
            stat: mutate::mkdir(workdir, request)?,
        },
        BatchOp::Remove(request) => BatchOutput::Removed {
            removed: mutate::remove(workdir, request)?.removed,
        },
        BatchOp::Move(request) => BatchOutput::Stat {
            stat: mutate::rename(workdir, request)?,
        },
        BatchOp::Copy(request) => BatchOutput::Copied {
            summary: mutate::copy(workdir, request)?,
        },
        BatchOp::Stat { path, hash } => BatchOutput::Stat {
            stat: stat::stat_path(&FsPath::new(workdir, path)?, *hash)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_uncommitted_replace_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"old").unwrap();
        let mut writer = Writer::begin(dir.path(), &WriteRequest::new("f")).unwrap();
        writer.write(b"new content").unwrap();
        assert_eq!(
            names(dir.path()).len(),
            2,
            "the temporary file exists meanwhile"
        );
        drop(writer);
        assert_eq!(names(dir.path()), ["f"]);
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"old");
    }

    #[test]
    fn a_committed_replace_keeps_the_mode_and_hashes() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut writer = Writer::begin(dir.path(), &WriteRequest::new("f")).unwrap();
        writer.write(b"abc").unwrap();
        let result = writer.commit().unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"abc");
        assert_eq!((result.stat.mode, result.bytes), (0o600, 3));
        assert_eq!(
            result.stat.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(names(dir.path()), ["f"]);
    }
}
