use std::net::IpAddr;
use std::sync::Arc;

use crate::Error;

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A long-lived API key (`opg_...`).
    ApiKey,
    /// A short-lived signed session token.
    Session,
}

impl PrincipalKind {
    /// The wire name (`api_key` or `session`).
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::ApiKey => "api_key",
            PrincipalKind::Session => "session",
        }
    }
}

/// Live or test: every object belongs to one mode, and a principal sees and acts on objects of its own mode
/// only. Test keys read `opg_test_...`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Real traffic.
    #[default]
    Live,
    /// Test traffic, apart from live objects.
    Test,
}

impl Mode {
    /// The wire name (`live` or `test`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Test => "test",
        }
    }

    /// The mode named `text`, if any.
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "live" => Some(Mode::Live),
            "test" => Some(Mode::Test),
            _ => None,
        }
    }
}

/// What an API key may reach: its organization as a whole, or one workspace of it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// Organization-wide: every workspace (one at a time with `X-Workspace-ID`).
    Admin,
    /// Confined to its workspace.
    Workspace,
}

impl KeyType {
    /// The wire name (`admin` or `workspace`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Admin => "admin",
            KeyType::Workspace => "workspace",
        }
    }

    /// The key type named `text`, if any.
    pub fn parse(text: &str) -> Option<KeyType> {
        match text {
            "admin" => Some(KeyType::Admin),
            "workspace" => Some(KeyType::Workspace),
            _ => None,
        }
    }
}

/// The authenticated caller: what every later stage (authorization, rate limits, handlers) reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// How the caller authenticated.
    pub kind: PrincipalKind,
    /// The key id, or the session's subject.
    pub id: String,
    /// The organization whose objects the caller may see.
    pub org: String,
    /// Scopes held, with the wildcard rules of [`crate::scope`].
    pub permissions: Vec<String>,
    /// Requests per minute allowed to this caller, when limited.
    pub rate_limit: Option<u32>,
    /// When the credential stops working (unix seconds), if ever.
    pub expires_at: Option<i64>,
    /// Addresses and CIDR ranges the credential is fenced to; empty means any. Keys it grants stay inside.
    pub allowed_ips: Vec<String>,
    /// The mode of every object the caller sees or makes.
    pub mode: Mode,
    /// An API key's type; `None` for a session (organization-wide like an admin key).
    pub key_type: Option<KeyType>,
    /// The workspace a workspace key is confined to; `None` for organization-wide principals.
    pub workspace: Option<String>,
    /// The environment a key is bound to, if any.
    pub environment: Option<String>,
    /// The service account a key belongs to, if any.
    pub service_account: Option<String>,
}

impl Principal {
    /// A key naming this principal uniquely, for idempotency records, rate limits and per-principal caps.
    /// The organization is length-prefixed, so no `org` or `id` (a session's may hold any character) can make
    /// two principals' keys collide.
    pub fn unique_key(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.kind.as_str(),
            self.mode.as_str(),
            self.org.len(),
            self.org,
            self.id
        )
    }

    /// Whether the principal reaches its whole organization (an admin key or a session) rather than one
    /// workspace.
    pub fn is_org_wide(&self) -> bool {
        self.key_type != Some(KeyType::Workspace)
    }
}

/// What an authenticator may look at besides the token.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The client address (the socket peer, or the trusted proxy's forwarded address).
    pub client_ip: Option<IpAddr>,
    /// The `User-Agent` header, if sane.
    pub user_agent: Option<String>,
}

/// Turns a bearer token into a [`Principal`]. The dispatcher calls it and knows nothing of how tokens work.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Verifies `token`; `Err` carries `unauthenticated` (or `permission_denied` for a disallowed address).
    async fn authenticate(
        &self,
        token: &str,
        request: &RequestInfo,
    ) -> Result<Arc<Principal>, Error>;
}

/// The header with which an organization-wide principal selects a workspace (a workspace key naming another
/// workspace than its own is refused).
pub const WORKSPACE_HEADER: &str = "x-workspace-id";

/// The prefix of every API key: how the gateway tells a key from a session token by its shape.
pub const API_KEY_PREFIX: &str = "opg_";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_keys_never_collide_across_organizations() {
        let p = |org: &str, id: &str| Principal {
            kind: PrincipalKind::Session,
            id: id.into(),
            org: org.into(),
            permissions: vec![],
            rate_limit: None,
            expires_at: None,
            allowed_ips: vec![],
            mode: Mode::Live,
            key_type: None,
            workspace: None,
            environment: None,
            service_account: None,
        };
        assert_ne!(p("a:b", "c").unique_key(), p("a", "b:c").unique_key());
        assert_ne!(p("a/b", "c").unique_key(), p("a", "b/c").unique_key());
        assert_eq!(p("a", "b").unique_key(), p("a", "b").unique_key());
        let test = Principal {
            mode: Mode::Test,
            ..p("a", "b")
        };
        assert_ne!(
            test.unique_key(),
            p("a", "b").unique_key(),
            "modes never share a key"
        );
    }
}
