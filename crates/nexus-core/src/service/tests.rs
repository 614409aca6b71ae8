//! Unit tests of the lifecycle over the fakes: memory store, fake driver and agent, fake clock.

use std::sync::Arc;

use super::{CreateSandbox, SandboxService, ServiceConfig, ServiceError};
use crate::clock::Timestamp;
use crate::sandbox::SandboxState;
use crate::store::Store;
use crate::testing::{FakeClock, FakeDriver, FakeStorage, MemoryStore};

pub(super) struct World {
    pub(super) store: Arc<MemoryStore>,
    pub(super) driver: Arc<FakeDriver>,
    pub(super) storage: Arc<FakeStorage>,
    pub(super) clock: Arc<FakeClock>,
    pub(super) service: SandboxService,
}

impl World {
    /// Where the fake storage keeps a tree.
    pub(super) fn storage_tree(
        &self,
        ws: &crate::workspace::WorkspaceId,
        generation: u64,
    ) -> std::path::PathBuf {
        crate::storage::WorkspaceStorage::tree_path(self.storage.as_ref(), ws, generation)
    }

    /// A new service over the same store, driver and storage: a restarted daemon.
    pub(super) fn restarted(&self) -> SandboxService {
        SandboxService::new(
            self.store.clone(),
            vec![self.driver.clone()],
            self.storage.clone(),
            self.clock.clone(),
            ServiceConfig::default(),
        )
    }
}

pub(super) fn world() -> World {
    let store = Arc::new(MemoryStore::default());
    let driver = Arc::new(FakeDriver::default());
    let storage = Arc::new(FakeStorage::default());
    let clock = Arc::new(FakeClock::new(Timestamp(1_000_000)));
    let service = SandboxService::new(
        store.clone(),
        vec![driver.clone()],
        storage.clone(),
        clock.clone(),
        ServiceConfig::default(),
    );
    World {
        store,
        driver,
        storage,
        clock,
        service,
    }
}

pub(super) fn request(name: &str) -> CreateSandbox {
    CreateSandbox {
        name: Some(name.into()),
        start: true,
        ..CreateSandbox::default()
    }
}

#[tokio::test]
async fn create_starts_and_persists_running() {
    let w = world();
    let view = w.service.create(request("web")).await.expect("create");
    assert_eq!(view.sandbox.state, SandboxState::Running);
    assert!(view.isolation.is_some());
    let stored = w
        .store
        .sandbox(&view.sandbox.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.state, SandboxState::Running);
    assert!(
        stored.runtime.is_some(),
        "the runtime handle must be persisted"
    );
}

#[tokio::test]
async fn a_failed_start_rolls_the_create_back() {
    let w = world();
    w.driver.set_fail_start(true);
    let err = w
        .service
        .create(request("web"))
        .await
        .expect_err("start fails");
    assert!(matches!(err, ServiceError::Driver(_)), "{err:?}");
    assert!(
        w.store.list_sandboxes().await.expect("list").is_empty(),
        "a record was left behind"
    );
    assert!(
        w.driver.calls().iter().any(|c| c.starts_with("destroy")),
        "{:?}",
        w.driver.calls()
    );
}

#[tokio::test]
async fn an_unavailable_driver_creates_nothing() {
    let w = world();
    w.driver.set_unavailable(true);
    let err = w
        .service
        .create(request("web"))
        .await
        .expect_err("unavailable");
    assert!(matches!(err, ServiceError::DriverUnavailable(_)), "{err:?}");
    assert!(w.driver.calls().is_empty());
    assert!(w.store.list_sandboxes().await.expect("list").is_empty());
}

#[tokio::test]
async fn the_host_driver_is_refused_unless_allowed() {
    let w = world();
    let err = w
        .service
        .create(CreateSandbox {
            driver: Some("host".into()),
            ..request("web")
        })
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("allow_host_driver"), "{err}");
}

#[tokio::test]
async fn stop_asks_the_agent_first_then_the_driver() {
    let w = world();
    let view = w.service.create(request("web")).await.expect("create");
    let stopped = w.service.stop("web").await.expect("stop");
    assert_eq!(stopped.sandbox.state, SandboxState::Stopped);
    assert_eq!(stopped.sandbox.runtime, None);
    assert_eq!(
        w.driver.terminations(&view.sandbox.id),
        1,
        "the agent was not asked to end its processes"
    );
    assert!(w.driver.calls().iter().any(|c| c.starts_with("stop")));
    // Stopping again is a no-op, not an error.
    w.service.stop("web").await.expect("stop again");
}

#[tokio::test]
async fn a_running_sandbox_needs_force_to_be_deleted() {
    let w = world();
    w.service.create(request("web")).await.expect("create");
    let err = w
        .service
        .delete("web", false, false)
        .await
        .expect_err("running");
    assert!(matches!(err, ServiceError::Conflict(_)), "{err:?}");
    w.service.delete("web", true, false).await.expect("forced");
    assert!(matches!(
        w.service.get("web").await,
        Err(ServiceError::NotFound(_))
    ));
}

#[tokio::test]
async fn adopt_keeps_the_living_and_marks_the_dead_crashed() {
    let w = world();
    let alive = w
        .service
        .create(request("alive"))
        .await
        .expect("create")
        .sandbox;
    let dead = w
        .service
        .create(request("dead"))
        .await
        .expect("create")
        .sandbox;
    w.driver.kill(&dead.id);
    // A new service over the same store and driver: a restarted daemon.
    let restarted = w.restarted();
    assert_eq!(restarted.adopt().await.expect("adopt"), 1);
    let alive = w
        .store
        .sandbox(&alive.id)
        .await
        .expect("get")
        .expect("exists");
    let dead = w
        .store
        .sandbox(&dead.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(alive.state, SandboxState::Running);
    assert_eq!(dead.state, SandboxState::Crashed);
    assert!(dead.crash_reason.expect("reason").contains("gone"));
}

#[tokio::test]
async fn tick_stops_expired_sandboxes_and_notices_dead_ones() {
    let w = world();
    w.service
        .create(CreateSandbox {
            ttl_seconds: Some(60),
            ..request("brief")
        })
        .await
        .expect("create");
    let victim = w
        .service
        .create(request("victim"))
        .await
        .expect("create")
        .sandbox;
    w.clock.advance(59_000);
    w.service.tick().await.expect("tick");
    assert_eq!(
        w.service.get("brief").await.expect("get").sandbox.state,
        SandboxState::Running
    );
    w.clock.advance(2_000);
    w.driver.kill(&victim.id);
    w.service.tick().await.expect("tick");
    assert_eq!(
        w.service.get("brief").await.expect("get").sandbox.state,
        SandboxState::Stopped
    );
    let victim = w.service.get("victim").await.expect("get").sandbox;
    assert_eq!(victim.state, SandboxState::Crashed);
}

#[tokio::test]
async fn commands_need_a_running_sandbox() {
    let w = world();
    w.service
        .create(CreateSandbox {
            start: false,
            ..request("idle")
        })
        .await
        .expect("create");
    let err = w
        .service
        .run("idle", nexus_agent_proto::ExecRequest::new(["true"]), None)
        .await
        .expect_err("not running");
    assert!(
        matches!(
            err,
            ServiceError::NotRunning {
                state: SandboxState::Created,
                ..
            }
        ),
        "{err:?}"
    );
    let err = w
        .service
        .run("nope", nexus_agent_proto::ExecRequest::new(["true"]), None)
        .await
        .expect_err("unknown");
    assert!(matches!(err, ServiceError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn invalid_requests_name_the_field_and_create_nothing() {
    let w = world();
    for (bad, field) in [
        (
            CreateSandbox {
                name: Some("Bad".into()),
                ..request("x")
            },
            "name",
        ),
        (
            CreateSandbox {
                image: Some("ubuntu".into()),
                ..request("x")
            },
            "image",
        ),
        (
            CreateSandbox {
                ttl_seconds: Some(0),
                ..request("x")
            },
            "ttl_seconds",
        ),
    ] {
        let err = w.service.create(bad).await.expect_err("invalid");
        assert!(err.to_string().contains(field), "{err}");
    }
    assert!(w.store.list_sandboxes().await.expect("list").is_empty());
    assert!(w.driver.calls().is_empty());
}

#[tokio::test]
async fn pause_freezes_refuses_commands_and_resume_thaws() {
    let w = world();
    let sandbox = w
        .service
        .create(request("cold"))
        .await
        .expect("create")
        .sandbox;
    let view = w.service.pause("cold").await.expect("pause");
    assert_eq!(view.sandbox.state, SandboxState::Paused);
    assert!(w.driver.is_paused(&sandbox.id));
    let stored = w
        .store
        .sandbox(&sandbox.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        stored.state,
        SandboxState::Paused,
        "persisted before reported"
    );
    let err = w
        .service
        .run("cold", nexus_agent_proto::ExecRequest::new(["true"]), None)
        .await
        .expect_err("paused");
    assert!(matches!(err, ServiceError::Paused { .. }), "{err:?}");
    // Pausing twice changes nothing; starting a paused sandbox is a conflict.
    w.service.pause("cold").await.expect("pause again");
    assert!(matches!(
        w.service.start("cold").await.expect_err("start"),
        ServiceError::Conflict(_)
    ));
    let view = w.service.resume("cold").await.expect("resume");
    assert_eq!(view.sandbox.state, SandboxState::Running);
    assert!(!w.driver.is_paused(&sandbox.id));
    w.service
        .run("cold", nexus_agent_proto::ExecRequest::new(["true"]), None)
        .await
        .map(|_| ())
        .or_else(|e| match e {
            // The fake agent does not run commands; what matters is that it was asked.
            ServiceError::Agent(_) => Ok(()),
            other => Err(other),
        })
        .expect("commands reach the agent again");
}

#[tokio::test]
async fn only_running_sandboxes_pause_and_a_paused_one_is_thawed_to_stop() {
    let w = world();
    w.service
        .create(CreateSandbox {
            start: false,
            ..request("idle")
        })
        .await
        .expect("create");
    assert!(matches!(
        w.service.pause("idle").await.expect_err("not running"),
        ServiceError::NotRunning { .. }
    ));
    let sandbox = w
        .service
        .create(request("busy"))
        .await
        .expect("create")
        .sandbox;
    w.service.pause("busy").await.expect("pause");
    assert!(matches!(
        w.service
            .delete("busy", false, false)
            .await
            .expect_err("needs force"),
        ServiceError::Conflict(_)
    ));
    // The fake driver refuses to stop a frozen sandbox: stopping must thaw it first.
    let view = w.service.stop("busy").await.expect("stop");
    assert_eq!(view.sandbox.state, SandboxState::Stopped);
    let calls = w.driver.calls();
    let resume = calls
        .iter()
        .position(|c| c == &format!("resume {}", sandbox.id));
    let stop = calls
        .iter()
        .position(|c| c == &format!("stop {}", sandbox.id));
    assert!(resume.is_some() && resume < stop, "{calls:?}");
}

#[tokio::test]
async fn a_restarted_daemon_keeps_a_paused_sandbox_paused() {
    let w = world();
    let sandbox = w
        .service
        .create(request("frozen"))
        .await
        .expect("create")
        .sandbox;
    w.service.pause("frozen").await.expect("pause");
    let restarted = w.restarted();
    assert_eq!(restarted.adopt().await.expect("adopt"), 1);
    let view = restarted.get("frozen").await.expect("get");
    assert_eq!(view.sandbox.state, SandboxState::Paused);
    assert!(view.isolation.is_some());
    assert!(w.driver.is_paused(&sandbox.id));
    let view = restarted.resume("frozen").await.expect("resume");
    assert_eq!(view.sandbox.state, SandboxState::Running);
}
