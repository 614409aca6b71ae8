//! Unit tests of images through the service, over the fakes: import, use by sandboxes,
//! refusal to delete an image in use, the errors naming what exists, and builds: one per
//! name, cancellable, leaving nothing behind.

use std::sync::Arc;

use super::tests::{request, world};
use super::{
    BuildCancel, BuildImage, CreateSandbox, ImportImage, SandboxService, ServiceConfig,
    ServiceError,
};
use crate::image::ImageSource;
use crate::testing::{FakeImageBuilder, FakeImageStorage};

fn with_images(w: &super::tests::World) -> (SandboxService, Arc<FakeImageStorage>) {
    let (service, images, _) = with_builder(w);
    (service, images)
}

fn with_builder(
    w: &super::tests::World,
) -> (SandboxService, Arc<FakeImageStorage>, Arc<FakeImageBuilder>) {
    let images = Arc::new(FakeImageStorage::default());
    let builder = Arc::new(FakeImageBuilder::default());
    let service = SandboxService::new(
        w.store.clone(),
        vec![w.driver.clone()],
        w.storage.clone(),
        w.clock.clone(),
        ServiceConfig::default(),
    )
    .with_images(images.clone())
    .with_builder(builder.clone());
    (service, images, builder)
}

fn import(name: &str) -> ImportImage {
    ImportImage {
        name: name.into(),
        path: std::env::temp_dir().display().to_string(),
    }
}

#[tokio::test]
async fn an_imported_image_is_listed_used_and_refused_deletion_while_used() {
    let w = world();
    let (service, images) = with_images(&w);
    let view = service.import_image(import("tools")).await.expect("import");
    let image = view.image.clone().expect("recorded");
    assert!(images.has(&image.id));
    let names: Vec<String> = service
        .list_images()
        .await
        .expect("list")
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["host", "tools"]);

    let sandbox = service
        .create(CreateSandbox {
            image: Some(image.id.to_string()),
            ..request("on-tools")
        })
        .await
        .expect("create")
        .sandbox;
    assert_eq!(sandbox.spec.image, "tools", "recorded by name");
    let mounts = w.driver.mounts_of(&sandbox.id).expect("started");
    assert_eq!(
        mounts.image_root,
        Some(crate::storage::ImageStorage::root(
            images.as_ref(),
            &image.id
        ))
    );

    let err = service.delete_image("tools").await.expect_err("in use");
    assert!(
        matches!(&err, ServiceError::ImageInUse(m) if m.contains("on-tools")),
        "{err}"
    );
    assert_eq!(
        service.image("tools").await.expect("get").used_by,
        ["on-tools"]
    );
    service
        .delete("on-tools", true, false)
        .await
        .expect("delete");
    service.delete_image("tools").await.expect("delete image");
    assert!(!images.has(&image.id));
    assert!(matches!(
        service.image("tools").await,
        Err(ServiceError::ImageNotFound(_))
    ));
}

#[tokio::test]
async fn host_sandboxes_get_no_image_root() {
    let w = world();
    let (service, _) = with_images(&w);
    let sandbox = service
        .create(request("plain"))
        .await
        .expect("create")
        .sandbox;
    assert_eq!(
        w.driver.mounts_of(&sandbox.id).expect("started").image_root,
        None
    );
}

#[tokio::test]
async fn an_unknown_image_is_refused_listing_the_available_ones() {
    let w = world();
    let (service, _) = with_images(&w);
    service.import_image(import("py")).await.expect("import");
    let err = service
        .create(CreateSandbox {
            image: Some("nope".into()),
            ..request("x")
        })
        .await
        .expect_err("unknown");
    let message = err.to_string();
    assert!(matches!(err, ServiceError::Invalid(_)), "{message}");
    assert!(
        message.contains("\"nope\"") && message.contains("\"host\"") && message.contains("\"py\""),
        "{message}"
    );
}

#[tokio::test]
async fn bad_imports_name_the_field() {
    let w = world();
    let (service, _) = with_images(&w);
    for (request, field) in [
        (import("host"), "name"),
        (import("Bad_Name"), "name"),
        (
            ImportImage {
                name: "ok".into(),
                path: "relative/dir".into(),
            },
            "path",
        ),
        (
            ImportImage {
                name: "ok".into(),
                path: "/no/such/dir/anywhere".into(),
            },
            "path",
        ),
    ] {
        let err = service.import_image(request).await.expect_err("bad");
        assert!(matches!(err, ServiceError::Invalid(_)), "{err}");
        assert!(err.to_string().starts_with(field), "{err}");
    }
    service.import_image(import("dup")).await.expect("import");
    assert!(matches!(
        service.import_image(import("dup")).await,
        Err(ServiceError::ImageNameTaken(_))
    ));
}

#[tokio::test]
async fn the_host_image_cannot_be_deleted_and_a_service_without_storage_cannot_import() {
    let w = world();
    assert!(matches!(
        w.service.delete_image("host").await,
        Err(ServiceError::Invalid(_))
    ));
    assert!(w.service.import_image(import("x")).await.is_err());
    assert_eq!(w.service.list_images().await.expect("list").len(), 1);
}

#[tokio::test]
async fn a_build_streams_progress_and_records_what_went_in() {
    let w = world();
    let (service, images) = with_images(&w);
    let plan = service
        .plan_build(BuildImage {
            name: "py".into(),
            from: "debian:bookworm".into(),
            packages: vec!["python3".into(), "git".into()],
        })
        .await
        .expect("plan");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let view = service.build_image(plan, tx).await.expect("build");
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    assert!(
        lines.iter().any(|l| l.contains("installing git")),
        "{lines:?}"
    );
    let image = view.image.expect("recorded");
    assert!(images.has(&image.id));
    assert_eq!(
        image.source,
        ImageSource::Built {
            from: "debian:bookworm".into(),
            packages: vec!["python3".into(), "git".into()],
            tool: "fake-builder 1.0".into(),
        }
    );

    let plan = service
        .plan_build(BuildImage {
            name: "broken".into(),
            from: "debian:bookworm".into(),
            packages: vec!["missing".into()],
        })
        .await
        .expect("plan");
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let err = service.build_image(plan, tx).await.expect_err("fails");
    assert!(
        matches!(&err, ServiceError::ImageBuildFailed(m) if m.contains("Unable to locate")),
        "{err}"
    );
    assert!(matches!(
        service.image("broken").await,
        Err(ServiceError::ImageNotFound(_))
    ));
}

#[tokio::test]
async fn bad_builds_are_refused_before_anything_runs() {
    let w = world();
    let (service, _) = with_images(&w);
    for (request, field) in [
        (
            BuildImage {
                name: "ok".into(),
                from: "ubuntu:noble".into(),
                packages: vec![],
            },
            "from",
        ),
        (
            BuildImage {
                name: "ok".into(),
                from: "debian:bookworm".into(),
                packages: vec!["git; rm -rf /".into()],
            },
            "packages[0]",
        ),
        (
            BuildImage {
                name: "host".into(),
                from: "debian:bookworm".into(),
                packages: vec![],
            },
            "name",
        ),
    ] {
        let err = service.plan_build(request).await.expect_err("bad");
        assert!(err.to_string().starts_with(field), "{err}");
    }
}

fn build(name: &str, packages: &[&str]) -> BuildImage {
    BuildImage {
        name: name.into(),
        from: "debian:bookworm".into(),
        packages: packages.iter().map(|p| (*p).to_owned()).collect(),
    }
}

type BuildTask = tokio::task::JoinHandle<Result<super::ImageView, ServiceError>>;

/// Starts a build that hangs in the builder until it is cancelled, and waits until it
/// is there.
async fn hanging_build(service: &Arc<SandboxService>, name: &str) -> BuildTask {
    let plan = service
        .plan_build(build(name, &["python3", "hang"]))
        .await
        .expect("plan");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn({
        let service = service.clone();
        async move { service.build_image(plan, tx).await }
    });
    loop {
        let line = rx.recv().await.expect("the build reaches the builder");
        if line == "fake: installing hang" {
            break;
        }
    }
    task
}

#[tokio::test]
async fn a_cancelled_build_records_nothing_removes_its_scratch_and_frees_the_name() {
    let w = world();
    let (service, images, builder) = with_builder(&w);
    let service = Arc::new(service);
    let task = hanging_build(&service, "py").await;
    let running = service.image_builds();
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(
        (running[0].name.as_str(), running[0].from.as_str()),
        ("py", "debian:bookworm")
    );
    assert_eq!(running[0].packages, ["python3", "hang"]);
    let scratch = builder.dests().pop().expect("the builder ran");
    assert!(
        scratch.join("bootstrapped").exists(),
        "{}",
        scratch.display()
    );

    let outcome = service.cancel_image_build("py").await.expect("cancel");
    assert_eq!(outcome, BuildCancel::Ended);
    // When the cancel returns, the build is over: the name is free, the scratch gone.
    assert!(service.image_builds().is_empty());
    assert!(!scratch.exists(), "{} is left over", scratch.display());
    let err = task.await.expect("join").expect_err("cancelled");
    assert!(
        matches!(&err, ServiceError::ImageBuildCancelled(m) if m == "the build of image py was cancelled"),
        "{err:?}"
    );
    assert!(matches!(
        service.image("py").await,
        Err(ServiceError::ImageNotFound(_))
    ));
    assert_eq!(images.tree_count(), 0, "a cancelled build left a tree");

    // The same name builds again, to the end.
    let plan = service
        .plan_build(build("py", &["python3"]))
        .await
        .expect("the name is free again");
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    service.build_image(plan, tx).await.expect("build");
    assert!(service.image("py").await.is_ok());
    assert_eq!(images.tree_count(), 1);
}

#[tokio::test]
async fn a_second_build_of_a_name_being_built_is_refused_until_the_first_ends() {
    let w = world();
    let (service, _) = with_images(&w);
    let first = service.plan_build(build("py", &[])).await.expect("plan");
    let err = service
        .plan_build(build("py", &["git"]))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ServiceError::ImageBuildInProgress(m)
            if m == "image py is already being built; cancel it with `nexusctl image cancel py`"),
        "{err:?}"
    );
    let err = service
        .import_image(import("py"))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ServiceError::ImageBuildInProgress(m) if m.contains("nexusctl image cancel py")),
        "{err:?}"
    );
    // Another name is not held up.
    let other = service.plan_build(build("other", &[])).await.expect("plan");
    drop(other);

    // A build that fails frees the name.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    drop(first);
    let failing = service
        .plan_build(build("py", &["missing"]))
        .await
        .expect("plan");
    service.build_image(failing, tx).await.expect_err("fails");
    assert!(service.image_builds().is_empty());
    service
        .plan_build(build("py", &[]))
        .await
        .expect("free after a failure");
}

#[tokio::test]
async fn a_build_whose_task_panics_frees_its_name() {
    let w = world();
    let (service, _) = with_images(&w);
    let plan = service.plan_build(build("py", &[])).await.expect("plan");
    let died = tokio::spawn(async move {
        let _plan = plan;
        panic!("the build task dies");
    })
    .await;
    assert!(died.expect_err("panicked").is_panic());
    assert!(service.image_builds().is_empty());
    service
        .plan_build(build("py", &[]))
        .await
        .expect("the name is free");
}

#[tokio::test]
async fn cancelling_a_build_that_does_not_run_is_not_found_and_says_what_there_is() {
    let w = world();
    let (service, _) = with_images(&w);
    let err = service.cancel_image_build("nope").await.expect_err("none");
    assert!(
        matches!(&err, ServiceError::ImageBuildNotFound(m) if m.contains("`nexusctl image builds`")),
        "{err:?}"
    );
    let plan = service.plan_build(build("py", &[])).await.expect("plan");
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    service.build_image(plan, tx).await.expect("build");
    let err = service.cancel_image_build("py").await.expect_err("built");
    assert!(
        matches!(&err, ServiceError::ImageBuildNotFound(m) if m.contains("the image is built")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_shutdown_cancels_every_build_under_way() {
    let w = world();
    let (service, _, builder) = with_builder(&w);
    let service = Arc::new(service);
    let one = hanging_build(&service, "one").await;
    let two = hanging_build(&service, "two").await;
    assert_eq!(service.cancel_image_builds().await, 2);
    assert!(service.image_builds().is_empty());
    for task in [one, two] {
        let err = task.await.expect("join").expect_err("cancelled");
        assert!(
            matches!(&err, ServiceError::ImageBuildCancelled(m) if m.contains("shutting down")),
            "{err:?}"
        );
    }
    for scratch in builder.dests() {
        assert!(!scratch.exists(), "{} is left over", scratch.display());
    }
    assert_eq!(service.cancel_image_builds().await, 0);
}

#[tokio::test]
async fn image_names_that_are_routes_are_refused() {
    let w = world();
    let (service, _) = with_images(&w);
    for name in ["build", "builds"] {
        let err = service
            .plan_build(build(name, &[]))
            .await
            .expect_err("route");
        assert!(
            matches!(&err, ServiceError::Invalid(m) if m.starts_with("name") && m.contains("reserved")),
            "{err:?}"
        );
        assert!(service.import_image(import(name)).await.is_err());
    }
}

#[tokio::test]
async fn startup_recovery_stops_the_builds_a_killed_daemon_left_running() {
    let w = world();
    let (service, _, builder) = with_builder(&w);
    builder.leave_running(2);
    service.recover_images().await.expect("recover");
    assert_eq!(
        builder.left_running(),
        0,
        "the leftover builds were not stopped"
    );
    service.recover_images().await.expect("recover again");
}
