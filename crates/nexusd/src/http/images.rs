//! `/v1/images`: list, inspect, import, build and delete images (the built-in `host`
//! included), and list or cancel the builds under way. Handlers only translate to and
//! from the service.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use nexus_api::{
    BuildImageRequest, ErrorBody, ErrorCode, ErrorDetail, ImageBuildEvent, ImageBuildInfo,
    ImageBuildList, ImageInfo, ImageList, ImageSourceInfo, ImportImageRequest,
};
use nexus_core::ImageSource;
use nexus_core::service::{BuildCancel, BuildImage, ImageView, ImportImage, ServiceError};

use super::convert::rfc3339;
use super::error::ApiError;
use super::json::ApiJson;
use crate::state::AppState;

/// Every image: the built-in `host` first, then the others, oldest first.
#[utoipa::path(
    get,
    path = "/v1/images",
    tag = "images",
    security(("bearer" = [])),
    responses((status = 200, description = "The images", body = ImageList))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<ImageList>, ApiError> {
    let images = state
        .sandboxes
        .list_images()
        .await?
        .into_iter()
        .map(image_info)
        .collect();
    Ok(Json(ImageList { images }))
}

/// Imports a directory of the daemon's host as a new image. The directory is copied;
/// the image never changes afterwards.
#[utoipa::path(
    post,
    path = "/v1/images",
    tag = "images",
    security(("bearer" = [])),
    request_body = ImportImageRequest,
    responses(
        (status = 201, description = "Imported", body = ImageInfo),
        (status = 400, description = "A field is invalid; nothing was imported", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 507, description = "No space left", body = ErrorBody),
    )
)]
pub async fn import(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ImportImageRequest>,
) -> Result<(StatusCode, Json<ImageInfo>), ApiError> {
    let view = state
        .sandboxes
        .import_image(ImportImage {
            name: body.name,
            path: body.path,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(image_info(view))))
}

/// Builds an image from a distribution's packages with mmdebstrap. The request is
/// checked first (errors are ordinary error responses) and the name is held for this
/// build; then the answer is a stream of newline-delimited `ImageBuildEvent`s: `progress`
/// lines as the tool prints them, and one final `done` (with the image) or `failed`
/// (`image_build_cancelled` when it was cancelled). The build runs to its end even if the
/// client goes away; `DELETE /v1/images/builds/{name}` cancels it.
#[utoipa::path(
    post,
    path = "/v1/images/build",
    tag = "images",
    security(("bearer" = [])),
    request_body = BuildImageRequest,
    responses(
        (status = 200, description = "The build's progress, one `ImageBuildEvent` per line (application/x-ndjson)", body = ImageBuildEvent),
        (status = 400, description = "A field is invalid; nothing was built", body = ErrorBody),
        (status = 409, description = "The name is taken (`image_name_taken`), or a build of it is under way (`image_build_in_progress`)", body = ErrorBody),
    )
)]
pub async fn build(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<BuildImageRequest>,
) -> Result<Response, ApiError> {
    let plan = state
        .sandboxes
        .plan_build(BuildImage {
            name: body.name,
            from: body.from,
            packages: body.packages,
        })
        .await?;
    let (progress, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let service = state.sandboxes.clone();
    tokio::spawn(async move {
        let _ = done_tx.send(service.build_image(plan, progress).await);
    });
    let events = futures::stream::unfold(Some((lines, done)), |state| async move {
        let (mut lines, done) = state?;
        if let Some(line) = lines.recv().await {
            return Some((
                Ok::<_, std::convert::Infallible>(event_line(&ImageBuildEvent::Progress { line })),
                Some((lines, done)),
            ));
        }
        let last = match done.await {
            Ok(Ok(view)) => ImageBuildEvent::Done {
                image: image_info(view),
            },
            Ok(Err(err)) => ImageBuildEvent::Failed {
                error: failure(err),
            },
            Err(_) => ImageBuildEvent::Failed {
                error: ErrorDetail {
                    code: ErrorCode::Internal.as_str().to_owned(),
                    message: "the build task ended without a result".into(),
                },
            },
        };
        Some((Ok(event_line(&last)), None))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(events),
    )
        .into_response())
}

/// The image builds under way, oldest first.
#[utoipa::path(
    get,
    path = "/v1/images/builds",
    tag = "images",
    security(("bearer" = [])),
    responses((status = 200, description = "The builds under way", body = ImageBuildList))
)]
pub async fn builds(State(state): State<AppState>) -> Json<ImageBuildList> {
    let builds = state
        .sandboxes
        .image_builds()
        .into_iter()
        .map(|b| ImageBuildInfo {
            name: b.name,
            from: b.from,
            packages: b.packages,
            started_at: rfc3339(b.started_at),
        })
        .collect();
    Json(ImageBuildList { builds })
}

/// Cancels the build of an image: its processes are stopped (SIGTERM, then SIGKILL after
/// a short grace), its scratch directory removed, nothing is recorded, and its progress
/// stream ends with a `failed` event coded `image_build_cancelled`. Answers once the
/// build has ended (204), so the name is free again; 202 when it is still stopping after
/// a while.
#[utoipa::path(
    delete,
    path = "/v1/images/builds/{name}",
    tag = "images",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The name of the image being built")),
    responses(
        (status = 204, description = "Cancelled; the build has ended"),
        (status = 202, description = "Cancelled; the build is still stopping"),
        (status = 404, description = "No build of that name is under way (`image_build_not_found`)", body = ErrorBody),
        (status = 409, description = "The build is recording its image and can no longer be cancelled (`image_build_in_progress`)", body = ErrorBody),
    )
)]
pub async fn cancel_build(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    Ok(match state.sandboxes.cancel_image_build(&name).await? {
        BuildCancel::Ended => StatusCode::NO_CONTENT,
        BuildCancel::Stopping => StatusCode::ACCEPTED,
    })
}

/// A failed build as the error detail of its last line (5xx details go to the log).
fn failure(err: ServiceError) -> ErrorDetail {
    let message = err.to_string();
    let code = ApiError::from(err).code();
    let message = if code.http_status() >= 500 {
        tracing::error!(error = %message, "image build failed");
        "internal error; the daemon log has the details".to_owned()
    } else {
        // A cancelled build was logged by the service, at info: nothing went wrong.
        if code != ErrorCode::ImageBuildCancelled {
            tracing::warn!(error = %message, "image build failed");
        }
        message
    };
    ErrorDetail {
        code: code.as_str().to_owned(),
        message,
    }
}

fn event_line(event: &ImageBuildEvent) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(event).expect("events always serialize");
    bytes.push(b'\n');
    bytes
}

/// One image, by id or name.
#[utoipa::path(
    get,
    path = "/v1/images/{image}",
    tag = "images",
    security(("bearer" = [])),
    params(("image" = String, Path, description = "Image id or name")),
    responses(
        (status = 200, description = "The image", body = ImageInfo),
        (status = 404, description = "No such image", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(image): Path<String>,
) -> Result<Json<ImageInfo>, ApiError> {
    Ok(Json(image_info(state.sandboxes.image(&image).await?)))
}

/// Deletes an image and its tree. Refused while any sandbox (in any state) is on it.
#[utoipa::path(
    delete,
    path = "/v1/images/{image}",
    tag = "images",
    security(("bearer" = [])),
    params(("image" = String, Path, description = "Image id or name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The built-in `host` image cannot be deleted", body = ErrorBody),
        (status = 404, description = "No such image", body = ErrorBody),
        (status = 409, description = "Sandboxes are on it; the message lists them", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(image): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.sandboxes.delete_image(&image).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An image as the API shows it.
pub fn image_info(view: ImageView) -> ImageInfo {
    let Some(image) = view.image else {
        return ImageInfo {
            name: view.name,
            id: None,
            source: ImageSourceInfo::Builtin,
            size_bytes: None,
            created_at: None,
            used_by: view.used_by,
        };
    };
    let source = match image.source {
        ImageSource::Imported { from_dir } => ImageSourceInfo::Imported { from_dir },
        ImageSource::Built {
            from,
            packages,
            tool,
        } => ImageSourceInfo::Built {
            from,
            packages,
            tool,
        },
    };
    ImageInfo {
        name: view.name,
        id: Some(image.id.to_string()),
        source,
        size_bytes: Some(image.size_bytes),
        created_at: Some(rfc3339(image.created_at)),
        used_by: view.used_by,
    }
}
