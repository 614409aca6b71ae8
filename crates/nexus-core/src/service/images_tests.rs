//! Unit tests of images through the service, over the fakes: import, use by sandboxes,
//! refusal to delete an image in use, and the errors naming what exists.

use std::sync::Arc;

use super::tests::{request, world};
use super::{BuildImage, CreateSandbox, ImportImage, SandboxService, ServiceConfig, ServiceError};
use crate::image::ImageSource;
use crate::testing::{FakeImageBuilder, FakeImageStorage};

fn with_images(w: &super::tests::World) -> (SandboxService, Arc<FakeImageStorage>) {
    let images = Arc::new(FakeImageStorage::default());
    let service = SandboxService::new(
        w.store.clone(),
        vec![w.driver.clone()],
        w.storage.clone(),
        w.clock.clone(),
        ServiceConfig::default(),
    )
    .with_images(images.clone())
    .with_builder(Arc::new(FakeImageBuilder));
    (service, images)
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
