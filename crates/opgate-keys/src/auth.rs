use std::sync::Arc;

use opgate_core::{Authenticator, Error, Principal, PrincipalKind, RequestInfo, Timestamp};
use opgate_store::{KeyRecord, KeyUsage};
use subtle::ConstantTimeEq;

use crate::cache::{CachedKey, End};
use crate::{ip, token, ApiKeys};

/// Authenticates `opg_` bearer keys: format and checksum first (garbage never reaches storage or the cache),
/// then the keyed hash is looked up — in the verification cache, else in storage — and the key's revocation,
/// expiry, rotation grace and address allow-list are checked. Each success is recorded for last-used tracking.
pub struct ApiKeyAuthenticator {
    keys: Arc<ApiKeys>,
}

impl ApiKeyAuthenticator {
    /// An authenticator over the key service.
    pub fn new(keys: Arc<ApiKeys>) -> Self {
        ApiKeyAuthenticator { keys }
    }

    async fn verify(&self, token: &str, request: &RequestInfo) -> Result<Arc<Principal>, Error> {
        let mode = token::check(token).map_err(|e| {
            let reason = match e {
                token::TokenError::Malformed => "malformed_key",
                token::TokenError::BadChecksum => "bad_checksum",
            };
            Error::unauthenticated(e.to_string()).with_reason(reason)
        })?;
        let hash = self.keys.hasher.hash(token);
        let key = match self.keys.cache.get(&hash) {
            (Some(key), _) => key,
            (None, generation) => {
                let record = self
                    .keys
                    .store
                    .key_by_hash(hash.to_vec())
                    .await
                    .map_err(Error::from)?
                    .filter(|r| bool::from(r.key_hash.as_slice().ct_eq(&hash)))
                    .ok_or_else(|| {
                        Error::unauthenticated("the API key is not valid")
                            .with_reason("unknown_key")
                    })?;
                if record.revoked_at.is_some() {
                    return Err(Error::unauthenticated("the API key has been revoked")
                        .with_reason("revoked"));
                }
                // The mode is written from the secret's prefix when the key is made; a row that disagrees is
                // damaged, and fails closed.
                if record.mode != mode {
                    return Err(Error::unauthenticated("the API key is not valid")
                        .with_reason("unknown_key"));
                }
                if !record.service_account_active {
                    return Err(Error::unauthenticated(
                        "the API key's service account is disabled or deleted",
                    )
                    .with_reason("service_account_disabled"));
                }
                let key = Arc::new(cached(record));
                self.keys.cache.insert(hash, generation, Arc::clone(&key));
                key
            }
        };
        let now = self.keys.clock.now().unix();
        if let Some((at, why)) = key.ends.filter(|(at, _)| now >= *at) {
            let when = Timestamp(at).to_rfc3339();
            return Err(match why {
                End::Expiry => Error::unauthenticated(format!("the API key expired at {when}"))
                    .with_reason("expired"),
                End::Grace => Error::unauthenticated(format!(
                    "the API key was rotated; its grace period ended at {when}"
                ))
                .with_reason("rotated"),
            });
        }
        if key.fence_unreadable || !ip::allows(&key.allowed, request.client_ip) {
            let client = request
                .client_ip
                .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
            return Err(Error::permission_denied(format!(
                "the API key may not be used from address {client}"
            ))
            .with_reason("ip_not_allowed"));
        }
        self.keys.usage.record(KeyUsage {
            key_id: key.principal.id.clone(),
            at: now,
            ip: request.client_ip.map(|a| a.to_string()),
            user_agent: request.user_agent.clone(),
        });
        Ok(Arc::clone(&key.principal))
    }
}

fn cached(record: KeyRecord) -> CachedKey {
    // A stored entry that does not parse fails closed: the key is refused everywhere rather than allowed
    // everywhere (inputs are validated, so this only happens to a damaged row).
    let parsed: Vec<_> = record
        .allowed_ips
        .iter()
        .map(|e| ip::parse_allowed(e))
        .collect();
    let fence_unreadable = parsed.iter().any(Result::is_err);
    let allowed = parsed.into_iter().filter_map(Result::ok).collect();
    let expiry = record.expires_at.map(|t| (t, End::Expiry));
    let grace = record.grace_expires_at.map(|t| (t, End::Grace));
    let ends = match (expiry, grace) {
        (Some(e), Some(g)) => Some(if g.0 < e.0 { g } else { e }),
        (e, g) => e.or(g),
    };
    CachedKey {
        principal: Arc::new(Principal {
            kind: PrincipalKind::ApiKey,
            id: record.id,
            org: record.org_id,
            permissions: record.permissions,
            rate_limit: record.rate_limit,
            expires_at: ends.map(|(t, _)| t),
            allowed_ips: record.allowed_ips.clone(),
            mode: record.mode,
            key_type: Some(record.key_type),
            workspace: record.workspace_id,
            environment: record.environment_id,
            service_account: record.service_account_id,
        }),
        allowed,
        fence_unreadable,
        ends,
        read_at: std::time::Instant::now(),
    }
}

#[async_trait::async_trait]
impl Authenticator for ApiKeyAuthenticator {
    async fn authenticate(
        &self,
        token: &str,
        request: &RequestInfo,
    ) -> Result<Arc<Principal>, Error> {
        self.verify(token, request).await
    }
}
