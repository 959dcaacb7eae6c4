//! Scopes and the rules that decide whether a set of permissions holds one.
//!
//! A scope is `<resource>:<action>` (e.g. `api_keys:read`). A permission `*` holds every scope,
//! `<resource>:*` holds every scope of that resource, and `<resource>:write` implies `<resource>:read`.
//! Authorization is a pure function of the principal's permissions and the operation's declared scope.

/// The "scope" of operations that need no permission beyond a valid token: every principal holds it.
pub const AUTHENTICATED: &str = "";

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
    if scope == "*" {
        return true;
    }
    match scope.split_once(':') {
        Some((resource, action)) => ident(resource) && (action == "*" || ident(action)),
        None => false,
    }
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
        for ok in ["*", "api_keys:read", "a:*", "notes2:write_all"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "api_keys",
            ":read",
            "api_keys:",
            "Api:read",
            "a:b:c",
            "*:read",
            "a :b",
            "1a:read",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
