//! `nexusctl fs cat|write|ls|stat|rm|mkdir|mv|cp|watch`: files of a running sandbox.
//!
//! `cat` and `write` stream raw bytes between stdout/stdin and the daemon. `cp` moves
//! files and trees through the tar routes, streamed both ways so memory stays bounded
//! whatever the size: an upload is the host path packed with the `tar` crate (symlinks
//! kept as links) on a thread while it is sent, a download is unpacked as it arrives with
//! its `unpack`, which refuses entries that would land outside the destination.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use nexus_api::files::{FileStat, FileType, MkdirRequest, TransferRequest, WatchEvent};
use nexus_client::{Client, WriteOptions};

use crate::cli::FsCommand;
use crate::output::{Output, human_bytes, write_raw};

/// Runs one `fs` subcommand.
pub async fn run(client: &Client, command: FsCommand, out: Output) -> anyhow::Result<()> {
    match command {
        FsCommand::Cat {
            sandbox,
            path,
            offset,
            length,
        } => {
            let (_, mut bytes) = client
                .read_file_stream(&sandbox, &path, offset, length)
                .await?;
            let mut stdout = std::io::stdout().lock();
            while let Some(chunk) = bytes.next().await {
                write_raw(&mut stdout, &chunk.context("the read broke off")?)?;
            }
            Ok(())
        }
        FsCommand::Write {
            sandbox,
            path,
            append,
            parents,
            mode,
        } => {
            let options = WriteOptions {
                append,
                create_parents: parents,
                mode,
            };
            let stat = client
                .write_file_stream(&sandbox, &path, stdin_stream(), &options)
                .await?;
            if out.json { out.json(&stat) } else { Ok(()) }
        }
        FsCommand::Ls {
            sandbox,
            path,
            depth,
        } => {
            let list = client.list_files(&sandbox, &path, depth).await?;
            if out.json {
                return out.json(&list);
            }
            let mut text = format!(
                "{:<6} {:<5} {:>10}  {:<24} PATH\n",
                "TYPE", "MODE", "SIZE", "MODIFIED"
            );
            for entry in &list.entries {
                text.push_str(&entry_line(entry));
            }
            if list.truncated {
                text.push_str("(truncated: more entries exist)\n");
            }
            out.text(&text)
        }
        FsCommand::Stat { sandbox, paths } => {
            let results = client.stat_files(&sandbox, paths).await?;
            if out.json {
                return out.json(&serde_json::json!({ "results": results }));
            }
            let mut text = String::new();
            let mut failed = false;
            for item in results {
                match (item.stat, item.error) {
                    (Some(stat), _) => {
                        text.push_str(&format!(
                            "{}\n  type {}  size {} ({})  mode {}  uid {}  gid {}\n  modified {}\n",
                            stat.path,
                            type_name(stat.file_type),
                            stat.size,
                            human_bytes(stat.size),
                            stat.mode,
                            stat.uid,
                            stat.gid,
                            stat.modified_at
                        ));
                        if let Some(target) = stat.symlink_target {
                            text.push_str(&format!("  target {target}\n"));
                        }
                        if let Some(sha) = stat.sha256 {
                            text.push_str(&format!("  sha256 {sha}\n"));
                        }
                    }
                    (None, error) => {
                        failed = true;
                        let message = error.map_or("no answer".into(), |e| {
                            format!("{} ({})", e.message, e.code)
                        });
                        text.push_str(&format!("{}\n  error: {message}\n", item.path));
                    }
                }
            }
            out.text(&text)?;
            if failed {
                return Err(crate::Quiet.into());
            }
            Ok(())
        }
        FsCommand::Rm {
            sandbox,
            path,
            recursive,
        } => {
            let removed = client.remove_file(&sandbox, &path, recursive).await?;
            if out.json {
                out.json(&serde_json::json!({ "removed": removed }))
            } else {
                Ok(())
            }
        }
        FsCommand::Mkdir {
            sandbox,
            path,
            parents,
        } => {
            let stat = client
                .mkdir(
                    &sandbox,
                    &MkdirRequest {
                        path,
                        parents,
                        mode: None,
                    },
                )
                .await?;
            if out.json { out.json(&stat) } else { Ok(()) }
        }
        FsCommand::Mv {
            sandbox,
            from,
            to,
            force,
        } => {
            let request = TransferRequest {
                from,
                to,
                overwrite: force,
            };
            let stat = client.move_file(&sandbox, &request).await?;
            if out.json { out.json(&stat) } else { Ok(()) }
        }
        FsCommand::Cp { src, dst } => copy(client, &src, &dst, out).await,
        FsCommand::Watch {
            sandbox,
            path,
            recursive,
        } => {
            let mut events = client.watch_files(&sandbox, &path, recursive).await?;
            while let Some(event) = events.next().await {
                let event = event?;
                let line = if out.json {
                    serde_json::to_string(&event)?
                } else {
                    match &event {
                        WatchEvent::Create { path, .. } => format!("create {path}"),
                        WatchEvent::Modify { path } => format!("modify {path}"),
                        WatchEvent::Delete { path, .. } => format!("delete {path}"),
                        WatchEvent::Rename { from, to, .. } => format!("rename {from} -> {to}"),
                        WatchEvent::Overflow => "overflow (some changes were lost)".into(),
                        WatchEvent::Error { message } => {
                            anyhow::bail!("the watch broke: {message}")
                        }
                    }
                };
                out.text(&format!("{line}\n"))?;
            }
            Ok(())
        }
    }
}

/// One side of `fs cp`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    /// `SANDBOX:/path`.
    Sandbox { sandbox: String, path: String },
    /// A path on this host.
    Host(PathBuf),
}

/// `SANDBOX:/path` when the text before the first `:` is a plausible sandbox name (not
/// empty, no `/`), else a host path.
fn location(text: &str) -> anyhow::Result<Location> {
    match text.split_once(':') {
        Some((sandbox, path)) if !sandbox.is_empty() && !sandbox.contains('/') => {
            anyhow::ensure!(
                !path.is_empty(),
                "{text:?} names no path in sandbox {sandbox:?}: write SANDBOX:/path, e.g. {sandbox}:/workspace"
            );
            Ok(Location::Sandbox {
                sandbox: sandbox.to_owned(),
                path: path.to_owned(),
            })
        }
        _ => Ok(Location::Host(PathBuf::from(text))),
    }
}

async fn copy(client: &Client, src: &str, dst: &str, out: Output) -> anyhow::Result<()> {
    match (location(src)?, location(dst)?) {
        (Location::Host(from), Location::Sandbox { sandbox, path }) => {
            // Checked before the upload starts, so a bad path is an error, not an empty copy.
            let name = archive_name(&from)?;
            let summary = client
                .upload_archive(&sandbox, &path, pack_stream(from, name))
                .await?;
            if out.json { out.json(&summary) } else { Ok(()) }
        }
        (Location::Sandbox { sandbox, path }, Location::Host(to)) => {
            let stream = client
                .download_archive(&sandbox, &path)
                .await?
                .map(|chunk| chunk.map_err(std::io::Error::other));
            // The tar is unpacked as it arrives, on a blocking thread reading the stream.
            let reader =
                tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
            tokio::task::spawn_blocking(move || unpack(reader, &to))
                .await
                .context("unpacking task failed")??;
            Ok(())
        }
        (Location::Sandbox { .. }, Location::Sandbox { .. }) => anyhow::bail!(
            "both {src:?} and {dst:?} are in sandboxes; one side of `fs cp` must be a host path"
        ),
        (Location::Host(_), Location::Host(_)) => anyhow::bail!(
            "neither {src:?} nor {dst:?} names a sandbox; write one side as SANDBOX:/path, e.g. web:/workspace"
        ),
    }
}

/// The name a host file or tree gets in the archive: its last component.
fn archive_name(from: &Path) -> anyhow::Result<PathBuf> {
    let name = from
        .canonicalize()
        .with_context(|| format!("cannot read {}", from.display()))?
        .file_name()
        .map(PathBuf::from)
        .with_context(|| format!("{} has no name to copy under", from.display()))?;
    Ok(name)
}

/// A tar of a host file or tree as a stream, packed on a thread of its own while the
/// upload goes: memory stays bounded whatever the size. A packing failure ends the
/// stream with an error, which makes the daemon abandon the upload.
fn pack_stream(
    from: PathBuf,
    name: PathBuf,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let mut writer = ChunkWriter {
            tx: tx.clone(),
            buffer: Vec::with_capacity(CHUNK),
        };
        let packed = pack(&from, &name, &mut writer).and_then(|()| {
            writer
                .send()
                .map_err(|_| anyhow::anyhow!("the upload stopped"))
        });
        if let Err(e) = packed {
            let _ = tx.blocking_send(Err(std::io::Error::other(format!("{e:#}"))));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Size of the chunks an upload is sent in.
const CHUNK: usize = 256 * 1024;

/// A `Write` that hands full chunks to the upload.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a tar of a host file or tree, its entries named from `name` on, into `out`.
fn pack(from: &Path, name: &Path, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let meta = fs_err::symlink_metadata(from)
        .with_context(|| format!("cannot read {}", from.display()))?;
    if meta.is_dir() {
        builder
            .append_dir_all(name, from)
            .with_context(|| format!("cannot pack {}", from.display()))?;
    } else {
        builder
            .append_path_with_name(from, name)
            .with_context(|| format!("cannot pack {}", from.display()))?;
    }
    builder.finish().context("cannot finish the archive")?;
    Ok(())
}

/// Unpacks a tar read from `tar` into `to` (created when missing).
fn unpack(tar: impl std::io::Read, to: &Path) -> anyhow::Result<()> {
    fs_err::create_dir_all(to)?;
    tar::Archive::new(tar)
        .unpack(to)
        .with_context(|| format!("cannot unpack into {}", to.display()))
}

/// Stdin as a stream of chunks, read on a thread of its own as the upload goes.
fn stdin_stream() -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buffer = vec![0u8; 256 * 1024];
            let item = match std::io::Read::read(&mut stdin, &mut buffer) {
                Ok(0) => return,
                Ok(n) => {
                    buffer.truncate(n);
                    Ok(Bytes::from(buffer))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::File => "file",
        FileType::Dir => "dir",
        FileType::Symlink => "link",
        FileType::Other => "other",
    }
}

fn entry_line(e: &FileStat) -> String {
    let modified = e.modified_at.get(..19).unwrap_or(&e.modified_at);
    let name = match &e.symlink_target {
        Some(target) => format!("{} -> {target}", e.path),
        None => e.path.clone(),
    };
    format!(
        "{:<6} {:<5} {:>10}  {:<24} {name}\n",
        type_name(e.file_type),
        e.mode,
        e.size,
        modified
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sides_are_sandbox_paths_or_host_paths() {
        assert_eq!(
            location("web:/workspace/a").expect("ok"),
            Location::Sandbox {
                sandbox: "web".into(),
                path: "/workspace/a".into()
            }
        );
        assert_eq!(
            location("./a:b").expect("ok"),
            Location::Host("./a:b".into())
        );
        assert_eq!(
            location("/tmp/x").expect("ok"),
            Location::Host("/tmp/x".into())
        );
        let err = location("web:").expect_err("no path");
        assert!(err.to_string().contains("SANDBOX:/path"), "{err}");
    }
}
