//! Human output: aligned tables that stream, `field  value` blocks, and times relative to now ("3m ago",
//! "in 2d"). Machine output (`--json`) never comes through here: it is the gateway's bytes, piped through.

use std::io::{self, Write};

use opgate_client::Timestamp;

/// Rows a table holds back to size its columns; later rows reuse those widths, so memory stays flat however
/// long the stream (a wider value just pushes its row's later cells right).
const SIZING_ROWS: usize = 200;

/// A table printed as its rows arrive: header and the first rows once [`SIZING_ROWS`] are in (or at the
/// end), then every row at once.
pub struct Table<W: Write> {
    out: W,
    header: Vec<&'static str>,
    pending: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
}

impl<W: Write> Table<W> {
    pub fn new(out: W, header: &[&'static str]) -> Self {
        Table {
            out,
            header: header.to_vec(),
            pending: Vec::new(),
            widths: None,
        }
    }

    pub fn row(&mut self, cells: Vec<String>) -> io::Result<()> {
        match &self.widths {
            Some(widths) => {
                let widths = widths.clone();
                write_row(&mut self.out, &widths, &cells)
            }
            None => {
                self.pending.push(cells);
                if self.pending.len() >= SIZING_ROWS {
                    self.flush_pending()?;
                }
                Ok(())
            }
        }
    }

    /// Prints whatever is held back (the header at least) and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.widths.is_none() {
            self.flush_pending()?;
        }
        self.out.flush()
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.pending {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        write_row(&mut self.out, &widths, &header)?;
        for row in std::mem::take(&mut self.pending) {
            write_row(&mut self.out, &widths, &row)?;
        }
        self.widths = Some(widths);
        self.out.flush()
    }
}

fn write_row<W: Write>(out: &mut W, widths: &[usize], cells: &[String]) -> io::Result<()> {
    let mut line = String::new();
    let last = cells.len().saturating_sub(1);
    for (i, cell) in cells.iter().enumerate() {
        line.push_str(cell);
        if i < last {
            let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

/// `field  value` lines, the values aligned.
pub fn fields<W: Write>(out: &mut W, pairs: &[(&str, String)]) -> io::Result<()> {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in pairs {
        writeln!(out, "{key:width$}  {value}")?;
    }
    out.flush()
}

/// `3m ago`, `in 2d`, `just now`: the distance from `now` (unix seconds) in its largest whole unit.
pub fn relative(at: Timestamp, now: i64) -> String {
    let delta = at.unix() - now;
    let span = delta.unsigned_abs();
    if span < 5 {
        return "just now".into();
    }
    let amount = match span {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3_600),
        s if s < 365 * 86_400 => format!("{}d", s / 86_400),
        s => format!("{}y", s / (365 * 86_400)),
    };
    if delta < 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A relative time for a table cell, or `none` when unset.
pub fn when(at: Option<Timestamp>, now: i64, none: &str) -> String {
    at.map_or_else(|| none.to_owned(), |t| relative(t, now))
}

/// The exact time and how far it is, for a `field  value` block, or `none` when unset.
pub fn when_exact(at: Option<Timestamp>, now: i64, none: &str) -> String {
    at.map_or_else(
        || none.to_owned(),
        |t| format!("{} ({})", t.to_rfc3339(), relative(t, now)),
    )
}

/// A list for humans: `a,b`, or `none` when empty.
pub fn list(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(",")
    }
}

/// An optional value, or `none`.
pub fn or<T: ToString>(value: Option<T>, none: &str) -> String {
    value.map_or_else(|| none.to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = 1_000_000_000;
        let at = |d: i64| relative(Timestamp(now + d), now);
        assert_eq!(at(0), "just now");
        assert_eq!(at(-30), "30s ago");
        assert_eq!(at(-180), "3m ago");
        assert_eq!(at(-7_200), "2h ago");
        assert_eq!(at(2 * 86_400 + 5), "in 2d");
        assert_eq!(at(90 * 86_400), "in 90d");
        assert_eq!(at(-800 * 86_400), "2y ago");
    }

    #[test]
    fn tables_align_and_stream() {
        let mut out = Vec::new();
        let mut t = Table::new(&mut out, &["ID", "NAME", "STATUS"]);
        t.row(vec!["key_1".into(), "a-long-name".into(), "active".into()])
            .unwrap();
        t.row(vec!["key_22".into(), "b".into(), "revoked".into()])
            .unwrap();
        t.finish().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID      NAME         STATUS\nkey_1   a-long-name  active\nkey_22  b            revoked\n"
        );

        // Past the sizing rows, rows are written at once with the widths already chosen.
        let mut out = Vec::new();
        let mut t = Table::new(&mut out, &["N", "X"]);
        for i in 0..SIZING_ROWS + 3 {
            t.row(vec![i.to_string(), "x".into()]).unwrap();
        }
        t.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), SIZING_ROWS + 4);
        assert!(text.ends_with("\n202  x\n"), "{text}");
    }
}
