//! Input rules shared by every operation: text a human reads holds no control characters, and ids have their
//! exact shape. Each rule is a `garde` validator (the runtime check, with a message naming the cause) beside
//! the pattern the spec publishes for the same rule (`#[schemars(pattern(...))]`), so spec and server agree.

/// Pattern of text without hidden characters (what [`printable`] accepts): the same set as [`is_hidden`].
pub const PRINTABLE_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb]*$";

/// Whether `c` is a C0 or C1 control character (including DEL): terminal escapes start with these.
pub fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// Whether `c` changes or hides what a human reads without showing itself: control characters, format
/// characters (zero-width spaces and joiners, bidi marks, embeddings, overrides and isolates, the byte order
/// mark, the soft hyphen, invisible operators), line and paragraph separators, and characters that render as
/// blank fillers. Text a human reads refuses them ([`printable`]); the CLI escapes them when it shows any.
pub fn is_hidden(c: char) -> bool {
    is_control(c)
        || matches!(
            c,
            '\u{ad}'
                | '\u{61c}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// [`is_hidden`], and the hidden characters outside the Basic Multilingual Plane (tag characters, musical
/// format controls), which a terminal must not be handed raw either. Stored text may hold these; the CLI
/// escapes them.
pub fn is_hidden_anywhere(c: char) -> bool {
    is_hidden(c) || matches!(c, '\u{1d173}'..='\u{1d17a}' | '\u{e0000}'..='\u{e007f}')
}

/// Refuses text with hidden characters ([`is_hidden`]): names and descriptions are printed to terminals and
/// logs, where ESC, BEL, CR or NUL would rewrite what a human sees, and a zero-width or bidi character would
/// make one name look like another.
pub fn printable(value: &str, _: &()) -> garde::Result {
    match value.chars().find(|c| is_hidden(*c)) {
        None => Ok(()),
        Some(c) if is_control(c) => Err(garde::Error::new(format!(
            "must not contain control characters (found U+{:04X})",
            c as u32
        ))),
        Some(c) => Err(garde::Error::new(format!(
            "must not contain invisible or formatting characters (found U+{:04X})",
            c as u32
        ))),
    }
}

/// The characters of a lowercase Crockford base32 ULID, as ids carry them.
const ULID_CHARS: &str = "0123456789abcdefghjkmnpqrstvwxyz";

/// Pattern of a ULID-based id with the given prefix, e.g. `id_pattern!("key")` for `key_` + 26 characters
/// (the first at most `7`: a ULID is 128 bits).
#[macro_export]
macro_rules! id_pattern {
    ($prefix:literal) => {
        concat!("^", $prefix, "_[0-7][0-9a-hjkmnp-tv-z]{25}$")
    };
}

/// Whether `value` is `<prefix>_` followed by a 26-character lowercase ULID.
pub fn is_id(prefix: &str, value: &str) -> bool {
    value
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|ulid| {
            ulid.len() == 26
                && ulid.bytes().all(|b| ULID_CHARS.as_bytes().contains(&b))
                // The first character of a 128-bit ULID is at most 7.
                && ulid.as_bytes()[0] <= b'7'
        })
}

/// A validator for ids with `prefix`, e.g. `#[garde(custom(id("key")))]`.
pub fn id(prefix: &'static str) -> impl FnOnce(&str, &()) -> garde::Result {
    move |value, _| {
        if is_id(prefix, value) {
            Ok(())
        } else {
            Err(garde::Error::new(format!(
                "must be an id of the form `{prefix}_` followed by 26 lowercase letters and digits"
            )))
        }
    }
}

/// Pattern of an organization id: letters, digits, `.`, `_` and `-`, starting with a letter or digit.
pub const ORG_ID_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";

/// Whether `value` is an organization id ([`ORG_ID_PATTERN`]): organizations partition every object, so
/// their ids hold no separator, space or control character that could blur one into another.
pub fn is_org_id(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// Pattern of an operation id, `<resource>.<action>`.
pub const OPERATION_ID_PATTERN: &str = r"^[a-z][a-z0-9_]{0,63}\.[a-z][a-z0-9_]{0,63}$";

/// Whether `value` is an operation id (`<resource>.<action>`, lowercase identifiers).
pub fn is_operation_id(value: &str) -> bool {
    fn ident(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some('a'..='z'))
            && s.len() <= 64
            && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
    }
    value
        .split_once('.')
        .is_some_and(|(r, a)| ident(r) && ident(a))
}

/// A validator for operation ids.
pub fn operation_id(value: &str, _: &()) -> garde::Result {
    if is_operation_id(value) {
        Ok(())
    } else {
        Err(garde::Error::new(
            "must be an operation id, `<resource>.<action>` in lowercase",
        ))
    }
}

/// For `#[serde(deserialize_with)]` on an `Option<Option<T>>` update field: a present field, even `null`,
/// becomes `Some` (`Some(None)` clears the value); a missing one stays `None` (the value is kept).
pub fn present<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    T::deserialize(d).map(Some)
}

/// A validator for a clearable description: at most 1024 printable characters when set.
pub fn nullable_description(value: &Option<Option<String>>, _: &()) -> garde::Result {
    match value {
        Some(Some(d)) if d.chars().count() > 1024 => {
            Err(garde::Error::new("length is greater than 1024"))
        }
        Some(Some(d)) => printable(d, &()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused_and_named() {
        assert!(printable("ci deploy – ünïcode ✓", &()).is_ok());
        for bad in [
            "a\u{1b}[31m",
            "bell\u{7}",
            "cr\r",
            "nul\0",
            "del\u{7f}",
            "c1\u{9b}",
        ] {
            assert!(printable(bad, &()).is_err(), "{bad:?}");
        }
        let e = printable("x\u{1b}]52;c;ZXZpbA==\u{7}", &()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "must not contain control characters (found U+001B)"
        );
        for hidden in [
            "\u{200b}",
            "\u{feff}",
            "\u{200d}",
            "\u{ad}",
            "a\u{202e}b",
            "\u{2066}",
            "\u{3164}",
        ] {
            let e = printable(hidden, &()).unwrap_err().to_string();
            assert!(
                e.starts_with("must not contain invisible or formatting characters"),
                "{hidden:?}: {e}"
            );
        }
        assert!(is_hidden_anywhere('\u{e0041}') && !is_hidden('\u{e0041}'));
        assert!(printable("naïve café ☕ 日本", &()).is_ok());
    }

    /// The published pattern and the runtime rule are one set: every character of the Basic Multilingual
    /// Plane is refused by the pattern exactly when [`is_hidden`] refuses it.
    #[test]
    fn the_pattern_says_what_printable_accepts() {
        let inner = PRINTABLE_PATTERN
            .strip_prefix("^[^")
            .and_then(|p| p.strip_suffix("]*$"))
            .unwrap();
        let mut ranges = Vec::new();
        let mut parts = inner.split("\\u").filter(|p| !p.is_empty()).peekable();
        while let Some(part) = parts.next() {
            let (hex, rest) = part.split_at(4);
            let lo = u32::from_str_radix(hex, 16).unwrap();
            if rest == "-" {
                let hi = u32::from_str_radix(&parts.next().unwrap()[..4], 16).unwrap();
                ranges.push(lo..=hi);
            } else {
                ranges.push(lo..=lo);
            }
        }
        for c in (0..=0xffff).filter_map(char::from_u32) {
            let in_pattern = ranges.iter().any(|r| r.contains(&(c as u32)));
            assert_eq!(in_pattern, is_hidden(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn ids_have_their_exact_shape() {
        assert!(is_id("key", "key_01jf3m8v6k2x9q4w7e5r1t0y8z"));
        assert_eq!(id_pattern!("key"), "^key_[0-7][0-9a-hjkmnp-tv-z]{25}$");
        for bad in [
            "key_01jf3m8v6k2x9q4w7e5r1t0y8",
            "key_01jf3m8v6k2x9q4w7e5r1t0y8zz",
            "key_01JF3M8V6K2X9Q4W7E5R1T0Y8Z",
            "key_01jf3m8v6k2x9q4w7e5r1t0y8i",
            "ws_01jf3m8v6k2x9q4w7e5r1t0y8z",
            "key_81jf3m8v6k2x9q4w7e5r1t0y8z",
            "key-01jf3m8v6k2x9q4w7e5r1t0y8z",
        ] {
            assert!(!is_id("key", bad), "{bad}");
        }
        let real = format!("key_{}", ulid_like());
        assert!(is_id("key", &real), "{real}");
    }

    fn ulid_like() -> String {
        "7zzzzzzzzzzzzzzzzzzzzzzzzz".into()
    }

    #[test]
    fn org_ids() {
        for ok in ["default", "acme-corp", "a.b_c-9", "0rg"] {
            assert!(is_org_id(ok), "{ok}");
        }
        for bad in ["", "a:b", "a/b", "a b", "-x", "é", &"a".repeat(129)] {
            assert!(!is_org_id(bad), "{bad}");
        }
    }

    #[test]
    fn operation_ids() {
        assert!(is_operation_id("api_keys.revoke"));
        for bad in ["api_keys", "Api.x", "a.b.c", ".x", "a.", "a .b"] {
            assert!(!is_operation_id(bad), "{bad}");
        }
    }
}
