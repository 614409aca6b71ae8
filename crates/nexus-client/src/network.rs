//! Network egress (`/v1/sandboxes/{id}/network...`): changing a sandbox's policy, and
//! reading or following its network log.

use futures::Stream;
use nexus_api::{NetworkLog, NetworkLogEntry, SandboxInfo, SetNetworkRequest};

use crate::{Client, ClientError, segment};

impl Client {
    /// `PATCH /v1/sandboxes/{id}/network`: replaces both lists of the policy.
    pub async fn set_network(
        &self,
        sandbox: &str,
        request: &SetNetworkRequest,
    ) -> Result<SandboxInfo, ClientError> {
        self.call(
            self.http
                .patch(self.url(&format!("/v1/sandboxes/{}/network", segment(sandbox))))
                .json(request),
        )
        .await
    }

    /// `GET /v1/sandboxes/{id}/network/log`: entries with an id above `after`, oldest
    /// first, at most `limit` (the daemon's default when `None`).
    pub async fn network_log(
        &self,
        sandbox: &str,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<NetworkLog, ClientError> {
        let mut query = Vec::new();
        if let Some(after) = after {
            query.push(format!("after={after}"));
        }
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        self.get_json(&log_path(sandbox, &query)).await
    }

    /// `GET /v1/sandboxes/{id}/network/log?follow=true`: the retained entries above
    /// `after`, then new ones as they are recorded. The stream ends when the sandbox is
    /// deleted.
    pub async fn follow_network_log(
        &self,
        sandbox: &str,
        after: Option<u64>,
    ) -> Result<impl Stream<Item = Result<NetworkLogEntry, ClientError>> + Unpin + use<>, ClientError>
    {
        let mut query = vec!["follow=true".to_owned()];
        if let Some(after) = after {
            query.push(format!("after={after}"));
        }
        self.ndjson(self.http.get(self.url(&log_path(sandbox, &query))))
            .await
    }
}

fn log_path(sandbox: &str, query: &[String]) -> String {
    let path = format!("/v1/sandboxes/{}/network/log", segment(sandbox));
    if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_path_carries_the_query_and_escapes_the_sandbox() {
        assert_eq!(log_path("web", &[]), "/v1/sandboxes/web/network/log");
        assert_eq!(
            log_path("a b", &["after=3".into(), "limit=10".into()]),
            "/v1/sandboxes/a%20b/network/log?after=3&limit=10"
        );
    }
}
