//! Session tokens: short-lived JWTs signed with HS256 under the session secret.
//!
//! Claims: `sub` (the principal id), `org` (its organization), `scope` (space-separated scopes), `exp` and
//! `iat` (seconds since the epoch), all required; `nbf` optional; `iss` and `aud` required to match when the
//! server is configured with an issuer or audience, ignored otherwise.
//!
//! The signature and the algorithm are checked by `jsonwebtoken`, pinned to HS256: a token whose header names
//! any other algorithm (`none`, HS512, RS256, ...) is refused before its signature is looked at. The claims
//! are checked here, so that every failure gets its own message:
//! - expired once `exp` ≤ now (no leeway: the token's own `exp` is the end of its life);
//! - not yet valid when `iat` or `nbf` lies more than [`CLOCK_SKEW_SECONDS`] in the future;
//! - `sub` and `org` 1–[`MAX_ID_CHARS`] characters without control characters;
//! - every `scope` entry a valid scope ([`opgate_core::scope::is_valid`]), at most [`MAX_SCOPES`] of them.
//!
//! No message ever carries the token, the secret or the expected issuer or audience.

use std::path::Path;
use std::sync::{Arc, Once};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use opgate_core::{scope, Authenticator, Error, Principal, PrincipalKind, RequestInfo, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::secret::{self, SecretError};

/// How far in the future `iat` and `nbf` may lie (clock skew between the issuer and this server), in seconds.
pub const CLOCK_SKEW_SECONDS: i64 = 60;
/// Longest `sub` and `org`, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Most scopes one session token may carry.
pub const MAX_SCOPES: usize = 64;
/// Longest lifetime `opgate admin mint-session` gives a token (30 days), in seconds.
pub const MAX_TTL_SECONDS: u64 = 30 * 86_400;

/// Session settings as the operator gives them (flags or environment), before the secret is loaded.
#[derive(Clone, Default)]
pub struct SessionSettings {
    /// The signing secret (`OPGATE_SESSION_SECRET`: base64 or raw, at least 32 bytes); `None` reads or creates
    /// `<data-dir>/session_secret`.
    pub secret: Option<String>,
    /// When set, tokens must carry exactly this `iss` (`--session-issuer`, `OPGATE_SESSION_ISSUER`).
    pub issuer: Option<String>,
    /// When set, tokens' `aud` must be or contain this value (`--session-audience`, `OPGATE_SESSION_AUDIENCE`).
    pub audience: Option<String>,
}

impl SessionSettings {
    /// The settings from `OPGATE_SESSION_SECRET`, `OPGATE_SESSION_ISSUER` and `OPGATE_SESSION_AUDIENCE`.
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok();
        SessionSettings {
            secret: var("OPGATE_SESSION_SECRET"),
            issuer: var("OPGATE_SESSION_ISSUER"),
            audience: var("OPGATE_SESSION_AUDIENCE"),
        }
    }
}

impl std::fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The loaded session configuration: the signing key and the issuer and audience tokens must name.
/// Signs tokens (`opgate admin mint-session`) and verifies them (the gateway).
#[derive(Clone)]
pub struct SessionConfig {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Why a session token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// `sub` or `org` is empty, too long or has control characters.
    #[error("{0} must be 1–128 characters without control characters")]
    BadId(&'static str),
    /// `org` is not an organization id.
    #[error("org must be 1–128 letters, digits, `.`, `_` or `-`, starting with a letter or digit")]
    BadOrg,
    /// A scope is not `*`, `<resource>:<action>` or `<resource>:*`.
    #[error("`{0}` is not a scope: use `*`, `<resource>:<action>` or `<resource>:*`")]
    BadScope(String),
    /// More than [`MAX_SCOPES`] scopes.
    #[error("a session token holds at most 64 scopes")]
    TooManyScopes,
    /// The lifetime is zero or over [`MAX_TTL_SECONDS`].
    #[error("the lifetime must be 1–2592000 seconds (30 days)")]
    BadTtl,
    /// Signing failed (a bug).
    #[error("signing the session token failed: {0}")]
    Signing(String),
}

/// What a new session token says.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The principal id (`sub`); keys it creates record it as `created_by`.
    pub sub: String,
    /// The organization (`org`).
    pub org: String,
    /// The scopes it holds.
    pub scopes: Vec<String>,
    /// Seconds from now until it expires.
    pub ttl_seconds: u64,
    /// The mode it works in (the `mode` claim, written only for `test`).
    pub mode: opgate_core::Mode,
}

/// The claims written into a minted token.
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    org: &'a str,
    scope: String,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
}

/// `jsonwebtoken` picks its crypto backend from crate features; install the pure-Rust one explicitly so that
/// another crate enabling a second backend cannot leave the choice ambiguous.
fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );
    });
}

impl SessionConfig {
    /// A configuration signing with `secret` (at least 32 bytes); empty issuer or audience strings count as
    /// not configured.
    pub fn new(
        secret: &[u8],
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<Self, SecretError> {
        if secret.len() < secret::MIN_SECRET_BYTES {
            return Err(SecretError::TooShort);
        }
        install_crypto();
        let configured = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        Ok(SessionConfig {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: configured(issuer),
            audience: configured(audience),
        })
    }

    /// Loads the secret per `settings` (the environment's, else `<data_dir>/session_secret`, created on
    /// first use with mode 0600) and takes the issuer and audience from them.
    pub fn load(data_dir: &Path, settings: &SessionSettings) -> Result<Self, SecretError> {
        let secret = secret::load(data_dir, settings.secret.as_deref())?;
        Self::new(&secret, settings.issuer.clone(), settings.audience.clone())
    }

    /// The `iss` tokens must carry, if configured.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The `aud` tokens must name, if configured.
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// Signs a token for `session`, issued now, carrying the configured issuer and audience.
    pub fn mint(&self, session: &NewSession) -> Result<String, MintError> {
        self.mint_at(session, Timestamp::now().unix())
    }

    /// Signs a token for `session`, issued at `now` (unix seconds).
    pub fn mint_at(&self, session: &NewSession, now: i64) -> Result<String, MintError> {
        if !sane_id(&session.sub) {
            return Err(MintError::BadId("sub"));
        }
        if !opgate_core::validate::is_org_id(&session.org) {
            return Err(MintError::BadOrg);
        }
        if let Some(bad) = session.scopes.iter().find(|s| !scope::is_valid(s)) {
            return Err(MintError::BadScope(bad.clone()));
        }
        if session.scopes.len() > MAX_SCOPES {
            return Err(MintError::TooManyScopes);
        }
        if session.ttl_seconds == 0 || session.ttl_seconds > MAX_TTL_SECONDS {
            return Err(MintError::BadTtl);
        }
        let claims = Claims {
            sub: &session.sub,
            org: &session.org,
            scope: session.scopes.join(" "),
            iat: now,
            exp: now + session.ttl_seconds as i64,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            mode: (session.mode == opgate_core::Mode::Test).then_some("test"),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| MintError::Signing(e.to_string()))
    }

    /// Verifies `token` now; any failure is `unauthenticated` with a message naming the cause.
    pub fn verify(&self, token: &str) -> Result<Principal, Error> {
        self.verify_at(token, Timestamp::now().unix())
    }

    /// Verifies `token` as of `now` (unix seconds): what [`SessionConfig::verify`] does with the gateway's
    /// clock instead of the system's.
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Principal, Error> {
        check_header(token)?;
        // Signature and algorithm only; the claims are checked below, each with its own message.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<UniqueClaims>(token, &self.decoding, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                Error::unauthenticated(match e.kind() {
                    ErrorKind::InvalidSignature => "the session token's signature is not valid",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        "the session token must be signed with HS256"
                    }
                    ErrorKind::Json(e) if e.to_string().contains(DUPLICATE_CLAIM) => {
                        "the session token is malformed: its payload names a claim twice"
                    }
                    ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                        "the session token is malformed: its payload is not a JSON object"
                    }
                    _ => "the session token is malformed",
                })
            })?
            .claims
            .0;
        self.principal(&claims, now)
    }

    fn principal(&self, claims: &Map<String, Value>, now: i64) -> Result<Principal, Error> {
        let sub = string_claim(claims, "sub")?;
        let org = string_claim(claims, "org")?;
        let scopes = string_claim(claims, "scope")?;
        let exp = time_claim(claims, "exp")?.ok_or_else(|| missing("exp"))?;
        let iat = time_claim(claims, "iat")?.ok_or_else(|| missing("iat"))?;
        let nbf = time_claim(claims, "nbf")?;
        let mode = match claims.get("mode") {
            None => opgate_core::Mode::Live,
            Some(Value::String(m)) => opgate_core::Mode::parse(m).ok_or_else(|| {
                Error::unauthenticated("the session token's `mode` claim must be `live` or `test`")
            })?,
            Some(_) => {
                return Err(Error::unauthenticated(
                    "the session token's `mode` claim must be `live` or `test`",
                ))
            }
        };

        if exp <= now {
            return Err(Error::unauthenticated(format!(
                "the session token expired at {}",
                Timestamp(exp).to_rfc3339()
            )));
        }
        if iat > now + CLOCK_SKEW_SECONDS {
            return Err(Error::unauthenticated(format!(
                "the session token is not valid yet: it was issued in the future ({}); check the issuer's clock",
                Timestamp(iat).to_rfc3339()
            )));
        }
        if let Some(nbf) = nbf.filter(|nbf| *nbf > now + CLOCK_SKEW_SECONDS) {
            return Err(Error::unauthenticated(format!(
                "the session token is not valid before {}",
                Timestamp(nbf).to_rfc3339()
            )));
        }
        if let Some(issuer) = &self.issuer {
            match claims.get("iss") {
                None => return Err(missing("iss")),
                Some(Value::String(iss)) if iss == issuer => {}
                Some(_) => {
                    return Err(Error::unauthenticated(
                        "the session token's issuer (`iss`) is not the one this server accepts",
                    ))
                }
            }
        }
        if let Some(audience) = &self.audience {
            let named = match claims.get("aud") {
                None => return Err(missing("aud")),
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
                Some(_) => false,
            };
            if !named {
                return Err(Error::unauthenticated(
                    "the session token's audience (`aud`) does not include this server",
                ));
            }
        }
        if !sane_id(sub) {
            return Err(Error::unauthenticated(format!(
                "the session token's `sub` claim must be 1–{MAX_ID_CHARS} characters without control characters"
            )));
        }
        if !opgate_core::validate::is_org_id(org) {
            return Err(Error::unauthenticated(
                "the session token's `org` claim must be 1–128 letters, digits, `.`, `_` or `-`, starting with a \
                 letter or digit",
            ));
        }
        let mut permissions: Vec<String> = Vec::new();
        for entry in scopes.split_ascii_whitespace() {
            if !scope::is_valid(entry) {
                return Err(Error::unauthenticated(format!(
                    "the session token's `scope` claim holds `{}`, which is not a scope",
                    shown(entry)
                )));
            }
            if !permissions.iter().any(|p| p == entry) {
                permissions.push(entry.to_owned());
            }
        }
        if permissions.len() > MAX_SCOPES {
            return Err(Error::unauthenticated(format!(
                "the session token's `scope` claim holds more than {MAX_SCOPES} scopes"
            )));
        }
        Ok(Principal {
            kind: PrincipalKind::Session,
            id: sub.to_owned(),
            org: org.to_owned(),
            permissions,
            rate_limit: None,
            expires_at: Some(exp),
            allowed_ips: Vec::new(),
            mode,
            key_type: None,
            workspace: None,
            environment: None,
            service_account: None,
        })
    }
}

/// Checks the header before the signature is looked at: any algorithm but HS256 is refused with a message naming
/// it (the `jsonwebtoken` validation pinned to HS256 refuses them too; this gives the clearer message, e.g. for
/// `none`, which `jsonwebtoken` cannot even parse), as is a `crit` extension this server cannot honour.
fn check_header(token: &str) -> Result<(), Error> {
    let malformed = || {
        Error::unauthenticated(
            "the session token is malformed: its header is not base64url-encoded JSON",
        )
    };
    let header = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed())?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => {}
        Some(Value::String(alg)) => {
            return Err(Error::unauthenticated(format!(
                "the session token is signed with `{}`; only HS256 is accepted",
                shown(alg)
            )))
        }
        _ => {
            return Err(Error::unauthenticated(
                "the session token's header names no algorithm; only HS256 is accepted",
            ))
        }
    }
    // RFC 7515 §4.1.11: extensions marked critical must be understood; this server understands none.
    if header.contains_key("crit") {
        return Err(Error::unauthenticated(
            "the session token's header lists critical extensions (`crit`), which this server does not support",
        ));
    }
    // The header as `jsonwebtoken` reads it (e.g. `kid` must be a string), so that its later errors are about
    // the payload only.
    jsonwebtoken::decode_header(token).map_err(|_| {
        Error::unauthenticated(
            "the session token is malformed: its header has a field of the wrong type",
        )
    })?;
    Ok(())
}

fn missing(name: &str) -> Error {
    Error::unauthenticated(format!("the session token lacks the `{name}` claim"))
}

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<&'a str, Error> {
    match claims.get(name) {
        None | Some(Value::Null) => Err(missing(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::unauthenticated(format!(
            "the session token's `{name}` claim must be a string"
        ))),
    }
}

/// A NumericDate claim (seconds since the epoch; fractions are dropped), `None` when absent.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Error> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
            })
            .filter(|t| (0..=MAX_TIME).contains(t))
            .map(Some)
            .ok_or_else(|| bad_time(name)),
        Some(_) => Err(bad_time(name)),
    }
}

/// The last second of the year 9999: later times have no RFC 3339 form.
const MAX_TIME: i64 = 253_402_300_799;

fn bad_time(name: &str) -> Error {
    Error::unauthenticated(format!(
        "the session token's `{name}` claim must be a number of seconds since the epoch, before the year 10000"
    ))
}

/// Whether `id` may be a `sub`: 1–[`MAX_ID_CHARS`] characters, none of them control, invisible or formatting
/// characters ([`opgate_core::validate::is_hidden`]), so no subject looks blank or like another.
pub fn sane_id(id: &str) -> bool {
    !id.trim().is_empty()
        && id.chars().count() <= MAX_ID_CHARS
        && !id.chars().any(opgate_core::validate::is_hidden)
}

/// A caller-supplied fragment fit to quote in a message: at most 64 characters, no control characters.
fn shown(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(64).collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    out
}

const DUPLICATE_CLAIM: &str = "a claim named twice";

/// A token's claims, each named once. JSON parsers disagree about a repeated key (first or last wins), so a
/// payload naming a claim twice (`"org": "a", "org": "b"`) is refused rather than read one way here and
/// another way elsewhere.
struct UniqueClaims(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueClaims {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Claims;
        impl<'de> serde::de::Visitor<'de> for Claims {
            type Value = UniqueClaims;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of claims")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueClaims, A::Error> {
                let mut claims = Map::new();
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    if claims.insert(name, value).is_some() {
                        return Err(serde::de::Error::custom(DUPLICATE_CLAIM));
                    }
                }
                Ok(UniqueClaims(claims))
            }
        }
        d.deserialize_map(Claims)
    }
}

/// Verifies session tokens for the gateway.
#[derive(Clone)]
pub struct SessionAuthenticator {
    config: Arc<SessionConfig>,
    clock: Arc<dyn opgate_core::Clock>,
}

impl SessionAuthenticator {
    /// An authenticator checking tokens against `config`, with `exp`, `iat` and `nbf` read by `clock`.
    pub fn new(config: SessionConfig, clock: Arc<dyn opgate_core::Clock>) -> Self {
        SessionAuthenticator {
            config: Arc::new(config),
            clock,
        }
    }
}

#[async_trait::async_trait]
impl Authenticator for SessionAuthenticator {
    async fn authenticate(
        &self,
        token: &str,
        _request: &RequestInfo,
    ) -> Result<Arc<Principal>, Error> {
        self.config
            .verify_at(token, self.clock.now().unix())
            .map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opgate_core::Code;
    use serde_json::json;

    const SECRET: &[u8] = b"a session secret of at least 32 bytes!";
    const NOW: i64 = 1_800_000_000;

    fn config() -> SessionConfig {
        SessionConfig::new(SECRET, None, None).unwrap()
    }

    fn sign(header: Value, claims: Value, secret: &[u8]) -> String {
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        let message = format!("{}.{}", b64(&header), b64(&claims));
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{message}.{signature}")
    }

    fn hs256(claims: Value) -> String {
        sign(json!({"alg": "HS256", "typ": "JWT"}), claims, SECRET)
    }

    fn good() -> Value {
        json!({"sub": "user_1", "org": "acme", "scope": "api_keys:read api_keys:write", "iat": NOW, "exp": NOW + 60})
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    fn without(mut claims: Value, name: &str) -> Value {
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    #[track_caller]
    fn refused(config: &SessionConfig, token: &str, part: &str) {
        let err = config.verify_at(token, NOW).unwrap_err();
        assert_eq!(err.code, Code::Unauthenticated, "{err}");
        assert!(
            err.message.contains(part),
            "{:?} lacks {part:?}",
            err.message
        );
        assert!(
            !err.message.contains(token),
            "the message never echoes the token"
        );
    }

    #[test]
    fn a_good_token_becomes_a_session_principal() {
        let p = config().verify_at(&hs256(good()), NOW).unwrap();
        assert_eq!(
            p,
            Principal {
                kind: PrincipalKind::Session,
                id: "user_1".into(),
                org: "acme".into(),
                permissions: vec!["api_keys:read".into(), "api_keys:write".into()],
                rate_limit: None,
                expires_at: Some(NOW + 60),
                allowed_ips: Vec::new(),
                mode: opgate_core::Mode::Live,
                key_type: None,
                workspace: None,
                environment: None,
                service_account: None,
            }
        );
    }

    #[test]
    fn the_mode_claim_selects_test_mode_and_nothing_else() {
        let c = config();
        let test = c.verify_at(&hs256(with(good(), "mode", json!("test"))), NOW);
        assert_eq!(test.unwrap().mode, opgate_core::Mode::Test);
        let live = c.verify_at(&hs256(with(good(), "mode", json!("live"))), NOW);
        assert_eq!(live.unwrap().mode, opgate_core::Mode::Live);
        for bad in [json!("TEST"), json!(""), json!(1), json!(null)] {
            let err = c
                .verify_at(&hs256(with(good(), "mode", bad)), NOW)
                .unwrap_err();
            assert_eq!(
                err.message,
                "the session token's `mode` claim must be `live` or `test`"
            );
        }
        let minted = c
            .mint_at(
                &NewSession {
                    sub: "u".into(),
                    org: "o".into(),
                    scopes: vec!["*".into()],
                    ttl_seconds: 60,
                    mode: opgate_core::Mode::Test,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(
            c.verify_at(&minted, NOW).unwrap().mode,
            opgate_core::Mode::Test
        );
    }

    #[test]
    fn minted_tokens_verify_and_carry_issuer_and_audience() {
        let config = SessionConfig::new(SECRET, Some("idp".into()), Some("opgate".into())).unwrap();
        let token = config
            .mint_at(
                &NewSession {
                    sub: "u".into(),
                    org: "o".into(),
                    scopes: vec!["*".into()],
                    ttl_seconds: 60,
                    mode: opgate_core::Mode::Live,
                },
                NOW,
            )
            .unwrap();
        let p = config.verify_at(&token, NOW).unwrap();
        assert_eq!((p.id.as_str(), p.expires_at), ("u", Some(NOW + 60)));
        let expired = config.verify_at(&token, NOW + 60).unwrap_err();
        assert!(expired.message.contains("expired at"), "{expired}");
        let other = SessionConfig::new(SECRET, Some("other".into()), None).unwrap();
        refused(&other, &token, "issuer");
        let bad = |scopes: &[&str], ttl| {
            config
                .mint(&NewSession {
                    sub: "u".into(),
                    org: "o".into(),
                    scopes: scopes.iter().map(|s| s.to_string()).collect(),
                    ttl_seconds: ttl,
                    mode: opgate_core::Mode::Live,
                })
                .unwrap_err()
        };
        assert_eq!(bad(&["nope"], 60), MintError::BadScope("nope".into()));
        assert_eq!(bad(&["*"], 0), MintError::BadTtl);
        assert_eq!(bad(&["*"], MAX_TTL_SECONDS + 1), MintError::BadTtl);
    }

    #[test]
    fn every_failure_is_unauthenticated_with_its_cause() {
        let c = config();
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&good()).unwrap())
        );
        refused(&c, &none, "`none`; only HS256");
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &good(),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        refused(&c, &hs512, "`HS512`; only HS256");
        // An HMAC made with the secret under a header claiming RS256 (algorithm confusion).
        refused(
            &c,
            &sign(json!({"alg": "RS256"}), good(), SECRET),
            "`RS256`",
        );
        refused(
            &c,
            &sign(json!({"typ": "JWT"}), good(), SECRET),
            "no algorithm",
        );
        refused(
            &c,
            &sign(
                json!({"alg": "HS256"}),
                good(),
                b"another secret, also 32 bytes long",
            ),
            "signature is not valid",
        );
        // A payload swapped under a valid signature.
        let token = hs256(good());
        let parts: Vec<&str> = token.split('.').collect();
        let admin = hs256(with(good(), "scope", json!("*")));
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            admin.split('.').nth(1).unwrap(),
            parts[2]
        );
        refused(&c, &forged, "signature is not valid");
        refused(
            &c,
            &format!("{}.{}.", parts[0], parts[1]),
            "signature is not valid",
        );
        refused(&c, "e30.e30.", "no algorithm");
        refused(
            &c,
            &hs256(with(good(), "sub", json!(7))),
            "`sub` claim must be a string",
        );
        // Claims this server does not check may have any type.
        c.verify_at(
            &hs256(with(with(good(), "iss", json!(5)), "aud", json!({"x": 1}))),
            NOW,
        )
        .unwrap();
        refused(
            &c,
            &sign(json!({"alg": "HS256", "crit": ["exp"]}), good(), SECRET),
            "critical extensions",
        );
        refused(
            &c,
            &sign(json!({"alg": "HS256", "kid": 5}), good(), SECRET),
            "header has a field of the wrong type",
        );
        refused(
            &c,
            &hs256(with(good(), "exp", json!(i64::MAX))),
            "before the year 10000",
        );
        refused(
            &c,
            &hs256(with(good(), "iat", json!(-1))),
            "`iat` claim must be a number",
        );
        c.verify_at(&hs256(with(good(), "exp", json!(NOW as f64 + 0.5))), NOW)
            .unwrap_err();
        c.verify_at(&hs256(with(good(), "exp", json!(NOW as f64 + 1.5))), NOW)
            .unwrap();
        refused(&c, "!!!.e30.sig", "header is not base64url");
        refused(
            &c,
            &sign(json!({"alg": "HS256"}), json!([1]), SECRET),
            "not a JSON object",
        );
        refused(&c, &hs256(with(good(), "exp", json!(NOW))), "expired at");
        refused(
            &c,
            &hs256(with(good(), "exp", json!("soon"))),
            "`exp` claim must be a number",
        );
        refused(
            &c,
            &hs256(with(good(), "iat", json!(NOW + CLOCK_SKEW_SECONDS + 1))),
            "issued in the future",
        );
        c.verify_at(
            &hs256(with(good(), "iat", json!(NOW + CLOCK_SKEW_SECONDS))),
            NOW,
        )
        .unwrap();
        refused(
            &c,
            &hs256(with(good(), "nbf", json!(NOW + 3600))),
            "not valid before",
        );
        for claim in ["sub", "org", "scope", "exp", "iat"] {
            refused(
                &c,
                &hs256(without(good(), claim)),
                &format!("lacks the `{claim}` claim"),
            );
        }
        refused(
            &c,
            &hs256(with(good(), "sub", json!(""))),
            "`sub` claim must be 1–128",
        );
        refused(
            &c,
            &hs256(with(good(), "org", json!("a".repeat(129)))),
            "`org` claim must be",
        );
        refused(
            &c,
            &hs256(with(good(), "org", json!(7))),
            "`org` claim must be a string",
        );
        refused(
            &c,
            &hs256(with(good(), "scope", json!("api_keys:read Admin"))),
            "`Admin`",
        );
        refused(
            &c,
            &hs256(with(good(), "scope", json!(["api_keys:read"]))),
            "must be a string",
        );
    }

    #[test]
    fn issuer_and_audience_are_checked_only_when_configured() {
        let open = config();
        let strict = SessionConfig::new(SECRET, Some("idp".into()), Some("opgate".into())).unwrap();
        let plain = hs256(good());
        open.verify_at(&plain, NOW).unwrap();
        refused(&strict, &plain, "lacks the `iss` claim");
        let both = with(with(good(), "iss", json!("idp")), "aud", json!("opgate"));
        strict.verify_at(&hs256(both.clone()), NOW).unwrap();
        open.verify_at(&hs256(both.clone()), NOW).unwrap();
        strict
            .verify_at(
                &hs256(with(both.clone(), "aud", json!(["x", "opgate"]))),
                NOW,
            )
            .unwrap();
        refused(
            &strict,
            &hs256(with(both.clone(), "iss", json!("evil"))),
            "issuer",
        );
        refused(
            &strict,
            &hs256(with(both.clone(), "aud", json!("other"))),
            "audience",
        );
        refused(
            &strict,
            &hs256(without(both, "aud")),
            "lacks the `aud` claim",
        );
        // Empty settings count as not configured.
        let empty = SessionConfig::new(SECRET, Some(String::new()), Some(" ".into())).unwrap();
        empty.verify_at(&plain, NOW).unwrap();
    }

    #[test]
    fn scopes_are_deduplicated_and_may_be_empty() {
        let p = config()
            .verify_at(&hs256(with(good(), "scope", json!(" a:b  a:b c:* "))), NOW)
            .unwrap();
        assert_eq!(p.permissions, ["a:b", "c:*"]);
        let p = config()
            .verify_at(&hs256(with(good(), "scope", json!(""))), NOW)
            .unwrap();
        assert!(p.permissions.is_empty());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", config());
        assert!(shown.contains("<redacted>"));
        let settings = SessionSettings {
            secret: Some("s3cr3t-value".into()),
            ..SessionSettings::default()
        };
        assert!(!format!("{settings:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn a_payload_naming_a_claim_twice_is_refused() {
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let payload = format!(
            r#"{{"sub":"user_1","org":"default","org":"globex","scope":"*","iat":{NOW},"exp":{}}}"#,
            NOW + 60
        );
        let message = format!(
            "{}.{}",
            b64(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64(&payload)
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .unwrap();
        let e = config()
            .verify_at(&format!("{message}.{signature}"), NOW)
            .unwrap_err();
        assert_eq!(e.code, Code::Unauthenticated);
        assert_eq!(
            e.message,
            "the session token is malformed: its payload names a claim twice"
        );
    }
}
