//! Unit tests of workspaces through the service, over the fakes: which workspace a
//! sandbox gets, what outlives what, snapshots, forks, recovery (restores: `restore_tests`).

use super::tests::{request, world};
use super::{CreateSandbox, CreateWorkspace, MountRequest, ServiceError};
use crate::sandbox::SandboxState;
use crate::store::Store;
use crate::workspace::WorkspaceName;

fn named(name: &str, workspace: &str) -> CreateSandbox {
    CreateSandbox {
        workspace: Some(workspace.into()),
        ..request(name)
    }
}

#[tokio::test]
async fn a_sandbox_gets_a_fresh_workspace_that_goes_with_it() {
    let w = world();
    let sandbox = w
        .service
        .create(request("solo"))
        .await
        .expect("create")
        .sandbox;
    let ws_id = sandbox.spec.workspace.clone().expect("a workspace");
    let ws = w
        .store
        .workspace(&ws_id)
        .await
        .expect("get")
        .expect("recorded");
    assert_eq!(ws.name.as_str(), "solo");
    assert_eq!(ws.owner.as_ref(), Some(&sandbox.id));
    assert!(w.storage.has_tree(&ws_id, 1));
    let mounts = w.driver.mounts_of(&sandbox.id).expect("started");
    assert_eq!(mounts.workspace, Some(w.storage_tree(&ws_id, 1)));

    w.service.delete("solo", true, false).await.expect("delete");
    assert!(w.store.workspace(&ws_id).await.expect("get").is_none());
    assert!(!w.storage.has_tree(&ws_id, 1), "its files go too");
}

#[tokio::test]
async fn keep_workspace_and_named_workspaces_outlive_the_sandbox() {
    let w = world();
    let kept = w
        .service
        .create(request("kept"))
        .await
        .expect("create")
        .sandbox;
    w.service.delete("kept", true, true).await.expect("delete");
    let ws_id = kept.spec.workspace.expect("workspace");
    let ws = w.store.workspace(&ws_id).await.expect("get").expect("kept");
    assert_eq!(ws.owner, None, "a kept workspace belongs to nobody");

    // Named: made on first use, kept, and picked up again by the next sandbox.
    let first = w
        .service
        .create(named("a", "project"))
        .await
        .expect("create")
        .sandbox;
    w.service.delete("a", true, false).await.expect("delete");
    let second = w
        .service
        .create(named("b", "project"))
        .await
        .expect("create")
        .sandbox;
    assert_eq!(first.spec.workspace, second.spec.workspace);
    let project = w
        .store
        .workspace_by_name(&WorkspaceName::parse("project").expect("name"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(project.owner, None);
}

#[tokio::test]
async fn one_writer_per_workspace_and_readers_mount_it_read_only() {
    let w = world();
    w.service
        .create(named("writer", "shared"))
        .await
        .expect("create");
    let err = w
        .service
        .create(named("second", "shared"))
        .await
        .expect_err("a second writer");
    match err {
        ServiceError::WorkspaceInUse(message) => {
            assert!(
                message.contains("writer") && message.contains("--mount"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        w.service.get("second").await.is_err(),
        "nothing of the refused sandbox is recorded"
    );
    let reader = w
        .service
        .create(CreateSandbox {
            mounts: vec![MountRequest {
                workspace: "shared".into(),
                path: "/mnt/shared".into(),
            }],
            ..request("reader")
        })
        .await
        .expect("a reader")
        .sandbox;
    let mounts = w.driver.mounts_of(&reader.id).expect("started");
    assert_eq!(mounts.read_only.len(), 1);
    assert_eq!(mounts.read_only[0].target, "/mnt/shared");

    let err = w
        .service
        .delete_workspace("shared")
        .await
        .expect_err("in use");
    assert!(matches!(err, ServiceError::WorkspaceInUse(_)), "{err:?}");
    let err = w
        .service
        .create(CreateSandbox {
            mounts: vec![MountRequest {
                workspace: "nope".into(),
                path: "/mnt/x".into(),
            }],
            ..request("lost")
        })
        .await
        .expect_err("unknown mount");
    assert!(matches!(err, ServiceError::WorkspaceNotFound(_)), "{err:?}");
    let err = w
        .service
        .create(CreateSandbox {
            mounts: vec![MountRequest {
                workspace: "shared".into(),
                path: "/proc/x".into(),
            }],
            ..request("bad")
        })
        .await
        .expect_err("bad path");
    assert!(matches!(err, ServiceError::Invalid(m) if m.contains("mounts[0].path")));
}

#[tokio::test]
async fn forks_are_independent_workspaces_and_sandboxes() {
    let w = world();
    let original = w
        .service
        .create(CreateSandbox {
            env: [("MODE".to_owned(), "a".to_owned())].into(),
            ..named("main", "repo")
        })
        .await
        .expect("create")
        .sandbox;
    w.service
        .snapshot_workspace("repo", Some("base".into()))
        .await
        .expect("snapshot");
    let fork = w
        .service
        .fork_workspace("repo", "base", "repo-b")
        .await
        .expect("fork workspace");
    assert_ne!(
        fork.workspace.id,
        original.spec.workspace.clone().expect("ws")
    );
    assert!(w.storage.has_tree(&fork.workspace.id, 1));

    let twin = w
        .service
        .fork_sandbox("main", "twin")
        .await
        .expect("fork sandbox")
        .sandbox;
    assert_eq!(twin.state, SandboxState::Running);
    assert_eq!(twin.spec.env, original.spec.env);
    let twin_ws = twin.spec.workspace.clone().expect("ws");
    assert_ne!(Some(&twin_ws), original.spec.workspace.as_ref());
    let ws = w
        .store
        .workspace(&twin_ws)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        ws.owner.as_ref(),
        Some(&twin.id),
        "the fork's workspace goes with it"
    );
    // The intermediate snapshot is gone: only "base" remains.
    let snaps = w.service.snapshots("repo").await.expect("list");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let err = w
        .service
        .fork_sandbox("main", "twin")
        .await
        .expect_err("taken");
    assert!(matches!(err, ServiceError::NameTaken(_)), "{err:?}");
}

#[tokio::test]
async fn recovery_removes_what_the_store_does_not_know() {
    let w = world();
    w.service
        .create(named("dev", "code"))
        .await
        .expect("create");
    let ws = w.service.workspace("code").await.expect("get").workspace;
    // A restore that died after cloning and before the store moved on.
    let snap = w
        .service
        .snapshot_workspace("code", None)
        .await
        .expect("snapshot");
    crate::storage::WorkspaceStorage::clone_snapshot(
        w.storage.as_ref(),
        &ws.id,
        &snap.id,
        &ws.id,
        2,
    )
    .expect("clone");
    assert!(w.storage.has_tree(&ws.id, 2));
    let removed = w.restarted().recover_storage().await.expect("recover");
    assert_eq!(removed, 1);
    assert!(
        !w.storage.has_tree(&ws.id, 2),
        "the half-done restore is swept"
    );
    assert!(w.storage.has_tree(&ws.id, 1), "the recorded tree stays");
    assert!(w.storage.has_snapshot(&ws.id, &snap.id));
}

#[tokio::test]
async fn workspace_requests_name_the_bad_field() {
    let w = world();
    let err = w
        .service
        .create_workspace(CreateWorkspace {
            name: Some("Bad Name".into()),
            ..CreateWorkspace::default()
        })
        .await
        .expect_err("bad name");
    assert!(matches!(err, ServiceError::Invalid(_)), "{err:?}");
    let err = w
        .service
        .create_workspace(CreateWorkspace {
            quota_mib: Some(0),
            ..CreateWorkspace::default()
        })
        .await
        .expect_err("bad quota");
    assert!(
        matches!(&err, ServiceError::Invalid(m) if m.contains("quota_mib")),
        "{err:?}"
    );
    w.service
        .create_workspace(CreateWorkspace {
            name: Some("dup".into()),
            ..CreateWorkspace::default()
        })
        .await
        .expect("create");
    let err = w
        .service
        .create_workspace(CreateWorkspace {
            name: Some("dup".into()),
            ..CreateWorkspace::default()
        })
        .await
        .expect_err("taken");
    assert!(
        matches!(err, ServiceError::WorkspaceNameTaken(_)),
        "{err:?}"
    );
    assert_eq!(w.storage.tree_count(), 1, "the refused create made nothing");
}
