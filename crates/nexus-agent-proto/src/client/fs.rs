//! The file API of [`AgentClient`] (protocol version 2): typed methods for every `fs_*`
//! operation, uploads with agent-granted credit, and the streams of reads, tar downloads
//! and watches.

use std::pin::pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::{AgentClient, Channel, response_error, unexpected};
use crate::fs::{
    BatchOutput, BatchRequest, CopyRequest, FileReadInfo, FileStat, GlobRequest, GlobResult,
    GrepRequest, GrepResult, HashMode, ListRequest, ListResult, MkdirRequest, MoveRequest, Outcome,
    ReadRequest, RemoveRequest, RemoveSummary, StatRequest, StatResult, TarDownloadRequest,
    TarUploadRequest, TreeSummary, UPLOAD_WINDOW, WatchRequest, WriteRequest, WriteResult,
};
use crate::{
    ByteStream, Event, FS_PROTOCOL_VERSION, Frame, FrameType, MAX_DATA_CHUNK, ProtoError, Request,
    Response, WatchStream,
};

/// The error type an upload body may fail with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Most paths one `fs_stat` request carries; [`AgentClient::fs_stat_many`] asks for more
/// in parts. An answer is at most a few hundred bytes a path (less than 120 packed for a
/// file with a hash), so a part's answer stays well inside a frame.
const STAT_PART_PATHS: usize = 1_000;

/// Most bytes of path text one `fs_stat` request carries.
const STAT_PART_BYTES: usize = 256 * 1024;

impl AgentClient {
    /// Reads `path` from byte `offset` on, at most `length` bytes (to the end when
    /// `None`). Returns what will be sent, then the bytes as a stream. A range past the
    /// end gives an empty stream. One round trip for a small file.
    pub async fn fs_read(
        &self,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(FileReadInfo, ByteStream), ProtoError> {
        self.require_fs("fs_read")?;
        let window = self.shared.file_window;
        let mut channel = self.shared.open_output(window)?;
        let request = Request::FsRead(ReadRequest {
            path: path.to_owned(),
            offset,
            length,
            credit: window,
        });
        channel.send(Frame::json(FrameType::Request, channel.id, &request))?;
        let frame = channel.recv().await?;
        match frame.kind {
            FrameType::Event => match frame.parse::<Event>()? {
                Event::FsReadStart(info) => {
                    let stream = ByteStream::new(channel, window, info.offset, Some(info.length));
                    Ok((info, stream))
                }
                other => Err(ProtoError::Protocol(format!(
                    "expected fs_read_start, got {other:?}"
                ))),
            },
            FrameType::Response => {
                channel.finished = true;
                Err(response_error(frame.response()?))
            }
            other => Err(ProtoError::Protocol(format!(
                "unexpected {other:?} frame before a read started"
            ))),
        }
    }

    /// Writes `body` to a file (atomic replace, or append), returns the file's stat.
    /// When `body` fails the agent is told to abandon the write: a replaced file keeps
    /// its old content (an append keeps what was already appended).
    pub async fn fs_write<S, E>(
        &self,
        request: WriteRequest,
        body: S,
    ) -> Result<WriteResult, ProtoError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BodyError>,
    {
        self.require_fs("fs_write")?;
        match self.upload(&Request::FsWrite(request), body).await? {
            Response::FsWritten(result) => Ok(result),
            other => Err(unexpected(&other)),
        }
    }

    /// The stat of one path; a missing path is [`ProtoError::Remote`] `not_found`.
    pub async fn fs_stat(&self, path: &str, hash: HashMode) -> Result<FileStat, ProtoError> {
        let request = StatRequest {
            paths: vec![path.to_owned()],
            hash,
        };
        let result = self
            .fs_stat_many(request)
            .await?
            .pop()
            .ok_or_else(|| ProtoError::Protocol("fs_stat answered no result".into()))?;
        result
            .result
            .into_result()
            .map_err(|error| ProtoError::Remote {
                code: error.code,
                message: error.message,
            })
    }

    /// The stat of many paths, one result each in order; one failure (`not_found`, ...)
    /// does not affect the others.
    ///
    /// Any number of paths: they are asked in parts of at most 1,000 paths and 256 KiB of
    /// path text, so that neither a request nor its answer outgrows a frame.
    pub async fn fs_stat_many(&self, request: StatRequest) -> Result<Vec<StatResult>, ProtoError> {
        self.require_fs("fs_stat")?;
        let StatRequest { mut paths, hash } = request;
        let mut results = Vec::with_capacity(paths.len());
        while !paths.is_empty() {
            let (mut count, mut bytes) = (0, 0);
            while count < paths.len().min(STAT_PART_PATHS)
                && (count == 0 || bytes + paths[count].len() <= STAT_PART_BYTES)
            {
                bytes += paths[count].len();
                count += 1;
            }
            // The paths move into each part (no copy; one part is the common case).
            let rest = paths.split_off(count);
            let part = std::mem::replace(&mut paths, rest);
            let request = Request::FsStat(StatRequest { paths: part, hash });
            match self.call(&request).await? {
                Response::FsStats { results: answered } => results.extend(answered),
                other => return Err(unexpected(&other)),
            }
        }
        Ok(results)
    }

    /// A directory's entries down to the requested depth, sorted by path, capped.
    pub async fn fs_list(&self, request: ListRequest) -> Result<ListResult, ProtoError> {
        self.require_fs("fs_list")?;
        match self.call(&Request::FsList(request)).await? {
            Response::FsListed(result) => Ok(result),
            other => Err(unexpected(&other)),
        }
    }

    /// Makes a directory; returns its stat.
    pub async fn fs_mkdir(&self, request: MkdirRequest) -> Result<FileStat, ProtoError> {
        self.require_fs("fs_mkdir")?;
        self.stat_call(Request::FsMkdir(request)).await
    }

    /// Renames; returns the stat of the destination.
    pub async fn fs_move(&self, request: MoveRequest) -> Result<FileStat, ProtoError> {
        self.require_fs("fs_move")?;
        self.stat_call(Request::FsMove(request)).await
    }

    /// Removes a file, symlink or directory (a non-empty one only with `recursive`).
    pub async fn fs_remove(&self, request: RemoveRequest) -> Result<RemoveSummary, ProtoError> {
        self.require_fs("fs_remove")?;
        match self.call(&Request::FsRemove(request)).await? {
            Response::FsRemoved(summary) => Ok(summary),
            other => Err(unexpected(&other)),
        }
    }

    /// Copies a file, symlink or directory tree inside the sandbox.
    pub async fn fs_copy(&self, request: CopyRequest) -> Result<TreeSummary, ProtoError> {
        self.require_fs("fs_copy")?;
        self.tree_call(Request::FsCopy(request)).await
    }

    /// Runs the operations in order; one result each.
    pub async fn fs_batch(
        &self,
        request: BatchRequest,
    ) -> Result<Vec<Outcome<BatchOutput>>, ProtoError> {
        self.require_fs("fs_batch")?;
        match self.call(&Request::FsBatch(request)).await? {
            Response::FsBatch { results } => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    /// Paths matching glob patterns under a directory.
    pub async fn fs_glob(&self, request: GlobRequest) -> Result<GlobResult, ProtoError> {
        self.require_fs("fs_glob")?;
        match self.call(&Request::FsGlob(request)).await? {
            Response::FsGlobbed(result) => Ok(result),
            other => Err(unexpected(&other)),
        }
    }

    /// Lines matching a pattern in the files under a directory.
    pub async fn fs_grep(&self, request: GrepRequest) -> Result<GrepResult, ProtoError> {
        self.require_fs("fs_grep")?;
        match self.call(&Request::FsGrep(request)).await? {
            Response::FsGrepped(result) => Ok(result),
            other => Err(unexpected(&other)),
        }
    }

    /// A tar of a file or directory tree, as a byte stream; once it has ended,
    /// [`ByteStream::tar_summary`] says what it held. An error opening `path` arrives as
    /// the stream's first item.
    pub async fn fs_download_tar(&self, path: &str) -> Result<ByteStream, ProtoError> {
        self.require_fs("fs_tar_download")?;
        let window = self.shared.file_window;
        let channel = self.shared.open_output(window)?;
        let request = Request::FsTarDownload(TarDownloadRequest {
            path: path.to_owned(),
            credit: window,
        });
        channel.send(Frame::json(FrameType::Request, channel.id, &request))?;
        Ok(ByteStream::new(channel, window, 0, None))
    }

    /// Unpacks the tar stream `body` under `request.dest`; entries that would land outside
    /// it are refused (`invalid_path`, the upload stops there).
    pub async fn fs_upload_tar<S, E>(
        &self,
        request: TarUploadRequest,
        body: S,
    ) -> Result<TreeSummary, ProtoError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BodyError>,
    {
        self.require_fs("fs_tar_upload")?;
        match self.upload(&Request::FsTarUpload(request), body).await? {
            Response::FsTree(summary) => Ok(summary),
            other => Err(unexpected(&other)),
        }
    }

    /// Watches a path; returns once the watch is in place, so every later change is
    /// reported. Dropping the stream ends the watch.
    pub async fn fs_watch(&self, request: WatchRequest) -> Result<WatchStream, ProtoError> {
        self.require_fs("fs_watch")?;
        let mut channel = self.shared.open()?;
        channel.send(Frame::json(
            FrameType::Request,
            channel.id,
            &Request::FsWatch(request),
        ))?;
        let frame = channel.recv().await?;
        match frame.kind {
            FrameType::Event => match frame.parse::<Event>()? {
                Event::FsWatching { .. } => Ok(WatchStream::new(channel)),
                other => Err(ProtoError::Protocol(format!(
                    "expected fs_watching, got {other:?}"
                ))),
            },
            FrameType::Response => {
                channel.finished = true;
                Err(response_error(frame.response()?))
            }
            other => Err(ProtoError::Protocol(format!(
                "unexpected {other:?} frame before a watch started"
            ))),
        }
    }

    /// Fails unless the connection speaks the file API.
    fn require_fs(&self, op: &'static str) -> Result<(), ProtoError> {
        let negotiated = self.shared.info.protocol_version;
        if negotiated < FS_PROTOCOL_VERSION {
            return Err(ProtoError::Unsupported {
                op,
                needed: FS_PROTOCOL_VERSION,
                negotiated,
            });
        }
        Ok(())
    }

    async fn stat_call(&self, request: Request) -> Result<FileStat, ProtoError> {
        match self.call(&request).await? {
            Response::FsStat { stat } => Ok(stat),
            other => Err(unexpected(&other)),
        }
    }

    async fn tree_call(&self, request: Request) -> Result<TreeSummary, ProtoError> {
        match self.call(&request).await? {
            Response::FsTree(summary) => Ok(summary),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends `request`, then `body` as UPLOAD frames within the credit the agent grants
    /// (an implicit [`UPLOAD_WINDOW`] first), then the empty end frame; returns the
    /// RESPONSE. The agent may answer early (an error): sending stops then.
    async fn upload<S, E>(&self, request: &Request, body: S) -> Result<Response, ProtoError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BodyError>,
    {
        let mut channel = self.shared.open()?;
        channel.send(Frame::json(FrameType::Request, channel.id, request))?;
        let mut body = pin!(body);
        let mut credit = u64::from(UPLOAD_WINDOW);
        let mut offset = 0u64;
        let mut pending = Bytes::new();
        let mut body_done = false;
        loop {
            while !pending.is_empty() && credit > 0 {
                let n = pending
                    .len()
                    .min(MAX_DATA_CHUNK)
                    .min(usize::try_from(credit).unwrap_or(usize::MAX));
                let chunk = pending.split_to(n);
                channel.send(Frame::data(FrameType::Upload, channel.id, offset, &chunk))?;
                offset += n as u64;
                credit -= n as u64;
            }
            let want_body = pending.is_empty() && !body_done;
            tokio::select! {
                frame = channel.recv() => {
                    if let Some(response) = upload_frame(&mut channel, frame?, &mut credit)? {
                        return match response {
                            Response::Error { code, message } => {
                                Err(ProtoError::Remote { code, message })
                            }
                            response => Ok(response),
                        };
                    }
                }
                item = body.next(), if want_body => match item {
                    Some(Ok(bytes)) => pending = bytes,
                    // Dropping the channel unanswered sends CANCEL: the agent abandons
                    // the operation (and removes a replace's temporary file).
                    Some(Err(err)) => return Err(ProtoError::Body(err.into())),
                    None => {
                        body_done = true;
                        channel.send(Frame::data(FrameType::Upload, channel.id, offset, &[]))?;
                    }
                },
            }
        }
    }
}

/// Handles one frame on an upload channel: a CREDIT adds to `credit`, the RESPONSE ends.
fn upload_frame(
    channel: &mut Channel,
    frame: Frame,
    credit: &mut u64,
) -> Result<Option<Response>, ProtoError> {
    match frame.kind {
        FrameType::Credit => {
            *credit += u64::from(frame.credit_grant()?);
            Ok(None)
        }
        FrameType::Response => {
            channel.finished = true;
            Ok(Some(frame.parse()?))
        }
        other => Err(ProtoError::Protocol(format!(
            "unexpected {other:?} frame on an upload channel"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The daemon awaits these inside HTTP handlers, which must be `Send`.
    #[allow(dead_code, reason = "a compile-time check, never run")]
    fn upload_futures_are_send(client: &AgentClient) {
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::new())]);
        assert_send(&client.fs_write(WriteRequest::new("f"), body));
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::new())]);
        let request = TarUploadRequest { dest: "d".into() };
        assert_send(&client.fs_upload_tar(request, body));
        assert_send(&client.fs_read("f", 0, None));
        assert_send(&client.fs_watch(WatchRequest {
            path: "d".into(),
            recursive: true,
        }));
    }
}
