//! Session tokens for opgate, beside API keys: short-lived HS256 JWTs signed with the session secret
//! ([`SessionConfig`], [`SessionAuthenticator`]), the [`TokenRouter`] that sends each bearer token to the
//! authenticator of its kind, and the `auth.whoami` operation ([`Whoami`]).
//!
//! Nothing here logs a token or a secret; error messages name the cause, never the token.
//!
//! `auth.whoami` and its wire types need nothing else; the session machinery sits behind the default feature
//! `server`, which clients (`opgate-client`) turn off.

#[cfg(feature = "server")]
mod router;
#[cfg(feature = "server")]
pub mod secret;
#[cfg(feature = "server")]
mod session;
mod whoami;

#[cfg(feature = "server")]
pub use router::{classify, TokenKind, TokenRouter, API_KEY_PREFIX};
#[cfg(feature = "server")]
pub use secret::{SecretError, SESSION_SECRET_FILE};
#[cfg(feature = "server")]
pub use session::{
    sane_id, MintError, NewSession, SessionAuthenticator, SessionConfig, SessionSettings,
    CLOCK_SKEW_SECONDS, MAX_ID_CHARS, MAX_SCOPES, MAX_TTL_SECONDS,
};
pub use whoami::{CredentialKind, Whoami, WhoamiInput, WhoamiOutput};
