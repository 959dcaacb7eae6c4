//! Human output: aligned tables that stream, `field  value` blocks, and times relative to now ("3m ago",
//! "in 2d"). Every value printed here goes through [`sanitize`]. Machine output (`--json`) never comes through
//! here: it is the gateway's bytes, piped through.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use opgate_client::Timestamp;

/// Rows a table holds back to size its columns; later rows reuse those widths, so memory stays flat however
/// long the stream (a wider value just pushes its row's later cells right).
const SIZING_ROWS: usize = 200;

/// A table printed as its rows arrive: header and the first rows once [`SIZING_ROWS`] are in (or at the
/// end), then every row at once.
pub(super) struct Table<W: Write> {
    out: W,
    header: Vec<&'static str>,
    pending: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
}

impl<W: Write> Table<W> {
    pub(super) fn new(out: W, header: &[&'static str]) -> Self {
        Table {
            out,
            header: header.to_vec(),
            pending: Vec::new(),
            widths: None,
        }
    }

    /// Adds a row; its cells are escaped with [`sanitize`] first, so widths are those of the escaped text.
    pub(super) fn row(&mut self, cells: Vec<String>) -> io::Result<()> {
        let cells: Vec<String> = cells
            .into_iter()
            .map(|c| match sanitize(&c) {
                Cow::Borrowed(_) => c,
                Cow::Owned(escaped) => escaped,
            })
            .collect();
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
    pub(super) fn finish(&mut self) -> io::Result<()> {
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

/// `field  value` lines, the values aligned and escaped with [`sanitize`].
pub(super) fn fields<W: Write>(out: &mut W, pairs: &[(&str, String)]) -> io::Result<()> {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in pairs {
        writeln!(out, "{key:width$}  {}", sanitize(value))?;
    }
    out.flush()
}

/// Text from the gateway made safe for a terminal: control characters (C0, DEL, C1), bidi controls and line
/// or paragraph separators become visible escapes (`\n`, `\x1b`, `\u{202e}`), so a value cannot move the
/// cursor, set the clipboard (OSC 52), fake a line or reorder what follows it. Anything else is kept as is.
pub(super) fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON from serde_json made safe for a terminal, staying JSON of the same value: DEL and what [`sanitize`]
/// escapes beyond ASCII become `\uXXXX`. Such characters can only be inside strings; serde_json already
/// escapes U+0000–U+001F there, and outside strings they are the pretty-printer's newlines.
pub(super) fn sanitize_json(json: &str) -> Cow<'_, str> {
    let escape = |c: char| c >= '\u{7f}' && needs_escape(c);
    if !json.chars().any(escape) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if escape(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether [`sanitize`] escapes `c`: every character that changes or hides what a human reads without showing
/// itself (controls, zero-width and bidi characters, separators, blank fillers, tag characters), the same
/// set the gateway refuses in names ([`opgate::core::validate::is_hidden_anywhere`]).
pub(super) fn needs_escape(c: char) -> bool {
    opgate::core::validate::is_hidden_anywhere(c)
}

/// `3m ago`, `in 2d`, `just now`: the distance from `now` (unix seconds) in its largest whole unit.
pub(super) fn relative(at: Timestamp, now: i64) -> String {
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
pub(super) fn when(at: Option<Timestamp>, now: i64, none: &str) -> String {
    at.map_or_else(|| none.to_owned(), |t| relative(t, now))
}

/// The exact time and how far it is, for a `field  value` block, or `none` when unset.
pub(super) fn when_exact(at: Option<Timestamp>, now: i64, none: &str) -> String {
    at.map_or_else(
        || none.to_owned(),
        |t| format!("{} ({})", t.to_rfc3339(), relative(t, now)),
    )
}

/// A list for humans: `a,b`, or `none` when empty.
pub(super) fn list(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(",")
    }
}

/// Permissions for humans: `a,b` with the presets named as the CLI names them (`read`, `read-write`), or
/// `none` when empty.
pub(super) fn permissions(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items
            .iter()
            .map(|p| opgate::core::scope::display(p))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An optional value, or `none`.
pub(super) fn or<T: ToString>(value: Option<T>, none: &str) -> String {
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

    #[test]
    fn sanitize_escapes_controls_and_bidi() {
        // Plain text, non-ASCII letters and backslashes are borrowed as they are.
        for plain in ["ci-reader", "Zürich 東京 ✓", r"C:\keys\x1b", ""] {
            assert!(
                matches!(sanitize(plain), Cow::Borrowed(p) if p == plain),
                "{plain}"
            );
        }
        assert_eq!(sanitize("a\nb\rc\td"), r"a\nb\rc\td");
        assert_eq!(
            sanitize("\0\x07\x08\x1b\x1f\x7f"),
            r"\x00\x07\x08\x1b\x1f\x7f"
        );
        // OSC 52 (set the clipboard), ended by BEL or by ST.
        assert_eq!(
            sanitize("x\x1b]52;c;ZXZpbA==\x07y\x1b\\"),
            r"x\x1b]52;c;ZXZpbA==\x07y\x1b\"
        );
        // C1 controls (CSI, OSC, ST as single code points), bidi controls, line and paragraph separators.
        assert_eq!(
            sanitize("\u{80}\u{9b}31m\u{9d}\u{9c}\u{9f}"),
            r"\u{80}\u{9b}31m\u{9d}\u{9c}\u{9f}"
        );
        assert_eq!(
            sanitize(
                "a\u{202e}cba\u{202c}\u{202a}\u{202b}\u{202d}\u{2066}\u{2067}\u{2068}\u{2069}"
            ),
            r"a\u{202e}cba\u{202c}\u{202a}\u{202b}\u{202d}\u{2066}\u{2067}\u{2068}\u{2069}"
        );
        assert_eq!(
            sanitize("\u{61c}\u{200e}\u{200f}\u{2028}\u{2029}"),
            r"\u{61c}\u{200e}\u{200f}\u{2028}\u{2029}"
        );
        // Nothing the escapes produce needs escaping again.
        let all: String = (0..0x3000u32).filter_map(char::from_u32).collect();
        let once = sanitize(&all).into_owned();
        assert!(!once.chars().any(needs_escape));
        assert!(matches!(sanitize(&once), Cow::Borrowed(_)));
    }

    #[test]
    fn sanitize_json_keeps_the_value() {
        let value =
            serde_json::json!({"name": "a\u{7f}\u{9b}\u{202e}\u{2069}\u{2028}\x1b\n", "n": 1});
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let safe = sanitize_json(&pretty);
        assert!(
            !safe.chars().any(|c| c != '\n' && needs_escape(c)),
            "{safe}"
        );
        assert!(
            safe.contains(r#""a\u007f\u009b\u202e\u2069\u2028\u001b\n""#),
            "{safe}"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&safe).unwrap(),
            value
        );
        assert!(matches!(
            sanitize_json(r#"{"a": "b\\u001b"}"#),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn tables_and_fields_print_escaped_values() {
        let mut out = Vec::new();
        let mut t = Table::new(&mut out, &["ID", "NAME", "STATUS"]);
        t.row(vec!["k\x1b[2J".into(), "a\nb".into(), "active".into()])
            .unwrap();
        t.row(vec!["key_22".into(), "\u{202e}x".into(), "revoked".into()])
            .unwrap();
        t.finish().unwrap();
        // The widths are those of the escaped text: `k\x1b[2J` is 8 characters, `\u{202e}x` 9.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                "ID        NAME       STATUS\n",
                r"k\x1b[2J  a\nb       active",
                "\n",
                r"key_22    \u{202e}x  revoked",
                "\n",
            )
        );

        let mut out = Vec::new();
        fields(
            &mut out,
            &[
                (
                    "name",
                    "evil\x1b]52;c;ZXZpbA==\x07\r\nstatus  revoked".into(),
                ),
                ("id", "key_1".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r"name  evil\x1b]52;c;ZXZpbA==\x07\r\nstatus  revoked",
                "\nid    key_1\n"
            )
        );
    }
}
