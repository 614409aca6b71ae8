//! Validation of the ids that become directory names under the storage root.

use std::fmt;

use crate::error::{Result, StorageError};

/// The longest id accepted, in bytes: with the temporary-name decoration
/// (`.tmp-<id>-<16 hex digits>`) it still fits a 255-byte file name.
pub const MAX_ID_LEN: usize = 200;

/// Which kind of id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A workspace id (`<root>/<workspace-id>`).
    Workspace,
    /// A snapshot id (`<root>/<workspace-id>/snapshots/<snapshot-id>`).
    Snapshot,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Workspace => "workspace id",
            IdKind::Snapshot => "snapshot id",
        })
    }
}

/// Why an id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdProblem {
    /// The id is empty.
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    TooLong,
    /// The id contains `/`, so it would name a path, not an entry.
    Slash,
    /// The id contains a NUL byte, which no file name can hold.
    Nul,
    /// The id contains `..`.
    DotDot,
    /// The id starts with `.`: such names are reserved for temporary entries.
    LeadingDot,
}

impl fmt::Display for IdProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdProblem::Empty => "it is empty",
            IdProblem::TooLong => "it is longer than 200 bytes",
            IdProblem::Slash => "it contains '/'",
            IdProblem::Nul => "it contains a NUL byte",
            IdProblem::DotDot => "it contains '..'",
            IdProblem::LeadingDot => "it starts with '.'",
        })
    }
}

/// Checks that `id` can be used as one directory entry name of ours.
pub(crate) fn validate(kind: IdKind, id: &str) -> Result<()> {
    match problem(id) {
        None => Ok(()),
        Some(problem) => Err(StorageError::InvalidId {
            kind,
            id: id.to_owned(),
            problem,
        }),
    }
}

/// The first problem of `id`, if any.
fn problem(id: &str) -> Option<IdProblem> {
    if id.is_empty() {
        Some(IdProblem::Empty)
    } else if id.len() > MAX_ID_LEN {
        Some(IdProblem::TooLong)
    } else if id.contains('/') {
        Some(IdProblem::Slash)
    } else if id.contains('\0') {
        Some(IdProblem::Nul)
    } else if id.contains("..") {
        Some(IdProblem::DotDot)
    } else if id.starts_with('.') {
        Some(IdProblem::LeadingDot)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for id in ["ws1", "0190f3a2-7c4e", "a.b", "snap 2024-01-01", "é"] {
            assert_eq!(problem(id), None, "{id}");
        }
        assert_eq!(problem(&"x".repeat(MAX_ID_LEN)), None);
    }

    #[test]
    fn names_the_problem_of_bad_ids() {
        let cases = [
            ("", IdProblem::Empty),
            ("a/b", IdProblem::Slash),
            ("/", IdProblem::Slash),
            ("a\0b", IdProblem::Nul),
            ("..", IdProblem::DotDot),
            ("a..b", IdProblem::DotDot),
            (".", IdProblem::LeadingDot),
            (".tmp-x", IdProblem::LeadingDot),
        ];
        for (id, expected) in cases {
            assert_eq!(problem(id), Some(expected), "{id:?}");
        }
        assert_eq!(
            problem(&"x".repeat(MAX_ID_LEN + 1)),
            Some(IdProblem::TooLong)
        );
    }

    #[test]
    fn the_error_names_kind_id_and_problem() {
        let error = validate(IdKind::Snapshot, "../x").expect_err("refused");
        assert_eq!(
            error.to_string(),
            r#"invalid snapshot id "../x": it contains '/'"#
        );
    }
}
