//! Scopes and the rules that decide whether a set of permissions holds one.
//!
//! A scope is `<resource>:<action>` (e.g. `api_keys:read`). A permission `*` holds every scope,
//! `<resource>:*` holds every scope of that resource, and `<resource>:write` implies `<resource>:read`. The
//! presets `*:read` (every read scope; "read" in the CLI and docs) and `*:write` (every write scope, and so every
//! read scope; "read-write") cut across resources.
//! Authorization is a pure function of the principal's permissions and the operation's declared scope.

/// The name of the schema of a granted scope; the spec lists the gateway's [`Catalog`] under it.
pub const SCHEMA_NAME: &str = "Scope";

/// The "scope" of operations that need no permission beyond a valid token: every principal holds it.
pub const AUTHENTICATED: &str = "";

/// The preset holding every `<resource>:read` scope.
pub const READ_ALL: &str = "*:read";
/// The preset holding every `<resource>:write` scope (and so every `<resource>:read`).
pub const WRITE_ALL: &str = "*:write";

/// How the CLI and docs name a permission: `read` and `read-write` for the presets, the scope otherwise.
pub fn display(permission: &str) -> &str {
    match permission {
        READ_ALL => "read",
        WRITE_ALL => "read-write",
        other => other,
    }
}

/// Whether `permissions` hold the scope `required`.
pub fn holds<S: AsRef<str>>(permissions: &[S], required: &str) -> bool {
    if required == AUTHENTICATED {
        return true;
    }
    let Some((resource, action)) = required.split_once(':') else {
        return permissions
            .iter()
            .any(|p| p.as_ref() == "*" || p.as_ref() == required);
    };
    permissions.iter().any(|p| {
        let p = p.as_ref();
        if p == "*" || p == required {
            return true;
        }
        match p.split_once(':') {
            Some(("*", "read")) => action == "read",
            Some(("*", "write")) => action == "read" || action == "write",
            Some((r, "*")) => r == resource,
            Some((r, "write")) => r == resource && action == "read",
            _ => false,
        }
    })
}

/// Whether a principal with `permissions` may grant `requested` to a new key: a grant may never exceed
/// what the granter holds, so `*` needs `*` and `<resource>:*` needs `*` or `<resource>:*`.
pub fn covers<S: AsRef<str>>(permissions: &[S], requested: &str) -> bool {
    if requested == "*" {
        return permissions.iter().any(|p| p.as_ref() == "*");
    }
    if requested == READ_ALL {
        return permissions
            .iter()
            .any(|p| matches!(p.as_ref(), "*" | READ_ALL | WRITE_ALL));
    }
    if requested == WRITE_ALL {
        return permissions
            .iter()
            .any(|p| matches!(p.as_ref(), "*" | WRITE_ALL));
    }
    if let Some((resource, "*")) = requested.split_once(':') {
        return permissions.iter().any(|p| {
            let p = p.as_ref();
            p == "*" || p.split_once(':') == Some((resource, "*"))
        });
    }
    holds(permissions, requested)
}

/// Whether `scope` is well formed: `*`, or `<resource>:<action>` with lowercase identifiers
/// (`[a-z][a-z0-9_]*`, at most 64 characters each) and `*` allowed as the action.
pub fn is_valid(scope: &str) -> bool {
    fn ident(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some('a'..='z'))
            && s.len() <= 64
            && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
    }
    if scope == "*" || scope == READ_ALL || scope == WRITE_ALL {
        return true;
    }
    match scope.split_once(':') {
        Some((resource, action)) => ident(resource) && (action == "*" || ident(action)),
        None => false,
    }
}

/// The scopes a gateway knows: those its operations require, and the wildcards over their resources. A grant
/// of anything else would silently grant nothing, so grants are checked against it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    known: std::collections::BTreeSet<String>,
}

impl Catalog {
    /// The catalog of the given required scopes (operation declarations; [`AUTHENTICATED`] is skipped).
    pub fn new<'a>(required: impl IntoIterator<Item = &'a str>) -> Self {
        let mut known = std::collections::BTreeSet::new();
        known.insert("*".to_owned());
        known.insert(READ_ALL.to_owned());
        known.insert(WRITE_ALL.to_owned());
        for scope in required.into_iter().filter(|s| *s != AUTHENTICATED) {
            if let Some((resource, _)) = scope.split_once(':') {
                known.insert(format!("{resource}:*"));
            }
            known.insert(scope.to_owned());
        }
        Catalog { known }
    }

    /// Every known scope, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.known.iter().map(String::as_str)
    }

    /// `Ok` for a scope some operation requires (or a wildcard over a known resource); else the message for a
    /// 400 naming it and the closest known scope.
    pub fn check(&self, scope: &str) -> Result<(), String> {
        if self.known.contains(scope) {
            return Ok(());
        }
        let shown: String = scope.chars().filter(|c| !c.is_control()).take(64).collect();
        let mut message = if is_valid(scope) {
            format!("`{shown}` is not a scope any operation of this gateway requires")
        } else {
            format!("`{shown}` is not a scope: use `*`, `<resource>:<action>` or `<resource>:*`")
        };
        if let Some(hint) = self.closest(scope) {
            message.push_str(&format!("; did you mean `{hint}`?"));
        }
        Err(message)
    }

    /// The known scope fewest edits away from `scope`, if any is reasonably close.
    fn closest(&self, scope: &str) -> Option<&str> {
        let scope: Vec<char> = scope.chars().take(160).collect();
        self.iter()
            .map(|k| (edit_distance(&scope, k), k))
            .filter(|(d, k)| *d <= (k.len() / 2).max(2))
            .min_by_key(|(d, _)| *d)
            .map(|(_, k)| k)
    }
}

/// Levenshtein distance between `a` and `b`, in characters.
fn edit_distance(a: &[char], b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_wildcards_and_write_implies_read() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*"], "api_keys:write", true),
            (&["api_keys:*"], "api_keys:write", true),
            (&["api_keys:*"], "audit:read", false),
            (&["api_keys:write"], "api_keys:read", true),
            (&["api_keys:read"], "api_keys:write", false),
            (&["api_keys:write"], "audit:read", false),
            (&["audit:write"], "api_keys:read", false),
            (&["api_keys:read"], "api_keys:read", true),
            (&[], "api_keys:read", false),
            (&["api_keys"], "api_keys:read", false),
            (&["api_keys:export"], "api_keys:read", false),
            (&[], AUTHENTICATED, true),
        ];
        for (perms, scope, want) in cases {
            assert_eq!(holds(perms, scope), *want, "{perms:?} holds {scope}");
        }
    }

    #[test]
    fn the_read_and_read_write_presets() {
        assert!(holds(&[READ_ALL], "audit:read"));
        assert!(!holds(&[READ_ALL], "api_keys:write"));
        assert!(holds(&[WRITE_ALL], "api_keys:write"));
        assert!(holds(&[WRITE_ALL], "workspaces:read"));
        assert!(!holds(&[WRITE_ALL], "api_keys:export"));
        assert!(covers(&[WRITE_ALL], READ_ALL) && covers(&[WRITE_ALL], "audit:read"));
        assert!(!covers(&[READ_ALL], WRITE_ALL) && !covers(&[WRITE_ALL], "*"));
        assert!(!covers(&[WRITE_ALL], "api_keys:*"));
        assert!(!covers(&["api_keys:*"], READ_ALL));
        assert_eq!(
            (display(READ_ALL), display(WRITE_ALL), display("a:b")),
            ("read", "read-write", "a:b")
        );
    }

    #[test]
    fn grants_never_exceed_the_granter() {
        assert!(covers(&["*"], "*"));
        assert!(covers(&["*"], "api_keys:*"));
        assert!(!covers(&["api_keys:*"], "*"));
        assert!(covers(&["api_keys:*"], "api_keys:*"));
        assert!(covers(&["api_keys:*"], "api_keys:read"));
        assert!(!covers(&["api_keys:write"], "api_keys:*"));
        assert!(covers(&["api_keys:write"], "api_keys:read"));
        assert!(!covers(&["api_keys:read"], "api_keys:write"));
    }

    #[test]
    fn scope_syntax() {
        for ok in [
            "*",
            "*:read",
            "*:write",
            "api_keys:read",
            "a:*",
            "notes2:write_all",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "api_keys",
            ":read",
            "api_keys:",
            "Api:read",
            "a:b:c",
            "*:list",
            "a :b",
            "1a:read",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn the_catalog_refuses_unknown_scopes_with_a_hint() {
        let c = Catalog::new([
            "api_keys:read",
            "api_keys:write",
            "audit:read",
            AUTHENTICATED,
        ]);
        for ok in [
            "*",
            "api_keys:read",
            "api_keys:write",
            "api_keys:*",
            "audit:*",
            "audit:read",
        ] {
            assert_eq!(c.check(ok), Ok(()), "{ok}");
        }
        let e = c.check("api_keys:raed").unwrap_err();
        assert!(e.ends_with("did you mean `api_keys:read`?"), "{e}");
        let e = c.check("bogus:scope").unwrap_err();
        assert_eq!(
            e,
            "`bogus:scope` is not a scope any operation of this gateway requires"
        );
        assert!(c
            .check("audit:write")
            .unwrap_err()
            .contains("did you mean `audit:read`?"));
        assert!(
            c.check("bogus:*").is_err(),
            "a wildcard over no known resource grants nothing"
        );
        assert!(c
            .check("Api_keys:read")
            .unwrap_err()
            .starts_with("`Api_keys:read` is not a scope:"));
    }
}
