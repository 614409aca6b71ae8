//! The messages of the file API (protocol version 2): requests, stat entries, results and
//! watch events. Plain serde types, so the daemon can map them to its own wire types; field
//! names are part of the protocol (PROTOCOL.md §10).

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// Regular files larger than this are not hashed by [`HashMode::Auto`] (64 MiB).
pub const HASH_SIZE_CAP: u64 = 64 * 1024 * 1024;

/// Default cap on the entries of one [`ListRequest`].
pub const DEFAULT_MAX_ENTRIES: u32 = 10_000;

/// Default cap on the results of one [`GlobRequest`].
pub const DEFAULT_MAX_GLOB_RESULTS: u32 = 10_000;

/// Default cap on the matches of one [`GrepRequest`].
pub const DEFAULT_MAX_GREP_RESULTS: u32 = 1_000;

/// Longest matching-line text a grep result carries, in bytes; longer lines are cut (at a
/// character boundary).
pub const MAX_GREP_LINE: usize = 500;

/// Bytes a client may send on a write or tar-upload channel before the agent's first
/// CREDIT: the implicit initial upload window (1 MiB).
pub const UPLOAD_WINDOW: u32 = 1024 * 1024;

/// What a directory entry is. Symlinks are reported as themselves, never followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else: socket, FIFO, device.
    Other,
}

/// When a stat entry of a regular file carries its SHA-256.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashMode {
    /// Hash regular files up to [`HASH_SIZE_CAP`] bytes.
    #[default]
    Auto,
    /// Hash every regular file, whatever its size.
    Always,
    /// Never hash.
    Never,
}

/// What a path is: an `lstat` of it (a final symlink is described, not followed), plus
/// optionally the content hash of a regular file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// The path, as requested for `fs_stat` and `fs_read`; absolute for entries of
    /// `fs_list`, results of writes and the like.
    pub path: String,
    /// File, directory, symlink or other.
    #[serde(rename = "type")]
    pub file_type: FileType,
    /// Size in bytes (`st_size`; a symlink's is the length of its target).
    pub size: u64,
    /// Permission bits including set-uid, set-gid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner, in the sandbox's user namespace.
    pub uid: u32,
    /// Group, in the sandbox's user namespace.
    pub gid: u32,
    /// Modification time in milliseconds since the Unix epoch (negative before it).
    pub mtime_ms: i64,
    /// Modification time, whole seconds since the Unix epoch.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds within `mtime_sec` (0..1e9).
    pub mtime_nsec: u32,
    /// For a symlink: its target, as stored (not resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    /// For a regular file, when the [`HashMode`] asked for it: SHA-256 of the content,
    /// lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Why one item of a bulk operation failed; the other items are unaffected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    /// Stable code (`not_found`, `permission_denied`, ...).
    pub code: ErrorCode,
    /// For people; names the path and the problem.
    pub message: String,
}

/// The result of one item of a bulk operation: `{"ok": …}` or `{"error": {code, message}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T> {
    /// It worked.
    Ok(T),
    /// It failed.
    Error(ItemError),
}

impl<T> Outcome<T> {
    /// As a `Result`.
    pub fn into_result(self) -> Result<T, ItemError> {
        match self {
            Self::Ok(value) => Ok(value),
            Self::Error(error) => Err(error),
        }
    }
}

/// `fs_read`: a file, whole or a byte range, streamed as FILE_DATA frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRequest {
    /// The file; a final symlink is followed (within the sandbox's view).
    pub path: String,
    /// First byte to send.
    #[serde(default)]
    pub offset: u64,
    /// Most bytes to send; absent = to the end of the file. A range past the end sends
    /// what exists, possibly nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Initial flow-control credit, in bytes (set by the client).
    pub credit: u32,
}

/// What a read will send, told before the data (EVENT `fs_read_start`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReadInfo {
    /// The opened file (no hash).
    pub stat: FileStat,
    /// Where the data starts.
    pub offset: u64,
    /// How many bytes will be sent: `min(length, size − offset)`, 0 past the end.
    pub length: u64,
}

/// `fs_write`: the body follows as UPLOAD frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The file. Replace replaces a final symlink itself; append follows it.
    pub path: String,
    /// Append to the file (created when missing) instead of replacing it atomically.
    #[serde(default)]
    pub append: bool,
    /// Create missing parent directories (mode 0755).
    #[serde(default)]
    pub create_parents: bool,
    /// Permission bits of the file (e.g. `0o644`); absent = kept from the file replaced,
    /// 0644 for a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

impl WriteRequest {
    /// An atomic replace of `path` with every option at its default.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            append: false,
            create_parents: false,
            mode: None,
        }
    }
}

/// The answer to a write: what the file is now and how many bytes were written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The file after the write (with its hash, as [`HashMode::Auto`]).
    pub stat: FileStat,
    /// Body bytes written.
    pub bytes: u64,
}

/// `fs_stat`: many paths at once, one result each, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatRequest {
    /// The paths.
    pub paths: Vec<String>,
    /// When to hash regular files.
    #[serde(default)]
    pub hash: HashMode,
}

/// One path's stat, or why there is none (a missing path is `not_found` here, not a
/// failure of the operation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatResult {
    /// The path as requested.
    pub path: String,
    /// Its stat or its error.
    pub result: Outcome<FileStat>,
}

/// `fs_list`: a directory's entries down to `depth`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// The directory (a final symlink is followed).
    pub path: String,
    /// 1 = direct children, 2 = and theirs, ... (at least 1). Symlinked directories are
    /// not descended into.
    #[serde(default = "default_depth")]
    pub depth: u32,
    /// Most entries returned; `truncated` says when there were more.
    #[serde(default = "default_max_entries")]
    pub max_entries: u32,
    /// When to hash regular files; never by default.
    #[serde(default = "hash_never")]
    pub hash: HashMode,
}

impl ListRequest {
    /// Direct children of `path`, default cap, no hashes.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            depth: 1,
            max_entries: DEFAULT_MAX_ENTRIES,
            hash: HashMode::Never,
        }
    }
}

/// The answer to a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResult {
    /// Entries with absolute paths, sorted by path (byte order).
    pub entries: Vec<FileStat>,
    /// More entries existed than `max_entries`.
    pub truncated: bool,
}

/// `fs_mkdir`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MkdirRequest {
    /// The directory.
    pub path: String,
    /// Create missing parents, and succeed when the directory already exists (`mkdir -p`).
    #[serde(default)]
    pub parents: bool,
    /// Permission bits; 0755 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// `fs_move`: rename `from` to `to` (same file system).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRequest {
    /// What to move (a final symlink is moved itself).
    pub from: String,
    /// Where to.
    pub to: String,
    /// Replace an existing `to` (a directory only when empty). Without it an existing
    /// `to` is `exists`, checked atomically.
    #[serde(default)]
    pub overwrite: bool,
}

/// `fs_remove`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveRequest {
    /// A file, symlink (removed itself) or directory.
    pub path: String,
    /// Remove a directory with everything in it; without it a non-empty directory is
    /// `not_empty`.
    #[serde(default)]
    pub recursive: bool,
}

/// The answer to a remove.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveSummary {
    /// Entries removed (files, links and directories).
    pub removed: u64,
}

/// `fs_copy`: a file, symlink or whole directory tree inside the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRequest {
    /// What to copy (a final symlink is copied as a symlink).
    pub from: String,
    /// The new path.
    pub to: String,
    /// Remove an existing `to` first; without it an existing `to` is `exists`.
    #[serde(default)]
    pub overwrite: bool,
}

/// What a copy or a tar transfer created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeSummary {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Bytes of regular-file content.
    pub bytes: u64,
}

/// How an inline content string of a batch write is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentEncoding {
    /// UTF-8 text, written as is.
    #[default]
    Text,
    /// Standard base64 (with padding).
    Base64,
}

/// One operation of a batch, tagged by `op`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BatchOp {
    /// A write whose content is inline.
    Write {
        /// Path and options, as [`WriteRequest`].
        #[serde(flatten)]
        request: WriteRequest,
        /// The content.
        content: String,
        /// How `content` is encoded.
        #[serde(default)]
        encoding: ContentEncoding,
    },
    /// As [`MkdirRequest`].
    Mkdir(MkdirRequest),
    /// As [`RemoveRequest`].
    Remove(RemoveRequest),
    /// As [`MoveRequest`].
    Move(MoveRequest),
    /// As [`CopyRequest`].
    Copy(CopyRequest),
    /// One path's stat.
    Stat {
        /// The path.
        path: String,
        /// When to hash.
        #[serde(default)]
        hash: HashMode,
    },
}

/// `fs_batch`: operations run in order; each reports its own result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// The operations.
    pub ops: Vec<BatchOp>,
    /// Stop at the first failure; the remaining items are reported as `cancelled`.
    /// Without it every item runs whatever happened before.
    #[serde(default)]
    pub stop_on_error: bool,
}

/// What one batch item produced, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BatchOutput {
    /// A write: the file now, and bytes written.
    Written {
        /// The file after the write.
        stat: FileStat,
        /// Bytes written.
        bytes: u64,
    },
    /// A mkdir, move or stat: the stat of the (new) path.
    Stat {
        /// The stat.
        stat: FileStat,
    },
    /// A remove.
    Removed {
        /// Entries removed.
        removed: u64,
    },
    /// A copy.
    Copied {
        /// What was created.
        summary: TreeSummary,
    },
}

/// `fs_glob`: paths under `root` matching any of `patterns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobRequest {
    /// The directory searched.
    pub root: String,
    /// Glob patterns (`globset` syntax, `**` crosses directories) matched against the
    /// path relative to `root`.
    pub patterns: Vec<String>,
    /// Skip what `.gitignore`, `.ignore` and `.git/info/exclude` exclude.
    #[serde(default)]
    pub respect_gitignore: bool,
    /// Skip hidden files and directories (names starting with `.`).
    #[serde(default)]
    pub skip_hidden: bool,
    /// Most results; `truncated` says when there were more.
    #[serde(default = "default_max_glob")]
    pub max_results: u32,
}

/// One glob match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobMatch {
    /// Absolute path.
    pub path: String,
    /// What it is.
    #[serde(rename = "type")]
    pub file_type: FileType,
}

/// The answer to a glob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobResult {
    /// Matches, sorted by path.
    pub matches: Vec<GlobMatch>,
    /// More matches existed than `max_results`.
    pub truncated: bool,
}

/// `fs_grep`: lines matching a regex (or fixed string) in the files under `root`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrepRequest {
    /// A directory searched recursively, or one file.
    pub root: String,
    /// A regular expression (Rust `regex` syntax), or a literal with `fixed_string`.
    pub pattern: String,
    /// Take `pattern` literally.
    #[serde(default)]
    pub fixed_string: bool,
    /// Match case-insensitively.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Only search files whose path relative to `root` matches one of these globs
    /// (all files when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub globs: Vec<String>,
    /// Skip what `.gitignore`, `.ignore` and `.git/info/exclude` exclude.
    #[serde(default)]
    pub respect_gitignore: bool,
    /// Skip hidden files and directories.
    #[serde(default)]
    pub skip_hidden: bool,
    /// Most matching lines; `truncated` says when there were more.
    #[serde(default = "default_max_grep")]
    pub max_results: u32,
}

impl GrepRequest {
    /// A regex search under `root` with every option at its default.
    pub fn new(root: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            pattern: pattern.into(),
            fixed_string: false,
            case_insensitive: false,
            globs: Vec::new(),
            respect_gitignore: false,
            skip_hidden: false,
            max_results: DEFAULT_MAX_GREP_RESULTS,
        }
    }
}

/// One matching line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrepMatch {
    /// Absolute path of the file.
    pub path: String,
    /// Line number, from 1.
    pub line: u64,
    /// Byte column of the first match in the line, from 1.
    pub column: u64,
    /// The line without its terminator (invalid UTF-8 replaced), cut to
    /// [`MAX_GREP_LINE`] bytes.
    pub text: String,
}

/// The answer to a grep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrepResult {
    /// Matches, by path then line.
    pub matches: Vec<GrepMatch>,
    /// More matches existed than `max_results`.
    pub truncated: bool,
    /// Files skipped because they look binary (contain NUL bytes).
    pub binary_files_skipped: u64,
}

/// `fs_tar_download`: a file or directory tree as a tar stream in FILE_DATA frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarDownloadRequest {
    /// The file or directory; entries are named from its last component on
    /// (`/workspace/src` gives `src/…`).
    pub path: String,
    /// Initial flow-control credit, in bytes (set by the client).
    pub credit: u32,
}

/// `fs_tar_upload`: a tar stream follows as UPLOAD frames, unpacked under `dest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarUploadRequest {
    /// The directory entries are unpacked in; created (with parents) when missing.
    pub dest: String,
}

/// `fs_watch`: changes under a path, as EVENTs, until CANCEL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    /// A directory (or a file).
    pub path: String,
    /// Watch every subdirectory too, including ones created later.
    #[serde(default)]
    pub recursive: bool,
}

/// One change seen by a watch, tagged by `kind`. Paths are absolute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WatchEvent {
    /// A file or directory appeared (created, or moved in from outside the watch).
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
    /// A file or directory disappeared (removed, or moved out of the watch).
    Delete {
        /// Its path.
        path: String,
        /// Whether it was a directory.
        dir: bool,
    },
    /// Renamed inside the watch.
    Rename {
        /// The old path.
        from: String,
        /// The new path.
        to: String,
        /// Whether it is a directory.
        dir: bool,
    },
    /// The kernel's event queue overflowed: some changes were lost; rescan if it matters.
    Overflow,
}

fn default_depth() -> u32 {
    1
}

fn default_max_entries() -> u32 {
    DEFAULT_MAX_ENTRIES
}

fn hash_never() -> HashMode {
    HashMode::Never
}

fn default_max_glob() -> u32 {
    DEFAULT_MAX_GLOB_RESULTS
}

fn default_max_grep() -> u32 {
    DEFAULT_MAX_GREP_RESULTS
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn batch_ops_have_the_documented_shape() {
        let op: BatchOp = serde_json::from_value(json!({
            "op": "write", "path": "a.txt", "content": "aGk=", "encoding": "base64",
            "create_parents": true
        }))
        .unwrap();
        let BatchOp::Write {
            request,
            content,
            encoding,
        } = &op
        else {
            panic!("expected a write: {op:?}");
        };
        assert_eq!(request.path, "a.txt");
        assert!(request.create_parents && !request.append);
        assert_eq!(
            (content.as_str(), *encoding),
            ("aGk=", ContentEncoding::Base64)
        );
        let back: BatchOp = serde_json::from_value(serde_json::to_value(&op).unwrap()).unwrap();
        assert_eq!(back, op);

        let mkdir: BatchOp =
            serde_json::from_value(json!({"op": "mkdir", "path": "d", "parents": true})).unwrap();
        assert_eq!(
            mkdir,
            BatchOp::Mkdir(MkdirRequest {
                path: "d".into(),
                parents: true,
                mode: None
            })
        );
    }

    #[test]
    fn outcomes_are_ok_or_error_objects() {
        let failed: Outcome<FileStat> = Outcome::Error(ItemError {
            code: ErrorCode::NotFound,
            message: "m".into(),
        });
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            json!({"error": {"code": "not_found", "message": "m"}})
        );
        let output = Outcome::Ok(BatchOutput::Removed { removed: 3 });
        assert_eq!(
            serde_json::to_value(&output).unwrap(),
            json!({"ok": {"kind": "removed", "removed": 3}})
        );
    }

    #[test]
    fn defaults_apply_to_missing_fields() {
        let list: ListRequest = serde_json::from_value(json!({"path": "/w"})).unwrap();
        assert_eq!(list, ListRequest::new("/w"));
        let stat: StatRequest = serde_json::from_value(json!({"paths": ["a"]})).unwrap();
        assert_eq!(stat.hash, HashMode::Auto);
        let grep: GrepRequest =
            serde_json::from_value(json!({"root": "/w", "pattern": "x"})).unwrap();
        assert_eq!(grep, GrepRequest::new("/w", "x"));
        let event = WatchEvent::Rename {
            from: "/w/a".into(),
            to: "/w/b".into(),
            dir: false,
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"kind": "rename", "from": "/w/a", "to": "/w/b", "dir": false})
        );
    }
}
