//! Typed Rust client of the Nexus HTTP API, shared by `nexusctl` and the MCP bridge.

mod files;
mod images;
mod network;
mod stats;
mod terminals;
mod workspaces;

use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use nexus_api::{
    CreateSandboxRequest, DaemonStatus, ErrorBody, ExecEvent, ExecRequest, ExecResult, ExitStatus,
    Health, OutputLine, ProcessInfo, ProcessList, SandboxInfo, SandboxList, SignalRequest,
    StartProcessRequest, exec_stream,
};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

pub use files::{BodyError, ByteStream, ReadHead, WriteOptions};

/// Errors of API calls, split so callers can give each its own advice.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL given for the daemon is not usable.
    #[error("invalid daemon URL {url:?}: {reason}")]
    InvalidUrl {
        /// What was given.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// Nothing answers at the address: the daemon is most likely not running.
    #[error("cannot connect to Nexus daemon at {addr}")]
    Connect {
        /// `host:port` that was tried.
        addr: String,
        /// The transport failure.
        #[source]
        source: reqwest::Error,
    },
    /// The daemon answered with an error body.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable machine code, e.g. `unauthorized`.
        code: String,
        /// The daemon's message.
        message: String,
    },
    /// The request failed on the way (timeout, reset connection).
    #[error("request to the Nexus daemon at {addr} failed")]
    Transport {
        /// `host:port` of the daemon.
        addr: String,
        /// The transport failure.
        #[source]
        source: reqwest::Error,
    },
    /// The daemon answered something this client does not understand.
    #[error("unexpected answer from the Nexus daemon (HTTP {status}): {detail}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// What was wrong with it.
        detail: String,
    },
}

impl ClientError {
    /// The stable API error code, when the daemon sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// A client of the daemon at `url` (`http://host:port`, or just `host:port`).
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = parse_base_url(url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("nexus-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::InvalidUrl {
                url: url.into(),
                reason: e.to_string(),
            })?;
        Ok(Self { http, base, token })
    }

    /// `host:port` of the daemon, as people write it.
    pub fn addr(&self) -> String {
        match (self.base.host_str(), self.base.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => self.base.to_string(),
        }
    }

    /// `GET /v1/health` (no token needed).
    pub async fn health(&self) -> Result<Health, ClientError> {
        // A degraded daemon answers 503 with a Health body: still a health report.
        let response = self.send(self.http.get(self.url("/v1/health"))).await?;
        let status = response.status();
        if status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE {
            return decode(status, response).await;
        }
        Err(api_error(status, response).await)
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<DaemonStatus, ClientError> {
        self.get_json("/v1/status").await
    }

    /// `POST /v1/sandboxes`.
    pub async fn create_sandbox(
        &self,
        request: &CreateSandboxRequest,
    ) -> Result<SandboxInfo, ClientError> {
        self.call(self.http.post(self.url("/v1/sandboxes")).json(request))
            .await
    }

    /// `GET /v1/sandboxes`.
    pub async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, ClientError> {
        self.get_json::<SandboxList>("/v1/sandboxes")
            .await
            .map(|l| l.sandboxes)
    }

    /// `GET /v1/sandboxes/{id}` (id or name).
    pub async fn sandbox(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        self.get_json(&format!("/v1/sandboxes/{}", segment(id)))
            .await
    }

    /// `POST /v1/sandboxes/{id}/start`.
    pub async fn start_sandbox(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/sandboxes/{}/start", segment(id)))),
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/stop`.
    pub async fn stop_sandbox(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/sandboxes/{}/stop", segment(id)))),
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/pause`.
    pub async fn pause_sandbox(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/sandboxes/{}/pause", segment(id)))),
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/resume`.
    pub async fn resume_sandbox(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/sandboxes/{}/resume", segment(id)))),
        )
        .await
    }

    /// `DELETE /v1/sandboxes/{id}`.
    pub async fn delete_sandbox(
        &self,
        id: &str,
        force: bool,
        keep_workspace: bool,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!(
            "/v1/sandboxes/{}?force={force}&keep_workspace={keep_workspace}",
            segment(id)
        ));
        let response = self.send(self.authed(self.http.delete(url))).await?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(api_error(status, response).await)
        }
    }

    /// `POST /v1/sandboxes/{id}/exec`, waiting for the whole result.
    pub async fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecResult, ClientError> {
        let mut request = request.clone();
        request.stream = false;
        self.call(
            self.http
                .post(self.url(&format!("/v1/sandboxes/{}/exec", segment(id))))
                .json(&request),
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/exec` with `stream: true`: events as the process writes.
    pub async fn exec_stream(
        &self,
        id: &str,
        request: &ExecRequest,
    ) -> Result<impl Stream<Item = Result<ExecEvent, ClientError>> + Unpin + use<>, ClientError>
    {
        let mut request = request.clone();
        request.stream = true;
        let builder = self
            .http
            .post(self.url(&format!("/v1/sandboxes/{}/exec", segment(id))))
            .json(&request);
        self.ndjson(builder).await
    }

    /// `POST /v1/sandboxes/{id}/exec` with `stream: true` in the binary form
    /// ([`nexus_api::exec_stream`]): stdout and stderr bytes as the process writes them,
    /// without base64, then the `exit` (or `error`) event.
    pub async fn exec_stream_binary(
        &self,
        id: &str,
        request: &ExecRequest,
    ) -> Result<
        impl Stream<Item = Result<exec_stream::Frame, ClientError>> + Unpin + use<>,
        ClientError,
    > {
        let mut request = request.clone();
        request.stream = true;
        let builder = self
            .http
            .post(self.url(&format!("/v1/sandboxes/{}/exec", segment(id))))
            .header(reqwest::header::ACCEPT, exec_stream::MEDIA_TYPE)
            .json(&request);
        let response = self.send(self.authed(builder)).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(api_error(status, response).await);
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if content_type != exec_stream::MEDIA_TYPE {
            return Err(ClientError::Unexpected {
                status: status.as_u16(),
                detail: format!(
                    "the daemon answered a binary exec stream with {content_type:?}; upgrade nexusd"
                ),
            });
        }
        Ok(Box::pin(binary_frames(self.byte_stream(response))))
    }

    /// `POST /v1/sandboxes/{id}/processes`: a background process.
    pub async fn start_process(
        &self,
        id: &str,
        request: &StartProcessRequest,
    ) -> Result<ProcessInfo, ClientError> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/sandboxes/{}/processes", segment(id))))
                .json(request),
        )
        .await
    }

    /// `GET /v1/sandboxes/{id}/processes`.
    pub async fn list_processes(&self, id: &str) -> Result<Vec<ProcessInfo>, ClientError> {
        self.get_json::<ProcessList>(&format!("/v1/sandboxes/{}/processes", segment(id)))
            .await
            .map(|l| l.processes)
    }

    /// `POST /v1/sandboxes/{id}/processes/{process}/wait`.
    pub async fn wait_process(&self, id: &str, process: u64) -> Result<ExitStatus, ClientError> {
        self.call(self.http.post(self.url(&format!(
            "/v1/sandboxes/{}/processes/{process}/wait",
            segment(id)
        ))))
        .await
    }

    /// `POST /v1/sandboxes/{id}/processes/{process}/signal`.
    pub async fn signal_process(
        &self,
        id: &str,
        process: u64,
        signal: i32,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!(
            "/v1/sandboxes/{}/processes/{process}/signal",
            segment(id)
        ));
        self.call_empty(self.http.post(url).json(&SignalRequest { signal }))
            .await
    }

    /// `GET /v1/sandboxes/{id}/processes/{process}/output`: from these offsets, live.
    pub async fn process_output(
        &self,
        id: &str,
        process: u64,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<impl Stream<Item = Result<OutputLine, ClientError>> + Unpin + use<>, ClientError>
    {
        let url = self.url(&format!(
            "/v1/sandboxes/{}/processes/{process}/output?stdout_offset={stdout_offset}&stderr_offset={stderr_offset}",
            segment(id)
        ));
        self.ndjson(self.http.get(url)).await
    }

    /// Sends a request whose answer is newline-delimited JSON, one `T` per line.
    async fn ndjson<T: DeserializeOwned + 'static>(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<impl Stream<Item = Result<T, ClientError>> + Unpin + use<T>, ClientError> {
        let response = self.send(self.authed(builder)).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(api_error(status, response).await);
        }
        Ok(Box::pin(ndjson_lines(self.byte_stream(response))))
    }

    /// The body of `response` as a stream of chunks; a broken connection is a
    /// [`ClientError::Transport`].
    fn byte_stream(&self, response: reqwest::Response) -> ByteStream {
        let addr = self.addr();
        Box::pin(
            response
                .bytes_stream()
                .map_err(move |source| ClientError::Transport {
                    addr: addr.clone(),
                    source,
                }),
        )
    }

    async fn call_empty(&self, request: reqwest::RequestBuilder) -> Result<(), ClientError> {
        let response = self.send(self.authed(request)).await?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(api_error(status, response).await)
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(self.http.get(self.url(path))).await
    }

    /// Sends an authenticated request and decodes a JSON answer or the error body.
    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(self.authed(request)).await?;
        let status = response.status();
        if status.is_success() {
            decode(status, response).await
        } else {
            Err(api_error(status, response).await)
        }
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        request.send().await.map_err(|source| {
            if source.is_connect() {
                ClientError::Connect {
                    addr: self.addr(),
                    source,
                }
            } else {
                ClientError::Transport {
                    addr: self.addr(),
                    source,
                }
            }
        })
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("API paths are valid relative URLs")
    }
}

/// A path segment with the characters URLs reserve escaped (ids and names never have
/// them, but a typo should reach the daemon as the typo, not as another path).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Splits a byte stream into lines and decodes each as an [`ExecEvent`].
/// The frames of a binary exec stream; a body that ends inside a frame is an error.
fn binary_frames(
    bytes: impl Stream<Item = Result<bytes::Bytes, ClientError>> + Unpin,
) -> impl Stream<Item = Result<exec_stream::Frame, ClientError>> {
    let broken = |e: exec_stream::DecodeError| ClientError::Unexpected {
        status: 200,
        detail: format!("cannot decode the exec stream: {e}"),
    };
    futures::stream::unfold(
        (bytes, exec_stream::Decoder::default(), false),
        move |(mut bytes, mut decoder, done)| async move {
            if done {
                return None;
            }
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => return Some((Ok(frame), (bytes, decoder, false))),
                    Ok(None) => {}
                    Err(e) => return Some((Err(broken(e)), (bytes, decoder, true))),
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => decoder.push(&chunk),
                    Some(Err(e)) => return Some((Err(e), (bytes, decoder, true))),
                    None => {
                        return decoder
                            .finish()
                            .err()
                            .map(|e| (Err(broken(e)), (bytes, decoder, true)));
                    }
                }
            }
        },
    )
}

fn ndjson_lines<T: DeserializeOwned>(
    bytes: impl Stream<Item = Result<bytes::Bytes, ClientError>> + Unpin,
) -> impl Stream<Item = Result<T, ClientError>> {
    futures::stream::unfold(
        (bytes, Vec::new(), false),
        |(mut bytes, mut buffer, done)| async move {
            loop {
                if let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let line = &line[..line.len() - 1];
                    if line.is_empty() {
                        continue;
                    }
                    let event =
                        serde_json::from_slice::<T>(line).map_err(|e| ClientError::Unexpected {
                            status: 200,
                            detail: format!("cannot decode a stream event: {e}"),
                        });
                    return Some((event, (bytes, buffer, done)));
                }
                if done {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (bytes, buffer, true))),
                    None => {
                        if buffer.is_empty() {
                            return None;
                        }
                        buffer.push(b'\n');
                        return Some((
                            Err(ClientError::Unexpected {
                                status: 200,
                                detail: "the stream ended mid-line".into(),
                            }),
                            (bytes, Vec::new(), true),
                        ));
                    }
                }
            }
        },
    )
}

fn parse_base_url(url: &str) -> Result<Url, ClientError> {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let parsed = Url::parse(&with_scheme).map_err(|e| ClientError::InvalidUrl {
        url: url.into(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ClientError::InvalidUrl {
            url: url.into(),
            reason: "the scheme must be http or https".into(),
        });
    }
    if parsed.host_str().is_none() {
        return Err(ClientError::InvalidUrl {
            url: url.into(),
            reason: "no host".into(),
        });
    }
    Ok(parsed)
}

async fn decode<T: DeserializeOwned>(
    status: StatusCode,
    response: reqwest::Response,
) -> Result<T, ClientError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClientError::Unexpected {
            status: status.as_u16(),
            detail: e.to_string(),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
        status: status.as_u16(),
        detail: format!("cannot decode the body: {e}"),
    })
}

async fn api_error(status: StatusCode, response: reqwest::Response) -> ClientError {
    let bytes = response.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => ClientError::Unexpected {
            status: status.as_u16(),
            detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_port_gets_http() {
        let client = Client::new("127.0.0.1:9600", None).expect("valid");
        assert_eq!(client.addr(), "127.0.0.1:9600");
        assert_eq!(
            client.url("/v1/health").as_str(),
            "http://127.0.0.1:9600/v1/health"
        );
    }

    #[test]
    fn bad_schemes_are_refused() {
        let err = Client::new("ftp://x:1", None).expect_err("ftp");
        assert!(err.to_string().contains("http or https"), "{err}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        // Bind then drop, so nothing listens on the port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let client = Client::new(&format!("127.0.0.1:{port}"), None).expect("valid");
        let err = client.health().await.expect_err("nothing listens");
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("cannot connect to Nexus daemon at 127.0.0.1:{port}")
        );
    }
}
