//! Keeps long text small enough for a model: the head and the tail survive, the middle
//! is replaced by a note saying how much was cut, so errors at the end of a long build
//! log stay visible.

/// Text kept of one command stream (stdout or stderr) in a tool result.
pub const STREAM_BUDGET: usize = 16 * 1024;

/// `text` cut to about `budget` bytes: the first third and the last two thirds of the
/// budget, at line boundaries where one is near, with a note of what went missing. The
/// second value is the number of bytes cut (0 when nothing was).
pub fn head_tail(text: &str, budget: usize) -> (String, usize) {
    if text.len() <= budget {
        return (text.to_owned(), 0);
    }
    let head_end = floor_char(text, budget / 3);
    let head_end = text[..head_end].rfind('\n').map_or(head_end, |i| i + 1);
    let tail_start = ceil_char(text, text.len() - (budget - budget / 3));
    let tail_start = text[tail_start..]
        .find('\n')
        .map(|i| tail_start + i + 1)
        .filter(|&i| i < text.len())
        .unwrap_or(tail_start);
    let cut = &text[head_end..tail_start];
    let lines = cut.matches('\n').count();
    let note = format!(
        "\n[... {} bytes ({lines} lines) cut from the middle ...]\n",
        cut.len()
    );
    (
        format!("{}{note}{}", &text[..head_end], &text[tail_start..]),
        cut.len(),
    )
}

fn floor_char(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(head_tail("hello\n", 100), ("hello\n".to_owned(), 0));
    }

    #[test]
    fn long_text_keeps_head_and_tail_and_says_what_was_cut() {
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let (kept, cut) = head_tail(&text, 300);
        assert!(kept.starts_with("line 0\nline 1\n"), "{kept}");
        assert!(kept.ends_with("line 998\nline 999\n"), "{kept}");
        assert!(cut > 0 && cut < text.len());
        assert!(kept.contains(&format!("[... {cut} bytes")), "{kept}");
        assert!(kept.len() < 400, "{}", kept.len());
        // Whole lines only on both sides of the note.
        let (head, rest) = kept.split_once("\n[...").expect("note");
        assert!(head.lines().all(|l| l.starts_with("line ")));
        let tail = rest.split_once("...]\n").expect("note end").1;
        assert!(tail.lines().all(|l| l.starts_with("line ")), "{tail}");
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let text = "é".repeat(1000);
        let (kept, cut) = head_tail(&text, 101);
        assert!(cut > 0);
        assert!(kept.starts_with('é') && kept.ends_with('é'));
    }
}
