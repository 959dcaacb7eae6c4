//! The authenticator the gateway calls: it tells the two kinds of bearer token apart by their shape and hands
//! each to its own authenticator.

use std::sync::Arc;

use opgate_core::{Authenticator, Error, Principal, RequestInfo};

use crate::session::SessionAuthenticator;

pub use opgate_core::API_KEY_PREFIX;

/// What kind of credential a bearer token looks like, judged by its shape alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Starts with `opg_`.
    ApiKey,
    /// Three dot-separated base64url parts (the third, the signature, may be empty so that an unsigned
    /// `alg: none` token is refused with a message saying so).
    Session,
    /// Neither.
    Unknown,
}

/// Classifies `token` by shape; never looks anything up.
pub fn classify(token: &str) -> TokenKind {
    if token.starts_with(API_KEY_PREFIX) {
        return TokenKind::ApiKey;
    }
    let base64url = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let parts: Vec<&str> = token.split('.').collect();
    match parts.as_slice() {
        [header, payload, signature]
            if !header.is_empty()
                && !payload.is_empty()
                && base64url(header)
                && base64url(payload)
                && base64url(signature) =>
        {
            TokenKind::Session
        }
        _ => TokenKind::Unknown,
    }
}

/// Routes `opg_` tokens to the API-key authenticator and JWT-shaped tokens to the session authenticator;
/// anything else is refused at once, without touching storage.
pub struct TokenRouter {
    /// Verifies API keys.
    pub keys: Arc<dyn Authenticator>,
    /// Verifies session tokens.
    pub sessions: SessionAuthenticator,
}

impl TokenRouter {
    /// A router over the two authenticators.
    pub fn new(keys: Arc<dyn Authenticator>, sessions: SessionAuthenticator) -> Self {
        TokenRouter { keys, sessions }
    }
}

#[async_trait::async_trait]
impl Authenticator for TokenRouter {
    async fn authenticate(
        &self,
        token: &str,
        request: &RequestInfo,
    ) -> Result<Arc<Principal>, Error> {
        match classify(token) {
            TokenKind::ApiKey => self.keys.authenticate(token, request).await,
            TokenKind::Session => self
                .sessions
                .authenticate(token, request)
                .await
                .map_err(|e| match e.reason {
                    Some(_) => e,
                    None => e.with_reason("bad_session"),
                }),
            TokenKind::Unknown => Err(Error::unauthenticated(
                "the token is neither an API key nor a session token",
            )
            .with_reason("unrecognized_token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use opgate_core::{Code, PrincipalKind};

    use super::*;
    use crate::session::{NewSession, SessionConfig};

    #[test]
    fn tokens_are_told_apart_by_shape() {
        for (token, kind) in [
            ("opg_abc", TokenKind::ApiKey),
            ("eyJhbGciOiJIUzI1NiJ9.e30.c2ln", TokenKind::Session),
            ("eyJhbGciOiJub25lIn0.e30.", TokenKind::Session),
            ("a.b.c", TokenKind::Session),
            ("a.b", TokenKind::Unknown),
            ("a.b.c.d", TokenKind::Unknown),
            (".b.c", TokenKind::Unknown),
            ("a..c", TokenKind::Unknown),
            ("a.b+/.c", TokenKind::Unknown),
            ("a.b.c=", TokenKind::Unknown),
            ("sk_live_123", TokenKind::Unknown),
            ("", TokenKind::Unknown),
        ] {
            assert_eq!(classify(token), kind, "{token:?}");
        }
    }

    /// Counts the tokens it was asked about and refuses them all.
    struct CountingKeys(AtomicUsize);

    #[async_trait::async_trait]
    impl Authenticator for CountingKeys {
        async fn authenticate(
            &self,
            _token: &str,
            _request: &RequestInfo,
        ) -> Result<Arc<Principal>, Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(Error::unauthenticated("no key"))
        }
    }

    #[tokio::test]
    async fn each_kind_goes_to_its_authenticator() {
        let keys = Arc::new(CountingKeys(AtomicUsize::new(0)));
        let config = SessionConfig::new(&[1u8; 32], None, None).unwrap();
        let token = config
            .mint(&NewSession {
                sub: "user_1".into(),
                org: "acme".into(),
                scopes: vec!["api_keys:read".into()],
                ttl_seconds: 60,
                mode: opgate_core::Mode::Live,
            })
            .unwrap();
        let router = TokenRouter::new(
            keys.clone(),
            SessionAuthenticator::new(config, opgate_core::SystemClock::shared()),
        );
        let info = RequestInfo {
            client_ip: None,
            user_agent: None,
        };
        let p = router.authenticate(&token, &info).await.unwrap();
        assert_eq!((p.kind, p.id.as_str()), (PrincipalKind::Session, "user_1"));
        let err = router.authenticate("garbage", &info).await.unwrap_err();
        assert_eq!(err.code, Code::Unauthenticated);
        assert_eq!(
            err.message,
            "the token is neither an API key nor a session token"
        );
        assert_eq!(
            keys.0.load(Ordering::SeqCst),
            0,
            "garbage never reaches the keys"
        );
        let err = router.authenticate("opg_x", &info).await.unwrap_err();
        assert_eq!(err.message, "no key");
        assert_eq!(keys.0.load(Ordering::SeqCst), 1);
    }
}
