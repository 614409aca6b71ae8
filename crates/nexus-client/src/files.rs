//! The sandbox file API (`/v1/sandboxes/{id}/files...`): reads and writes of raw bytes
//! (whole, or streamed both ways), stat, listings, directories, renames, removal, glob,
//! grep, batches, tar archives and watches.

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use nexus_api::files::{
    BatchRequest, BatchResponse, FILE_SIZE_HEADER, FileList, FileStat, GlobRequest, GlobResponse,
    GrepRequest, GrepResponse, MkdirRequest, RemoveResponse, StatItem, StatManyRequest,
    StatManyResponse, TransferRequest, TreeSummary, WatchEvent,
};

use crate::{Client, ClientError, api_error, segment};

/// The error type an upload body may fail with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A stream of raw bytes from the daemon (a file read or a tar download).
pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>;

/// How `PUT .../files/content` writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Append instead of replacing atomically.
    pub append: bool,
    /// Create missing parent directories.
    pub create_parents: bool,
    /// Permission bits, e.g. `0o644` (kept from the replaced file when `None`).
    pub mode: Option<u32>,
}

/// What a streamed read announced before its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadHead {
    /// Size of the whole file.
    pub file_size: u64,
    /// Bytes the body will carry.
    pub length: u64,
}

impl Client {
    /// `GET .../files/content`: the whole file.
    pub async fn read_file(&self, id: &str, path: &str) -> Result<Bytes, ClientError> {
        self.read_file_range(id, path, 0, None).await
    }

    /// `GET .../files/content`: at most `length` bytes from `offset` (to the end when
    /// `None`); empty past the end.
    pub async fn read_file_range(
        &self,
        id: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Bytes, ClientError> {
        let response = self.read_response(id, path, offset, length).await?;
        let status = response.status().as_u16();
        response.bytes().await.map_err(|e| ClientError::Unexpected {
            status,
            detail: format!("the file's bytes broke off: {e}"),
        })
    }

    /// `GET .../files/content` as a stream; an error item means the read broke off.
    pub async fn read_file_stream(
        &self,
        id: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(ReadHead, ByteStream), ClientError> {
        let response = self.read_response(id, path, offset, length).await?;
        let file_size = response
            .headers()
            .get(FILE_SIZE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let head = ReadHead {
            file_size,
            length: response.content_length().unwrap_or(0),
        };
        Ok((head, self.byte_stream(response)))
    }

    /// `PUT .../files/content` from bytes in memory; returns the file's stat.
    pub async fn write_file(
        &self,
        id: &str,
        path: &str,
        content: impl Into<Bytes>,
        options: &WriteOptions,
    ) -> Result<FileStat, ClientError> {
        let request = self
            .write_request(id, path, options)
            .body(reqwest::Body::from(content.into()));
        self.call(request).await
    }

    /// `PUT .../files/content` streamed from `body`. When `body` fails the write is
    /// abandoned and a replaced file keeps its old content.
    pub async fn write_file_stream<S, E>(
        &self,
        id: &str,
        path: &str,
        body: S,
        options: &WriteOptions,
    ) -> Result<FileStat, ClientError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BodyError> + 'static,
    {
        let request = self
            .write_request(id, path, options)
            .body(reqwest::Body::wrap_stream(
                body.map_err(Into::<BodyError>::into),
            ));
        self.call(request).await
    }

    /// `GET .../files/stat`: one path (with the SHA-256 of a file up to 64 MiB).
    pub async fn stat_file(&self, id: &str, path: &str) -> Result<FileStat, ClientError> {
        let url = self.files_url(id, "stat");
        self.call(self.http.get(url).query(&[("path", path)])).await
    }

    /// `POST .../files/stat`: many paths; each result has a stat or its own error.
    pub async fn stat_files(
        &self,
        id: &str,
        paths: Vec<String>,
    ) -> Result<Vec<StatItem>, ClientError> {
        let url = self.files_url(id, "stat");
        let response: StatManyResponse = self
            .call(self.http.post(url).json(&StatManyRequest { paths }))
            .await?;
        Ok(response.results)
    }

    /// `GET .../files/list`: entries down to `depth` (1 = direct children).
    pub async fn list_files(
        &self,
        id: &str,
        path: &str,
        depth: u32,
    ) -> Result<FileList, ClientError> {
        let url = self.files_url(id, "list");
        let depth = depth.to_string();
        self.call(
            self.http
                .get(url)
                .query(&[("path", path), ("depth", depth.as_str())]),
        )
        .await
    }

    /// `POST .../files/mkdir`.
    pub async fn mkdir(&self, id: &str, request: &MkdirRequest) -> Result<FileStat, ClientError> {
        let url = self.files_url(id, "mkdir");
        self.call(self.http.post(url).json(request)).await
    }

    /// `POST .../files/move`: returns the destination's stat.
    pub async fn move_file(
        &self,
        id: &str,
        request: &TransferRequest,
    ) -> Result<FileStat, ClientError> {
        let url = self.files_url(id, "move");
        self.call(self.http.post(url).json(request)).await
    }

    /// `POST .../files/copy` (inside the sandbox).
    pub async fn copy_file(
        &self,
        id: &str,
        request: &TransferRequest,
    ) -> Result<TreeSummary, ClientError> {
        let url = self.files_url(id, "copy");
        self.call(self.http.post(url).json(request)).await
    }

    /// `DELETE .../files`: returns how many entries went.
    pub async fn remove_file(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<u64, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/files", segment(id)));
        let recursive = recursive.to_string();
        let response: RemoveResponse = self
            .call(
                self.http
                    .delete(url)
                    .query(&[("path", path), ("recursive", recursive.as_str())]),
            )
            .await?;
        Ok(response.removed)
    }

    /// `POST .../files/batch`.
    pub async fn file_batch(
        &self,
        id: &str,
        request: &BatchRequest,
    ) -> Result<BatchResponse, ClientError> {
        let url = self.files_url(id, "batch");
        self.call(self.http.post(url).json(request)).await
    }

    /// `POST .../files/glob`.
    pub async fn glob(&self, id: &str, request: &GlobRequest) -> Result<GlobResponse, ClientError> {
        let url = self.files_url(id, "glob");
        self.call(self.http.post(url).json(request)).await
    }

    /// `POST .../files/grep`.
    pub async fn grep(&self, id: &str, request: &GrepRequest) -> Result<GrepResponse, ClientError> {
        let url = self.files_url(id, "grep");
        self.call(self.http.post(url).json(request)).await
    }

    /// `GET .../files/archive`: a tar of a file or tree, entries named from the path's
    /// last component on.
    pub async fn download_archive(&self, id: &str, path: &str) -> Result<ByteStream, ClientError> {
        let url = self.files_url(id, "archive");
        let response = self
            .send(self.authed(self.http.get(url).query(&[("path", path)])))
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(api_error(status, response).await);
        }
        Ok(self.byte_stream(response))
    }

    /// `PUT .../files/archive`: unpacks the tar stream `body` under `dest`.
    pub async fn upload_archive<S, E>(
        &self,
        id: &str,
        dest: &str,
        body: S,
    ) -> Result<TreeSummary, ClientError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BodyError> + 'static,
    {
        let url = self.files_url(id, "archive");
        let request = self
            .http
            .put(url)
            .query(&[("path", dest)])
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .body(reqwest::Body::wrap_stream(
                body.map_err(Into::<BodyError>::into),
            ));
        self.call(request).await
    }

    /// `GET .../files/watch`: changes under `path` until the stream is dropped. Returns
    /// once the watch is in place.
    pub async fn watch_files(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<impl Stream<Item = Result<WatchEvent, ClientError>> + Unpin + use<>, ClientError>
    {
        let url = self.files_url(id, "watch");
        let recursive = recursive.to_string();
        self.ndjson(
            self.http
                .get(url)
                .query(&[("path", path), ("recursive", recursive.as_str())]),
        )
        .await
    }

    async fn read_response(
        &self,
        id: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut query = vec![("path", path.to_owned()), ("offset", offset.to_string())];
        if let Some(length) = length {
            query.push(("length", length.to_string()));
        }
        let url = self.files_url(id, "content");
        let response = self
            .send(self.authed(self.http.get(url).query(&query)))
            .await?;
        let status = response.status();
        if status.is_success() {
            Ok(response)
        } else {
            Err(api_error(status, response).await)
        }
    }

    fn write_request(
        &self,
        id: &str,
        path: &str,
        options: &WriteOptions,
    ) -> reqwest::RequestBuilder {
        let mut query = vec![
            ("path", path.to_owned()),
            ("append", options.append.to_string()),
            ("create_parents", options.create_parents.to_string()),
        ];
        if let Some(mode) = options.mode {
            query.push(("mode", format!("{mode:o}")));
        }
        self.http
            .put(self.files_url(id, "content"))
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
    }

    fn files_url(&self, id: &str, rest: &str) -> reqwest::Url {
        self.url(&format!("/v1/sandboxes/{}/files/{rest}", segment(id)))
    }
}
