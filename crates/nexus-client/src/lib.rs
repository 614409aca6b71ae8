//! Typed Rust client of the Nexus HTTP API, shared by `nexusctl` and the MCP bridge.

use std::time::Duration;

use nexus_api::{DaemonStatus, ErrorBody, Health};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

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

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = self.send(request).await?;
        let status = response.status();
        if status.is_success() {
            decode(status, response).await
        } else {
            Err(api_error(status, response).await)
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
