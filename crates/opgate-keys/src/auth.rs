use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use opgate_core::{Authenticator, Error, Principal, PrincipalKind, RequestInfo, Timestamp};
use subtle::ConstantTimeEq;

use crate::{ip, storage_error, token, ApiKeys};

/// Authenticates `opg_` bearer keys: format and checksum first (no storage access for garbage), then the
/// keyed hash is looked up and the key's revocation, expiry and address allow-list are checked.
pub struct ApiKeyAuthenticator {
    keys: Arc<ApiKeys>,
}

impl ApiKeyAuthenticator {
    /// An authenticator over the key service.
    pub fn new(keys: Arc<ApiKeys>) -> Self {
        ApiKeyAuthenticator { keys }
    }

    async fn verify(&self, token: &str, request: &RequestInfo) -> Result<Arc<Principal>, Error> {
        token::check(token).map_err(|e| Error::unauthenticated(e.to_string()))?;
        let hash = self.keys.hasher.hash(token);
        let record = self
            .keys
            .store
            .key_by_hash(hash.to_vec())
            .await
            .map_err(storage_error)?
            .filter(|r| bool::from(r.key_hash.as_slice().ct_eq(&hash)))
            .ok_or_else(|| Error::unauthenticated("the API key is not valid"))?;
        if record.revoked_at.is_some() {
            return Err(Error::unauthenticated("the API key has been revoked"));
        }
        if let Some(expires_at) = record.expires_at {
            if Timestamp::now().unix() >= expires_at {
                return Err(Error::unauthenticated(format!(
                    "the API key expired at {}",
                    Timestamp(expires_at).to_rfc3339()
                )));
            }
        }
        let allowed: Vec<_> = record
            .allowed_ips
            .iter()
            .filter_map(|e| ip::parse_allowed(e).ok())
            .collect();
        if !ip::allows(&allowed, request.client_ip) {
            let client = request
                .client_ip
                .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
            return Err(Error::permission_denied(format!(
                "the API key may not be used from address {client}"
            )));
        }
        Ok(Arc::new(Principal {
            kind: PrincipalKind::ApiKey,
            id: record.id,
            org: record.org_id,
            permissions: record.permissions,
            rate_limit: record.rate_limit,
            expires_at: record.expires_at,
        }))
    }
}

impl Authenticator for ApiKeyAuthenticator {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
        request: &'a RequestInfo,
    ) -> Pin<Box<dyn Future<Output = Result<Arc<Principal>, Error>> + Send + 'a>> {
        Box::pin(self.verify(token, request))
    }
}
