//! Image builds under way: at most one per image name, each cancellable.
//!
//! [`SandboxService::plan_build`] reserves the image's name for the build (a
//! [`Reservation`] inside the plan). The reservation is released when it is dropped,
//! however the build ends: done, failed, cancelled, or its task panicked, so a name is
//! never left held. A cancel fires the build's token (the builder stops its processes)
//! and waits, a bounded time, for the build to end, so that when it returns the name is
//! free again. Once a build starts recording its image it can no longer be cancelled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{SandboxService, ServiceError};
use crate::clock::Timestamp;

/// How long a cancel waits for its build to end (the builder's grace before SIGKILL,
/// the reaping of its processes, the removal of its scratch directory) before answering
/// that the build is still stopping.
pub const BUILD_CANCEL_WAIT: Duration = Duration::from_secs(15);

/// A build under way, as [`SandboxService::image_builds`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningBuild {
    /// The name the image will have.
    pub name: String,
    /// The base, e.g. `debian:bookworm`.
    pub from: String,
    /// Packages being installed beyond the base.
    pub packages: Vec<String>,
    /// When the build was planned.
    pub started_at: Timestamp,
}

/// What [`SandboxService::cancel_image_build`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildCancel {
    /// The build ended: its processes are gone, its scratch directory is removed, nothing
    /// was recorded and the name is free.
    Ended,
    /// The build was told to stop but had not ended within [`BUILD_CANCEL_WAIT`]; it ends
    /// the same way, later.
    Stopping,
}

impl SandboxService {
    /// The builds under way, oldest first.
    pub fn image_builds(&self) -> Vec<RunningBuild> {
        let mut builds: Vec<RunningBuild> = self
            .builds
            .lock()
            .values()
            .map(|entry| entry.build.clone())
            .collect();
        builds.sort_by(|a, b| (a.started_at, &a.name).cmp(&(b.started_at, &b.name)));
        builds
    }

    /// Cancels the build of image `name` and waits (at most [`BUILD_CANCEL_WAIT`]) for
    /// it to end. Refused when no build of that name runs, and when the build is already
    /// recording its image.
    pub async fn cancel_image_build(&self, name: &str) -> Result<BuildCancel, ServiceError> {
        let ended = match self.builds.cancel(name, CancelCause::Request) {
            Ok(ended) => ended,
            Err(Refusal::NotRunning) => return Err(self.no_build(name).await),
            Err(Refusal::Committing) => {
                return Err(ServiceError::ImageBuildInProgress(format!(
                    "the build of image {name} is recording the image and can no longer be cancelled; once it is done, delete it with `nexusctl image delete {name}`"
                )));
            }
        };
        tracing::info!(image = name, "image build cancel requested");
        match tokio::time::timeout(BUILD_CANCEL_WAIT, ended.cancelled()).await {
            Ok(()) => Ok(BuildCancel::Ended),
            Err(_) => {
                tracing::warn!(image = name, wait = ?BUILD_CANCEL_WAIT, "a cancelled image build has not ended yet");
                Ok(BuildCancel::Stopping)
            }
        }
    }

    /// At shutdown: cancels every build under way (those recording their image finish)
    /// and waits, at most [`BUILD_CANCEL_WAIT`] in all, for them to end. Returns how many
    /// were cancelled.
    pub async fn cancel_image_builds(&self) -> usize {
        let names: Vec<String> = self.builds.lock().keys().cloned().collect();
        let ended: Vec<CancellationToken> = names
            .iter()
            .filter_map(|name| self.builds.cancel(name, CancelCause::Shutdown).ok())
            .collect();
        if ended.is_empty() {
            return 0;
        }
        tracing::info!(
            builds = ended.len(),
            "cancelling the image builds under way"
        );
        let all = futures::future::join_all(ended.iter().map(CancellationToken::cancelled));
        if tokio::time::timeout(BUILD_CANCEL_WAIT, all).await.is_err() {
            tracing::warn!(wait = ?BUILD_CANCEL_WAIT, "cancelled image builds have not all ended");
        }
        ended.len()
    }

    /// The error for a cancel of a build that does not run, saying what there is instead.
    async fn no_build(&self, name: &str) -> ServiceError {
        let built = match crate::image::ImageName::parse(name) {
            Ok(parsed) => matches!(self.store.image_by_name(&parsed).await, Ok(Some(_))),
            Err(_) => false,
        };
        ServiceError::ImageBuildNotFound(if built {
            format!(
                "no build of image {name} is running: the image is built; delete it with `nexusctl image delete {name}`"
            )
        } else {
            format!(
                "no build of image {name:?} is running; `nexusctl image builds` lists the running ones"
            )
        })
    }
}

/// Why a build was cancelled, for the message of its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CancelCause {
    /// `DELETE /v1/images/builds/{name}`.
    Request,
    /// The daemon is shutting down.
    Shutdown,
}

impl CancelCause {
    /// The error a build cancelled for this cause ends with.
    pub(super) fn error(self, name: &str) -> ServiceError {
        ServiceError::ImageBuildCancelled(match self {
            Self::Request => format!("the build of image {name} was cancelled"),
            Self::Shutdown => format!(
                "the build of image {name} was cancelled because the daemon is shutting down; build it again once the daemon is back"
            ),
        })
    }
}

/// The builds under way, by image name.
#[derive(Debug, Default)]
pub(super) struct Builds {
    running: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    build: RunningBuild,
    /// Fired by a cancel; the builder stops when it fires.
    cancel: CancellationToken,
    /// Fired when the reservation is dropped: the build is over.
    ended: CancellationToken,
    /// Set (with `cancel` fired) by a cancel.
    cause: Option<CancelCause>,
    /// The build is recording its image; too late to cancel.
    committing: bool,
}

/// Why a cancel was refused.
enum Refusal {
    NotRunning,
    Committing,
}

impl Builds {
    /// Holds the name of `build` for it; refused while another build of that name runs.
    pub(super) fn reserve(
        self: &Arc<Self>,
        build: RunningBuild,
    ) -> Result<Reservation, ServiceError> {
        let mut running = self.lock();
        if running.contains_key(&build.name) {
            return Err(ServiceError::ImageBuildInProgress(format!(
                "image {0} is already being built; cancel it with `nexusctl image cancel {0}`",
                build.name
            )));
        }
        let (cancel, ended) = (CancellationToken::new(), CancellationToken::new());
        let name = build.name.clone();
        running.insert(
            name.clone(),
            Entry {
                build,
                cancel: cancel.clone(),
                ended: ended.clone(),
                cause: None,
                committing: false,
            },
        );
        Ok(Reservation {
            builds: self.clone(),
            name,
            cancel,
            ended,
        })
    }

    /// Whether a build of `name` is under way.
    pub(super) fn is_running(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Fires the cancel of the build of `name`; returns the token fired when it has ended.
    fn cancel(&self, name: &str, cause: CancelCause) -> Result<CancellationToken, Refusal> {
        let mut running = self.lock();
        let entry = running.get_mut(name).ok_or(Refusal::NotRunning)?;
        if entry.committing {
            return Err(Refusal::Committing);
        }
        entry.cause.get_or_insert(cause);
        entry.cancel.cancel();
        Ok(entry.ended.clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Nothing panics while holding it; and a reservation dropped while unwinding
        // must still release its name.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An image name held for one build. Dropping it releases the name, however the build
/// ended.
#[derive(Debug)]
pub(super) struct Reservation {
    builds: Arc<Builds>,
    name: String,
    cancel: CancellationToken,
    ended: CancellationToken,
}

impl Reservation {
    /// The token the builder stops on.
    pub(super) fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Why the build was cancelled, if it was.
    pub(super) fn cancelled(&self) -> Option<CancelCause> {
        self.builds
            .lock()
            .get(&self.name)
            .and_then(|entry| entry.cause)
    }

    /// Marks the build as recording its image, from which point cancels are refused; or
    /// says why it was cancelled before that.
    pub(super) fn commit(&self) -> Result<(), CancelCause> {
        let mut running = self.builds.lock();
        let Some(entry) = running.get_mut(&self.name) else {
            return Ok(());
        };
        if let Some(cause) = entry.cause {
            return Err(cause);
        }
        entry.committing = true;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.builds.lock().remove(&self.name);
        self.ended.cancel();
    }
}
