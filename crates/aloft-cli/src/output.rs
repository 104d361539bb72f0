//! Output: aligned text tables for people, JSON for scripts, and the
//! lowercase words used for wire enums in both.

use std::io::Write;

use aloft_protocol::pb;
use serde::Serialize;

/// Whether commands print tables (default) or JSON (`--json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns and `key: value` lines.
    Human,
    /// One JSON document on stdout.
    Json,
}

/// A table with a header row; columns are padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells render empty, extra cells are kept.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there are no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text: columns separated by two spaces, no trailing
    /// whitespace, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map_or("", String::as_str);
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) -> anyhow::Result<()> {
        write_stdout(&self.render())
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(&text)
}

/// Prints `key: value` lines with the values aligned.
pub fn print_fields(fields: &[(&str, String)]) -> anyhow::Result<()> {
    write_stdout(&render_fields(fields))
}

/// Renders `key: value` lines with the values aligned.
pub fn render_fields(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in fields {
        out.push_str(&format!(
            "{:<width$}  {value}",
            format!("{key}:"),
            width = width + 1
        ));
        out.push('\n');
    }
    out
}

/// Prints `text` as is on stdout (a closed pipe is not an error).
pub fn print_text(text: &str) -> anyhow::Result<()> {
    write_stdout(text)
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `aloft device list | head` closing the pipe is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A device status as a lowercase word.
pub fn status_word(status: i32) -> &'static str {
    match pb::DeviceStatus::try_from(status) {
        Ok(pb::DeviceStatus::Registered) => "registered",
        Ok(pb::DeviceStatus::Idle) => "idle",
        Ok(pb::DeviceStatus::Offered) => "offered",
        Ok(pb::DeviceStatus::Installed) => "installed",
        Ok(pb::DeviceStatus::Updated) => "updated",
        Ok(pb::DeviceStatus::Failed) => "failed",
        Ok(pb::DeviceStatus::RolledBack) => "rolled_back",
        Ok(pb::DeviceStatus::Revoked) => "revoked",
        Ok(pb::DeviceStatus::Unspecified) | Err(_) => "unknown",
    }
}

/// A token role as a lowercase word.
pub fn role_word(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Viewer) => "viewer",
        Ok(pb::Role::Operator) => "operator",
        Ok(pb::Role::Admin) => "admin",
        Ok(pb::Role::Factory) => "factory",
        Ok(pb::Role::Unspecified) | Err(_) => "unknown",
    }
}

/// A slot as a lowercase letter, or `None` when the device has not said.
pub fn slot_word(slot: i32) -> Option<&'static str> {
    match pb::Slot::try_from(slot) {
        Ok(pb::Slot::A) => Some("a"),
        Ok(pb::Slot::B) => Some("b"),
        Ok(pb::Slot::Unspecified) | Err(_) => None,
    }
}

/// `None` for an empty string, so JSON shows `null` rather than `""`.
pub fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// `None` for a zero time, so JSON shows `null` for "never".
pub fn non_zero(t: u64) -> Option<u64> {
    (t != 0).then_some(t)
}

/// `-` for an empty cell, so columns stay readable.
pub fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

/// A byte count with a binary unit: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let mut t = Table::new(&["ID", "STATUS", "LAST SEEN"]);
        t.row(vec!["dev-1".into(), "idle".into(), "5m ago".into()]);
        t.row(vec![
            "device-long-id".into(),
            "registered".into(),
            "never".into(),
        ]);
        assert_eq!(
            t.render(),
            "ID              STATUS      LAST SEEN\n\
             dev-1           idle        5m ago\n\
             device-long-id  registered  never\n"
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn table_handles_ragged_rows_and_unicode() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["é".into()]);
        t.row(vec!["x".into(), "y".into(), "extra".into()]);
        assert_eq!(t.render(), "A  B\né\nx  y  extra\n");
    }

    #[test]
    fn empty_table_prints_its_header() {
        let t = Table::new(&["ID", "NAME"]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "ID  NAME\n");
    }

    #[test]
    fn fields_align_values() {
        let text = render_fields(&[("id", "d1".into()), ("status", "idle".into())]);
        assert_eq!(text, "id:      d1\nstatus:  idle\n");
    }

    #[test]
    fn enum_words_are_lowercase() {
        assert_eq!(
            status_word(pb::DeviceStatus::RolledBack as i32),
            "rolled_back"
        );
        assert_eq!(status_word(99), "unknown");
        assert_eq!(role_word(pb::Role::Operator as i32), "operator");
        assert_eq!(slot_word(pb::Slot::B as i32), Some("b"));
        assert_eq!(slot_word(0), None);
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 * 1024 * 1024), "12.0 MiB");
    }
}
