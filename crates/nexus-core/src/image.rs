//! Images as the domain sees them: read-only root trees that sandboxes start from.
//!
//! The built-in image `host` is the host's own `/` (read-only, secrets masked) and has no
//! record. Every other image is a tree under the daemon's data directory, made once (by
//! import or build) and never changed afterwards; sandboxes write through a layer of
//! their own. A sandbox records its image by name, so names are never reused while a
//! sandbox names the image (deleting an image in use is refused).

use std::fmt;

use crate::clock::Timestamp;
use crate::sandbox::SandboxName;

/// The name of the built-in image: the host's `/`, read-only.
pub const HOST_IMAGE: &str = "host";

crate::id::prefixed_id!(
    /// An image's stable id, e.g. `img-3f9a1c0e5b7d2a64`. Generated, never reused.
    ImageId,
    "img-"
);

/// An image's unique name, with the rules of a [`SandboxName`]. `host` is reserved for
/// the built-in image, and names shaped like image ids are refused, so that "an id or a
/// name" always means one image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName(String);

impl ImageName {
    /// Validates a name; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let name = SandboxName::parse(text)?;
        if text == HOST_IMAGE {
            return Err(format!(
                "name {text:?} is reserved for the built-in host image; choose another name"
            ));
        }
        if ImageId::parse(text).is_some() {
            return Err(format!(
                "name {text:?} would be mistaken for an image id; choose another name"
            ));
        }
        Ok(Self(name.as_str().to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an image's tree came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Copied from a directory of the daemon's host.
    Imported {
        /// The directory, as given.
        from_dir: String,
    },
    /// Built from a distribution's packages.
    Built {
        /// The base, e.g. `debian:bookworm`.
        from: String,
        /// The packages asked for, beyond the base.
        packages: Vec<String>,
        /// The tool and its version, e.g. `mmdebstrap 1.3.5`.
        tool: String,
    },
}

impl ImageSource {
    /// `imported` or `built`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Imported { .. } => "imported",
            Self::Built { .. } => "built",
        }
    }
}

/// A recorded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Stable id; its tree lives under this id.
    pub id: ImageId,
    /// Unique name, what sandboxes record.
    pub name: ImageName,
    /// Where it came from.
    pub source: ImageSource,
    /// Bytes its tree uses, measured when it was made.
    pub size_bytes: u64,
    /// When it was recorded.
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_other_shapes() {
        let id = ImageId::generate();
        assert_eq!(ImageId::parse(id.as_str()), Some(id));
        for bad in [
            "img-",
            "img-123",
            "ws-0123456789abcdef",
            "img-0123456789ABCDEF",
        ] {
            assert_eq!(ImageId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_follow_sandbox_rules_and_reserve_host_and_ids() {
        assert!(ImageName::parse("py312").is_ok());
        assert!(
            ImageName::parse("host")
                .expect_err("host")
                .contains("reserved")
        );
        assert!(
            ImageName::parse("img-0123456789abcdef")
                .expect_err("id")
                .contains("image id")
        );
        assert!(ImageName::parse("Bad").is_err());
        assert!(ImageName::parse("").is_err());
    }
}
