//! The arguments and results of the file tools. Their doc comments become the schema
//! descriptions a model reads, so they say units, defaults and limits.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::MAX_READ;

/// Arguments of `file_read`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    /// The file: absolute, or relative to /workspace.
    pub path: String,
    /// Byte offset to start reading at. Default 0. Use the `next_offset` of the previous
    /// result to continue a long file.
    #[serde(default)]
    pub offset: u64,
    /// Most bytes to return. Default and maximum 262144 (256 KiB); larger values are lowered.
    #[serde(default = "max_read")]
    pub length: u64,
}

/// How `content` is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum Encoding {
    /// The bytes are UTF-8 text, given as is.
    #[serde(rename = "utf-8")]
    Utf8,
    /// The bytes are not UTF-8 text; standard base64 with padding.
    #[serde(rename = "base64")]
    Base64,
}

/// Result of `file_read`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReadOutput {
    /// The file, as given.
    pub path: String,
    /// Size of the whole file in bytes.
    pub size: u64,
    /// Byte offset the content starts at.
    pub offset: u64,
    /// Bytes returned (before any base64 encoding).
    pub length: u64,
    /// How `content` is encoded.
    pub encoding: Encoding,
    /// The bytes read.
    pub content: String,
    /// Where to continue reading when the file goes on past what was returned.
    pub next_offset: Option<u64>,
}

/// Arguments of `file_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// The directory: absolute, or relative to /workspace. Default /workspace.
    #[serde(default = "workspace")]
    pub path: String,
    /// Levels listed: 1 = direct children only, 2 = their children too, ... Default 1, at most 10.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub depth: u32,
    /// Most entries returned. Default 500, at most 5000 (larger values are lowered).
    #[serde(default = "default_list_max")]
    #[schemars(range(min = 1))]
    pub max_entries: u32,
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (described itself, not followed).
    Symlink,
    /// A socket, FIFO or device.
    Other,
}

/// One entry of a listing.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListEntry {
    /// Absolute path.
    pub path: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits in octal, e.g. "0644".
    pub mode: String,
    /// Last modification, RFC 3339.
    pub modified_at: String,
    /// Where a symlink points, as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

/// Result of `file_list`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    /// Entries sorted by path.
    pub entries: Vec<ListEntry>,
    /// More entries existed than `max_entries`.
    pub truncated: bool,
}

/// Arguments of `file_stat`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatArgs {
    /// The path: absolute, or relative to /workspace. A final symlink is described, not followed.
    pub path: String,
}

/// Result of `file_stat`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StatOutput {
    /// The path, as given.
    pub path: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: FileKind,
    /// Size in bytes (a symlink's is the length of its target).
    pub size: u64,
    /// Permission bits in octal, e.g. "0644".
    pub mode: String,
    /// Owner's user id inside the sandbox.
    pub uid: u32,
    /// Owner's group id inside the sandbox.
    pub gid: u32,
    /// Last modification, RFC 3339.
    pub modified_at: String,
    /// Where a symlink points, as stored.
    pub symlink_target: Option<String>,
    /// SHA-256 of a regular file up to 64 MiB, lowercase hex.
    pub sha256: Option<String>,
}

/// Arguments of `glob`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobArgs {
    /// Glob patterns matched against paths relative to `root`, at least one, e.g.
    /// ["**/*.rs"]. `*` stays within a directory, `**` crosses directories, `{a,b}` alternates.
    #[schemars(length(min = 1))]
    pub patterns: Vec<String>,
    /// The directory searched: absolute, or relative to /workspace. Default /workspace.
    #[serde(default = "workspace")]
    pub root: String,
    /// Skip what .gitignore, .ignore and .git/info/exclude exclude. Default true.
    #[serde(default = "yes")]
    pub respect_gitignore: bool,
    /// Include hidden files and directories (names starting with "."). Default false.
    #[serde(default)]
    pub include_hidden: bool,
    /// Most matches returned. Default 500, at most 10000 (larger values are lowered).
    #[serde(default = "default_glob_max")]
    #[schemars(range(min = 1))]
    pub max_results: u32,
}

/// One glob match.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GlobHit {
    /// Absolute path.
    pub path: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: FileKind,
}

/// Result of `glob`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GlobOutput {
    /// Matches sorted by path.
    pub matches: Vec<GlobHit>,
    /// More matches existed than `max_results`.
    pub truncated: bool,
}

/// Arguments of `file_write`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    /// The file: absolute, or relative to /workspace.
    pub path: String,
    /// The text to write (the whole new content, or what to append).
    pub content: String,
    /// Add `content` at the end of the file (created when missing) instead of replacing it. Default false.
    #[serde(default)]
    pub append: bool,
    /// Create missing parent directories. Default true.
    #[serde(default = "yes")]
    pub create_parents: bool,
    /// Permission bits in octal, e.g. "755" for a script. Default: kept for an existing
    /// file, "644" for a new one.
    #[serde(default)]
    pub mode: Option<String>,
}

/// Result of `file_write`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WriteOutput {
    /// Absolute path of the file.
    pub path: String,
    /// Size of the file after the write, in bytes.
    pub size: u64,
    /// Bytes written by this call.
    pub bytes_written: u64,
}

/// Arguments of `file_edit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditArgs {
    /// The file: absolute, or relative to /workspace. UTF-8 text, at most 8 MiB.
    pub path: String,
    /// The exact text to replace, copied from the file with its whitespace and indentation.
    /// It must occur exactly once unless `replace_all` is set; include surrounding lines to
    /// make it unique.
    pub old_text: String,
    /// The text put in its place (may be empty to delete `old_text`).
    pub new_text: String,
    /// Replace every occurrence instead of requiring exactly one. Default false.
    #[serde(default)]
    pub replace_all: bool,
}

/// Result of `file_edit`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EditOutput {
    /// Absolute path of the file.
    pub path: String,
    /// Occurrences replaced.
    pub replacements: usize,
    /// Size of the file after the edit, in bytes.
    pub size: u64,
}

/// Arguments of `file_delete`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteArgs {
    /// File, symlink (the link itself is removed) or directory: absolute, or relative to /workspace.
    pub path: String,
    /// Remove a directory with everything in it. Default false (a non-empty directory is refused).
    #[serde(default)]
    pub recursive: bool,
}

/// Result of `file_delete`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteOutput {
    /// The path, as given.
    pub path: String,
    /// Entries removed (files, links and directories).
    pub removed: u64,
}

/// Arguments of `file_move`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveArgs {
    /// What to move: absolute, or relative to /workspace.
    pub from: String,
    /// The new path (not the directory to move into): absolute, or relative to /workspace.
    pub to: String,
    /// Replace an existing `to` (a directory only when empty). Default false.
    #[serde(default)]
    pub overwrite: bool,
}

/// Result of `file_move`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MoveOutput {
    /// The old path, as given.
    pub from: String,
    /// Absolute new path.
    pub to: String,
    /// What was moved.
    #[serde(rename = "type")]
    pub kind: FileKind,
}

/// Arguments of `make_directory`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MkdirArgs {
    /// The directory: absolute, or relative to /workspace.
    pub path: String,
    /// Create missing parents, and succeed when the directory already exists. Default true.
    #[serde(default = "yes")]
    pub parents: bool,
}

/// Result of `make_directory`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MkdirOutput {
    /// Absolute path of the directory.
    pub path: String,
}

/// Arguments of `grep`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrepArgs {
    /// Regular expression in Rust regex syntax (like ripgrep: `\bfoo\(`, `(?i)` for no
    /// case), or a literal string with `fixed_string`. Matched line by line.
    pub pattern: String,
    /// Directory searched recursively, or one file: absolute, or relative to /workspace. Default /workspace.
    #[serde(default = "workspace")]
    pub root: String,
    /// Take `pattern` literally, not as a regular expression. Default false.
    #[serde(default)]
    pub fixed_string: bool,
    /// Ignore case. Default false.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Only search files whose path relative to `root` matches one of these globs, e.g.
    /// ["*.rs"] or ["src/**/*.ts"]. Default: all files.
    #[serde(default)]
    pub globs: Option<Vec<String>>,
    /// Skip what .gitignore, .ignore and .git/info/exclude exclude. Default true.
    #[serde(default = "yes")]
    pub respect_gitignore: bool,
    /// Include hidden files and directories (names starting with "."). Default false.
    #[serde(default)]
    pub include_hidden: bool,
    /// Most matching lines returned. Default 200, at most 5000 (larger values are lowered).
    #[serde(default = "default_grep_max")]
    #[schemars(range(min = 1))]
    pub max_results: u32,
}

/// One matching line.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GrepHit {
    /// Absolute path of the file.
    pub path: String,
    /// Line number, from 1.
    pub line: u64,
    /// Byte column of the first match, from 1.
    pub column: u64,
    /// The line (invalid UTF-8 replaced, cut at 500 bytes).
    pub text: String,
}

/// Result of `grep`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GrepOutput {
    /// Matches by path, then line.
    pub matches: Vec<GrepHit>,
    /// More matches existed than `max_results`.
    pub truncated: bool,
    /// Files skipped because they look binary.
    pub binary_files_skipped: u64,
}

fn max_read() -> u64 {
    MAX_READ
}

fn workspace() -> String {
    "/workspace".into()
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn default_list_max() -> u32 {
    500
}

fn default_glob_max() -> u32 {
    500
}

fn default_grep_max() -> u32 {
    200
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::tools::parse;

    fn args(value: serde_json::Value) -> rmcp::model::JsonObject {
        match value {
            serde_json::Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn omitted_arguments_take_their_defaults() {
        let read: ReadArgs = parse(args(serde_json::json!({"path": "a.txt"}))).expect("parses");
        assert_eq!((read.offset, read.length), (0, MAX_READ));
        let list: ListArgs = parse(args(serde_json::json!({}))).expect("parses");
        assert_eq!(
            (list.path.as_str(), list.depth, list.max_entries),
            ("/workspace", 1, 500)
        );
        let glob: GlobArgs =
            parse(args(serde_json::json!({"patterns": ["**/*.rs"]}))).expect("parses");
        assert!(glob.respect_gitignore && !glob.include_hidden);
        assert_eq!((glob.root.as_str(), glob.max_results), ("/workspace", 500));
        let write: WriteArgs =
            parse(args(serde_json::json!({"path": "a", "content": ""}))).expect("parses");
        assert!(write.create_parents && !write.append && write.mode.is_none());
        let mkdir: MkdirArgs = parse(args(serde_json::json!({"path": "d"}))).expect("parses");
        assert!(mkdir.parents);
        let grep: GrepArgs = parse(args(serde_json::json!({"pattern": "fn"}))).expect("parses");
        assert_eq!(grep.max_results, 200);
        assert!(grep.respect_gitignore && !grep.fixed_string && grep.globs.is_none());
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = parse::<ReadArgs>(args(serde_json::json!({"path": "a", "offset": "ten"})))
            .expect_err("a string offset");
        assert!(
            err.message.starts_with("invalid argument `offset`:"),
            "{}",
            err.message
        );
        let err = parse::<EditArgs>(args(serde_json::json!({"path": "a", "old_text": "x"})))
            .expect_err("no new_text");
        assert!(err.message.contains("new_text"), "{}", err.message);
    }

    #[test]
    fn unknown_arguments_are_refused() {
        let err = parse::<DeleteArgs>(args(serde_json::json!({"path": "a", "force": true})))
            .expect_err("unknown field");
        assert!(
            err.message.contains("unknown field `force`"),
            "{}",
            err.message
        );
    }
}
