//! Unit tests of restores through the service, over the fakes: the writer kept running
//! under a swapped tree, restarted where the driver cannot swap or the swap fails, the
//! commit point, and adoption finishing a restore a crash cut short.

use super::tests::{World, request, world};
use super::{CreateSandbox, CreateWorkspace, RestoredWriter, ServiceError};
use crate::clock::Clock;
use crate::sandbox::{Sandbox, SandboxState};
use crate::storage::WorkspaceStorage;
use crate::store::Store;
use crate::testing::FakeReplace;
use crate::workspace::WorkspaceId;

fn named(name: &str, workspace: &str) -> CreateSandbox {
    CreateSandbox {
        workspace: Some(workspace.into()),
        ..request(name)
    }
}

/// A running sandbox `dev` on workspace `code`, with a snapshot `v1` of it.
async fn writer_with_snapshot(w: &World) -> (Sandbox, WorkspaceId) {
    let sandbox = w
        .service
        .create(named("dev", "code"))
        .await
        .expect("create")
        .sandbox;
    w.service
        .snapshot_workspace("code", Some("v1".into()))
        .await
        .expect("snapshot");
    let ws = sandbox.spec.workspace.clone().expect("a workspace");
    (sandbox, ws)
}

fn count(w: &World, call: &str, sandbox: &Sandbox) -> usize {
    let call = format!("{call} {}", sandbox.id);
    w.driver.calls().iter().filter(|c| **c == call).count()
}

#[tokio::test]
async fn restore_swaps_the_tree_under_a_running_writer_and_keeps_it_running() {
    let w = world();
    let (sandbox, ws) = writer_with_snapshot(&w).await;
    let calls = w.driver.calls();
    assert!(
        calls.contains(&format!("pause {}", sandbox.id))
            && calls.contains(&format!("resume {}", sandbox.id)),
        "the writer is paused around the snapshot: {calls:?}"
    );
    let restored = w
        .service
        .restore_workspace("code", "v1")
        .await
        .expect("restore");
    assert_eq!(restored.view.workspace.generation, 2);
    assert_eq!(
        restored.writer,
        Some(RestoredWriter {
            sandbox: sandbox.id.clone(),
            kept_running: true
        })
    );
    assert!(w.storage.has_tree(&ws, 2) && !w.storage.has_tree(&ws, 1));
    let after = w.service.get("dev").await.expect("get").sandbox;
    assert_eq!(
        (&after.id, after.state),
        (&sandbox.id, SandboxState::Running)
    );
    assert_eq!(count(&w, "replace", &sandbox), 1, "{:?}", w.driver.calls());
    assert_eq!(count(&w, "stop", &sandbox), 0, "not stopped");
    assert_eq!(w.driver.starts(), 1, "not started again");
    assert_eq!(
        w.driver.terminations(&sandbox.id),
        0,
        "no process was ended"
    );
    assert_eq!(
        w.driver.mounts_of(&sandbox.id).expect("started").workspace,
        Some(w.storage_tree(&ws, 2)),
        "the sandbox shows the restored tree"
    );

    // Restoring by id works too; a snapshot of another workspace is refused.
    let snap = w.service.snapshots("code").await.expect("list")[0].clone();
    w.service
        .restore_workspace("code", snap.id.as_str())
        .await
        .expect("by id");
    assert_eq!(
        w.driver.mounts_of(&sandbox.id).expect("started").workspace,
        Some(w.storage_tree(&ws, 3))
    );
    w.service
        .create_workspace(CreateWorkspace {
            name: Some("other".into()),
            ..CreateWorkspace::default()
        })
        .await
        .expect("other");
    let err = w
        .service
        .restore_workspace("other", snap.id.as_str())
        .await
        .expect_err("foreign snapshot");
    assert!(
        matches!(&err, ServiceError::SnapshotNotFound(m) if m.contains("another workspace")),
        "{err:?}"
    );
    let err = w
        .service
        .restore_workspace("code", "gone")
        .await
        .expect_err("missing");
    assert!(matches!(err, ServiceError::SnapshotNotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_paused_writer_is_swapped_and_stays_paused() {
    let w = world();
    let (sandbox, ws) = writer_with_snapshot(&w).await;
    w.service.pause("dev").await.expect("pause");
    let restored = w
        .service
        .restore_workspace("code", "v1")
        .await
        .expect("restore");
    assert_eq!(restored.writer.map(|r| r.kept_running), Some(true));
    assert_eq!(
        w.service.get("dev").await.expect("get").sandbox.state,
        SandboxState::Paused
    );
    assert!(w.driver.is_paused(&sandbox.id), "still frozen");
    assert_eq!(count(&w, "stop", &sandbox), 0);
    assert_eq!(
        w.driver.mounts_of(&sandbox.id).expect("started").workspace,
        Some(w.storage_tree(&ws, 2))
    );
}

#[tokio::test]
async fn restore_restarts_the_writer_where_the_driver_cannot_swap() {
    let w = world();
    let (sandbox, ws) = writer_with_snapshot(&w).await;
    w.driver.set_replace(FakeReplace::Unsupported);
    let restored = w
        .service
        .restore_workspace("code", "v1")
        .await
        .expect("restore");
    assert_eq!(restored.view.workspace.generation, 2);
    assert_eq!(
        restored.writer,
        Some(RestoredWriter {
            sandbox: sandbox.id.clone(),
            kept_running: false
        })
    );
    assert!(w.storage.has_tree(&ws, 2) && !w.storage.has_tree(&ws, 1));
    let after = w.service.get("dev").await.expect("get").sandbox;
    assert_eq!(
        (&after.id, after.state),
        (&sandbox.id, SandboxState::Running),
        "same sandbox, restarted"
    );
    assert_eq!(count(&w, "stop", &sandbox), 1);
    assert_eq!(w.driver.starts(), 2);
    assert_eq!(
        w.driver.mounts_of(&sandbox.id).expect("started").workspace,
        Some(w.storage_tree(&ws, 2)),
        "started again on the restored tree"
    );
}

#[tokio::test]
async fn a_failed_swap_restarts_the_writer_on_the_committed_tree() {
    let w = world();
    let (sandbox, ws) = writer_with_snapshot(&w).await;
    w.driver.set_replace(FakeReplace::Failing);
    let restored = w
        .service
        .restore_workspace("code", "v1")
        .await
        .expect("the restore still completes");
    assert_eq!(restored.view.workspace.generation, 2);
    assert_eq!(restored.writer.map(|r| r.kept_running), Some(false));
    assert!(w.storage.has_tree(&ws, 2) && !w.storage.has_tree(&ws, 1));
    let calls = w.driver.calls();
    let failed = calls
        .iter()
        .position(|c| *c == format!("replace-failed {}", sandbox.id))
        .expect("the swap was tried");
    let stopped = calls
        .iter()
        .position(|c| *c == format!("stop {}", sandbox.id))
        .expect("then the sandbox was stopped");
    assert!(failed < stopped, "{calls:?}");
    assert_eq!(
        w.service.get("dev").await.expect("get").sandbox.state,
        SandboxState::Running
    );
    assert_eq!(
        w.driver.mounts_of(&sandbox.id).expect("started").workspace,
        Some(w.storage_tree(&ws, 2))
    );
}

#[tokio::test]
async fn a_failed_commit_leaves_the_writer_on_the_old_tree() {
    let w = world();
    let (sandbox, ws) = writer_with_snapshot(&w).await;
    w.store.set_failing_generations(true);
    let err = w
        .service
        .restore_workspace("code", "v1")
        .await
        .expect_err("the commit fails");
    assert!(matches!(err, ServiceError::Store(_)), "{err:?}");
    w.store.set_failing_generations(false);
    let view = w.service.workspace("code").await.expect("get");
    assert_eq!(view.workspace.generation, 1);
    assert!(w.storage.has_tree(&ws, 1), "the old tree stays");
    assert!(!w.storage.has_tree(&ws, 2), "the new tree is removed");
    assert_eq!(count(&w, "replace", &sandbox), 0, "nothing was swapped");
    assert_eq!(count(&w, "stop", &sandbox), 0, "nothing was stopped");
    assert_eq!(
        w.driver.mounts_of(&sandbox.id).expect("started").workspace,
        Some(w.storage_tree(&ws, 1))
    );
    assert_eq!(
        w.service.get("dev").await.expect("get").sandbox.state,
        SandboxState::Running
    );
}

#[tokio::test]
async fn a_failed_clone_leaves_the_workspace_as_it_was() {
    let w = world();
    let (sandbox, _) = writer_with_snapshot(&w).await;
    w.storage.set_full(true);
    let err = w
        .service
        .restore_workspace("code", "v1")
        .await
        .expect_err("full");
    assert!(matches!(err, ServiceError::Storage(_)), "{err:?}");
    w.storage.set_full(false);
    let view = w.service.workspace("code").await.expect("get");
    assert_eq!(view.workspace.generation, 1);
    assert_eq!(
        w.service.get("dev").await.expect("get").sandbox.state,
        SandboxState::Running,
        "the sandbox was not touched"
    );
    assert_eq!(count(&w, "replace", &sandbox), 0);
}

#[tokio::test]
async fn a_stopped_writer_is_left_to_start_on_the_restored_tree() {
    let w = world();
    let (sandbox, ws) = writer_with_snapshot(&w).await;
    w.service.stop("dev").await.expect("stop");
    let restored = w
        .service
        .restore_workspace("code", "v1")
        .await
        .expect("restore");
    assert_eq!(restored.writer, None);
    assert_eq!(count(&w, "replace", &sandbox), 0);
    w.service.start("dev").await.expect("start");
    assert_eq!(
        w.driver.mounts_of(&sandbox.id).expect("started").workspace,
        Some(w.storage_tree(&ws, 2))
    );
}

/// What a crash between a restore's commit and its swap leaves: generation 2 recorded,
/// the sandbox still on tree 1.
async fn restore_cut_before_the_swap(w: &World) -> (Sandbox, WorkspaceId) {
    let (sandbox, ws) = writer_with_snapshot(w).await;
    let snap = w.service.snapshots("code").await.expect("list")[0].clone();
    w.storage
        .clone_snapshot(&ws, &snap.id, &ws, 2)
        .expect("clone");
    w.store
        .set_workspace_generation(&ws, 1, 2, w.clock.now())
        .await
        .expect("commit");
    (sandbox, ws)
}

#[tokio::test]
async fn adoption_finishes_a_restore_cut_between_commit_and_swap() {
    let w = world();
    let (sandbox, ws) = restore_cut_before_the_swap(&w).await;
    let restarted = w.restarted();
    assert_eq!(restarted.recover_storage().await.expect("recover"), 1);
    assert!(!w.storage.has_tree(&ws, 1), "the replaced tree is swept");
    assert_eq!(restarted.adopt().await.expect("adopt"), 1);
    assert_eq!(count(&w, "replace", &sandbox), 1, "{:?}", w.driver.calls());
    assert_eq!(count(&w, "stop", &sandbox), 0);
    assert_eq!(
        w.driver.mounts_of(&sandbox.id).expect("started").workspace,
        Some(w.storage_tree(&ws, 2))
    );
    // A sandbox already on its current tree is left alone.
    assert_eq!(w.restarted().adopt().await.expect("adopt"), 1);
    assert_eq!(count(&w, "replace", &sandbox), 1);
}

#[tokio::test]
async fn adoption_restarts_a_sandbox_left_on_an_old_tree_when_the_swap_fails() {
    let w = world();
    let (sandbox, ws) = restore_cut_before_the_swap(&w).await;
    w.driver.set_replace(FakeReplace::Failing);
    let restarted = w.restarted();
    restarted.adopt().await.expect("adopt");
    assert_eq!(count(&w, "stop", &sandbox), 1, "{:?}", w.driver.calls());
    assert_eq!(w.driver.starts(), 2);
    assert_eq!(
        w.driver.mounts_of(&sandbox.id).expect("started").workspace,
        Some(w.storage_tree(&ws, 2))
    );
    assert_eq!(
        restarted.get("dev").await.expect("get").sandbox.state,
        SandboxState::Running
    );
}
