//! Unit tests of the warm pool over the fakes: claims, what goes cold, hiding, dead
//! pooled sandboxes, top-ups, restarts and image deletes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::tests::request;
use super::{
    CreateSandbox, ImportImage, MountRequest, PoolProfile, SandboxService, ServiceConfig,
    ServiceError, WarmPoolTasks,
};
use crate::clock::{Clock, Timestamp};
use crate::driver::Usage;
use crate::sandbox::{DriverKind, Limits, SandboxId, SandboxState};
use crate::store::Store;
use crate::testing::{FakeClock, FakeDriver, FakeImageStorage, FakeStorage, MemoryStore};

struct Pool {
    store: Arc<MemoryStore>,
    driver: Arc<FakeDriver>,
    storage: Arc<FakeStorage>,
    images: Arc<FakeImageStorage>,
    clock: Arc<FakeClock>,
    config: ServiceConfig,
    service: Arc<SandboxService>,
}

impl Pool {
    /// A service over fresh fakes with these warm-pool profiles.
    fn new(profiles: Vec<PoolProfile>) -> Self {
        let config = ServiceConfig {
            warm_pool: profiles,
            ..ServiceConfig::default()
        };
        let store = Arc::new(MemoryStore::default());
        let driver = Arc::new(FakeDriver::default());
        let storage = Arc::new(FakeStorage::default());
        let images = Arc::new(FakeImageStorage::default());
        let clock = Arc::new(FakeClock::new(Timestamp(1_000_000)));
        let service = Arc::new(
            SandboxService::new(
                store.clone(),
                vec![driver.clone()],
                storage.clone(),
                clock.clone(),
                config.clone(),
            )
            .with_images(images.clone()),
        );
        Self {
            store,
            driver,
            storage,
            images,
            clock,
            config,
            service,
        }
    }

    /// The same fakes under a new service: a restarted daemon.
    fn restarted(&self) -> Self {
        let service = Arc::new(
            SandboxService::new(
                self.store.clone(),
                vec![self.driver.clone()],
                self.storage.clone(),
                self.clock.clone(),
                self.config.clone(),
            )
            .with_images(self.images.clone()),
        );
        Self {
            store: self.store.clone(),
            driver: self.driver.clone(),
            storage: self.storage.clone(),
            images: self.images.clone(),
            clock: self.clock.clone(),
            config: self.config.clone(),
            service,
        }
    }

    /// Starts the top-ups and waits until every profile's pool is full.
    async fn filled(&self) -> WarmPoolTasks {
        let tasks = self.service.spawn_warm_pool();
        self.wait_full().await;
        tasks
    }

    async fn wait_full(&self) {
        for _ in 0..5000 {
            let status = self.service.warm_pool_status().await;
            if status.iter().all(|p| p.ready == p.profile.size) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!(
            "the pool did not fill: {:?}",
            self.service.warm_pool_status().await
        );
    }

    /// The ids of the sandboxes waiting in the pool, as the store records them.
    async fn pooled(&self) -> BTreeSet<SandboxId> {
        self.store
            .list_sandboxes()
            .await
            .expect("list")
            .into_iter()
            .filter(|s| s.spec.name.is_placeholder())
            .map(|s| s.id)
            .collect()
    }

    async fn ready(&self) -> usize {
        self.service.warm_pool_status().await[0].ready
    }
}

/// The profile a plain `request(..)` matches: host, bwrap, default limits and policy.
fn host_profile(size: usize) -> PoolProfile {
    PoolProfile {
        image: "host".into(),
        driver: DriverKind::Bwrap,
        limits: Limits {
            tmp_mib: Some(ServiceConfig::default().default_tmp_mib),
            ..Limits::default()
        },
        network: Default::default(),
        size,
    }
}

#[tokio::test]
async fn a_matching_create_takes_a_pooled_sandbox_and_the_pool_is_topped_up() {
    let p = Pool::new(vec![host_profile(2)]);
    let tasks = p.filled().await;
    let pooled = p.pooled().await;
    assert_eq!(pooled.len(), 2);
    // No top-up may run during the create: the count of starts must not move.
    drop(tasks);
    let starts = p.driver.starts();
    p.clock.advance(60_000);

    let view = p
        .service
        .create(CreateSandbox {
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
            labels: BTreeMap::from([("team".into(), "a".into())]),
            ttl_seconds: Some(30),
            ..request("web")
        })
        .await
        .expect("create");
    assert_eq!(p.driver.starts(), starts, "a start on the critical path");
    let sandbox = &view.sandbox;
    assert!(pooled.contains(&sandbox.id), "not from the pool");
    assert_eq!(sandbox.state, SandboxState::Running);
    assert!(view.isolation.is_some(), "the isolation report is kept");
    assert_eq!(sandbox.spec.name.as_str(), "web");
    assert_eq!(sandbox.spec.env["GREETING"], "hi");
    assert_eq!(sandbox.spec.labels["team"], "a");
    assert_eq!(sandbox.spec.ttl_seconds, Some(30));
    let now = p.clock.now();
    assert_eq!(
        (sandbox.created_at, sandbox.updated_at, sandbox.started_at),
        (now, now, Some(now)),
        "the sandbox looks created and started now, so its TTL counts from the claim"
    );
    assert_eq!(
        p.driver.hostname_of(&sandbox.id).as_deref(),
        Some("web"),
        "the host must be renamed"
    );
    let stored = p.store.sandbox(&sandbox.id).await.expect("get");
    assert_eq!(stored.as_ref(), Some(sandbox), "persisted as answered");

    // Its own fresh workspace, named after it, deleted with it.
    let ws = p
        .service
        .workspace("web")
        .await
        .expect("workspace")
        .workspace;
    assert_eq!(Some(&ws.id), sandbox.spec.workspace.as_ref());
    assert_eq!(ws.owner.as_ref(), Some(&sandbox.id));
    assert_eq!((ws.generation, ws.created_at), (1, now));
    assert!(
        p.service
            .snapshots("web")
            .await
            .expect("snapshots")
            .is_empty()
    );

    // The claimed sandbox is an ordinary one from now on.
    let got = p.service.get("web").await.expect("get by name");
    assert_eq!(got.sandbox.id, sandbox.id);
    assert_eq!(p.service.list().await.expect("list").len(), 1);

    // Topped up afterwards, with a sandbox of its own.
    assert_eq!(p.ready().await, 1);
    let _tasks = p.service.spawn_warm_pool();
    p.wait_full().await;
    assert_eq!(p.driver.starts(), starts + 1);
    let now_pooled = p.pooled().await;
    assert_eq!(now_pooled.len(), 2);
    assert!(!now_pooled.contains(&sandbox.id));

    p.service.delete("web", true, false).await.expect("delete");
    assert!(matches!(
        p.service.workspace(ws.id.as_str()).await,
        Err(ServiceError::WorkspaceNotFound(_))
    ));
}

#[tokio::test]
async fn requests_that_do_not_match_a_profile_are_created_cold() {
    let p = Pool::new(vec![host_profile(2)]);
    let tasks = p.filled().await;
    drop(tasks);
    let pooled = p.pooled().await;
    p.service
        .create_workspace(super::CreateWorkspace {
            name: Some("data".into()),
            ..Default::default()
        })
        .await
        .expect("workspace");
    let cold = [
        CreateSandbox {
            limits: Limits {
                memory_mib: Some(256),
                ..Limits::default()
            },
            ..request("other-limits")
        },
        CreateSandbox {
            limits: Limits {
                tmp_mib: Some(64),
                ..Limits::default()
            },
            ..request("other-tmp")
        },
        CreateSandbox {
            network: Some(crate::NetworkSpec {
                allow: vec!["pypi.org:443".into()],
                deny: vec![],
            }),
            ..request("other-network")
        },
        CreateSandbox {
            workspace: Some("mine".into()),
            ..request("own-workspace")
        },
        CreateSandbox {
            mounts: vec![MountRequest {
                workspace: "data".into(),
                path: "/mnt/data".into(),
            }],
            ..request("with-mounts")
        },
        CreateSandbox {
            start: false,
            ..request("not-started")
        },
    ];
    for request in cold {
        let name = request.name.clone().expect("named");
        let start = request.start;
        let starts = p.driver.starts();
        let view = p.service.create(request).await.expect("create");
        assert!(
            !pooled.contains(&view.sandbox.id),
            "{name} came from the pool"
        );
        let expected = if start { starts + 1 } else { starts };
        assert_eq!(p.driver.starts(), expected, "{name} was not created cold");
        assert_eq!(p.ready().await, 2, "{name} took a pooled sandbox");
    }
    assert_eq!(p.pooled().await, pooled);
}

#[tokio::test]
async fn a_request_on_another_image_goes_cold_and_one_on_the_pool_image_is_claimed() {
    let mut profile = host_profile(1);
    profile.image = "tools".into();
    let p = Pool::new(vec![profile]);
    p.service
        .import_image(ImportImage {
            name: "tools".into(),
            path: std::env::temp_dir().display().to_string(),
        })
        .await
        .expect("import");
    let _tasks = p.filled().await;
    let pooled = p.pooled().await;

    let host = p.service.create(request("on-host")).await.expect("create");
    assert!(
        !pooled.contains(&host.sandbox.id),
        "host is not the pool's image"
    );
    let tools = p
        .service
        .create(CreateSandbox {
            image: Some("tools".into()),
            ..request("on-tools")
        })
        .await
        .expect("create");
    assert!(
        pooled.contains(&tools.sandbox.id),
        "the pool's image is claimed"
    );
    assert_eq!(tools.sandbox.spec.image, "tools");
}

#[tokio::test]
async fn pooled_sandboxes_and_their_workspaces_are_hidden_everywhere() {
    let p = Pool::new(vec![host_profile(2)]);
    let _tasks = p.filled().await;
    let all = p.store.list_sandboxes().await.expect("list");
    assert_eq!(all.len(), 2);
    assert!(p.service.list().await.expect("list").is_empty());
    assert!(
        p.service
            .list_workspaces()
            .await
            .expect("list workspaces")
            .is_empty()
    );
    for sandbox in &all {
        for key in [sandbox.id.as_str(), sandbox.spec.name.as_str()] {
            assert!(
                matches!(p.service.get(key).await, Err(ServiceError::NotFound(_))),
                "{key} was found"
            );
            assert!(matches!(
                p.service.delete(key, true, false).await,
                Err(ServiceError::NotFound(_))
            ));
            assert!(matches!(
                p.service.stats(key).await,
                Err(ServiceError::NotFound(_))
            ));
        }
        let ws = sandbox.spec.workspace.as_ref().expect("a workspace");
        assert!(matches!(
            p.service.workspace(ws.as_str()).await,
            Err(ServiceError::WorkspaceNotFound(_))
        ));
    }
    let live = p.service.live_stats(100).await.expect("stats");
    assert!(live.samples.is_empty(), "pooled sandboxes have no series");
    assert!(
        live.states.iter().all(|(_, n)| *n == 0),
        "{:?}",
        live.states
    );
    assert_eq!(live.warm_pool[0].ready, 2);
}

#[tokio::test]
async fn a_dead_pooled_sandbox_is_discarded_and_the_next_one_claimed() {
    let p = Pool::new(vec![host_profile(2)]);
    let tasks = p.filled().await;
    drop(tasks);
    let all = p.store.list_sandboxes().await.expect("list");
    // The oldest is claimed first: kill it.
    let dead = all[0].id.clone();
    p.driver.kill(&dead);
    let view = p.service.create(request("web")).await.expect("create");
    assert_eq!(view.sandbox.id, all[1].id, "the live one is claimed");
    assert_eq!(p.store.sandbox(&dead).await.expect("get"), None);
    assert!(p.driver.calls().contains(&format!("destroy {dead}")));
    assert_eq!(p.ready().await, 0);
    // Nothing of the dead one shows as a crashed sandbox.
    let listed = p.service.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sandbox.state, SandboxState::Running);
}

#[tokio::test]
async fn an_empty_pool_creates_cold() {
    let p = Pool::new(vec![host_profile(1)]);
    let tasks = p.filled().await;
    drop(tasks);
    let first = p.service.create(request("a")).await.expect("create");
    let starts = p.driver.starts();
    let second = p.service.create(request("b")).await.expect("create");
    assert_eq!(p.driver.starts(), starts + 1);
    assert_eq!(second.sandbox.state, SandboxState::Running);
    assert_ne!(first.sandbox.id, second.sandbox.id);
}

#[tokio::test]
async fn tick_replaces_a_dead_pooled_sandbox_without_reporting_a_crash() {
    let p = Pool::new(vec![host_profile(2)]);
    let _tasks = p.filled().await;
    let dead = p.pooled().await.into_iter().next().expect("one");
    p.driver.kill(&dead);
    p.service.tick().await.expect("tick");
    assert_eq!(p.store.sandbox(&dead).await.expect("get"), None);
    let all = p.store.list_sandboxes().await.expect("list");
    assert!(
        all.iter().all(|s| s.state != SandboxState::Crashed),
        "{all:?}"
    );
    p.wait_full().await;
    let pooled = p.pooled().await;
    assert_eq!(pooled.len(), 2);
    assert!(!pooled.contains(&dead));
}

#[tokio::test]
async fn a_restart_deletes_the_previous_pool_and_fills_a_fresh_one() {
    let p = Pool::new(vec![host_profile(2)]);
    let tasks = p.filled().await;
    drop(tasks);
    let before = p.pooled().await;
    let workspaces_before = p.store.list_workspaces().await.expect("list").len();
    assert_eq!(workspaces_before, 2);

    let restarted = p.restarted();
    assert_eq!(restarted.service.adopt().await.expect("adopt"), 0);
    assert_eq!(
        restarted
            .service
            .remove_pool_leftovers()
            .await
            .expect("leftovers"),
        2
    );
    assert!(restarted.pooled().await.is_empty());
    assert!(p.store.list_workspaces().await.expect("list").is_empty());
    assert_eq!(p.storage.tree_count(), 0, "their trees are gone too");
    for id in &before {
        assert!(p.driver.calls().contains(&format!("destroy {id}")));
    }
    let _tasks = restarted.filled().await;
    let after = restarted.pooled().await;
    assert_eq!(after.len(), 2);
    assert!(after.is_disjoint(&before));
}

#[tokio::test]
async fn a_taken_name_or_bad_env_is_refused_as_a_cold_create_would_be() {
    let p = Pool::new(vec![host_profile(2)]);
    let tasks = p.filled().await;
    drop(tasks);
    p.service
        .create(CreateSandbox {
            start: false,
            ..request("web")
        })
        .await
        .expect("cold");
    let err = p.service.create(request("web")).await.expect_err("taken");
    assert!(
        matches!(err, ServiceError::NameTaken(ref n) if n == "web"),
        "{err:?}"
    );
    let err = p
        .service
        .create(CreateSandbox {
            env: BTreeMap::from([("A=B".into(), "x".into())]),
            ..request("other")
        })
        .await
        .expect_err("bad env");
    assert!(matches!(err, ServiceError::Invalid(_)), "{err:?}");
    assert_eq!(p.ready().await, 2, "a refused request takes nothing");
    assert_eq!(p.pooled().await.len(), 2);
    assert!(p.driver.hostname_of(&SandboxId::generate()).is_none());
    assert!(
        !p.driver.calls().iter().any(|c| c.starts_with("hostname")),
        "{:?}",
        p.driver.calls()
    );
}

#[tokio::test]
async fn a_failed_rename_falls_back_to_a_cold_create() {
    let p = Pool::new(vec![host_profile(1)]);
    let tasks = p.filled().await;
    drop(tasks);
    let pooled = p.pooled().await;
    p.driver.set_fail_hostname(true);
    let starts = p.driver.starts();
    let view = p.service.create(request("web")).await.expect("create");
    assert!(!pooled.contains(&view.sandbox.id));
    assert_eq!(p.driver.starts(), starts + 1, "created cold");
    assert_eq!(view.sandbox.spec.name.as_str(), "web");
    for id in &pooled {
        assert_eq!(p.store.sandbox(id).await.expect("get"), None, "discarded");
    }
    let listed = p.service.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        p.service
            .list_workspaces()
            .await
            .expect("workspaces")
            .into_iter()
            .map(|w| w.workspace.name.to_string())
            .collect::<Vec<_>>(),
        ["web"]
    );
}

#[tokio::test]
async fn deleting_an_image_drains_its_pool_first() {
    let mut profile = host_profile(2);
    profile.image = "tools".into();
    let p = Pool::new(vec![profile]);
    p.service
        .import_image(ImportImage {
            name: "tools".into(),
            path: std::env::temp_dir().display().to_string(),
        })
        .await
        .expect("import");
    let _tasks = p.filled().await;
    let view = p.service.image("tools").await.expect("image");
    assert!(view.used_by.is_empty(), "{:?}", view.used_by);
    p.service.delete_image("tools").await.expect("delete");
    assert!(p.pooled().await.is_empty());
    // The profile waits for an image of that name, saying why.
    for _ in 0..5000 {
        if p.service.warm_pool_status().await[0].error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let status = &p.service.warm_pool_status().await[0];
    assert_eq!(status.ready, 0);
    let error = status.error.as_deref().expect("an error");
    assert!(error.contains("tools"), "{error}");
}

#[tokio::test]
async fn the_pool_reports_its_memory() {
    let p = Pool::new(vec![host_profile(2)]);
    let _tasks = p.filled().await;
    p.driver.set_usage(Usage {
        memory_current: Some(1 << 20),
        ..Usage::default()
    });
    let status = p.service.warm_pool_status().await;
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].profile, host_profile(2));
    assert_eq!(
        (status[0].ready, status[0].memory_bytes),
        (2, Some(2 << 20))
    );
    assert_eq!(status[0].error, None);
    p.driver.set_usage(Usage::default());
    assert_eq!(
        p.service.warm_pool_status().await[0].memory_bytes,
        None,
        "unmeasured is not zero"
    );
}

#[tokio::test]
async fn failed_starts_back_off_and_are_reported() {
    let p = Pool::new(vec![host_profile(2)]);
    p.driver.set_fail_start(true);
    let _tasks = p.service.spawn_warm_pool();
    for _ in 0..5000 {
        if p.service.warm_pool_status().await[0].error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let status = &p.service.warm_pool_status().await[0];
    assert!(status.error.is_some(), "{status:?}");
    // Backing off: within the first second there is no second attempt.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(p.driver.starts(), 1, "{:?}", p.driver.calls());
    assert!(
        p.store.list_sandboxes().await.expect("list").is_empty(),
        "a failed start leaves nothing"
    );
    assert!(p.store.list_workspaces().await.expect("list").is_empty());
}

/// Waits until the fake driver has been asked for `n` starts.
async fn wait_starts(p: &Pool, n: usize) {
    for _ in 0..5000 {
        if p.driver.starts() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!(
        "{} starts, not {n}: {:?}",
        p.driver.starts(),
        p.driver.calls()
    );
}

#[tokio::test]
async fn stopping_the_pool_finishes_the_start_under_way_and_begins_no_other() {
    let p = Pool::new(vec![host_profile(3)]);
    let gate = p.driver.hold_starts();
    let tasks = p.service.spawn_warm_pool();
    wait_starts(&p, 1).await;
    let stopping = tokio::spawn(tasks.stop(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!stopping.is_finished(), "the stop waits for the start");
    gate.add_permits(10);
    assert!(stopping.await.expect("join"), "the stop ended in time");

    assert_eq!(p.driver.starts(), 1, "{:?}", p.driver.calls());
    assert_eq!(p.ready().await, 1);
    let sandboxes = p.store.list_sandboxes().await.expect("list");
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    assert_eq!(sandboxes[0].state, SandboxState::Running);
    assert!(sandboxes[0].runtime.is_some(), "{sandboxes:?}");
}

#[tokio::test]
async fn a_start_that_outlasts_the_stop_is_aborted_and_removed_at_the_next_start() {
    let p = Pool::new(vec![host_profile(2)]);
    let _gate = p.driver.hold_starts();
    let tasks = p.service.spawn_warm_pool();
    wait_starts(&p, 1).await;
    assert!(
        !tasks.stop(Duration::from_millis(50)).await,
        "a start held forever cannot end in time"
    );
    // Cut off inside the driver's start: recorded, without a runtime handle.
    let left = p.store.list_sandboxes().await.expect("list");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].runtime.is_none(), "{left:?}");

    let restarted = p.restarted();
    assert_eq!(
        restarted
            .service
            .remove_pool_leftovers()
            .await
            .expect("leftovers"),
        1
    );
    assert!(
        p.driver
            .calls()
            .contains(&format!("destroy {}", left[0].id))
    );
    assert!(p.store.list_sandboxes().await.expect("list").is_empty());
    assert!(p.store.list_workspaces().await.expect("list").is_empty());
}
