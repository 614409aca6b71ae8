//! The only place `nexusctl` writes results: JSON for scripts, plain text for people.

use std::io::{IsTerminal, Write};

use serde::Serialize;

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// JSON instead of text.
    pub json: bool,
    /// ANSI colour allowed (a terminal, and `NO_COLOR` unset).
    pub color: bool,
}

impl Output {
    /// Output settings for this process.
    pub fn new(json: bool) -> Self {
        let color = std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
        Self { json, color }
    }

    /// Prints a value as pretty JSON.
    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut text = serde_json::to_string_pretty(value)?;
        text.push('\n');
        self.text(&text)
    }

    /// Prints a value as one line of compact JSON (a stream of samples, one per line).
    pub fn json_line<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut text = serde_json::to_string(value)?;
        text.push('\n');
        self.text(&text)
    }

    /// Prints text as is.
    pub fn text(&self, text: &str) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            // A closed pipe (`nexusctl ... | head`) is not an error worth reporting.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => Ok(other?),
        }
    }

    /// Prints text in place of the previous screen on a terminal (a live view such as
    /// `sandbox stats --watch`); elsewhere, as the next block after a blank line.
    pub fn redraw(&self, text: &str, first: bool) -> anyhow::Result<()> {
        if std::io::stdout().is_terminal() {
            self.text(&format!("\x1b[H\x1b[2J{text}"))
        } else if first {
            self.text(text)
        } else {
            self.text(&format!("\n{text}"))
        }
    }

    /// Wraps text in a colour when colour is allowed.
    pub fn paint(&self, text: &str, color: Color) -> String {
        if self.color {
            format!("\x1b[{}m{text}\x1b[0m", color as u8)
        } else {
            text.to_owned()
        }
    }
}

/// Writes a command's raw output bytes (stdout or stderr) as they come. A closed pipe
/// (`nexusctl exec ... | head`) is not an error worth reporting.
pub fn write_raw(w: &mut impl Write, bytes: &[u8]) -> anyhow::Result<()> {
    match w.write_all(bytes).and_then(|()| w.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// ANSI colours used.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub enum Color {
    /// Success.
    Green = 32,
    /// Problems.
    Red = 31,
    /// Labels.
    Dim = 2,
}

/// Renders a byte count the way people read it: `512 B`, `4.0 KiB`, `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A borderless table with this header, the shape of every `list` command's output.
pub fn plain_table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled);
    table.set_header(header.iter().copied());
    table
}

/// A table as text: two spaces between columns, no trailing blanks, a final newline.
pub fn render_table(mut table: comfy_table::Table) -> String {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    format!(
        "{}\n",
        table
            .to_string()
            .lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// How long ago an RFC 3339 time was, e.g. `5m 2s`; `-` when it cannot be read.
pub fn age(rfc3339: &str) -> String {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map_or_else(|| "-".into(), |d| human_duration(d.as_secs()))
}

/// Renders seconds as `3d 4h`, `5m 2s` or `42s`.
pub fn human_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(4096), "4.0 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }

    #[test]
    fn durations_keep_two_units() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(302), "5m 2s");
        assert_eq!(human_duration(3 * 3600 + 61), "3h 1m");
        assert_eq!(human_duration(2 * 86_400 + 3600), "2d 1h");
    }
}
