//! `fs_watch`: inotify on a path (and, when recursive, on every directory below it,
//! including ones created later), reported as [`WatchEvent`]s until the client cancels.
//! A `MOVED_FROM` followed by its `MOVED_TO` (same cookie) is one `rename`; unpaired, they
//! are a `delete` (moved out) or a `create` (moved in).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use nexus_agent_proto::fs::{FileType, WatchEvent, WatchRequest};
use nexus_agent_proto::{ErrorCode, Event, Frame, FrameType, Response};
use nix::fcntl::OFlag;
use nix::sys::stat::fstat;

use super::path::{FsPath, errno_refusal};
use super::stat::file_type;
use super::transfer::blocking;
use crate::conn::FrameSender;
use crate::procs::Refusal;

/// How long a `MOVED_FROM` waits for its `MOVED_TO` before it counts as a delete.
const RENAME_PAIRING: Duration = Duration::from_millis(20);

/// Bytes of inotify events read at once.
const EVENT_BUFFER: usize = 64 * 1024;

/// Runs a watch until it is cancelled (the task is aborted) or its path disappears.
pub async fn run(
    workdir: PathBuf,
    request: WatchRequest,
    tx: &FrameSender,
    channel: u32,
) -> Result<Response, Refusal> {
    let path = FsPath::new(&workdir, &request.path)?;
    let checked = path.clone();
    let is_dir = blocking(move || {
        let fd = checked.open(OFlag::O_PATH)?;
        let raw = fstat(&fd).map_err(|e| errno_refusal(e, "watch", &checked.raw))?;
        Ok(file_type(&raw) == FileType::Dir)
    })
    .await?;
    let inotify = Inotify::init().map_err(|e| internal(&path.raw, &e))?;
    let mut watch = Watch {
        watches: inotify.watches(),
        dirs: HashMap::new(),
        recursive: request.recursive && is_dir,
    };
    watch.add(&path.abs).map_err(|e| internal(&path.raw, &e))?;
    if watch.recursive {
        watch.add_tree(&path.abs).await;
    }
    let mut events = inotify
        .into_event_stream(vec![0u8; EVENT_BUFFER])
        .map_err(|e| internal(&path.raw, &e))?;
    send(
        tx,
        channel,
        Event::FsWatching {
            path: path.abs_string(),
        },
    )
    .await?;

    let mut pending: Option<(u32, PathBuf, bool)> = None;
    loop {
        let next = if pending.is_some() {
            tokio::select! {
                next = events.next() => Some(next),
                () = tokio::time::sleep(RENAME_PAIRING) => None,
            }
        } else {
            Some(events.next().await)
        };
        let event = match next {
            // The MOVED_TO never came: moved out of the watch.
            None => {
                if let Some((_, from, dir)) = pending.take() {
                    watch.forget_tree(&from);
                    emit(
                        tx,
                        channel,
                        WatchEvent::Delete {
                            path: lossy(&from),
                            dir,
                        },
                    )
                    .await?;
                }
                continue;
            }
            Some(None) => return Err(Refusal::new(ErrorCode::Internal, "inotify stream ended")),
            Some(Some(Err(err))) => return Err(internal(&path.raw, &err)),
            Some(Some(Ok(event))) => event,
        };
        let mask = event.mask;
        if mask.contains(EventMask::Q_OVERFLOW) {
            emit(tx, channel, WatchEvent::Overflow).await?;
            continue;
        }
        if mask.contains(EventMask::IGNORED) {
            watch.dirs.remove(&event.wd);
            continue;
        }
        let Some(base) = watch.dirs.get(&event.wd).cloned() else {
            continue;
        };
        let target = match &event.name {
            Some(name) => base.join(name),
            None => base.clone(),
        };
        let dir = mask.contains(EventMask::ISDIR);
        if mask.contains(EventMask::MOVED_TO) {
            if let Some((cookie, from, from_dir)) = pending.take() {
                if cookie == event.cookie {
                    watch.rename_tree(&from, &target);
                    let rename = WatchEvent::Rename {
                        from: lossy(&from),
                        to: lossy(&target),
                        dir: from_dir,
                    };
                    emit(tx, channel, rename).await?;
                    continue;
                }
                watch.forget_tree(&from);
                emit(
                    tx,
                    channel,
                    WatchEvent::Delete {
                        path: lossy(&from),
                        dir: from_dir,
                    },
                )
                .await?;
            }
            created(&mut watch, tx, channel, target, dir).await?;
            continue;
        }
        if let Some((_, from, from_dir)) = pending.take() {
            watch.forget_tree(&from);
            emit(
                tx,
                channel,
                WatchEvent::Delete {
                    path: lossy(&from),
                    dir: from_dir,
                },
            )
            .await?;
        }
        if mask.contains(EventMask::MOVED_FROM) {
            pending = Some((event.cookie, target, dir));
        } else if mask.contains(EventMask::CREATE) {
            created(&mut watch, tx, channel, target, dir).await?;
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            emit(
                tx,
                channel,
                WatchEvent::Modify {
                    path: lossy(&target),
                },
            )
            .await?;
        } else if mask.contains(EventMask::DELETE) {
            emit(
                tx,
                channel,
                WatchEvent::Delete {
                    path: lossy(&target),
                    dir,
                },
            )
            .await?;
        } else if (mask.contains(EventMask::DELETE_SELF) || mask.contains(EventMask::MOVE_SELF))
            && target == path.abs
        {
            emit(
                tx,
                channel,
                WatchEvent::Delete {
                    path: lossy(&target),
                    dir: is_dir,
                },
            )
            .await?;
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!(
                    "watch {}: the watched path was removed or moved away",
                    path.raw
                ),
            ));
        }
    }
}

/// The watches of one `fs_watch`, by descriptor.
struct Watch {
    watches: Watches,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    recursive: bool,
}

impl Watch {
    fn add(&mut self, path: &Path) -> std::io::Result<()> {
        let mask = WatchMask::CREATE
            | WatchMask::CLOSE_WRITE
            | WatchMask::DELETE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DONT_FOLLOW
            | WatchMask::EXCL_UNLINK;
        let wd = self.watches.add(path, mask)?;
        self.dirs.insert(wd, path.to_path_buf());
        Ok(())
    }

    /// Watches every directory below `root`; returns the entries found (for a directory
    /// made after the watch started, they were created before its watch existed).
    async fn add_tree(&mut self, root: &Path) -> Vec<(PathBuf, bool)> {
        let root = root.to_path_buf();
        let found = blocking(move || Ok(walk(&root))).await.unwrap_or_default();
        for (path, dir) in &found {
            if *dir {
                // A directory gone meanwhile is simply not watched.
                let _ = self.add(path);
            }
        }
        found
    }

    /// Follows a renamed directory: its watches now report paths under `to`.
    fn rename_tree(&mut self, from: &Path, to: &Path) {
        for path in self.dirs.values_mut() {
            if let Ok(rest) = path.strip_prefix(from) {
                *path = to.join(rest);
            }
        }
    }

    /// Stops watching what was under `from` (moved out of the watch).
    fn forget_tree(&mut self, from: &Path) {
        let gone: Vec<WatchDescriptor> = self
            .dirs
            .iter()
            .filter(|(_, path)| path.starts_with(from))
            .map(|(wd, _)| wd.clone())
            .collect();
        for wd in gone {
            self.dirs.remove(&wd);
            let _ = self.watches.remove(wd);
        }
    }
}

/// Reports a new entry; a new directory of a recursive watch is watched, and what it
/// already holds is reported as created too.
async fn created(
    watch: &mut Watch,
    tx: &FrameSender,
    channel: u32,
    path: PathBuf,
    dir: bool,
) -> Result<(), Refusal> {
    emit(
        tx,
        channel,
        WatchEvent::Create {
            path: lossy(&path),
            dir,
        },
    )
    .await?;
    if dir && watch.recursive {
        let _ = watch.add(&path);
        for (inner, inner_dir) in watch.add_tree(&path).await {
            emit(
                tx,
                channel,
                WatchEvent::Create {
                    path: lossy(&inner),
                    dir: inner_dir,
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// Everything below `root` (not following symlinks), with whether it is a directory.
fn walk(root: &Path) -> Vec<(PathBuf, bool)> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let path = entry.path();
            if is_dir {
                stack.push(path.clone());
            }
            found.push((path, is_dir));
        }
    }
    found
}

fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn internal(path: &str, err: &std::io::Error) -> Refusal {
    Refusal::new(ErrorCode::Internal, format!("watch {path}: {err}"))
}

async fn emit(tx: &FrameSender, channel: u32, change: WatchEvent) -> Result<(), Refusal> {
    send(tx, channel, Event::FsChange { change }).await
}

async fn send(tx: &FrameSender, channel: u32, event: Event) -> Result<(), Refusal> {
    tx.send(Frame::json(FrameType::Event, channel, &event))
        .await
        .map_err(|_| Refusal::new(ErrorCode::Internal, "connection closed"))
}
