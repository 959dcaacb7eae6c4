//! API keys: the `opg_` key format, keyed hashing under the server secret, the bearer-key
//! [`Authenticator`](opgate_core::Authenticator), and the `api_keys.*` operations.
//!
//! The wire types ([`types`]) and the allow-list syntax ([`ip`]) need no storage. Everything else sits behind
//! the default feature `server`; clients (`opgate-client`) depend on this crate with `default-features =
//! false` to share the types without SQLite.

#[cfg(feature = "server")]
mod auth;
#[cfg(feature = "server")]
mod cache;
#[cfg(feature = "server")]
mod grants;
pub mod ip;
#[cfg(feature = "server")]
mod ops;
#[cfg(feature = "server")]
mod schedule;
#[cfg(feature = "server")]
mod secret;
#[cfg(feature = "server")]
pub mod token;
pub mod types;
#[cfg(feature = "server")]
mod usage;

#[cfg(feature = "server")]
use std::sync::Arc;
#[cfg(feature = "server")]
use std::time::Duration;

#[cfg(feature = "server")]
use opgate_core::{Error, Registry, RegistryError, Timestamp};
#[cfg(feature = "server")]
use opgate_store::{KeyRecord, KeyStore, NewKey, Scope, StoreError, TenancyStore};

#[cfg(feature = "server")]
pub use auth::ApiKeyAuthenticator;
#[cfg(feature = "server")]
pub use schedule::{Pass, Scheduler};
#[cfg(feature = "server")]
pub use secret::{KeyHasher, SecretError, SECRET_FILE};
#[cfg(feature = "server")]
pub use usage::UsageRecorder;

/// Organization of the admin key minted on first start.
pub const DEFAULT_ORG: &str = "default";

/// Shared state of the key operations and the authenticator: the store, the hasher, the verification cache
/// and the pending usage.
#[cfg(feature = "server")]
pub struct ApiKeys {
    store: Arc<dyn KeyStore>,
    tenancy: Arc<dyn TenancyStore>,
    sealer: opgate_webhooks::Sealer,
    clock: Arc<dyn opgate_core::Clock>,
    hasher: KeyHasher,
    cache: Arc<cache::KeyCache>,
    usage: Arc<UsageRecorder>,
}

/// What a new key is made of, before its secret exists.
#[cfg(feature = "server")]
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Owning organization.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Scopes granted (already checked against the granter's).
    pub permissions: Vec<String>,
    /// Requests per minute.
    pub rate_limit: Option<u32>,
    /// Allowed IPs and CIDRs.
    pub allowed_ips: Vec<String>,
    /// Principal id of the creator.
    pub created_by: String,
    /// When it expires, if ever.
    pub expires_at: Option<Timestamp>,
    /// Live or test: decides the secret's prefix too.
    pub mode: opgate_core::Mode,
    /// Organization-wide or confined to `workspace_id`.
    pub key_type: opgate_core::KeyType,
    /// The workspace of a workspace key (`None`: the organization's default workspace).
    pub workspace_id: Option<String>,
    /// The environment it is bound to.
    pub environment_id: Option<String>,
    /// The service account it belongs to.
    pub service_account_id: Option<String>,
    /// Days between scheduled rotations.
    pub rotation_interval_days: Option<u32>,
    /// Where a scheduled rotation delivers the new secret.
    pub rotation_webhook_url: Option<String>,
}

#[cfg(feature = "server")]
impl KeySpec {
    /// A live, organization-wide admin key of `org_id` made by `created_by`: what `opgate admin create-key`
    /// and the first start mint. Set the other fields with struct update syntax.
    pub fn admin(org_id: &str, name: &str, created_by: &str) -> Self {
        KeySpec {
            org_id: org_id.into(),
            name: name.into(),
            description: None,
            permissions: vec!["*".into()],
            rate_limit: None,
            allowed_ips: Vec::new(),
            created_by: created_by.into(),
            expires_at: None,
            mode: opgate_core::Mode::Live,
            key_type: opgate_core::KeyType::Admin,
            workspace_id: None,
            environment_id: None,
            service_account_id: None,
            rotation_interval_days: None,
            rotation_webhook_url: None,
        }
    }
}

#[cfg(feature = "server")]
impl ApiKeys {
    /// The key service over `store` (keys) and `tenancy` (the workspaces, environments and service accounts
    /// keys belong to), hashing with `hasher`, telling time by `clock`.
    pub fn new(
        store: Arc<dyn KeyStore>,
        tenancy: Arc<dyn TenancyStore>,
        sealer: opgate_webhooks::Sealer,
        hasher: KeyHasher,
        clock: Arc<dyn opgate_core::Clock>,
    ) -> Arc<Self> {
        // Every commit that changes a key drops it from the cache before the change is acknowledged.
        let cache = Arc::new(cache::KeyCache::new());
        let forget = Arc::clone(&cache);
        store.on_change(Arc::new(move |hash: &[u8]| forget.forget(hash)));
        Arc::new(ApiKeys {
            usage: Arc::new(UsageRecorder::new(Arc::clone(&store))),
            store,
            tenancy,
            sealer,
            clock,
            hasher,
            cache,
        })
    }

    /// Starts flushing recorded key usage to storage every `interval` (the contract: at most a second behind).
    pub fn start_usage_flusher(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        self.usage.spawn_flusher(interval)
    }

    /// Writes all recorded key usage now (on shutdown, before the store closes).
    pub async fn flush_usage(&self) {
        self.usage.flush().await;
    }

    /// Follows the store's key change log, dropping each changed key from the verification cache: a revoke,
    /// rotation or update committed by another process on the same database (another instance of a fleet, or
    /// `opgate admin` beside a running server) takes effect here within about `interval`, or at once when the
    /// store announces changes ([`KeyStore::change_signal`], PostgreSQL's `NOTIFY`). Announcements can be
    /// lost (a dropped connection), so the log is also read every `interval` and on every reconnect; while it
    /// cannot be read, the cache is bypassed (every request reads its key from the database).
    pub fn follow_changes(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let keys = Arc::clone(self);
        let signal = keys.store.change_signal();
        // The cache is used for a few intervals after each complete read of the log, never longer.
        let window = interval * 4;
        tokio::spawn(async move {
            // Entries older than an hour are trimmed: any follower is far past them by then.
            const KEEP_SECS: i64 = 3600;
            let mut after = match keys.store.key_changes(i64::MAX).await {
                Ok(changes) => {
                    keys.cache.caught_up(window);
                    changes.last
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the key change log failed");
                    0
                }
            };
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut trimmed_at = std::time::Instant::now();
            loop {
                match &signal {
                    Some(signal) => {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = signal.notified() => {}
                        }
                    }
                    None => {
                        tick.tick().await;
                    }
                }
                loop {
                    match keys.store.key_changes(after).await {
                        Ok(changes) => {
                            for hash in &changes.hashes {
                                keys.cache.forget(hash);
                            }
                            let more = !changes.hashes.is_empty() && changes.last > after;
                            after = changes.last;
                            if more {
                                // A page at a time: read on until the log's end.
                                continue;
                            }
                            keys.cache.caught_up(window);
                        }
                        Err(e) => tracing::warn!(error = %e, "reading the key change log failed"),
                    }
                    break;
                }
                if trimmed_at.elapsed() > Duration::from_secs(600) {
                    trimmed_at = std::time::Instant::now();
                    let cutoff = keys.clock.now().unix() - KEEP_SECS;
                    if let Err(e) = keys.store.trim_key_changes(cutoff).await {
                        tracing::warn!(error = %e, "trimming the key change log failed");
                    }
                }
            }
        })
    }

    /// Registers every `api_keys.*` operation; rotation webhook URLs must be ones `policy` allows.
    pub fn register(
        self: &Arc<Self>,
        registry: &mut Registry,
        policy: opgate_webhooks::guard::Policy,
    ) -> Result<(), RegistryError> {
        registry
            .register(ops::CreateKey(self.clone(), policy))?
            .register_stream(ops::ListKeys(self.clone()))?
            .register(ops::GetKey(self.clone()))?
            .register(ops::UpdateKey(self.clone(), policy))?
            .register(ops::RotateKey(self.clone()))?
            .register(ops::RevokeKey(self.clone()))?;
        Ok(())
    }

    /// Mints a key: generates the secret, stores its hash and returns the secret with the stored record.
    pub async fn mint(&self, spec: KeySpec) -> Result<(String, KeyRecord), StoreError> {
        let secret = token::generate(spec.mode);
        let record = self.store.insert_key(self.new_key(&secret, spec)).await?;
        Ok((secret, record))
    }

    /// Mints many keys in one transaction and returns their secrets (seeding and benchmarks).
    pub async fn mint_many(&self, specs: Vec<KeySpec>) -> Result<Vec<String>, StoreError> {
        let (secrets, keys): (Vec<_>, Vec<_>) = specs
            .into_iter()
            .map(|spec| {
                let secret = token::generate(spec.mode);
                let key = self.new_key(&secret, spec);
                (secret, key)
            })
            .unzip();
        self.store.insert_keys(keys).await?;
        Ok(secrets)
    }

    /// On an empty database, mints the admin key (`*` in org `default`) and returns its secret.
    /// Instances of a fleet starting together mint one key between them: the insert checks in its own
    /// transaction that the store is still empty.
    pub async fn bootstrap_admin(&self) -> Result<Option<String>, StoreError> {
        if self.store.count_keys().await? > 0 {
            return Ok(None);
        }
        let spec = KeySpec {
            description: Some("Minted on first start.".into()),
            ..KeySpec::admin(DEFAULT_ORG, "admin", "bootstrap")
        };
        let secret = token::generate(spec.mode);
        let inserted = self
            .store
            .insert_first_key(self.new_key(&secret, spec))
            .await?;
        Ok(inserted.map(|_| secret))
    }

    pub(crate) fn new_key(&self, secret: &str, spec: KeySpec) -> NewKey {
        // A fresh random part each time: a monotonic increment would tell one organization how many keys
        // others made within the same millisecond. Lists order by insertion, not by id.
        NewKey {
            id: opgate_store::new_id("key"),
            org_id: spec.org_id,
            name: spec.name,
            description: spec.description,
            key_prefix: token::display_prefix(secret).to_owned(),
            key_hash: self.hasher.hash(secret).to_vec(),
            permissions: spec.permissions,
            rate_limit: spec.rate_limit,
            allowed_ips: spec.allowed_ips,
            created_by: spec.created_by,
            created_at: self.clock.now().unix(),
            expires_at: spec.expires_at.map(Timestamp::unix),
            workspace_id: spec.workspace_id,
            environment_id: spec.environment_id,
            mode: spec.mode,
            key_type: spec.key_type,
            service_account_id: spec.service_account_id,
            rotation_interval_days: spec.rotation_interval_days,
            rotation_webhook_url: spec.rotation_webhook_url,
            // Every key keeps the signing key of its own rotation webhook, derived from its secret while the
            // secret is at hand: scheduled rotation can be turned on later without another secret to hand out.
            rotation_key_sealed: Some(
                self.sealer.seal(
                    &opgate_webhooks::signature::secret_bytes(
                        &opgate_webhooks::signature::rotation_secret(secret),
                    )
                    .expect("a secret made here decodes"),
                ),
            ),
        }
    }
}

/// 400 unless `url` is one a rotation webhook may have (`policy` decides which addresses).
#[cfg(feature = "server")]
pub(crate) fn check_rotation_url(
    url: &str,
    policy: opgate_webhooks::guard::Policy,
) -> Result<String, Error> {
    opgate_webhooks::guard::check_url(url, policy)
        .map(|u| u.to_string())
        .map_err(|why| Error::invalid_argument(format!("rotation_webhook_{why}")))
}

/// The keys a call sees: its organization and mode, and its workspace if it works in one.
#[cfg(feature = "server")]
pub(crate) fn scope_of(ctx: &opgate_core::Context) -> Scope {
    Scope {
        org_id: ctx.principal.org.clone(),
        mode: ctx.mode(),
        workspace_id: ctx.workspace.clone(),
    }
}

/// The 404 for a key id the caller cannot see: another organization's, workspace's or mode's key reads the
/// same as one that never existed.
#[cfg(feature = "server")]
pub(crate) fn not_found(key_id: &str) -> Error {
    Error::not_found(format!(
        "key_id: no API key `{key_id}` in this organization"
    ))
}

/// 403 when `target` holds a permission the caller could not grant: update, rotate and revoke only act on
/// keys no more powerful than the caller.
#[cfg(feature = "server")]
pub(crate) fn check_target(
    caller: &opgate_core::Principal,
    target: &KeyRecord,
) -> Result<(), Error> {
    match target
        .permissions
        .iter()
        .find(|p| !opgate_core::scope::covers(&caller.permissions, p))
    {
        None => Ok(()),
        Some(p) => Err(Error::permission_denied(format!(
            "key_id: the key holds `{p}`, beyond the caller's own permissions"
        ))),
    }
}

/// 403 unless `caller` may receive a new secret of `target` (by rotating it now, or, `scheduled`, by scheduling
/// its rotations to a URL): `target` holds nothing beyond the caller's permissions; a caller bound to an
/// environment or owned by a service account only gets secrets of keys of its own; and the key is no less
/// restricted (rate limit, allowed addresses) than the caller, since whoever holds the secret holds the key.
/// A scheduled rotation also may not outlive the caller (a rotation now caps the replacement's expiry instead).
#[cfg(feature = "server")]
pub(crate) fn check_may_receive_secret(
    caller: &opgate_core::Principal,
    target: &KeyRecord,
    scheduled: bool,
) -> Result<(), Error> {
    check_target(caller, target)?;
    for (field, own, of_target) in [
        ("environment", &caller.environment, &target.environment_id),
        (
            "service account",
            &caller.service_account,
            &target.service_account_id,
        ),
    ] {
        if let Some(own) = own.as_ref().filter(|own| of_target.as_ref() != Some(*own)) {
            return Err(Error::permission_denied(format!(
                "key_id: this key belongs to {field} `{own}` and gets secrets only of keys of it"
            )));
        }
    }
    if grants::rate_limit(caller, target.rate_limit)? != target.rate_limit
        || grants::allowed_ips(
            caller,
            Some(target.allowed_ips.clone()).filter(|l| !l.is_empty()),
        )? != target.allowed_ips
    {
        return Err(Error::permission_denied(
            "key_id: the key is less restricted (rate limit or allowed addresses) than the caller",
        ));
    }
    if let Some(own) = caller.expires_at.filter(|_| scheduled) {
        if target.expires_at.is_none_or(|t| t > own) {
            return Err(Error::permission_denied(
                "key_id: the key outlives the caller; a key receives secrets only of keys that expire no later \
                 than itself",
            ));
        }
    }
    Ok(())
}

/// 400 naming the first requested permission that no operation of this gateway requires: granting it
/// would silently grant nothing.
#[cfg(feature = "server")]
pub(crate) fn check_known(
    scopes: &opgate_core::scope::Catalog,
    permissions: &[String],
) -> Result<(), Error> {
    for (i, p) in permissions.iter().enumerate() {
        scopes
            .check(p)
            .map_err(|why| Error::invalid_argument(format!("permissions[{i}]: {why}")))?;
    }
    Ok(())
}

/// Drops repeated scopes, keeping the first occurrence's order.
#[cfg(feature = "server")]
pub(crate) fn dedup(mut scopes: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    scopes.retain(|s| seen.insert(s.clone()));
    scopes
}
