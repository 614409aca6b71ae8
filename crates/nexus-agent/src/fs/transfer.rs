//! The streaming operations: reads and tar downloads (a blocking producer feeding FILE_DATA
//! frames against the client's credit), writes and tar uploads (UPLOAD frames consumed
//! by a blocking writer that grants credit back as it writes).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nexus_agent_proto::fs::{
    FileReadInfo, FileType, ReadRequest, TarDownloadRequest, TarUploadRequest, TreeSummary,
    UPLOAD_WINDOW, WriteRequest,
};
use nexus_agent_proto::{ErrorCode, Event, Frame, FrameType, MAX_DATA_CHUNK, ProtoError, Response};
use nix::fcntl::{AtFlags, OFlag, readlinkat};
use nix::sys::stat::{FileStat as RawStat, fstat, fstatat};
use tokio::sync::mpsc;

use super::mutate::{DEFAULT_DIR_MODE, mkdir_all};
use super::path::{FsPath, errno_refusal, io_refusal, open_at, open_subdir, read_dir_names};
use super::stat::{file_type, from_raw};
use super::write::Writer;
use crate::conn::FrameSender;
use crate::ops::Credit;
use crate::procs::Refusal;

/// Chunks a producer may have read ahead of what the connection sent.
const READ_AHEAD: usize = 4;

/// Bytes of a read sent from the job that opens the file (256 KiB).
const INLINE_READ: u64 = 4 * MAX_DATA_CHUNK as u64;

/// The agent grants upload credit back in steps of at least this many bytes.
const GRANT_STEP: u64 = 256 * 1024;

/// The upload credit of one write or tar-upload channel: what the client may still send,
/// and where its next frame must start. Checked by the connection for every UPLOAD frame.
#[derive(Debug)]
pub struct UploadCredit {
    state: Mutex<(u64, u64)>,
}

impl UploadCredit {
    /// The implicit initial window.
    pub fn new() -> Self {
        Self {
            state: Mutex::new((u64::from(UPLOAD_WINDOW), 0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Accounts an UPLOAD frame of `len` bytes at `offset`; a frame beyond the credit or
    /// out of order is a protocol violation.
    pub fn spend(&self, offset: u64, len: usize) -> Result<(), ProtoError> {
        let mut state = self.lock();
        let (allowance, next) = &mut *state;
        if offset != *next {
            return Err(ProtoError::Protocol(format!(
                "upload frame at offset {offset}, expected {next}"
            )));
        }
        if len as u64 > *allowance {
            return Err(ProtoError::Protocol(format!(
                "client sent {len} upload bytes with {allowance} bytes of credit"
            )));
        }
        *allowance -= len as u64;
        *next += len as u64;
        Ok(())
    }

    fn grant(&self, bytes: u64) {
        self.lock().0 += bytes;
    }
}

/// The body of an upload as the operation receives it: chunks from the connection (an
/// empty one ends it; the channel closing first means the client gave up).
#[derive(Debug)]
pub struct Body {
    /// The chunks.
    pub rx: mpsc::UnboundedReceiver<Bytes>,
    /// The channel's credit, to grant back.
    pub credit: Arc<UploadCredit>,
}

/// Reads a [`Body`] on a blocking thread, granting credit back as chunks are consumed.
struct BodyReader {
    body: Body,
    tx: FrameSender,
    channel: u32,
    consumed: u64,
    current: Bytes,
    ended: bool,
}

impl BodyReader {
    fn new(body: Body, tx: FrameSender, channel: u32) -> Self {
        Self {
            body,
            tx,
            channel,
            consumed: 0,
            current: Bytes::new(),
            ended: false,
        }
    }

    /// The next chunk, `None` at the end of the body, an error when the client gave up.
    fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        if !self.current.is_empty() {
            return Ok(Some(std::mem::take(&mut self.current)));
        }
        if self.ended {
            return Ok(None);
        }
        match self.body.rx.blocking_recv() {
            Some(chunk) if chunk.is_empty() => {
                self.ended = true;
                Ok(None)
            }
            Some(chunk) => {
                self.consumed += chunk.len() as u64;
                if self.consumed >= GRANT_STEP {
                    let grant = std::mem::take(&mut self.consumed);
                    // Credit first, then the frame: the client may send as soon as it has it.
                    self.body.credit.grant(grant);
                    let frame =
                        Frame::credit(self.channel, u32::try_from(grant).unwrap_or(u32::MAX));
                    let _ = self.tx.blocking_send(frame);
                }
                Ok(Some(chunk))
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the client abandoned the upload",
            )),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(mut chunk) = self.next_chunk()? else {
            return Ok(0);
        };
        let n = buf.len().min(chunk.len());
        buf[..n].copy_from_slice(&chunk.split_to(n));
        self.current = chunk;
        Ok(n)
    }
}

/// Runs `job` on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|err| Refusal::new(ErrorCode::Internal, format!("file operation failed: {err}")))?
}

/// `fs_read`: EVENT `fs_read_start`, FILE_DATA frames, then `fs_read_done`. The file is
/// opened and its first [`INLINE_READ`] bytes read on the agent's own thread (a small
/// read from a local filesystem costs less than the blocking pool's round trip); the
/// rest is read ahead by a producer on the blocking pool.
pub async fn read(
    workdir: PathBuf,
    request: ReadRequest,
    credit: Arc<Credit>,
    tx: &FrameSender,
    channel: u32,
) -> Result<Response, Refusal> {
    let opened = (move || {
        let path = FsPath::new(&workdir, &request.path)?;
        let fd = path.open(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)?;
        let raw = fstat(&fd).map_err(|e| errno_refusal(e, "stat", &path.raw))?;
        match file_type(&raw) {
            FileType::File => {}
            FileType::Dir => {
                return Err(errno_refusal(nix::errno::Errno::EISDIR, "read", &path.raw));
            }
            _ => {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("read {}: not a regular file", path.raw),
                ));
            }
        }
        let size = u64::try_from(raw.st_size).unwrap_or(0);
        let end = request
            .length
            .map_or(size, |length| request.offset.saturating_add(length))
            .min(size);
        let info = FileReadInfo {
            stat: from_raw(path.raw.clone(), &raw, None, None),
            offset: request.offset,
            length: end.saturating_sub(request.offset),
        };
        let mut reader = RangeReader {
            file: std::fs::File::from(fd),
            pos: request.offset,
            end,
            display: path.raw,
        };
        let mut first = Vec::new();
        let inline_end = end.min(request.offset.saturating_add(INLINE_READ));
        while reader.pos < inline_end {
            match reader.next_chunk()? {
                Some(chunk) => first.push(chunk),
                None => break,
            }
        }
        Ok::<_, Refusal>((info, first, reader))
    })()?;
    let (info, first, mut reader) = opened;
    let start = info.offset;
    let mut offset = start;
    send(
        tx,
        Frame::json(FrameType::Event, channel, &Event::FsReadStart(info)),
    )
    .await?;
    for chunk in first {
        send_data(chunk, &credit, tx, channel, &mut offset).await?;
    }
    if reader.pos < reader.end {
        let (chunks, mut rx) = mpsc::channel::<Bytes>(READ_AHEAD);
        let producer = tokio::spawn(blocking(move || {
            while let Some(chunk) = reader.next_chunk()? {
                if chunks.blocking_send(chunk).is_err() {
                    break; // Cancelled.
                }
            }
            Ok(())
        }));
        pump(&mut rx, &credit, tx, channel, &mut offset).await?;
        join(producer).await?;
    }
    Ok(Response::FsReadDone {
        bytes: offset - start,
    })
}

/// `fs_write`: the body from UPLOAD frames into a [`Writer`].
pub async fn write(
    workdir: PathBuf,
    request: WriteRequest,
    body: Body,
    tx: FrameSender,
    channel: u32,
) -> Result<Response, Refusal> {
    let result = blocking(move || {
        let mut writer = Writer::begin(&workdir, &request)?;
        let mut reader = BodyReader::new(body, tx, channel);
        while let Some(chunk) = reader.next_chunk().map_err(|e| {
            Refusal::new(ErrorCode::Cancelled, format!("write {}: {e}", request.path))
        })? {
            writer.write(&chunk)?;
        }
        writer.commit()
    })
    .await?;
    Ok(Response::FsWritten(result))
}

/// `fs_tar_download`: a tar of a file or tree in FILE_DATA frames, then `fs_tree`.
pub async fn tar_download(
    workdir: PathBuf,
    request: TarDownloadRequest,
    credit: Arc<Credit>,
    tx: &FrameSender,
    channel: u32,
) -> Result<Response, Refusal> {
    let (chunks, mut rx) = mpsc::channel::<Bytes>(READ_AHEAD);
    let producer = tokio::spawn(blocking(move || {
        let path = FsPath::new(&workdir, &request.path)?;
        let (dir, name) = path.open_parent()?;
        let mut builder = tar::Builder::new(ChunkWriter {
            chunks,
            buf: Vec::with_capacity(MAX_DATA_CHUNK),
        });
        builder.mode(tar::HeaderMode::Complete);
        let mut summary = TreeSummary::default();
        let mut tar = TarWalk {
            builder: &mut builder,
            summary: &mut summary,
            display: &path.raw,
        };
        tar.entry(&dir, &name, PathBuf::from(&name), true)?;
        let mut writer = builder
            .into_inner()
            .map_err(|e| io_refusal(&e, "tar", &path.raw))?;
        writer
            .flush()
            .map_err(|e| io_refusal(&e, "tar", &path.raw))?;
        Ok(summary)
    }));
    pump(&mut rx, &credit, tx, channel, &mut 0).await?;
    Ok(Response::FsTree(join(producer).await?))
}

/// `fs_tar_upload`: unpacks the body under `dest` (made when missing). Entries with `..`
/// or an absolute path are refused and stop the upload; the `tar` crate's `unpack_in`
/// also refuses entries that would be written through a symlink out of `dest`.
pub async fn tar_upload(
    workdir: PathBuf,
    request: TarUploadRequest,
    body: Body,
    tx: FrameSender,
    channel: u32,
) -> Result<Response, Refusal> {
    let summary = blocking(move || {
        let dest = FsPath::new(&workdir, &request.dest)?;
        mkdir_all(&dest, DEFAULT_DIR_MODE)?;
        let reader = BodyReader::new(body, tx, channel);
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        let mut summary = TreeSummary::default();
        let bad = |e: std::io::Error| io_refusal(&e, "unpack into", &dest.raw);
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let name = entry.path().map_err(bad)?.into_owned();
            let escapes = name.components().any(|c| {
                matches!(
                    c,
                    Component::ParentDir | Component::RootDir | Component::Prefix(_)
                )
            });
            if escapes || !entry.unpack_in(&dest.abs).map_err(bad)? {
                return Err(Refusal::new(
                    ErrorCode::InvalidPath,
                    format!(
                        "unpack into {}: entry {} would land outside it; refused",
                        dest.raw,
                        name.display()
                    ),
                ));
            }
            let header = entry.header();
            match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    summary.files += 1;
                    summary.bytes += header.size().unwrap_or(0);
                }
                tar::EntryType::Directory => summary.dirs += 1,
                tar::EntryType::Symlink => summary.symlinks += 1,
                _ => {}
            }
        }
        Ok(summary)
    })
    .await?;
    Ok(Response::FsTree(summary))
}

/// Sends the chunks of `rx` as FILE_DATA frames from `offset` on, within the credit,
/// moving `offset` past what went out.
async fn pump(
    rx: &mut mpsc::Receiver<Bytes>,
    credit: &Credit,
    tx: &FrameSender,
    channel: u32,
    offset: &mut u64,
) -> Result<(), Refusal> {
    while let Some(chunk) = rx.recv().await {
        send_data(chunk, credit, tx, channel, offset).await?;
    }
    Ok(())
}

/// Sends `chunk` as FILE_DATA frames at `offset`, waiting for credit as needed.
async fn send_data(
    mut chunk: Bytes,
    credit: &Credit,
    tx: &FrameSender,
    channel: u32,
    offset: &mut u64,
) -> Result<(), Refusal> {
    while !chunk.is_empty() {
        let available = credit.wait_available().await;
        let part = chunk.split_to(available.min(chunk.len()));
        credit.spend(part.len());
        send(
            tx,
            Frame::data(FrameType::FileData, channel, *offset, &part),
        )
        .await?;
        *offset += part.len() as u64;
    }
    Ok(())
}

/// Reads `pos..end` of a file in chunks of at most [`MAX_DATA_CHUNK`].
struct RangeReader {
    file: std::fs::File,
    pos: u64,
    end: u64,
    display: String,
}

impl RangeReader {
    /// The next chunk; `None` at the end (or when the file shrank).
    fn next_chunk(&mut self) -> Result<Option<Bytes>, Refusal> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let want = usize::try_from(self.end - self.pos)
            .unwrap_or(usize::MAX)
            .min(MAX_DATA_CHUNK);
        let mut buf = vec![0u8; want];
        let n = loop {
            match self.file.read_at(&mut buf, self.pos) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_refusal(&e, "read", &self.display)),
            }
        };
        if n == 0 {
            self.end = self.pos;
            return Ok(None);
        }
        buf.truncate(n);
        self.pos += n as u64;
        Ok(Some(Bytes::from(buf)))
    }
}

async fn join<T>(task: tokio::task::JoinHandle<Result<T, Refusal>>) -> Result<T, Refusal> {
    task.await
        .map_err(|err| Refusal::new(ErrorCode::Internal, format!("file operation failed: {err}")))?
}

async fn send(tx: &FrameSender, frame: Frame) -> Result<(), Refusal> {
    tx.send(frame)
        .await
        .map_err(|_| Refusal::new(ErrorCode::Internal, "connection closed"))
}

/// A `Write` that hands full chunks to the async side; fails once nobody receives.
struct ChunkWriter {
    chunks: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn ship(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(MAX_DATA_CHUNK),
        ));
        self.chunks.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the download was cancelled")
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(MAX_DATA_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= MAX_DATA_CHUNK {
            self.ship()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.ship()
    }
}

/// Appends a file or tree to a tar, walking descriptors and never following symlinks
/// below the root.
struct TarWalk<'a> {
    builder: &'a mut tar::Builder<ChunkWriter>,
    summary: &'a mut TreeSummary,
    display: &'a str,
}

impl TarWalk<'_> {
    /// Appends entry `name` of `dir` as `rel`; the root (`follow`) may be a symlink to
    /// what is archived, opened through `openat2`.
    fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: PathBuf,
        follow: bool,
    ) -> Result<(), Refusal> {
        let display = self.display;
        let shown = |rel: &Path| format!("{display} ({})", rel.display());
        let raw: RawStat = if follow {
            let fd = open_at(dir.as_fd(), name, OFlag::O_PATH, 0)
                .map_err(|e| errno_refusal(e, "tar", display))?;
            fstat(&fd).map_err(|e| errno_refusal(e, "tar", display))?
        } else {
            match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(raw) => raw,
                Err(nix::errno::Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(errno_refusal(e, "tar", &shown(&rel))),
            }
        };
        let mut header = tar::Header::new_gnu();
        header.set_mode(raw.st_mode & 0o7777);
        header.set_uid(u64::from(raw.st_uid));
        header.set_gid(u64::from(raw.st_gid));
        header.set_mtime(u64::try_from(raw.st_mtime).unwrap_or(0));
        let io = |e: std::io::Error| io_refusal(&e, "tar", display);
        match file_type(&raw) {
            FileType::File => {
                let fd = open_at(
                    dir.as_fd(),
                    name,
                    OFlag::O_RDONLY
                        | OFlag::O_NONBLOCK
                        | OFlag::O_NOCTTY
                        | if follow {
                            OFlag::empty()
                        } else {
                            OFlag::O_NOFOLLOW
                        },
                    0,
                )
                .map_err(|e| errno_refusal(e, "tar", &shown(&rel)))?;
                let size = u64::try_from(raw.st_size).unwrap_or(0);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                // Exactly `size` bytes, padded with zeros if the file shrank meanwhile.
                let content = std::fs::File::from(fd)
                    .take(size)
                    .chain(std::io::repeat(0))
                    .take(size);
                self.builder
                    .append_data(&mut header, &rel, content)
                    .map_err(io)?;
                self.summary.files += 1;
                self.summary.bytes += size;
            }
            FileType::Symlink => {
                let target =
                    readlinkat(dir, name).map_err(|e| errno_refusal(e, "tar", &shown(&rel)))?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                self.builder
                    .append_link(&mut header, &rel, Path::new(&target))
                    .map_err(io)?;
                self.summary.symlinks += 1;
            }
            FileType::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                self.builder
                    .append_data(&mut header, &rel, std::io::empty())
                    .map_err(io)?;
                self.summary.dirs += 1;
                let sub = if follow {
                    open_at(dir.as_fd(), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
                } else {
                    open_subdir(dir, name)
                }
                .map_err(|e| errno_refusal(e, "tar", &shown(&rel)))?;
                let names =
                    read_dir_names(&sub).map_err(|e| errno_refusal(e, "tar", &shown(&rel)))?;
                for child in names {
                    self.entry(&sub, &child, rel.join(&child), false)?;
                }
            }
            FileType::Other => {}
        }
        Ok(())
    }
}
