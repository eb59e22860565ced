//! Tables for people: a header row and aligned columns separated by spaces,
//! no borders (as `ovs-ofctl`, `kubectl get`), numbers right-aligned. Built
//! with comfy-table; never wrapped, so a line is a row for `grep`.

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, ContentArrangement, Table as Inner};

pub struct Table {
    inner: Inner,
    numeric: Vec<bool>,
}

impl Table {
    /// A table with these column titles; a title ending in `#` marks a
    /// numeric column (right-aligned), and the `#` is not shown. The first
    /// column is always left-aligned, so a row starts with its key
    /// (`grep '^77 '`).
    pub fn new(titles: &[&str]) -> Table {
        let mut inner = Inner::new();
        inner.load_preset(NOTHING).set_content_arrangement(ContentArrangement::Disabled);
        let numeric: Vec<bool> =
            titles.iter().enumerate().map(|(i, t)| i > 0 && t.ends_with('#')).collect();
        inner.set_header(titles.iter().map(|t| t.trim_end_matches('#')));
        let mut t = Table { inner, numeric };
        t.align();
        t
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Table {
        let cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        self.inner.add_row(cells);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.inner.row_count() == 0
    }

    fn align(&mut self) {
        for (i, n) in self.numeric.iter().enumerate() {
            if let Some(c) = self.inner.column_mut(i) {
                c.set_cell_alignment(if *n { CellAlignment::Right } else { CellAlignment::Left });
            }
        }
    }

    /// The table as lines, each ending in a newline, trailing blanks trimmed.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for line in self.inner.lines() {
            // The preset pads every cell by one blank: drop the first and
            // the trailing ones so a row starts with its first cell.
            let line = line.strip_prefix(' ').unwrap_or(&line);
            s += line.trim_end();
            s.push('\n');
        }
        s
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// `n` seconds ago, in words: `never` for none.
pub fn ago(secs: Option<u64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) if s < 120 => format!("{s}s ago"),
        Some(s) if s < 2 * 3600 => format!("{}m ago", s / 60),
        Some(s) if s < 2 * 86400 => format!("{}h ago", s / 3600),
        Some(s) => format!("{}d ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let mut t = Table::new(&["name", "packets#"]);
        t.row(["a", "1"]).row(["longer-name", "12345"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("name "), "{text}");
        assert!(lines[1].starts_with("a ") && lines[1].ends_with(" 1"), "{text}");
        assert!(lines[2].starts_with("longer-name ") && lines[2].ends_with("12345"), "{text}");
        // Each column starts at the same offset on every line.
        let col = lines[2].find("12345").unwrap();
        assert_eq!(lines[1].len(), col + 5, "{text}");
        assert_eq!(lines[0].find("packets").unwrap(), col - 2, "{text}");
    }

    #[test]
    fn ages_in_words() {
        assert_eq!(ago(None), "never");
        assert_eq!(ago(Some(5)), "5s ago");
        assert_eq!(ago(Some(600)), "10m ago");
        assert_eq!(ago(Some(3 * 86400)), "3d ago");
    }
}
