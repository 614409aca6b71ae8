//! Workspaces (`/v1/workspaces...`): create, list, inspect, delete, snapshots, restore,
//! fork; and `POST /v1/sandboxes/{id}/fork`.

use nexus_api::{
    CreateSnapshotRequest, CreateWorkspaceRequest, ForkSandboxRequest, ForkWorkspaceRequest,
    RestoreRequest, RestoredWorkspace, SandboxInfo, SnapshotInfo, SnapshotList, WorkspaceInfo,
    WorkspaceList,
};

use crate::{Client, ClientError, segment};

impl Client {
    /// `POST /v1/workspaces`.
    pub async fn create_workspace(
        &self,
        request: &CreateWorkspaceRequest,
    ) -> Result<WorkspaceInfo, ClientError> {
        self.call(self.http.post(self.url("/v1/workspaces")).json(request))
            .await
    }

    /// `GET /v1/workspaces`.
    pub async fn list_workspaces(&self) -> Result<WorkspaceList, ClientError> {
        self.get_json("/v1/workspaces").await
    }

    /// `GET /v1/workspaces/{ws}`.
    pub async fn workspace(&self, ws: &str) -> Result<WorkspaceInfo, ClientError> {
        self.get_json(&format!("/v1/workspaces/{}", segment(ws)))
            .await
    }

    /// `DELETE /v1/workspaces/{ws}`.
    pub async fn delete_workspace(&self, ws: &str) -> Result<(), ClientError> {
        self.call_empty(
            self.http
                .delete(self.url(&format!("/v1/workspaces/{}", segment(ws)))),
        )
        .await
    }

    /// `POST /v1/workspaces/{ws}/snapshots`.
    pub async fn snapshot_workspace(
        &self,
        ws: &str,
        name: Option<String>,
    ) -> Result<SnapshotInfo, ClientError> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/workspaces/{}/snapshots", segment(ws))))
                .json(&CreateSnapshotRequest { name }),
        )
        .await
    }

    /// `GET /v1/workspaces/{ws}/snapshots`.
    pub async fn snapshots(&self, ws: &str) -> Result<SnapshotList, ClientError> {
        self.get_json(&format!("/v1/workspaces/{}/snapshots", segment(ws)))
            .await
    }

    /// `DELETE /v1/workspaces/{ws}/snapshots/{snapshot}`.
    pub async fn delete_snapshot(&self, ws: &str, snapshot: &str) -> Result<(), ClientError> {
        self.call_empty(self.http.delete(self.url(&format!(
            "/v1/workspaces/{}/snapshots/{}",
            segment(ws),
            segment(snapshot)
        ))))
        .await
    }

    /// `POST /v1/workspaces/{ws}/restore`.
    pub async fn restore_workspace(
        &self,
        ws: &str,
        snapshot: &str,
    ) -> Result<RestoredWorkspace, ClientError> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/workspaces/{}/restore", segment(ws))))
                .json(&RestoreRequest {
                    snapshot: snapshot.to_owned(),
                }),
        )
        .await
    }

    /// `POST /v1/workspaces/{ws}/fork`.
    pub async fn fork_workspace(
        &self,
        ws: &str,
        snapshot: &str,
        name: &str,
    ) -> Result<WorkspaceInfo, ClientError> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/workspaces/{}/fork", segment(ws))))
                .json(&ForkWorkspaceRequest {
                    snapshot: snapshot.to_owned(),
                    name: name.to_owned(),
                }),
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/fork`.
    pub async fn fork_sandbox(&self, id: &str, name: &str) -> Result<SandboxInfo, ClientError> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/sandboxes/{}/fork", segment(id))))
                .json(&ForkSandboxRequest {
                    name: name.to_owned(),
                }),
        )
        .await
    }
}
