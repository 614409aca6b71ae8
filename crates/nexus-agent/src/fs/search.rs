//! `fs_glob` and `fs_grep` with the ripgrep crates: `ignore`'s walker (symlinks not
//! followed, `.gitignore` only when asked, hidden files unless asked), `globset`, and
//! `grep-searcher` + `grep-regex` (binary files, those with a NUL byte, skipped).
//!
//! The root is checked through `openat2` (no magic links); the walk below it is by path,
//! as the `ignore` crate works, without following any symlink.

use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};
use grep_matcher::Matcher as _;
use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkMatch};
use ignore::WalkBuilder;
use nexus_agent_proto::ErrorCode;
use nexus_agent_proto::fs::{
    FileType, GlobMatch, GlobRequest, GlobResult, GrepMatch, GrepRequest, GrepResult, MAX_GREP_LINE,
};
use nix::fcntl::OFlag;

use super::path::FsPath;
use crate::procs::Refusal;

/// `fs_glob`.
pub fn glob(workdir: &Path, request: &GlobRequest) -> Result<GlobResult, Refusal> {
    let root = FsPath::new(workdir, &request.root)?;
    root.open(OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    let set = glob_set(&request.patterns)?;
    let max = request.max_results as usize;
    let mut matches = Vec::new();
    let mut truncated = false;
    for entry in walker(&root.abs, request.respect_gitignore, request.skip_hidden) {
        let Ok(entry) = entry else { continue };
        if entry.depth() == 0 {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(&root.abs) else {
            continue;
        };
        if !set.is_match(rel) {
            continue;
        }
        if matches.len() >= max {
            truncated = true;
            break;
        }
        matches.push(GlobMatch {
            path: entry.path().to_string_lossy().into_owned(),
            file_type: entry.file_type().map_or(FileType::Other, |t| {
                if t.is_file() {
                    FileType::File
                } else if t.is_dir() {
                    FileType::Dir
                } else if t.is_symlink() {
                    FileType::Symlink
                } else {
                    FileType::Other
                }
            }),
        });
    }
    matches.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(GlobResult { matches, truncated })
}

/// `fs_grep`.
pub fn grep(workdir: &Path, request: &GrepRequest) -> Result<GrepResult, Refusal> {
    let root = FsPath::new(workdir, &request.root)?;
    root.open(OFlag::O_PATH)?;
    let filter = if request.globs.is_empty() {
        None
    } else {
        Some(glob_set(&request.globs)?)
    };
    let matcher = RegexMatcherBuilder::new()
        .case_insensitive(request.case_insensitive)
        .fixed_strings(request.fixed_string)
        .build(&request.pattern)
        .map_err(|e| {
            Refusal::new(
                ErrorCode::BadRequest,
                format!("pattern {:?} is not a valid regex: {e}", request.pattern),
            )
        })?;
    let mut searcher = SearcherBuilder::new()
        .binary_detection(BinaryDetection::quit(b'\x00'))
        .line_number(true)
        .build();
    let max = request.max_results as usize;
    let mut result = GrepResult {
        matches: Vec::new(),
        truncated: false,
        binary_files_skipped: 0,
    };
    for entry in walker(&root.abs, request.respect_gitignore, request.skip_hidden) {
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        if let Some(filter) = &filter {
            let rel = entry.path().strip_prefix(&root.abs).unwrap_or(entry.path());
            let name = entry.path().file_name().map(Path::new);
            if !filter.is_match(rel) && !name.is_some_and(|n| filter.is_match(n)) {
                continue;
            }
        }
        let mut sink = FileSink {
            matcher: &matcher,
            path: entry.path().to_string_lossy().into_owned(),
            matches: Vec::new(),
            room: max.saturating_sub(result.matches.len()),
            binary: false,
            full: false,
        };
        if searcher
            .search_path(&matcher, entry.path(), &mut sink)
            .is_err()
        {
            continue; // Unreadable: skipped like ripgrep does.
        }
        if sink.binary {
            result.binary_files_skipped += 1;
            continue;
        }
        result.matches.append(&mut sink.matches);
        if sink.full {
            result.truncated = true;
            break;
        }
    }
    Ok(result)
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, Refusal> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|e| {
            Refusal::new(
                ErrorCode::BadRequest,
                format!("{pattern:?} is not a valid glob: {e}"),
            )
        })?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("invalid glob patterns: {e}")))
}

/// A sorted, single-threaded walk below `root` that never follows symlinks.
fn walker(root: &Path, gitignore: bool, skip_hidden: bool) -> ignore::Walk {
    WalkBuilder::new(root)
        .follow_links(false)
        .hidden(skip_hidden)
        .ignore(gitignore)
        .git_ignore(gitignore)
        .git_exclude(gitignore)
        .git_global(false)
        .parents(gitignore)
        .require_git(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .build()
}

/// Collects one file's matches; a binary file's are dropped by the caller.
struct FileSink<'a> {
    matcher: &'a RegexMatcher,
    path: String,
    matches: Vec<GrepMatch>,
    /// Matches still allowed before the cap.
    room: usize,
    binary: bool,
    /// The cap was reached with more matches left.
    full: bool,
}

impl Sink for FileSink<'_> {
    type Error = std::io::Error;

    fn matched(&mut self, _: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, std::io::Error> {
        if self.matches.len() >= self.room {
            self.full = true;
            return Ok(false);
        }
        let mut line = mat.bytes();
        while let Some((&last, rest)) = line.split_last() {
            if last == b'\n' || last == b'\r' {
                line = rest;
            } else {
                break;
            }
        }
        let column = self
            .matcher
            .find(line)
            .ok()
            .flatten()
            .map_or(1, |m| m.start() as u64 + 1);
        self.matches.push(GrepMatch {
            path: self.path.clone(),
            line: mat.line_number().unwrap_or(0),
            column,
            text: cut(&String::from_utf8_lossy(line), MAX_GREP_LINE),
        });
        Ok(true)
    }

    fn binary_data(&mut self, _: &Searcher, _: u64) -> Result<bool, std::io::Error> {
        self.binary = true;
        Ok(false)
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_respects_character_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("abc", 10), "abc");
    }
}
