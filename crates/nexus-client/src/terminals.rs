//! Terminal sessions (`/v1/sandboxes/{id}/terminals`, `/v1/sandboxes/{id}/terminal`):
//! list, create and close them, and where to open the WebSocket that speaks ttyd's
//! protocol to one (the connection itself is the caller's, e.g. with tokio-tungstenite).

use nexus_api::{CreateTerminalRequest, TerminalInfo, TerminalList};
use reqwest::Url;

use crate::{Client, ClientError, segment};

impl Client {
    /// `GET /v1/sandboxes/{id}/terminals`: the sandbox's sessions, oldest first.
    pub async fn list_terminals(&self, sandbox: &str) -> Result<Vec<TerminalInfo>, ClientError> {
        self.get_json::<TerminalList>(&format!("/v1/sandboxes/{}/terminals", segment(sandbox)))
            .await
            .map(|l| l.terminals)
    }

    /// `POST /v1/sandboxes/{id}/terminals`: opens a session without attaching to it.
    pub async fn create_terminal(
        &self,
        sandbox: &str,
        request: &CreateTerminalRequest,
    ) -> Result<TerminalInfo, ClientError> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/sandboxes/{}/terminals", segment(sandbox))))
                .json(request),
        )
        .await
    }

    /// `DELETE /v1/sandboxes/{id}/terminals/{session}`: ends a session (its processes
    /// get SIGHUP, then SIGKILL).
    pub async fn delete_terminal(&self, sandbox: &str, session: &str) -> Result<(), ClientError> {
        self.call_empty(self.http.delete(self.url(&format!(
            "/v1/sandboxes/{}/terminals/{}",
            segment(sandbox),
            segment(session)
        ))))
        .await
    }

    /// The WebSocket URL of `GET /v1/sandboxes/{id}/terminal` (`ws://`, or `wss://` for an
    /// `https://` daemon): a new session, or `session` re-attached. Connect with the
    /// subprotocol `tty` and [`Client::authorization`] as the `Authorization` header;
    /// the first message is then the handshake `{"AuthToken":"","columns":N,"rows":N}`.
    pub fn terminal_url(&self, sandbox: &str, session: Option<&str>) -> Url {
        let mut url = self.url(&format!("/v1/sandboxes/{}/terminal", segment(sandbox)));
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .expect("http and https URLs can become ws and wss");
        if let Some(session) = session {
            url.query_pairs_mut().append_pair("session", session);
        }
        url
    }

    /// The `Authorization` header value this client sends (`Bearer <token>`), for
    /// connections it does not make itself (the terminal WebSocket); `None` without a
    /// token.
    pub fn authorization(&self) -> Option<String> {
        self.token.as_ref().map(|token| format!("Bearer {token}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_terminal_url_is_a_websocket_url_with_the_session() {
        let client = Client::new("127.0.0.1:9600", Some("secret".into())).expect("client");
        assert_eq!(
            client.terminal_url("web", None).as_str(),
            "ws://127.0.0.1:9600/v1/sandboxes/web/terminal"
        );
        assert_eq!(
            client.terminal_url("a b", Some("3")).as_str(),
            "ws://127.0.0.1:9600/v1/sandboxes/a%20b/terminal?session=3"
        );
        let tls = Client::new("https://nexus.example:443", None).expect("client");
        assert_eq!(tls.terminal_url("web", None).scheme(), "wss");
        assert_eq!(client.authorization().as_deref(), Some("Bearer secret"));
        assert_eq!(tls.authorization(), None);
    }
}
