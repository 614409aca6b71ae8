//! The text of the file tools: what a model reads back (listings, matches, file
//! content) and the exact-text replacement of `file_edit`, all pure functions.

use base64::Engine as _;

use super::schema::{Encoding, FileKind, GrepOutput, ListOutput, ReadOutput};

/// `text` with `old` replaced by `new`: exactly one occurrence, or every one with
/// `replace_all`. Returns the new text and the number of replacements, or why not.
pub fn replace_exact(
    text: &str,
    old: &str,
    new: &str,
    replace_all: bool,
) -> Result<(String, usize), String> {
    if let Some(problem) = edit_refusal(old, new) {
        return Err(problem.into());
    }
    let starts: Vec<usize> = text.match_indices(old).map(|(i, _)| i).collect();
    match starts.len() {
        0 => Err("old_text was not found; read the file and copy the exact text, including whitespace and indentation".into()),
        1 => Ok((text.replacen(old, new, 1), 1)),
        n if replace_all => Ok((text.replace(old, new), n)),
        n => {
            let lines: Vec<String> = starts
                .iter()
                .take(5)
                .map(|&i| (text[..i].matches('\n').count() + 1).to_string())
                .collect();
            let more = if n > 5 { ", ..." } else { "" };
            Err(format!(
                "old_text occurs {n} times (at lines {}{more}); add surrounding lines to old_text to make it unique, or set replace_all to replace every occurrence",
                lines.join(", ")
            ))
        }
    }
}

/// Why an edit of `old` into `new` can never be carried out, whatever the file holds.
pub(super) fn edit_refusal(old: &str, new: &str) -> Option<&'static str> {
    if old.is_empty() {
        Some("old_text is empty; give the exact text to replace")
    } else if old == new {
        Some("old_text and new_text are the same, so nothing would change")
    } else {
        None
    }
}

/// The result of a read of `bytes` at `offset` of a `size`-byte file. A multi-byte
/// character cut by the end of the range is left for the next read, so text stays text.
pub(super) fn read_output(path: String, size: u64, offset: u64, mut bytes: Vec<u8>) -> ReadOutput {
    let continues = |len: usize| offset + (len as u64) < size;
    if let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
        && e.valid_up_to() > 0
        && continues(bytes.len())
    {
        bytes.truncate(e.valid_up_to());
    }
    let length = bytes.len() as u64;
    let next_offset = continues(bytes.len()).then_some(offset + length);
    let (encoding, content) = match String::from_utf8(bytes) {
        Ok(text) => (Encoding::Utf8, text),
        Err(e) => (
            Encoding::Base64,
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
        ),
    };
    ReadOutput {
        path,
        size,
        offset,
        length,
        encoding,
        content,
        next_offset,
    }
}

/// What a model reads of a `file_read`: the text itself, and where to continue.
pub(super) fn render_read(out: &ReadOutput) -> String {
    let mut text = match out.encoding {
        Encoding::Utf8 if out.length > 0 => out.content.clone(),
        Encoding::Utf8 if out.size == 0 => "[empty file]".to_owned(),
        Encoding::Utf8 => format!(
            "[no bytes at offset {}: the file is {} bytes]",
            out.offset, out.size
        ),
        Encoding::Base64 => format!(
            "[not UTF-8 text: {} bytes from offset {}, as base64]\n{}",
            out.length, out.offset, out.content
        ),
    };
    if let Some(next) = out.next_offset {
        text.push_str(&format!(
            "\n[file continues: {} more bytes; read again with offset {next}]",
            out.size - next
        ));
    }
    text
}

/// One entry a line: `file 1234  src/main.rs`, `dir  src/`, `link  a -> b`.
pub(super) fn render_listing(out: &ListOutput) -> String {
    let mut lines: Vec<String> = out
        .entries
        .iter()
        .map(|e| {
            let path = shown(&e.path);
            match e.kind {
                FileKind::File => format!("file {}  {path}", e.size),
                FileKind::Dir => format!("dir  {path}/"),
                FileKind::Symlink => match &e.symlink_target {
                    Some(target) => format!("link  {path} -> {target}"),
                    None => format!("link  {path}"),
                },
                FileKind::Other => format!("other  {path}"),
            }
        })
        .collect();
    if lines.is_empty() {
        lines.push("(empty directory)".into());
    }
    if out.truncated {
        lines.push(format!(
            "[listing stopped at {} entries; list a subdirectory, lower depth or raise max_entries]",
            out.entries.len()
        ));
    }
    lines.join("\n")
}

/// One match a line, `path:line:column: text`, each text cut at 300 characters.
pub(super) fn render_grep(out: &GrepOutput) -> String {
    let mut lines: Vec<String> = out
        .matches
        .iter()
        .map(|m| {
            let text = match m.text.char_indices().nth(300) {
                Some((cut, _)) => format!("{}...", &m.text[..cut]),
                None => m.text.clone(),
            };
            format!("{}:{}:{}: {text}", shown(&m.path), m.line, m.column)
        })
        .collect();
    if lines.is_empty() {
        lines.push("no matches".into());
    }
    if out.truncated {
        lines.push(format!(
            "[stopped at {} matches; narrow the pattern, root or globs]",
            out.matches.len()
        ));
    }
    if out.binary_files_skipped > 0 {
        lines.push(format!(
            "[{} binary files skipped]",
            out.binary_files_skipped
        ));
    }
    lines.join("\n")
}

/// A path as printed for the model: relative to `/workspace` when under it.
pub(super) fn shown(path: &str) -> &str {
    match path.strip_prefix("/workspace/") {
        Some(rest) if !rest.is_empty() => rest,
        _ => path,
    }
}

/// What a path is, in words.
pub(super) fn kind_word(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Dir => "directory",
        FileKind::Symlink => "symlink",
        FileKind::Other => "special file",
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::{GrepHit, ListEntry};
    use super::*;

    #[test]
    fn one_occurrence_is_replaced() {
        let (text, n) = replace_exact("a\nfoo(1)\nb\n", "foo(1)", "foo(2)", false).expect("unique");
        assert_eq!((text.as_str(), n), ("a\nfoo(2)\nb\n", 1));
        // `replace_all` with a single occurrence is fine too.
        let (text, n) = replace_exact("x y", "y", "z", true).expect("unique");
        assert_eq!((text.as_str(), n), ("x z", 1));
    }

    #[test]
    fn missing_text_says_to_copy_it_exactly() {
        let err =
            replace_exact("fn main() {}\n", "fn  main", "fn start", false).expect_err("absent");
        assert!(err.starts_with("old_text was not found"), "{err}");
        assert!(err.contains("whitespace and indentation"), "{err}");
    }

    #[test]
    fn several_occurrences_need_replace_all_and_are_located() {
        let text = "x = 1\ny = 2\nx = 1\n\nx = 1\n";
        let err = replace_exact(text, "x = 1", "x = 3", false).expect_err("ambiguous");
        assert!(err.contains("occurs 3 times (at lines 1, 3, 5)"), "{err}");
        assert!(err.contains("replace_all"), "{err}");
        let (edited, n) = replace_exact(text, "x = 1", "x = 3", true).expect("replace all");
        assert_eq!(n, 3);
        assert_eq!(edited, "x = 3\ny = 2\nx = 3\n\nx = 3\n");
        let many = "a\n".repeat(7);
        let err = replace_exact(&many, "a", "b", false).expect_err("ambiguous");
        assert!(
            err.contains("7 times (at lines 1, 2, 3, 4, 5, ...)"),
            "{err}"
        );
    }

    #[test]
    fn empty_or_unchanged_old_text_is_refused() {
        let err = replace_exact("abc", "", "x", true).expect_err("empty");
        assert!(err.contains("old_text is empty"), "{err}");
        let err = replace_exact("abc", "b", "b", false).expect_err("same");
        assert!(err.contains("the same"), "{err}");
    }

    #[test]
    fn listing_is_one_compact_line_per_entry() {
        let entry = |path: &str, kind, size, target: Option<&str>| ListEntry {
            path: path.into(),
            kind,
            size,
            mode: "0644".into(),
            modified_at: "2025-01-01T00:00:00.000Z".into(),
            symlink_target: target.map(Into::into),
        };
        let out = ListOutput {
            entries: vec![
                entry("/workspace/src", FileKind::Dir, 4096, None),
                entry("/workspace/src/main.rs", FileKind::File, 1234, None),
                entry("/workspace/latest", FileKind::Symlink, 3, Some("src")),
                entry("/tmp/fifo", FileKind::Other, 0, None),
            ],
            truncated: true,
        };
        let text = render_listing(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "dir  src/",
                "file 1234  src/main.rs",
                "link  latest -> src",
                "other  /tmp/fifo"
            ]
        );
        assert!(lines[4].contains("stopped at 4 entries"), "{text}");
        let empty = ListOutput {
            entries: Vec::new(),
            truncated: false,
        };
        assert_eq!(render_listing(&empty), "(empty directory)");
    }

    #[test]
    fn reads_say_where_to_continue_and_keep_text_whole() {
        let out = read_output("a.txt".into(), 10, 0, b"hello".to_vec());
        assert_eq!((out.encoding, out.next_offset), (Encoding::Utf8, Some(5)));
        assert_eq!(
            render_read(&out),
            "hello\n[file continues: 5 more bytes; read again with offset 5]"
        );
        // "é" cut in half at the end of the range is left for the next read.
        let out = read_output("b.txt".into(), 4, 0, "abé".as_bytes()[..3].to_vec());
        assert_eq!(
            (out.content.as_str(), out.length, out.next_offset),
            ("ab", 2, Some(2))
        );
        let out = read_output("c.bin".into(), 3, 0, vec![0xff, 0, 1]);
        assert_eq!(
            (out.encoding, out.content.as_str(), out.next_offset),
            (Encoding::Base64, "/wAB", None)
        );
        assert!(render_read(&out).starts_with("[not UTF-8 text: 3 bytes"));
        let out = read_output("d.txt".into(), 3, 9, Vec::new());
        assert_eq!((out.length, out.next_offset), (0, None));
        assert!(render_read(&out).contains("the file is 3 bytes"));
    }

    #[test]
    fn grep_lines_are_located_and_capped() {
        let out = GrepOutput {
            matches: vec![GrepHit {
                path: "/workspace/src/lib.rs".into(),
                line: 3,
                column: 5,
                text: "é".repeat(400),
            }],
            truncated: false,
            binary_files_skipped: 2,
        };
        let text = render_grep(&out);
        let first = text.lines().next().expect("a line");
        assert!(first.starts_with("src/lib.rs:3:5: éé"), "{first}");
        assert_eq!(first.chars().filter(|&c| c == 'é').count(), 300);
        assert!(text.ends_with("[2 binary files skipped]"), "{text}");
    }
}
