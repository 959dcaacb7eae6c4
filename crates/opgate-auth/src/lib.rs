//! Session tokens for opgate, beside API keys: short-lived HS256 JWTs signed with the session secret
//! ([`SessionConfig`], [`SessionAuthenticator`]), the [`TokenRouter`] that sends each bearer token to the
//! authenticator of its kind, and the `auth.whoami` operation ([`Whoami`]).
//!
//! Nothing here logs a token or a secret; error messages name the cause, never the token.

mod router;
pub mod secret;
mod session;
mod whoami;

pub use router::{classify, TokenKind, TokenRouter, API_KEY_PREFIX};
pub use secret::{SecretError, SESSION_SECRET_FILE};
pub use session::{
    sane_id, MintError, NewSession, SessionAuthenticator, SessionConfig, SessionSettings,
    CLOCK_SKEW_SECONDS, MAX_ID_CHARS, MAX_SCOPES, MAX_TTL_SECONDS,
};
pub use whoami::{CredentialKind, Whoami, WhoamiInput, WhoamiOutput};
