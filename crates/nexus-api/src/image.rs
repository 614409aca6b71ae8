//! Wire types of images: the read-only root trees sandboxes start from.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST /v1/images`: import a directory of the daemon's host as an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportImageRequest {
    /// Unique name, same rules as sandbox names; `host` is reserved.
    #[schema(example = "tools")]
    pub name: String,
    /// Absolute path of the directory on the daemon's host. It is copied (modes,
    /// symlinks, hard links, owners when the daemon is root); later changes to it do not
    /// reach the image.
    #[schema(example = "/srv/rootfs/tools")]
    pub path: String,
}

/// Body of `POST /v1/images/build`: build an image from a distribution's packages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildImageRequest {
    /// Unique name, same rules as sandbox names; `host` is reserved.
    #[schema(example = "py")]
    pub name: String,
    /// The base: `debian:<suite>` (e.g. `debian:bookworm`).
    #[schema(example = "debian:bookworm")]
    pub from: String,
    /// Packages of the distribution to install beyond the base.
    #[serde(default)]
    #[schema(example = json!(["python3", "git"]))]
    pub packages: Vec<String>,
}

/// Where an image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSourceInfo {
    /// The host's own `/`, read-only, secrets masked.
    Builtin,
    /// Copied from a directory of the daemon's host.
    Imported {
        /// The directory.
        from_dir: String,
    },
    /// Built from a distribution's packages.
    Built {
        /// The base, e.g. `debian:bookworm`.
        from: String,
        /// Packages installed beyond the base.
        packages: Vec<String>,
        /// The tool and its version, e.g. `mmdebstrap 1.3.5`.
        tool: String,
    },
}

/// An image as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageInfo {
    /// Unique name; what `image` of a sandbox names.
    pub name: String,
    /// Stable id, e.g. `img-3f9a1c0e5b7d2a64`; absent for the built-in `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Where it came from.
    pub source: ImageSourceInfo,
    /// Bytes its tree uses; absent for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Creation time, RFC 3339; absent for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Names of the sandboxes on it, oldest first.
    pub used_by: Vec<String>,
}

/// `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    /// The built-in `host` first, then the others, oldest first.
    pub images: Vec<ImageInfo>,
}

/// A build that is running, as `GET /v1/images/builds` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageBuildInfo {
    /// The name the image will have; no other build of it can start meanwhile.
    #[schema(example = "py")]
    pub name: String,
    /// The base, e.g. `debian:bookworm`.
    pub from: String,
    /// Packages being installed beyond the base.
    pub packages: Vec<String>,
    /// When the build started, RFC 3339.
    pub started_at: String,
}

/// `GET /v1/images/builds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageBuildList {
    /// The running builds, oldest first.
    pub builds: Vec<ImageBuildInfo>,
}

/// One line of the NDJSON stream `POST /v1/images/build` answers with. The stream ends
/// with exactly one `done` or `failed` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageBuildEvent {
    /// A line of the build tool's output.
    Progress {
        /// The line, without its newline.
        line: String,
    },
    /// The image is built and recorded.
    Done {
        /// The new image.
        image: ImageInfo,
    },
    /// The build failed or was cancelled (code `image_build_cancelled`); nothing was
    /// recorded.
    Failed {
        /// Stable code and message, as in error bodies.
        error: crate::ErrorDetail,
    },
}
