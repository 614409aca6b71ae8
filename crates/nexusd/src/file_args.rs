//! Checks of file-API arguments shared by the REST handlers and the MCP tools, so both
//! refuse the same inputs for the same reasons.

/// Why `path` can never name a file, if it cannot.
pub fn path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        Some("the path is empty".into())
    } else if path.contains('\0') {
        Some(format!("the path {path:?} contains a NUL byte"))
    } else {
        None
    }
}

/// Octal permission bits (`644`, `0644`, `0o644`) up to `7777`; `None` when `text` is not.
pub fn mode_bits(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(bits) if bits <= 0o7777 && !digits.is_empty() => Some(bits),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_bits_up_to_7777() {
        assert_eq!(mode_bits("644"), Some(0o644));
        assert_eq!(mode_bits("0o755"), Some(0o755));
        for bad in ["", "0o", "8", "17777", "rw-"] {
            assert_eq!(mode_bits(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn empty_and_nul_paths_are_refused() {
        assert!(path_problem("").is_some());
        assert!(path_problem("a\0b").is_some());
        assert_eq!(path_problem("/workspace/a"), None);
    }
}
