//! Images through the service: the read-only root trees sandboxes start from.
//!
//! Order of every change, as for workspaces: the storage step first (an import either
//! completes or leaves garbage that [`SandboxService::recover_images`] sweeps), then the
//! store records it. Deleting goes the other way: the record first (refused while any
//! sandbox names the image), then the tree. The built-in `host` image has no record and
//! no tree: it is the host's `/`. A build holds its image's name from its plan to its
//! end and can be cancelled meanwhile (see `service::builds`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::builds::{Reservation, RunningBuild};
use super::{SandboxService, ServiceError};
use crate::driver::DriverError;
use crate::image::{HOST_IMAGE, Image, ImageId, ImageName, ImageSource};
use crate::sandbox::{DriverKind, SandboxId, SandboxSpec};
use crate::storage::{ImageStorage, StorageFault, StorageFaultKind};

/// A request to import a directory of the daemon's host as an image.
#[derive(Debug, Clone, Default)]
pub struct ImportImage {
    /// The image's name.
    pub name: String,
    /// The directory to copy, absolute.
    pub path: String,
}

/// A request to build an image from a distribution's packages.
#[derive(Debug, Clone, Default)]
pub struct BuildImage {
    /// The image's name.
    pub name: String,
    /// The base: `debian:<suite>`.
    pub from: String,
    /// Packages to install beyond the base.
    pub packages: Vec<String>,
}

/// A validated build, ready to run with [`SandboxService::build_image`]. It holds the
/// image's name: no other build of it can start until the plan is dropped (by the end of
/// its build, or unused).
#[derive(Debug)]
pub struct BuildPlan {
    name: ImageName,
    from: String,
    suite: String,
    packages: Vec<String>,
    reservation: Reservation,
}

/// Names that are routes under `/v1/images/` (`POST /v1/images/build`,
/// `GET /v1/images/builds`), so an image with one could not be reached by name there.
const ROUTE_NAMES: [&str; 2] = ["build", "builds"];

/// An image as the API shows it: a recorded one, or the built-in `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageView {
    /// The name sandboxes use.
    pub name: String,
    /// The record; `None` for the built-in `host` image.
    pub image: Option<Image>,
    /// Names of the sandboxes on it, oldest first.
    pub used_by: Vec<String>,
}

impl SandboxService {
    /// Every image, the built-in `host` first, then the recorded ones, oldest first.
    pub async fn list_images(&self) -> Result<Vec<ImageView>, ServiceError> {
        let mut views = vec![self.image_view(HOST_IMAGE.to_owned(), None).await?];
        for image in self.store.list_images().await? {
            views.push(self.image_view(image.name.to_string(), Some(image)).await?);
        }
        Ok(views)
    }

    /// One image, by id or name (`host` for the built-in one).
    pub async fn image(&self, id_or_name: &str) -> Result<ImageView, ServiceError> {
        if id_or_name == HOST_IMAGE {
            return self.image_view(HOST_IMAGE.to_owned(), None).await;
        }
        let image = self.find_image(id_or_name).await?;
        self.image_view(image.name.to_string(), Some(image)).await
    }

    /// Copies a directory of the host into a new image. The directory is read once;
    /// the image never changes afterwards.
    pub async fn import_image(&self, request: ImportImage) -> Result<ImageView, ServiceError> {
        let name = new_image_name(&request.name)?;
        let source = validate_import_path(&request.path)?;
        let images = self.image_storage()?;
        if self.store.image_by_name(&name).await?.is_some() {
            return Err(ServiceError::ImageNameTaken(name.to_string()));
        }
        if self.builds.is_running(name.as_str()) {
            return Err(ServiceError::ImageBuildInProgress(format!(
                "image {name} is being built; cancel the build with `nexusctl image cancel {name}` or choose another name"
            )));
        }
        let id = ImageId::generate();
        let size_bytes = {
            let (id, source) = (id.clone(), source.clone());
            image_blocking(images.clone(), move |s| s.import(&id, &source)).await?
        };
        let image = Image {
            id,
            name,
            source: ImageSource::Imported {
                from_dir: request.path,
            },
            size_bytes,
            created_at: self.clock.now(),
        };
        self.record_image(&images, &image).await?;
        tracing::info!(image = %image.name, image_id = %image.id, from = %source.display(), size_bytes, "image imported");
        self.image_view(image.name.to_string(), Some(image)).await
    }

    /// Checks a build request (names, base, packages, a builder here, the name free)
    /// before anything runs, so a bad request fails at once, and reserves the name: a
    /// second build of it is refused while this one's plan lives.
    pub async fn plan_build(&self, request: BuildImage) -> Result<BuildPlan, ServiceError> {
        let name = new_image_name(&request.name)?;
        let suite = request
            .from
            .strip_prefix("debian:")
            .filter(|s| !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase()))
            .ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "from {:?} is not supported: use debian:<suite>, e.g. debian:bookworm",
                    request.from
                ))
            })?
            .to_owned();
        for (i, package) in request.packages.iter().enumerate() {
            let ok = package.len() >= 2
                && package.len() <= 128
                && package.as_bytes()[0].is_ascii_alphanumeric()
                && package.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
                });
            if !ok {
                return Err(ServiceError::Invalid(format!(
                    "packages[{i}] {package:?} is not a Debian package name (lowercase letters, digits, '+', '-', '.')"
                )));
            }
        }
        self.image_storage()?;
        if self.builder.is_none() {
            return Err(ServiceError::Invalid(
                "this daemon cannot build images (no builder configured)".into(),
            ));
        }
        // Reserved before the store is asked, so a build recording this name meanwhile
        // is either still reserved here or already in the store.
        let reservation = self.builds.reserve(RunningBuild {
            name: name.to_string(),
            from: request.from.clone(),
            packages: request.packages.clone(),
            started_at: self.clock.now(),
        })?;
        if self.store.image_by_name(&name).await?.is_some() {
            return Err(ServiceError::ImageNameTaken(name.to_string()));
        }
        Ok(BuildPlan {
            name,
            from: request.from,
            suite,
            packages: request.packages,
            reservation,
        })
    }

    /// Runs a build: the tree is made in a scratch directory, copied into the image
    /// storage, and recorded with the packages and the tool's version. Progress lines go
    /// to `progress` as they come. Nothing is recorded when it fails or is cancelled
    /// ([`SandboxService::cancel_image_build`]), and the scratch directory is removed
    /// however it ends. The image's name is free again when this returns.
    pub async fn build_image(
        &self,
        plan: BuildPlan,
        progress: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<ImageView, ServiceError> {
        let BuildPlan {
            name,
            from,
            suite,
            packages,
            reservation,
        } = plan;
        let images = self.image_storage()?;
        let builder = self.builder.clone().ok_or_else(|| {
            ServiceError::Invalid("this daemon cannot build images (no builder configured)".into())
        })?;
        let id = ImageId::generate();
        let scratch = {
            let id = id.clone();
            image_blocking(images.clone(), move |s| s.scratch(&id)).await?
        };
        tracing::info!(image = %name, image_id = %id, %from, ?packages, "image build started");
        let built = builder
            .build(
                &suite,
                &packages,
                &scratch,
                progress.clone(),
                reservation.token(),
            )
            .await;
        let imported = match (reservation.cancelled(), built) {
            (Some(cause), _) => Err(cause),
            (None, Ok(tool)) => {
                let _ = progress.send(format!("copying the tree into image {name}"));
                let (id, source) = (id.clone(), scratch.clone());
                Ok(
                    image_blocking(images.clone(), move |s| s.import(&id, &source))
                        .await
                        .map(|size| (tool, size)),
                )
            }
            (None, Err(message)) => Ok(Err(ServiceError::ImageBuildFailed(format!(
                "building image {name} failed: {message}"
            )))),
        };
        let cleanup = scratch.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(cleanup)).await;
        // Past this point a cancel is refused, so a cancel that succeeded never leaves
        // an image behind.
        let committed = match imported {
            Ok(Ok(done)) => reservation.commit().map(|()| done),
            Ok(Err(err)) => return Err(err),
            Err(cause) => Err(cause),
        };
        let (tool, size_bytes) = match committed {
            Ok(done) => done,
            Err(cause) => {
                let tree = id.clone();
                if let Err(e) = image_blocking(images, move |s| s.delete(&tree)).await {
                    tracing::warn!(image = %name, error = %e, "cannot remove the tree of a cancelled build; the next start sweeps it");
                }
                tracing::info!(image = %name, image_id = %id, ?cause, "image build cancelled; its processes are stopped and nothing was recorded");
                return Err(cause.error(name.as_str()));
            }
        };
        let image = Image {
            id,
            name,
            source: ImageSource::Built {
                from,
                packages,
                tool,
            },
            size_bytes,
            created_at: self.clock.now(),
        };
        self.record_image(&images, &image).await?;
        tracing::info!(image = %image.name, image_id = %image.id, size_bytes, "image built");
        let view = self.image_view(image.name.to_string(), Some(image)).await;
        drop(reservation);
        view
    }

    /// Deletes an image and its tree. Refused while any sandbox (in any state) is on it,
    /// naming them; `host` cannot be deleted. The warm pool's sandboxes on it are
    /// removed first (its profiles retry until an image of that name exists again).
    pub async fn delete_image(&self, id_or_name: &str) -> Result<(), ServiceError> {
        if id_or_name == HOST_IMAGE {
            return Err(ServiceError::Invalid(
                "image \"host\" is built in and cannot be deleted".into(),
            ));
        }
        let image = self.find_image(id_or_name).await?;
        let users = self.user_sandboxes_on(image.name.as_str()).await?;
        if !users.is_empty() {
            return Err(ServiceError::ImageInUse(format!(
                "image {} is used by sandbox(es) {}; delete them first",
                image.name,
                self.sandbox_names(users.iter()).await
            )));
        }
        // No pooled sandbox starts on it from here until the delete is over.
        let _drained = self.drain_pool_of_image(image.name.as_str()).await;
        if let Err(err) = self.store.delete_image(&image.id).await {
            return Err(match err {
                crate::store::StoreError::ImageInUse { sandboxes, .. } => {
                    ServiceError::ImageInUse(format!(
                        "image {} is used by sandbox(es) {}; delete them first",
                        image.name,
                        self.sandbox_names(sandboxes.iter()).await
                    ))
                }
                other => other.into(),
            });
        }
        if let Ok(images) = self.image_storage() {
            let id = image.id.clone();
            if let Err(e) = image_blocking(images, move |s| s.delete(&id)).await {
                tracing::warn!(image = %image.name, error = %e, "removing a deleted image's tree failed; the next start sweeps it");
            }
        }
        tracing::info!(image = %image.name, image_id = %image.id, "image deleted");
        Ok(())
    }

    /// At startup, before sandboxes start: stops the processes of builds the previous
    /// run left running, then removes leftovers of interrupted imports and builds (their
    /// scratch directories), and image trees the store does not record.
    pub async fn recover_images(&self) -> Result<Vec<PathBuf>, ServiceError> {
        // First, so that no process is still writing into a scratch directory swept below.
        if let Some(builder) = &self.builder {
            match builder.stop_leftovers().await {
                Ok(0) => {}
                Ok(builds) => {
                    tracing::info!(
                        builds,
                        "stopped the processes of image builds the previous run left running"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot stop every process of the image builds the previous run left running");
                }
            }
        }
        let Ok(images) = self.image_storage() else {
            return Ok(Vec::new());
        };
        let known: Vec<ImageId> = self
            .store
            .list_images()
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect();
        let removed = image_blocking(images, move |s| s.recover(&known)).await?;
        for path in &removed {
            tracing::info!(path = %path.display(), "removed an unrecorded image tree or leftover");
        }
        Ok(removed)
    }

    /// Records an image whose tree is made; removes the tree when the record fails.
    pub(super) async fn record_image(
        &self,
        images: &Arc<dyn ImageStorage>,
        image: &Image,
    ) -> Result<(), ServiceError> {
        if let Err(err) = self.store.insert_image(image).await {
            let id = image.id.clone();
            if let Err(e) = image_blocking(images.clone(), move |s| s.delete(&id)).await {
                tracing::warn!(image = %image.name, error = %e, "cannot remove the tree of an unrecorded image; the next start sweeps it");
            }
            return Err(err.into());
        }
        Ok(())
    }

    /// Checks that a new sandbox's image exists (and suits its driver), and records it by
    /// name even when it was given by id.
    pub(super) async fn check_image(
        &self,
        mut spec: SandboxSpec,
    ) -> Result<SandboxSpec, ServiceError> {
        if spec.image == HOST_IMAGE {
            return Ok(spec);
        }
        let image = match self.find_image(&spec.image).await {
            Ok(image) => image,
            Err(ServiceError::ImageNotFound(_)) => {
                return Err(ServiceError::Invalid(format!(
                    "image {:?} does not exist; {}",
                    spec.image,
                    self.available_images().await?
                )));
            }
            Err(err) => return Err(err),
        };
        if spec.driver == DriverKind::Host {
            return Err(ServiceError::DriverUnavailable(DriverError::Unsupported {
                driver: DriverKind::Host,
                what: format!("run image {}", image.name),
                reason: "it runs commands on the host's own / and has no root to change; use the bwrap driver".into(),
            }));
        }
        spec.image = image.name.to_string();
        Ok(spec)
    }

    /// The tree a sandbox on `image` starts from; `None` for `host`.
    pub(super) async fn image_root(&self, image: &str) -> Result<Option<PathBuf>, ServiceError> {
        if image == HOST_IMAGE {
            return Ok(None);
        }
        let image = self.find_image(image).await?;
        Ok(Some(self.image_storage()?.root(&image.id)))
    }

    /// The image with this id or name, or an error listing the existing ones.
    async fn find_image(&self, id_or_name: &str) -> Result<Image, ServiceError> {
        let found = match ImageId::parse(id_or_name) {
            Some(id) => self.store.image(&id).await?,
            None => match ImageName::parse(id_or_name) {
                Ok(name) => self.store.image_by_name(&name).await?,
                Err(_) => None,
            },
        };
        match found {
            Some(image) => Ok(image),
            None => Err(ServiceError::ImageNotFound(format!(
                "no image {id_or_name:?}; {}",
                self.available_images().await?
            ))),
        }
    }

    /// `the available images are "host", "py"`, for error messages.
    async fn available_images(&self) -> Result<String, ServiceError> {
        let mut names = vec![format!("{HOST_IMAGE:?}")];
        names.extend(
            self.store
                .list_images()
                .await?
                .iter()
                .map(|i| format!("{:?}", i.name.as_str())),
        );
        Ok(if names.len() == 1 {
            format!("the available image is {}", names[0])
        } else {
            format!("the available images are {}", names.join(", "))
        })
    }

    /// The sandboxes on an image, oldest first, without the warm pool's.
    async fn user_sandboxes_on(&self, image: &str) -> Result<Vec<SandboxId>, ServiceError> {
        let mut users = Vec::new();
        for id in self.store.sandboxes_using_image(image).await? {
            match self.store.sandbox(&id).await? {
                Some(sandbox) if sandbox.spec.name.is_placeholder() => {}
                _ => users.push(id),
            }
        }
        Ok(users)
    }

    async fn image_view(
        &self,
        name: String,
        image: Option<Image>,
    ) -> Result<ImageView, ServiceError> {
        let mut used_by = Vec::new();
        for id in self.store.sandboxes_using_image(&name).await? {
            match self.store.sandbox(&id).await? {
                Some(sandbox) if sandbox.spec.name.is_placeholder() => {}
                Some(sandbox) => used_by.push(sandbox.spec.name.to_string()),
                None => used_by.push(id.to_string()),
            }
        }
        Ok(ImageView {
            name,
            image,
            used_by,
        })
    }

    pub(super) fn image_storage(&self) -> Result<Arc<dyn ImageStorage>, ServiceError> {
        self.images.clone().ok_or_else(|| {
            ServiceError::Invalid(
                "this daemon keeps no image storage; only the built-in \"host\" image exists"
                    .into(),
            )
        })
    }
}

/// The name of a new image: valid, and not one of the [`ROUTE_NAMES`].
fn new_image_name(text: &str) -> Result<ImageName, ServiceError> {
    let name = ImageName::parse(text).map_err(ServiceError::Invalid)?;
    if ROUTE_NAMES.contains(&text) {
        return Err(ServiceError::Invalid(format!(
            "name {text:?} is reserved (it is a route under /v1/images/); choose another name"
        )));
    }
    Ok(name)
}

/// Checks the directory of an import: absolute, normalized, an existing directory.
fn validate_import_path(path: &str) -> Result<PathBuf, ServiceError> {
    let invalid = |why: &str| ServiceError::Invalid(format!("path {path:?} {why}"));
    if !path.starts_with('/') {
        return Err(invalid("is not absolute"));
    }
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if path
        .split('/')
        .skip(1)
        .any(|c| c == ".." || c == "." || (c.is_empty() && path != "/"))
        && path != "/"
    {
        return Err(invalid(
            "is not normalized (no \"\", \".\" or \"..\" components)",
        ));
    }
    if path == "/" {
        return Err(invalid(
            "is the host's whole file system; use the built-in \"host\" image",
        ));
    }
    let meta = std::fs::symlink_metadata(Path::new(path))
        .map_err(|e| invalid(&format!("cannot be read: {e}")))?;
    if !meta.is_dir() {
        return Err(invalid("is not a directory"));
    }
    Ok(PathBuf::from(path))
}

/// Runs an image storage call on the blocking pool.
pub(super) async fn image_blocking<T: Send + 'static>(
    images: Arc<dyn ImageStorage>,
    call: impl FnOnce(&dyn ImageStorage) -> Result<T, StorageFault> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(move || call(images.as_ref()))
        .await
        .map_err(|e| {
            ServiceError::Storage(StorageFault {
                kind: StorageFaultKind::Other,
                message: format!("an image storage task failed: {e}"),
            })
        })?
        .map_err(ServiceError::Storage)
}
