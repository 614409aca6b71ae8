//! The file tools of the MCP server: read, list, stat, glob, write, edit, delete, move,
//! mkdir and grep inside one sandbox, each a thin translation to the sandbox's agent.
//!
//! Choices made here:
//! - Every path a tool prints is one the model can pass back as is: relative to
//!   `/workspace` when under it, absolute otherwise. Structured content keeps absolute paths.
//! - Limits a model may raise (`length`, `max_entries`, `max_results`) are lowered to their
//!   maximum rather than refused; a value that makes no sense (depth 0) is refused.
//! - `file_edit` reads, replaces and writes back atomically (same mode), refusing symlinks
//!   (a replace would turn the link into a file) and files over [`MAX_EDIT`]. A change made
//!   by someone else between the read and the write is overwritten.

mod schema;
mod text;

use std::io;

use axum::body::Bytes;
use futures::StreamExt;
use nexus_agent_proto::fs as proto;
use nexus_agent_proto::{AgentClient, ErrorCode as RemoteCode, ProtoError};
use rmcp::model::JsonObject;

pub use self::schema::*;
pub use self::text::replace_exact;
use self::text::{
    edit_refusal, kind_word, read_output, render_grep, render_listing, render_read, shown,
};
use super::{
    Family, Hints, Scope, ToolCtx, ToolDef, ToolError, ToolOutput, file_error, parse, service_error,
};
use crate::mcp::binding::Profile;

/// Most bytes one `file_read` returns (256 KiB), and its default.
pub const MAX_READ: u64 = 256 * 1024;
/// Largest file `file_edit` works on (8 MiB).
pub const MAX_EDIT: u64 = 8 * 1024 * 1024;

/// The tools of this module; the minimal profile's four come first.
pub fn defs() -> Vec<ToolDef> {
    vec![
        ToolDef::new::<ReadArgs, ReadOutput>(
            "file_read",
            "Read file",
            "Read a file in the sandbox. Text comes back as is, other bytes as base64; at most 256 KiB per call, so read long files in pages with `offset` (the result says where to continue).",
            Profile::Minimal,
            Scope::Sandbox,
            Family::Files,
            Hints::READ_ONLY,
        ),
        ToolDef::new::<ListArgs, ListOutput>(
            "file_list",
            "List directory",
            "List a directory's entries with type and size, optionally several levels deep. To find files by name pattern anywhere in a tree use glob instead.",
            Profile::Minimal,
            Scope::Sandbox,
            Family::Files,
            Hints::READ_ONLY,
        ),
        ToolDef::new::<StatArgs, StatOutput>(
            "file_stat",
            "File info",
            "Metadata of one path: type, size, permissions, owner, modification time, symlink target and SHA-256 of a regular file up to 64 MiB. Also the cheap way to check whether a path exists.",
            Profile::Minimal,
            Scope::Sandbox,
            Family::Files,
            Hints::READ_ONLY,
        ),
        ToolDef::new::<GlobArgs, GlobOutput>(
            "glob",
            "Find files by name",
            "Find paths matching glob patterns such as `**/*.rs` under a directory, skipping what .gitignore excludes by default. Use grep to search file contents.",
            Profile::Minimal,
            Scope::Sandbox,
            Family::Files,
            Hints::READ_ONLY,
        ),
        ToolDef::new::<WriteArgs, WriteOutput>(
            "file_write",
            "Write file",
            "Create or replace a file with the given text (atomically: readers see the old or the new content, never half), or append to it. To change part of an existing file prefer file_edit.",
            Profile::Coding,
            Scope::Sandbox,
            Family::Files,
            // With `append` a second call adds the content again.
            Hints::DESTRUCTIVE,
        ),
        ToolDef::new::<EditArgs, EditOutput>(
            "file_edit",
            "Edit file",
            "Replace an exact piece of text in a UTF-8 file with new text. `old_text` must match the file exactly (whitespace and indentation included) and be unique unless `replace_all` is set; read the file first.",
            Profile::Coding,
            Scope::Sandbox,
            Family::Files,
            Hints::DESTRUCTIVE,
        ),
        ToolDef::new::<DeleteArgs, DeleteOutput>(
            "file_delete",
            "Delete file or directory",
            "Delete a file, symlink or directory. A directory that is not empty needs `recursive: true`, which removes everything in it.",
            Profile::Coding,
            Scope::Sandbox,
            Family::Files,
            Hints::DESTRUCTIVE_IDEMPOTENT,
        ),
        ToolDef::new::<MoveArgs, MoveOutput>(
            "file_move",
            "Move or rename",
            "Move or rename a file or directory. An existing destination is only replaced with `overwrite: true`.",
            Profile::Coding,
            Scope::Sandbox,
            Family::Files,
            Hints::DESTRUCTIVE,
        ),
        ToolDef::new::<MkdirArgs, MkdirOutput>(
            "make_directory",
            "Make directory",
            "Create a directory, with its missing parents by default (like mkdir -p). file_write creates parent directories itself, so this is only needed for empty directories.",
            Profile::Coding,
            Scope::Sandbox,
            Family::Files,
            Hints::ADDITIVE_IDEMPOTENT,
        ),
        ToolDef::new::<GrepArgs, GrepOutput>(
            "grep",
            "Search file contents",
            "Search file contents under a directory for a regular expression (or a literal string), like ripgrep: one result per matching line with its line and column. Use glob to find files by name.",
            Profile::Coding,
            Scope::Sandbox,
            Family::Files,
            Hints::READ_ONLY,
        ),
    ]
}

/// Runs the tool `name` of this module.
pub async fn call(
    name: &str,
    ctx: &ToolCtx<'_>,
    args: JsonObject,
) -> Result<ToolOutput, ToolError> {
    match name {
        "file_read" => file_read(ctx, parse(args)?).await,
        "file_list" => file_list(ctx, parse(args)?).await,
        "file_stat" => file_stat(ctx, parse(args)?).await,
        "glob" => glob(ctx, parse(args)?).await,
        "file_write" => file_write(ctx, parse(args)?).await,
        "file_edit" => file_edit(ctx, parse(args)?).await,
        "file_delete" => file_delete(ctx, parse(args)?).await,
        "file_move" => file_move(ctx, parse(args)?).await,
        "make_directory" => make_directory(ctx, parse(args)?).await,
        "grep" => grep(ctx, parse(args)?).await,
        _ => Err(ToolError::new(format!("tool not found: {name}"))),
    }
}

async fn file_read(ctx: &ToolCtx<'_>, args: ReadArgs) -> Result<ToolOutput, ToolError> {
    check_path("path", &args.path)?;
    let length = args.length.min(MAX_READ);
    let agent = agent(ctx).await?;
    let (info, mut stream) = agent
        .fs_read(&args.path, args.offset, Some(length))
        .await
        .map_err(|e| file_error(&args.path, e))?;
    let mut bytes = Vec::with_capacity(usize::try_from(info.length.min(length)).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(|e| file_error(&args.path, e))?);
    }
    bytes.truncate(usize::try_from(length).unwrap_or(usize::MAX));
    let output = read_output(args.path, info.stat.size, info.offset, bytes);
    Ok(ToolOutput::new(render_read(&output), &output))
}

async fn file_list(ctx: &ToolCtx<'_>, args: ListArgs) -> Result<ToolOutput, ToolError> {
    check_path("path", &args.path)?;
    if !(1..=10).contains(&args.depth) {
        return Err(ToolError::new(format!(
            "invalid argument `depth`: must be from 1 to 10 (got {}); use glob to search deeper",
            args.depth
        )));
    }
    let mut request = proto::ListRequest::new(args.path.clone());
    request.depth = args.depth;
    request.max_entries = limit("max_entries", args.max_entries, 5000)?;
    let listed = agent(ctx)
        .await?
        .fs_list(request)
        .await
        .map_err(|e| file_error(&args.path, e))?;
    let output = ListOutput {
        entries: listed.entries.into_iter().map(list_entry).collect(),
        truncated: listed.truncated,
    };
    Ok(ToolOutput::new(render_listing(&output), &output))
}

async fn file_stat(ctx: &ToolCtx<'_>, args: StatArgs) -> Result<ToolOutput, ToolError> {
    check_path("path", &args.path)?;
    let stat = agent(ctx)
        .await?
        .fs_stat(&args.path, proto::HashMode::Auto)
        .await
        .map_err(|e| file_error(&args.path, e))?;
    let output = StatOutput {
        path: stat.path.clone(),
        kind: kind(stat.file_type),
        size: stat.size,
        mode: format!("{:04o}", stat.mode),
        uid: stat.uid,
        gid: stat.gid,
        modified_at: modified_at(&stat),
        symlink_target: stat.symlink_target,
        sha256: stat.sha256,
    };
    let mut text = format!(
        "{}: {}, {} bytes, mode {}, uid {} gid {}, modified {}",
        output.path,
        kind_word(output.kind),
        output.size,
        output.mode,
        output.uid,
        output.gid,
        output.modified_at
    );
    if let Some(target) = &output.symlink_target {
        text.push_str(&format!("\nsymlink to {target}"));
    }
    if let Some(hash) = &output.sha256 {
        text.push_str(&format!("\nsha256 {hash}"));
    }
    Ok(ToolOutput::new(text, &output))
}

async fn glob(ctx: &ToolCtx<'_>, args: GlobArgs) -> Result<ToolOutput, ToolError> {
    check_path("root", &args.root)?;
    if args.patterns.is_empty() || args.patterns.iter().any(String::is_empty) {
        return Err(ToolError::new(
            "invalid argument `patterns`: give at least one non-empty pattern, e.g. [\"**/*.rs\"]",
        ));
    }
    let request = proto::GlobRequest {
        root: args.root.clone(),
        patterns: args.patterns,
        respect_gitignore: args.respect_gitignore,
        skip_hidden: !args.include_hidden,
        max_results: limit("max_results", args.max_results, 10_000)?,
    };
    let result = agent(ctx)
        .await?
        .fs_glob(request)
        .await
        .map_err(|e| file_error(&args.root, e))?;
    let output = GlobOutput {
        matches: result
            .matches
            .into_iter()
            .map(|m| GlobHit {
                path: m.path,
                kind: kind(m.file_type),
            })
            .collect(),
        truncated: result.truncated,
    };
    let mut lines: Vec<String> = output
        .matches
        .iter()
        .map(|m| match m.kind {
            FileKind::Dir => format!("{}/", shown(&m.path)),
            _ => shown(&m.path).to_owned(),
        })
        .collect();
    if lines.is_empty() {
        lines.push("no matches".into());
    }
    if output.truncated {
        lines.push(format!(
            "[stopped at {} matches; narrow the patterns or the root]",
            output.matches.len()
        ));
    }
    Ok(ToolOutput::new(lines.join("\n"), &output))
}

async fn file_write(ctx: &ToolCtx<'_>, args: WriteArgs) -> Result<ToolOutput, ToolError> {
    check_path("path", &args.path)?;
    let mode = parse_mode(args.mode.as_deref())
        .map_err(|e| ToolError::new(format!("invalid argument `mode`: {e}")))?;
    let request = proto::WriteRequest {
        path: args.path.clone(),
        append: args.append,
        create_parents: args.create_parents,
        mode,
    };
    let result = write(&agent(ctx).await?, request, args.content)
        .await
        .map_err(|e| file_error(&args.path, e))?;
    let output = WriteOutput {
        path: result.stat.path,
        size: result.stat.size,
        bytes_written: result.bytes,
    };
    let verb = if args.append { "appended" } else { "wrote" };
    let text = format!(
        "{verb} {} bytes to {} (file is now {} bytes)",
        output.bytes_written,
        shown(&output.path),
        output.size
    );
    Ok(ToolOutput::new(text, &output))
}

async fn file_edit(ctx: &ToolCtx<'_>, args: EditArgs) -> Result<ToolOutput, ToolError> {
    let path = args.path.as_str();
    check_path("path", path)?;
    // Refuse what can never succeed before touching the sandbox.
    if let Some(problem) = edit_refusal(&args.old_text, &args.new_text) {
        return Err(ToolError::new(format!("cannot edit {path}: {problem}")));
    }
    let agent = agent(ctx).await?;
    let stat = agent
        .fs_stat(path, proto::HashMode::Never)
        .await
        .map_err(|e| file_error(path, e))?;
    match stat.file_type {
        proto::FileType::File => {}
        proto::FileType::Symlink => {
            return Err(ToolError::new(format!(
                "{path} is a symlink to {}; edit its target instead",
                stat.symlink_target.as_deref().unwrap_or("?")
            )));
        }
        other => {
            return Err(ToolError::new(format!(
                "{path} is a {}, not a file",
                kind_word(kind(other))
            )));
        }
    }
    let too_big = |size: u64| {
        ToolError::new(format!(
            "{path} is {size} bytes; file_edit works on files up to 8 MiB. Edit it with a command instead (run_command with sed or a script)"
        ))
    };
    if stat.size > MAX_EDIT {
        return Err(too_big(stat.size));
    }
    let (info, mut stream) = agent
        .fs_read(path, 0, Some(MAX_EDIT + 1))
        .await
        .map_err(|e| file_error(path, e))?;
    if info.stat.size > MAX_EDIT {
        return Err(too_big(info.stat.size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(info.length).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(|e| file_error(path, e))?);
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        ToolError::new(format!(
            "{path} is not UTF-8 text; file_edit only edits text files (file_write replaces a whole file)"
        ))
    })?;
    let (edited, replacements) =
        replace_exact(&text, &args.old_text, &args.new_text, args.replace_all)
            .map_err(|e| ToolError::new(format!("cannot edit {path}: {e}")))?;
    let request = proto::WriteRequest {
        path: path.to_owned(),
        append: false,
        create_parents: false,
        mode: Some(stat.mode),
    };
    let result = write(&agent, request, edited)
        .await
        .map_err(|e| file_error(path, e))?;
    let output = EditOutput {
        path: result.stat.path,
        replacements,
        size: result.stat.size,
    };
    let plural = if replacements == 1 { "" } else { "s" };
    let text = format!(
        "replaced {replacements} occurrence{plural} in {} (now {} bytes)",
        shown(&output.path),
        output.size
    );
    Ok(ToolOutput::new(text, &output))
}

async fn file_delete(ctx: &ToolCtx<'_>, args: DeleteArgs) -> Result<ToolOutput, ToolError> {
    check_path("path", &args.path)?;
    let request = proto::RemoveRequest {
        path: args.path.clone(),
        recursive: args.recursive,
    };
    let summary = agent(ctx)
        .await?
        .fs_remove(request)
        .await
        .map_err(|e| match e {
            ProtoError::Remote {
                code: RemoteCode::NotEmpty,
                ..
            } => ToolError::new(format!(
                "{} is a directory that is not empty; set recursive: true to delete it with everything in it",
                args.path
            )),
            e => file_error(&args.path, e),
        })?;
    let output = DeleteOutput {
        path: args.path,
        removed: summary.removed,
    };
    let plural = if output.removed == 1 { "y" } else { "ies" };
    let text = format!("deleted {} ({} entr{plural})", output.path, output.removed);
    Ok(ToolOutput::new(text, &output))
}

async fn file_move(ctx: &ToolCtx<'_>, args: MoveArgs) -> Result<ToolOutput, ToolError> {
    check_path("from", &args.from)?;
    check_path("to", &args.to)?;
    let request = proto::MoveRequest {
        from: args.from.clone(),
        to: args.to.clone(),
        overwrite: args.overwrite,
    };
    let stat = agent(ctx)
        .await?
        .fs_move(request)
        .await
        .map_err(|e| match e {
            ProtoError::Remote {
                code: RemoteCode::Exists,
                ..
            } if !args.overwrite => ToolError::new(format!(
                "{} already exists; set overwrite: true to replace it",
                args.to
            )),
            e => file_error(
                &format!("{} (or the directory {} would go in)", args.from, args.to),
                e,
            ),
        })?;
    let output = MoveOutput {
        from: args.from,
        to: stat.path,
        kind: kind(stat.file_type),
    };
    let text = format!("moved {} to {}", output.from, shown(&output.to));
    Ok(ToolOutput::new(text, &output))
}

async fn make_directory(ctx: &ToolCtx<'_>, args: MkdirArgs) -> Result<ToolOutput, ToolError> {
    check_path("path", &args.path)?;
    let request = proto::MkdirRequest {
        path: args.path.clone(),
        parents: args.parents,
        mode: None,
    };
    let stat = agent(ctx)
        .await?
        .fs_mkdir(request)
        .await
        .map_err(|e| file_error(&args.path, e))?;
    let output = MkdirOutput { path: stat.path };
    let text = format!("directory {} is there", shown(&output.path));
    Ok(ToolOutput::new(text, &output))
}

async fn grep(ctx: &ToolCtx<'_>, args: GrepArgs) -> Result<ToolOutput, ToolError> {
    check_path("root", &args.root)?;
    if args.pattern.is_empty() {
        return Err(ToolError::new(
            "invalid argument `pattern`: the pattern is empty",
        ));
    }
    let request = proto::GrepRequest {
        root: args.root.clone(),
        pattern: args.pattern,
        fixed_string: args.fixed_string,
        case_insensitive: args.case_insensitive,
        globs: args.globs.unwrap_or_default(),
        respect_gitignore: args.respect_gitignore,
        skip_hidden: !args.include_hidden,
        max_results: limit("max_results", args.max_results, 5000)?,
    };
    let result = agent(ctx)
        .await?
        .fs_grep(request)
        .await
        .map_err(|e| file_error(&args.root, e))?;
    let output = GrepOutput {
        matches: result
            .matches
            .into_iter()
            .map(|m| GrepHit {
                path: m.path,
                line: m.line,
                column: m.column,
                text: m.text,
            })
            .collect(),
        truncated: result.truncated,
        binary_files_skipped: result.binary_files_skipped,
    };
    Ok(ToolOutput::new(render_grep(&output), &output))
}

/// The sandbox's agent, or why there is none.
async fn agent(ctx: &ToolCtx<'_>) -> Result<AgentClient, ToolError> {
    match ctx.state.sandboxes.agent(&ctx.sandbox).await {
        Ok((_, agent)) => Ok(agent),
        Err(e) => Err(service_error(ctx, e)),
    }
}

/// Writes `content` as the whole body of `request`.
async fn write(
    agent: &AgentClient,
    request: proto::WriteRequest,
    content: String,
) -> Result<proto::WriteResult, ProtoError> {
    let body = futures::stream::once(async move { Ok::<_, io::Error>(Bytes::from(content)) });
    agent.fs_write(request, body).await
}

/// Refuses what can never be a path before bothering the agent.
fn check_path(argument: &str, path: &str) -> Result<(), ToolError> {
    match crate::file_args::path_problem(path) {
        Some(problem) => Err(ToolError::new(format!(
            "invalid argument `{argument}`: {problem}"
        ))),
        None => Ok(()),
    }
}

/// A result cap: at least 1, lowered to `max`.
fn limit(argument: &str, value: u32, max: u32) -> Result<u32, ToolError> {
    if value == 0 {
        return Err(ToolError::new(format!(
            "invalid argument `{argument}`: must be at least 1"
        )));
    }
    Ok(value.min(max))
}

/// Octal permission bits (`644`, `0644`, `0o644`) up to `7777`.
fn parse_mode(mode: Option<&str>) -> Result<Option<u32>, String> {
    let Some(text) = mode else {
        return Ok(None);
    };
    match crate::file_args::mode_bits(text) {
        Some(bits) => Ok(Some(bits)),
        None => Err(format!(
            "{text:?} is not octal permission bits such as \"644\" or \"755\""
        )),
    }
}

fn kind(t: proto::FileType) -> FileKind {
    match t {
        proto::FileType::File => FileKind::File,
        proto::FileType::Dir => FileKind::Dir,
        proto::FileType::Symlink => FileKind::Symlink,
        proto::FileType::Other => FileKind::Other,
    }
}

fn modified_at(stat: &proto::FileStat) -> String {
    let since_epoch =
        std::time::Duration::new(stat.mtime_sec.max(0).unsigned_abs(), stat.mtime_nsec);
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since_epoch).to_string()
}

fn list_entry(stat: proto::FileStat) -> ListEntry {
    ListEntry {
        modified_at: modified_at(&stat),
        kind: kind(stat.file_type),
        size: stat.size,
        mode: format!("{:04o}", stat.mode),
        symlink_target: stat.symlink_target,
        path: stat.path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimal_four_come_first_then_the_coding_tools() {
        let defs = defs();
        let names: Vec<&str> = defs.iter().map(|d| d.name).collect();
        assert_eq!(
            names,
            [
                "file_read",
                "file_list",
                "file_stat",
                "glob",
                "file_write",
                "file_edit",
                "file_delete",
                "file_move",
                "make_directory",
                "grep"
            ]
        );
        for def in &defs {
            let minimal = names[..4].contains(&def.name);
            let expected = if minimal {
                Profile::Minimal
            } else {
                Profile::Coding
            };
            assert_eq!(def.profile, expected, "{}", def.name);
            assert_eq!(def.scope, Scope::Sandbox, "{}", def.name);
            assert!(
                !def.hints.read_only || !def.hints.destructive,
                "{}",
                def.name
            );
        }
    }

    #[test]
    fn every_def_is_described_with_object_schemas() {
        for def in defs() {
            assert!(!def.description.trim().is_empty(), "{}", def.name);
            assert!(!def.title.is_empty(), "{}", def.name);
            for schema in [&def.input, &def.output] {
                assert_eq!(
                    schema.get("type").and_then(|t| t.as_str()),
                    Some("object"),
                    "{}",
                    def.name
                );
                let properties = schema.get("properties").and_then(|p| p.as_object());
                let properties =
                    properties.unwrap_or_else(|| panic!("{} has no properties", def.name));
                for (field, property) in properties {
                    let description = property.get("description").and_then(|d| d.as_str());
                    assert!(
                        description.is_some_and(|d| !d.is_empty()),
                        "{}.{field} has no description",
                        def.name
                    );
                }
            }
            assert_eq!(
                def.input.get("additionalProperties"),
                Some(&serde_json::Value::Bool(false)),
                "{}",
                def.name
            );
        }
    }

    #[test]
    fn bad_paths_modes_and_limits_are_refused_before_the_agent() {
        let err = check_path("path", "").expect_err("empty");
        assert_eq!(err.message, "invalid argument `path`: the path is empty");
        let err = check_path("to", "a\0b").expect_err("nul");
        assert!(
            err.message.starts_with("invalid argument `to`:"),
            "{}",
            err.message
        );
        assert!(check_path("path", "src/main.rs").is_ok());
        assert_eq!(parse_mode(Some("755")), Ok(Some(0o755)));
        assert_eq!(parse_mode(Some("0o644")), Ok(Some(0o644)));
        assert_eq!(parse_mode(None), Ok(None));
        for bad in ["", "8", "rwx", "17777"] {
            assert!(parse_mode(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(limit("max_results", 20_000, 5000).expect("lowered"), 5000);
        let err = limit("max_entries", 0, 5000).expect_err("zero");
        assert!(err.message.contains("`max_entries`"), "{}", err.message);
    }
}
