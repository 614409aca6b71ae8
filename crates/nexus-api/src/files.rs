//! The file API of a running sandbox (`/v1/sandboxes/{id}/files...`): stat entries,
//! listings, directory and rename requests, glob and grep, batches and watch events.
//!
//! File content itself never travels in JSON: reads and writes of
//! `/files/content` and `/files/archive` carry raw bytes (`application/octet-stream`,
//! `application/x-tar`). Permission bits are octal strings (`"0644"`) both ways, as people
//! write them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorDetail;

/// Response header of `GET .../files/content`: the size of the whole file, in bytes.
pub const FILE_SIZE_HEADER: &str = "x-nexus-file-size";
/// Response header of `GET .../files/content`: the offset the body starts at.
pub const FILE_OFFSET_HEADER: &str = "x-nexus-file-offset";

/// What a path is. Symlinks are reported as themselves, never followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A socket, FIFO or device.
    Other,
}

/// A path's metadata (`lstat`: a final symlink is described, not followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileStat {
    /// The path (absolute, except for a stat that was asked with a relative one).
    pub path: String,
    /// File, directory, symlink or other.
    #[serde(rename = "type")]
    pub file_type: FileType,
    /// Size in bytes (a symlink's is the length of its target).
    pub size: u64,
    /// Permission bits in octal, e.g. `"0644"` (with set-uid, set-gid, sticky).
    #[schema(example = "0644")]
    pub mode: String,
    /// Owner inside the sandbox.
    pub uid: u32,
    /// Group inside the sandbox.
    pub gid: u32,
    /// Modification time, RFC 3339 with nanoseconds, UTC.
    pub modified_at: String,
    /// Modification time in milliseconds since the Unix epoch.
    pub mtime_ms: i64,
    /// For a symlink: its target as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    /// SHA-256 of a regular file's content, lowercase hex (stat: files up to 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `POST .../files/stat`: many paths at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatManyRequest {
    /// The paths (absolute, or relative to `/workspace`).
    pub paths: Vec<String>,
}

/// One path's stat, or why there is none; one failure does not fail the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatItem {
    /// The path as requested.
    pub path: String,
    /// Its stat, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<FileStat>,
    /// Why not (`file_not_found`, `invalid_path`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// The answer of `POST .../files/stat`, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatManyResponse {
    /// One result per requested path.
    pub results: Vec<StatItem>,
}

/// `GET .../files/list`: a directory's entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    /// Entries with absolute paths, sorted by path.
    pub entries: Vec<FileStat>,
    /// More entries existed than the cap, or than one answer carries (about 1 MiB: some
    /// 5,000 entries of ordinary names); list subdirectories for the rest.
    pub truncated: bool,
}

/// `POST .../files/mkdir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    /// The directory.
    pub path: String,
    /// Create missing parents and accept an existing directory (`mkdir -p`).
    #[serde(default)]
    pub parents: bool,
    /// Permission bits in octal [default: `"0755"`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// `POST .../files/move` and `POST .../files/copy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// Source path (a final symlink is moved or copied itself).
    pub from: String,
    /// Destination path.
    pub to: String,
    /// Replace an existing destination; otherwise it is a 409 `file_conflict`.
    #[serde(default)]
    pub overwrite: bool,
}

/// The answer of `DELETE .../files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RemoveResponse {
    /// Entries removed (files, links and directories).
    pub removed: u64,
}

/// What a copy or a tar upload created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TreeSummary {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// `POST .../files/glob`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobRequest {
    /// The directory searched [default: `/workspace`].
    #[serde(default = "workspace")]
    pub root: String,
    /// Patterns (`**` crosses directories), matched against the path relative to `root`.
    pub patterns: Vec<String>,
    /// Skip what `.gitignore` and friends exclude.
    #[serde(default)]
    pub respect_gitignore: bool,
    /// Skip names starting with `.`.
    #[serde(default)]
    pub skip_hidden: bool,
    /// Most results [default: 10000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

/// One glob match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GlobMatch {
    /// Absolute path.
    pub path: String,
    /// What it is.
    #[serde(rename = "type")]
    pub file_type: FileType,
}

/// The answer of a glob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GlobResponse {
    /// Matches sorted by path.
    pub matches: Vec<GlobMatch>,
    /// More matches existed than `max_results`, or than one answer carries (about 1 MiB).
    pub truncated: bool,
}

/// `POST .../files/grep`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrepRequest {
    /// A directory searched recursively, or one file [default: `/workspace`].
    #[serde(default = "workspace")]
    pub root: String,
    /// A regular expression (Rust `regex` syntax), or a literal with `fixed_string`.
    pub pattern: String,
    /// Take `pattern` literally.
    #[serde(default)]
    pub fixed_string: bool,
    /// Match case-insensitively.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Only files whose relative path matches one of these globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub globs: Vec<String>,
    /// Skip what `.gitignore` and friends exclude.
    #[serde(default)]
    pub respect_gitignore: bool,
    /// Skip names starting with `.`.
    #[serde(default)]
    pub skip_hidden: bool,
    /// Most matching lines [default: 1000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

/// One matching line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GrepMatch {
    /// Absolute path of the file.
    pub path: String,
    /// Line number, from 1.
    pub line: u64,
    /// Byte column of the first match, from 1.
    pub column: u64,
    /// The line (invalid UTF-8 replaced, cut at 500 bytes).
    pub text: String,
}

/// The answer of a grep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GrepResponse {
    /// Matches by path, then line.
    pub matches: Vec<GrepMatch>,
    /// More matches existed than `max_results`, or than one answer carries (about 1 MiB).
    pub truncated: bool,
    /// Files skipped because they look binary.
    pub binary_files_skipped: u64,
}

/// How a batch write's `content` is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContentEncoding {
    /// UTF-8 text.
    #[default]
    Text,
    /// Standard base64.
    Base64,
}

/// One operation of a batch, tagged by `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BatchOp {
    /// Write a file whose content is inline.
    Write {
        /// The file.
        path: String,
        /// The content.
        content: String,
        /// How `content` is encoded.
        #[serde(default)]
        encoding: ContentEncoding,
        /// Append instead of replacing atomically.
        #[serde(default)]
        append: bool,
        /// Create missing parent directories.
        #[serde(default)]
        create_parents: bool,
        /// Permission bits in octal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
    },
    /// Make a directory.
    Mkdir {
        /// The directory.
        path: String,
        /// `mkdir -p`.
        #[serde(default)]
        parents: bool,
        /// Permission bits in octal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
    },
    /// Remove a path.
    Remove {
        /// The path.
        path: String,
        /// Remove a directory with its content.
        #[serde(default)]
        recursive: bool,
    },
    /// Rename.
    Move {
        /// Source.
        from: String,
        /// Destination.
        to: String,
        /// Replace an existing destination.
        #[serde(default)]
        overwrite: bool,
    },
    /// Copy a file or tree.
    Copy {
        /// Source.
        from: String,
        /// Destination.
        to: String,
        /// Replace an existing destination.
        #[serde(default)]
        overwrite: bool,
    },
    /// Stat one path.
    Stat {
        /// The path.
        path: String,
    },
}

/// `POST .../files/batch`: operations run in order, each with its own result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The operations.
    pub ops: Vec<BatchOp>,
    /// Stop at the first failure; later items report `cancelled`.
    #[serde(default)]
    pub stop_on_error: bool,
}

/// One batch item's result: `stat` (write, mkdir, move, stat), `removed`, or `copied`,
/// or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchItem {
    /// The path's stat after a write, mkdir, move or stat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<FileStat>,
    /// Bytes written by a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Entries removed by a remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    /// What a copy created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied: Option<TreeSummary>,
    /// Why it failed (`cancelled` when an earlier item failed under `stop_on_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// The answer of a batch, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// One result per operation.
    pub results: Vec<BatchItem>,
}

/// One line of `GET .../files/watch` (NDJSON), tagged by `kind`. Paths are absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WatchEvent {
    /// Created, or moved in from outside the watch.
    Create {
        /// Its path.
        path: String,
        /// Whether it is a directory.
        dir: bool,
    },
    /// A file was written and closed.
    Modify {
        /// Its path.
        path: String,
    },
    /// Removed, or moved out of the watch.
    Delete {
        /// Its path.
        path: String,
        /// Whether it was a directory.
        dir: bool,
    },
    /// Renamed inside the watch.
    Rename {
        /// Old path.
        from: String,
        /// New path.
        to: String,
        /// Whether it is a directory.
        dir: bool,
    },
    /// Some changes were lost (the kernel queue overflowed); rescan if it matters.
    Overflow,
    /// The watch broke; the stream ends after this line.
    Error {
        /// What happened.
        message: String,
    },
}

fn workspace() -> String {
    "/workspace".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ops_and_watch_events_have_the_documented_shape() {
        let op: BatchOp = serde_json::from_value(serde_json::json!(
            {"op": "write", "path": "a", "content": "aGk=", "encoding": "base64"}
        ))
        .expect("parses");
        assert!(matches!(
            op,
            BatchOp::Write {
                encoding: ContentEncoding::Base64,
                append: false,
                ..
            }
        ));
        let event = WatchEvent::Create {
            path: "/workspace/a".into(),
            dir: false,
        };
        assert_eq!(
            serde_json::to_value(&event).expect("serializes"),
            serde_json::json!({"kind": "create", "path": "/workspace/a", "dir": false})
        );
    }
}
