//! The promises every [`Store`] keeps about workspaces and snapshots, as test scenarios.
//!
//! Each scenario takes a fresh, empty store and panics on a broken promise. The
//! [`MemoryStore`](super::MemoryStore) runs them in this crate's unit tests and the SQLite
//! store in `nexus-store`'s, so the fake and the real thing cannot drift apart.

use std::collections::BTreeMap;

use crate::clock::Timestamp;
use crate::sandbox::{
    DriverKind, Limits, Sandbox, SandboxId, SandboxName, SandboxSpec, SandboxState,
};
use crate::store::{Store, StoreError};
use crate::workspace::{
    Snapshot, SnapshotId, SnapshotName, Workspace, WorkspaceId, WorkspaceMount, WorkspaceName,
};

/// A workspace named `name`, created at `at` milliseconds, with a quota and a label.
pub fn workspace(name: &str, at: i64) -> Workspace {
    let mut ws = Workspace::new(
        WorkspaceName::parse(name).expect("valid name"),
        Timestamp(at),
    );
    ws.quota_mib = Some(512);
    ws.labels = BTreeMap::from([("team".into(), "x".into())]);
    ws
}

/// A snapshot of `ws` named `name`, taken at `at` milliseconds.
pub fn snapshot(ws: &Workspace, name: &str, at: i64) -> Snapshot {
    let mut snap = Snapshot::new(
        ws,
        SnapshotName::parse(name).expect("valid name"),
        Timestamp(at),
    );
    snap.size_bytes = Some(4096);
    snap
}

/// A created sandbox named `name` at `at` milliseconds, with `/workspace` from `workspace`
/// and the given mounts.
pub fn sandbox(
    name: &str,
    at: i64,
    workspace: Option<&Workspace>,
    mounts: Vec<WorkspaceMount>,
) -> Sandbox {
    Sandbox {
        id: SandboxId::generate(),
        spec: SandboxSpec {
            name: SandboxName::parse(name).expect("valid name"),
            image: "host".into(),
            driver: DriverKind::Bwrap,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            limits: Limits::default(),
            ttl_seconds: None,
            workspace: workspace.map(|w| w.id.clone()),
            mounts,
            network: crate::NetworkSpec {
                allow: vec!["pypi.org:443".into(), "*.github.com:*".into()],
                deny: vec!["10.0.0.0/8:*".into()],
            },
        },
        state: SandboxState::Created,
        crash_reason: None,
        created_at: Timestamp(at),
        updated_at: Timestamp(at),
        started_at: None,
        runtime: None,
    }
}

/// A mount of `ws` at `path`.
pub fn mount(ws: &Workspace, path: &str, read_only: bool) -> WorkspaceMount {
    WorkspaceMount {
        workspace: ws.id.clone(),
        path: path.into(),
        read_only,
    }
}

/// Every field of a workspace comes back as stored, by id, by name and in the list
/// (oldest first).
pub async fn workspaces_round_trip(store: &dyn Store) {
    let mut owned = workspace("owned", 2_000);
    owned.owner = Some(SandboxId::generate());
    owned.quota_mib = None;
    let data = workspace("data", 1_000);
    store.insert_workspace(&owned).await.expect("insert owned");
    store.insert_workspace(&data).await.expect("insert data");
    assert_eq!(
        store.workspace(&data.id).await.expect("get"),
        Some(data.clone())
    );
    assert_eq!(
        store.workspace_by_name(&owned.name).await.expect("by name"),
        Some(owned.clone())
    );
    assert_eq!(
        store.list_workspaces().await.expect("list"),
        vec![data, owned]
    );
    assert_eq!(
        store
            .workspace(&WorkspaceId::generate())
            .await
            .expect("get missing"),
        None
    );
}

/// A second workspace of the same name is refused and nothing of it is recorded.
pub async fn workspace_names_are_unique(store: &dyn Store) {
    store
        .insert_workspace(&workspace("data", 1_000))
        .await
        .expect("first");
    let second = workspace("data", 2_000);
    let err = store
        .insert_workspace(&second)
        .await
        .expect_err("same name");
    assert!(
        matches!(err, StoreError::WorkspaceNameTaken { ref name } if name == "data"),
        "{err:?}"
    );
    assert_eq!(store.workspace(&second.id).await.expect("get"), None);
    assert_eq!(store.list_workspaces().await.expect("list").len(), 1);
}

/// Generations change by compare-and-set only, and only upwards.
pub async fn generations_are_compare_and_set(store: &dyn Store) {
    let ws = workspace("data", 1_000);
    store.insert_workspace(&ws).await.expect("insert");
    let after = store
        .set_workspace_generation(&ws.id, 1, 2, Timestamp(2_000))
        .await
        .expect("1 -> 2");
    assert_eq!((after.generation, after.updated_at), (2, Timestamp(2_000)));
    assert_eq!(after.created_at, ws.created_at);
    assert_eq!(store.workspace(&ws.id).await.expect("get"), Some(after));

    // A second restore that read generation 1 lost the race.
    let err = store
        .set_workspace_generation(&ws.id, 1, 3, Timestamp(3_000))
        .await
        .expect_err("stale");
    assert!(
        matches!(
            err,
            StoreError::GenerationChanged {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .set_workspace_generation(&ws.id, 2, 2, Timestamp(3_000))
        .await
        .expect_err("not growing");
    assert!(
        matches!(err, StoreError::IllegalGeneration { from: 2, to: 2, .. }),
        "{err:?}"
    );
    let stored = store.workspace(&ws.id).await.expect("get").expect("exists");
    assert_eq!(
        (stored.generation, stored.updated_at),
        (2, Timestamp(2_000))
    );

    let missing = WorkspaceId::generate();
    let err = store
        .set_workspace_generation(&missing, 1, 2, Timestamp(3_000))
        .await
        .expect_err("missing");
    assert!(
        matches!(err, StoreError::WorkspaceNotFound { ref id } if id == &missing),
        "{err:?}"
    );
}

/// Quota and owner change in place and move `updated_at`.
pub async fn quota_and_owner_change(store: &dyn Store) {
    let mut ws = workspace("data", 1_000);
    ws.owner = Some(SandboxId::generate());
    store.insert_workspace(&ws).await.expect("insert");
    let after = store
        .set_workspace_quota(&ws.id, Some(2048), Timestamp(2_000))
        .await
        .expect("quota");
    assert_eq!(
        (after.quota_mib, after.updated_at),
        (Some(2048), Timestamp(2_000))
    );
    let after = store
        .set_workspace_quota(&ws.id, None, Timestamp(3_000))
        .await
        .expect("no quota");
    assert_eq!(after.quota_mib, None);
    let after = store
        .disown_workspace(&ws.id, Timestamp(4_000))
        .await
        .expect("disown");
    assert_eq!((&after.owner, after.updated_at), (&None, Timestamp(4_000)));
    assert_eq!(
        store.workspace(&ws.id).await.expect("get"),
        Some(after.clone())
    );
    assert_eq!(after.generation, ws.generation);

    let missing = WorkspaceId::generate();
    for err in [
        store
            .set_workspace_quota(&missing, Some(1), Timestamp(5_000))
            .await
            .expect_err("missing"),
        store
            .disown_workspace(&missing, Timestamp(5_000))
            .await
            .expect_err("missing"),
    ] {
        assert!(
            matches!(err, StoreError::WorkspaceNotFound { .. }),
            "{err:?}"
        );
    }
}

/// Snapshot names are unique per workspace; snapshots list oldest first.
pub async fn snapshots_are_named_per_workspace(store: &dyn Store) {
    let (a, b) = (workspace("a", 1_000), workspace("b", 1_000));
    store.insert_workspace(&a).await.expect("insert a");
    store.insert_workspace(&b).await.expect("insert b");
    let later = snapshot(&a, "v1", 3_000);
    let earlier = snapshot(&a, "v0", 2_000);
    store.insert_snapshot(&later).await.expect("v1 of a");
    store.insert_snapshot(&earlier).await.expect("v0 of a");
    store
        .insert_snapshot(&snapshot(&b, "v1", 2_000))
        .await
        .expect("the same name in another workspace");

    let err = store
        .insert_snapshot(&snapshot(&a, "v1", 4_000))
        .await
        .expect_err("same name, same workspace");
    assert!(
        matches!(err, StoreError::SnapshotNameTaken { ref workspace, ref name }
            if workspace == &a.id && name == "v1"),
        "{err:?}"
    );
    let orphan = Workspace::new(WorkspaceName::parse("gone").expect("name"), Timestamp(1));
    let err = store
        .insert_snapshot(&snapshot(&orphan, "v1", 4_000))
        .await
        .expect_err("no such workspace");
    assert!(
        matches!(err, StoreError::WorkspaceNotFound { ref id } if id == &orphan.id),
        "{err:?}"
    );

    assert_eq!(
        store.snapshots_of(&a.id).await.expect("list"),
        vec![earlier.clone(), later.clone()]
    );
    assert_eq!(
        store.snapshot(&later.id).await.expect("get"),
        Some(later.clone())
    );
    assert_eq!(
        store
            .snapshot_by_name(&a.id, &later.name)
            .await
            .expect("by name"),
        Some(later.clone())
    );
    assert_eq!(
        store
            .snapshot_by_name(&orphan.id, &later.name)
            .await
            .expect("by name elsewhere"),
        None
    );

    assert!(store.delete_snapshot(&later.id).await.expect("delete"));
    assert!(
        !store
            .delete_snapshot(&later.id)
            .await
            .expect("delete again")
    );
    assert!(
        !store
            .delete_snapshot(&SnapshotId::generate())
            .await
            .expect("delete unknown")
    );
    assert_eq!(
        store.snapshots_of(&a.id).await.expect("list"),
        vec![earlier]
    );
    store
        .insert_snapshot(&snapshot(&a, "v1", 5_000))
        .await
        .expect("the name is free again");
}

/// Deleting a workspace deletes its snapshots, and nobody else's.
pub async fn deleting_a_workspace_deletes_its_snapshots(store: &dyn Store) {
    let (a, b) = (workspace("a", 1_000), workspace("b", 1_000));
    store.insert_workspace(&a).await.expect("insert a");
    store.insert_workspace(&b).await.expect("insert b");
    let of_a = snapshot(&a, "v1", 2_000);
    let of_b = snapshot(&b, "v1", 2_000);
    store.insert_snapshot(&of_a).await.expect("snapshot a");
    store.insert_snapshot(&of_b).await.expect("snapshot b");

    assert!(store.delete_workspace(&a.id).await.expect("delete"));
    assert!(!store.delete_workspace(&a.id).await.expect("delete again"));
    assert_eq!(store.workspace(&a.id).await.expect("get"), None);
    assert_eq!(store.snapshot(&of_a.id).await.expect("get"), None);
    assert_eq!(store.snapshots_of(&a.id).await.expect("list"), vec![]);
    assert_eq!(store.snapshots_of(&b.id).await.expect("list"), vec![of_b]);
    store
        .insert_workspace(&workspace("a", 3_000))
        .await
        .expect("the name is free again");
}

/// `sandboxes_using` finds `/workspace` and mount users; a used workspace is not deleted.
pub async fn workspaces_in_use_are_kept(store: &dyn Store) {
    let (data, tools, idle) = (
        workspace("data", 1_000),
        workspace("tools", 1_000),
        workspace("idle", 1_000),
    );
    for ws in [&data, &tools, &idle] {
        store.insert_workspace(ws).await.expect("insert workspace");
    }
    let writer = sandbox(
        "writer",
        2_000,
        Some(&data),
        vec![mount(&tools, "/mnt/tools", true)],
    );
    let reader = sandbox(
        "reader",
        3_000,
        Some(&tools),
        vec![mount(&data, "/mnt/data", true)],
    );
    let both = sandbox(
        "both",
        4_000,
        None,
        vec![
            mount(&data, "/mnt/ro", true),
            mount(&data, "/mnt/rw", false),
        ],
    );
    for s in [&writer, &reader, &both] {
        store.insert_sandbox(s).await.expect("insert sandbox");
    }
    assert_eq!(
        store.sandbox(&both.id).await.expect("get"),
        Some(both.clone()),
        "workspace and mounts round-trip"
    );

    assert_eq!(
        store.sandboxes_using(&data.id).await.expect("users"),
        vec![
            (writer.id.clone(), false),
            (reader.id.clone(), true),
            (both.id.clone(), false),
        ]
    );
    assert_eq!(
        store.sandboxes_using(&tools.id).await.expect("users"),
        vec![(writer.id.clone(), true), (reader.id.clone(), false)]
    );
    assert_eq!(
        store.sandboxes_using(&idle.id).await.expect("users"),
        vec![]
    );

    let err = store.delete_workspace(&data.id).await.expect_err("in use");
    match &err {
        StoreError::WorkspaceInUse { id, sandboxes } => {
            assert_eq!(id, &data.id);
            assert_eq!(
                sandboxes,
                &vec![writer.id.clone(), reader.id.clone(), both.id.clone()]
            );
        }
        other => panic!("expected WorkspaceInUse, got {other:?}"),
    }
    assert!(err.to_string().contains(writer.id.as_str()), "{err}");
    assert!(store.workspace(&data.id).await.expect("get").is_some());

    for s in [&writer, &reader, &both] {
        assert!(store.delete_sandbox(&s.id).await.expect("delete sandbox"));
    }
    assert!(store.delete_workspace(&data.id).await.expect("delete"));
    assert!(store.delete_workspace(&idle.id).await.expect("delete"));
}

/// A sandbox naming an unrecorded workspace, as `/workspace` or in a mount, is refused.
pub async fn sandboxes_need_recorded_workspaces(store: &dyn Store) {
    let known = workspace("known", 1_000);
    store.insert_workspace(&known).await.expect("insert");
    let unknown = workspace("unknown", 1_000);
    for s in [
        sandbox("a", 2_000, Some(&unknown), vec![]),
        sandbox(
            "b",
            2_000,
            Some(&known),
            vec![mount(&unknown, "/mnt/x", true)],
        ),
    ] {
        let err = store
            .insert_sandbox(&s)
            .await
            .expect_err("unknown workspace");
        assert!(
            matches!(err, StoreError::WorkspaceNotFound { ref id } if id == &unknown.id),
            "{err:?}"
        );
    }
    assert_eq!(store.list_sandboxes().await.expect("list"), vec![]);
    let legacy = sandbox("legacy", 2_000, None, vec![]);
    store
        .insert_sandbox(&legacy)
        .await
        .expect("no workspace at all");
    assert_eq!(store.sandbox(&legacy.id).await.expect("get"), Some(legacy));
}

/// A sandbox's network policy is stored with it and replaced whole; replacing the
/// policy of a sandbox that does not exist changes nothing.
pub async fn network_policies_round_trip_and_are_replaced(store: &dyn Store) {
    let ws = workspace("net", 1_000);
    store.insert_workspace(&ws).await.expect("insert");
    let s = sandbox("net", 2_000, Some(&ws), vec![]);
    store.insert_sandbox(&s).await.expect("insert");
    assert_eq!(store.sandbox(&s.id).await.expect("get"), Some(s.clone()));
    let replaced = crate::NetworkSpec {
        allow: vec!["example.com:443".into()],
        deny: vec![],
    };
    let stored = store
        .set_sandbox_network(&s.id, &replaced)
        .await
        .expect("set")
        .expect("exists");
    assert_eq!(stored.spec.network, replaced);
    let reread = store.sandbox(&s.id).await.expect("get").expect("exists");
    assert_eq!(reread.spec.network, replaced);
    assert_eq!(reread.state, s.state);
    assert_eq!(
        store
            .set_sandbox_network(&SandboxId::generate(), &replaced)
            .await
            .expect("set on a missing sandbox"),
        None
    );
    assert!(store.delete_sandbox(&s.id).await.expect("delete"));
}

/// Images: every field round-trips (both sources), names are unique, and an image named
/// by a sandbox cannot be deleted until that sandbox is gone.
pub async fn images_round_trip_and_are_kept_while_used(store: &dyn Store) {
    use crate::image::{Image, ImageId, ImageName, ImageSource};
    let imported = Image {
        id: ImageId::generate(),
        name: ImageName::parse("tools").expect("valid"),
        source: ImageSource::Imported {
            from_dir: "/srv/tools".into(),
        },
        size_bytes: 12_345,
        created_at: Timestamp(1_000),
    };
    let built = Image {
        id: ImageId::generate(),
        name: ImageName::parse("py").expect("valid"),
        source: ImageSource::Built {
            from: "debian:bookworm".into(),
            packages: vec!["python3".into(), "git".into()],
            tool: "mmdebstrap 1.3.5".into(),
        },
        size_bytes: 99,
        created_at: Timestamp(2_000),
    };
    store.insert_image(&imported).await.expect("insert");
    store.insert_image(&built).await.expect("insert");
    assert_eq!(
        store.image(&built.id).await.expect("get").as_ref(),
        Some(&built)
    );
    assert_eq!(
        store
            .image_by_name(&imported.name)
            .await
            .expect("get")
            .as_ref(),
        Some(&imported)
    );
    assert_eq!(
        store.list_images().await.expect("list"),
        vec![imported.clone(), built.clone()]
    );
    let twin = Image {
        id: ImageId::generate(),
        ..imported.clone()
    };
    assert!(matches!(
        store.insert_image(&twin).await,
        Err(StoreError::ImageNameTaken { name }) if name == "tools"
    ));

    let mut on_tools = sandbox("on-tools", 3_000, None, vec![]);
    on_tools.spec.image = "tools".into();
    store
        .insert_sandbox(&on_tools)
        .await
        .expect("insert sandbox");
    assert_eq!(
        store.sandboxes_using_image("tools").await.expect("users"),
        vec![on_tools.id.clone()]
    );
    assert!(
        store
            .sandboxes_using_image("py")
            .await
            .expect("users")
            .is_empty()
    );
    match store.delete_image(&imported.id).await {
        Err(StoreError::ImageInUse { name, sandboxes }) => {
            assert_eq!(
                (name.as_str(), sandboxes),
                ("tools", vec![on_tools.id.clone()])
            );
        }
        other => panic!("expected ImageInUse, got {other:?}"),
    }
    assert!(store.delete_sandbox(&on_tools.id).await.expect("delete"));
    assert!(
        store
            .delete_image(&imported.id)
            .await
            .expect("delete image")
    );
    assert!(!store.delete_image(&imported.id).await.expect("again"));
    assert_eq!(store.list_images().await.expect("list"), vec![built]);
}

/// A warm-pool sandbox (placeholder names) is claimed in one change: name, env, labels,
/// TTL, times and its workspace's name together; a taken name or a sandbox that is no
/// longer pooled changes nothing.
pub async fn pooled_sandboxes_are_claimed_in_one_change(store: &dyn Store) {
    use crate::store::PoolClaim;
    let mut ws = workspace("unused", 1_000);
    ws.name = WorkspaceName::placeholder();
    let mut pooled = sandbox("unused", 1_000, Some(&ws), vec![]);
    pooled.spec.name = SandboxName::placeholder();
    pooled.state = SandboxState::Running;
    pooled.started_at = Some(Timestamp(1_500));
    pooled.runtime = Some("{\"pid\":7}".into());
    ws.owner = Some(pooled.id.clone());
    store.insert_workspace(&ws).await.expect("insert workspace");
    store.insert_sandbox(&pooled).await.expect("insert pooled");
    assert_eq!(
        store.sandbox(&pooled.id).await.expect("get"),
        Some(pooled.clone()),
        "a placeholder name round-trips"
    );
    let taken = sandbox("taken", 1_000, None, vec![]);
    store.insert_sandbox(&taken).await.expect("insert");
    store
        .insert_workspace(&workspace("taken-ws", 1_000))
        .await
        .expect("insert");

    let claim = PoolClaim {
        id: pooled.id.clone(),
        name: SandboxName::parse("taken").expect("valid"),
        env: BTreeMap::from([("A".into(), "1".into())]),
        labels: BTreeMap::from([("team".into(), "y".into())]),
        ttl_seconds: Some(60),
        at: Timestamp(9_000),
        workspace_name: WorkspaceName::parse("web").expect("valid"),
    };
    let err = store
        .claim_pooled_sandbox(&claim)
        .await
        .expect_err("name taken");
    assert!(
        matches!(err, StoreError::NameTaken { ref name } if name == "taken"),
        "{err:?}"
    );
    let claim = PoolClaim {
        name: SandboxName::parse("web").expect("valid"),
        workspace_name: WorkspaceName::parse("taken-ws").expect("valid"),
        ..claim
    };
    let err = store
        .claim_pooled_sandbox(&claim)
        .await
        .expect_err("workspace name taken");
    assert!(
        matches!(err, StoreError::WorkspaceNameTaken { ref name } if name == "taken-ws"),
        "{err:?}"
    );
    assert_eq!(
        store.sandbox(&pooled.id).await.expect("get"),
        Some(pooled.clone()),
        "a refused claim changes nothing"
    );

    let claim = PoolClaim {
        workspace_name: WorkspaceName::parse("web").expect("valid"),
        ..claim
    };
    let claimed = store.claim_pooled_sandbox(&claim).await.expect("claim");
    assert_eq!(claimed.spec.name.as_str(), "web");
    assert_eq!(claimed.spec.env, claim.env);
    assert_eq!(claimed.spec.labels, claim.labels);
    assert_eq!(claimed.spec.ttl_seconds, Some(60));
    assert_eq!(
        (claimed.created_at, claimed.updated_at, claimed.started_at),
        (Timestamp(9_000), Timestamp(9_000), Some(Timestamp(9_000)))
    );
    assert_eq!(
        (claimed.state, claimed.runtime.as_deref()),
        (SandboxState::Running, Some("{\"pid\":7}")),
        "the running sandbox is kept as it is"
    );
    assert_eq!(
        store.sandbox(&pooled.id).await.expect("get"),
        Some(claimed.clone())
    );
    assert_eq!(
        store
            .sandbox_by_name(&claimed.spec.name)
            .await
            .expect("get")
            .map(|s| s.id),
        Some(pooled.id.clone())
    );
    let renamed = store.workspace(&ws.id).await.expect("get").expect("kept");
    assert_eq!(renamed.name.as_str(), "web");
    assert_eq!(renamed.owner, Some(pooled.id.clone()));
    assert_eq!(renamed.created_at, Timestamp(9_000));
    assert_eq!(
        store
            .workspace_by_name(&ws.name)
            .await
            .expect("get")
            .map(|w| w.id),
        None,
        "the placeholder is gone"
    );

    let again = PoolClaim {
        name: SandboxName::parse("other").expect("valid"),
        workspace_name: WorkspaceName::parse("other").expect("valid"),
        ..claim.clone()
    };
    assert!(matches!(
        store.claim_pooled_sandbox(&again).await,
        Err(StoreError::NotPooled { id }) if id == pooled.id
    ));
    let missing = PoolClaim {
        id: SandboxId::generate(),
        ..again
    };
    assert!(matches!(
        store.claim_pooled_sandbox(&missing).await,
        Err(StoreError::NotPooled { .. })
    ));
}
