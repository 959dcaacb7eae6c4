//! [`KeyStore`] on PostgreSQL: the SQLite store's key queries, statement for statement.

use std::collections::BTreeSet;
use std::sync::Arc;

use opgate_core::{KeyType, Mode};
use opgate_store::{
    ChangeListener, KeyChanges, KeyPage, KeyPatch, KeyRecord, KeyStatus, KeyStore, KeyUsage,
    NewKey, Rotation, Scope, StoreError, Update,
};
use tokio_postgres::Row;

use crate::webhooks::key_event;
use crate::{pg, PgStore, Tx};

/// The columns [`key_from_row`] reads, in order (from [`KEYS_FROM`]).
pub(crate) const KEY_COLUMNS: &str = "k.seq, k.id, k.org_id, k.name, k.description, k.key_prefix, k.key_hash, \
     k.permissions, k.rate_limit, k.allowed_ips, k.created_by, k.created_at, k.expires_at, k.revoked_at, \
     k.last_used_at, k.last_used_ip, k.last_used_user_agent, k.replaced_by_key_id, k.grace_expires_at, \
     k.workspace_id, k.environment_id, k.mode, k.key_type, k.service_account_id, \
     (k.service_account_id IS NULL OR sa.disabled_at IS NULL AND sa.id IS NOT NULL), \
     k.rotation_interval_days, k.rotation_webhook_url, k.next_rotation_at, k.rotating_to_key_id, \
     (k.rotation_key_sealed IS NOT NULL)";

/// Keys with their service account, for whether it is enabled.
pub(crate) const KEYS_FROM: &str =
    "api_keys k LEFT JOIN service_accounts sa ON sa.id = k.service_account_id";

/// A text column parsed by `parse`, or a corrupt-row error naming the value.
pub(crate) fn named<T>(
    row: &Row,
    idx: usize,
    parse: fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text: String = row.try_get(idx).map_err(pg)?;
    parse(&text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown value `{text}` in column {idx}")))
}

/// A JSON list stored as text.
pub(crate) fn json_list(row: &Row, idx: usize) -> Result<Vec<String>, StoreError> {
    let text: String = row.try_get(idx).map_err(pg)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))
}

/// A `BIGINT` column that holds a `u32`.
pub(crate) fn small(row: &Row, idx: usize) -> Result<Option<u32>, StoreError> {
    let value: Option<i64> = row.try_get(idx).map_err(pg)?;
    value
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("column {idx}: {v} out of range")))
        })
        .transpose()
}

/// A key as [`KEY_COLUMNS`] selects it.
pub(crate) fn key_from_row(row: &Row) -> Result<KeyRecord, StoreError> {
    let get = |e| pg(e);
    Ok(KeyRecord {
        seq: row.try_get(0).map_err(get)?,
        id: row.try_get(1).map_err(get)?,
        org_id: row.try_get(2).map_err(get)?,
        name: row.try_get(3).map_err(get)?,
        description: row.try_get(4).map_err(get)?,
        key_prefix: row.try_get(5).map_err(get)?,
        key_hash: row.try_get(6).map_err(get)?,
        permissions: json_list(row, 7)?,
        rate_limit: small(row, 8)?,
        allowed_ips: json_list(row, 9)?,
        created_by: row.try_get(10).map_err(get)?,
        created_at: row.try_get(11).map_err(get)?,
        expires_at: row.try_get(12).map_err(get)?,
        revoked_at: row.try_get(13).map_err(get)?,
        last_used_at: row.try_get(14).map_err(get)?,
        last_used_ip: row.try_get(15).map_err(get)?,
        last_used_user_agent: row.try_get(16).map_err(get)?,
        replaced_by_key_id: row.try_get(17).map_err(get)?,
        grace_expires_at: row.try_get(18).map_err(get)?,
        workspace_id: row.try_get(19).map_err(get)?,
        environment_id: row.try_get(20).map_err(get)?,
        mode: named(row, 21, Mode::parse)?,
        key_type: named(row, 22, KeyType::parse)?,
        service_account_id: row.try_get(23).map_err(get)?,
        service_account_active: row.try_get(24).map_err(get)?,
        rotation_interval_days: small(row, 25)?,
        rotation_webhook_url: row.try_get(26).map_err(get)?,
        next_rotation_at: row.try_get(27).map_err(get)?,
        rotating_to_key_id: row.try_get(28).map_err(get)?,
        can_rotate_on_schedule: row.try_get(29).map_err(get)?,
    })
}

/// Inserts `key` (a workspace key without a workspace goes to the organization's default one, made if
/// needed; its environment and service account must be in its workspace); returns its `seq`.
pub(crate) async fn insert(tx: &mut Tx, key: &NewKey) -> Result<i64, StoreError> {
    let workspace_id = match (key.key_type, &key.workspace_id) {
        (KeyType::Admin, _) => None,
        (KeyType::Workspace, Some(id)) => Some(id.clone()),
        (KeyType::Workspace, None) => Some(
            crate::tenancy::ensure_default(tx, &key.org_id, key.created_at)
                .await?
                .id,
        ),
    };
    if let Some(ws) = &workspace_id {
        crate::tenancy::check_placement(
            tx,
            &key.org_id,
            ws,
            key.environment_id.as_deref(),
            key.service_account_id.as_deref(),
        )
        .await?;
    }
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    let permissions = serde_json::to_string(&key.permissions).map_err(corrupt)?;
    let allowed_ips = serde_json::to_string(&key.allowed_ips).map_err(corrupt)?;
    let rate_limit = key.rate_limit.map(i64::from);
    let interval = key.rotation_interval_days.map(i64::from);
    let next_rotation = interval.map(|days| key.created_at + days * 86_400);
    let rows = tx
        .modify(
            "INSERT INTO api_keys (id, org_id, name, description, key_prefix, key_hash, permissions, rate_limit,
                                   allowed_ips, created_by, created_at, expires_at, workspace_id, environment_id,
                                   mode, key_type, service_account_id, rotation_interval_days,
                                   rotation_webhook_url, next_rotation_at, rotation_key_sealed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
             RETURNING seq",
            &[
                &key.id,
                &key.org_id,
                &key.name,
                &key.description,
                &key.key_prefix,
                &key.key_hash,
                &permissions,
                &rate_limit,
                &allowed_ips,
                &key.created_by,
                &key.created_at,
                &key.expires_at,
                &workspace_id,
                &key.environment_id,
                &key.mode.as_str(),
                &key.key_type.as_str(),
                &key.service_account_id,
                &interval,
                &key.rotation_webhook_url,
                &next_rotation,
                &key.rotation_key_sealed,
            ],
        )
        .await?;
    rows[0].try_get(0).map_err(pg)
}

/// The one key matching `filter` (SQL over [`KEYS_FROM`], with `$n` parameters), if any.
pub(crate) async fn select_one(
    tx: &Tx,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM {KEYS_FROM} WHERE {filter}");
    tx.query_opt(&sql, params)
        .await?
        .map(|row| key_from_row(&row))
        .transpose()
}

/// The key `id` if `scope` sees it.
pub(crate) async fn select_in_scope(
    tx: &Tx,
    scope: &Scope,
    id: &str,
) -> Result<Option<KeyRecord>, StoreError> {
    select_one(
        tx,
        "k.id = $1 AND k.org_id = $2 AND k.mode = $3 AND ($4::TEXT IS NULL OR k.workspace_id = $4)",
        &[
            &id,
            &scope.org_id,
            &scope.mode.as_str(),
            &scope.workspace_id,
        ],
    )
    .await
}

/// The rows a scope sees (parameters `$1` organization, `$2` mode, `$3` the scope's workspace or NULL).
const IN_SCOPE: &str =
    "k.org_id = $1 AND k.mode = $2 AND ($3::TEXT IS NULL OR k.workspace_id = $3)";

/// The status of a row at `$12`, in SQL; must agree with [`KeyRecord::status_at`].
const STATUS_SQL: &str = "CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked' \
     WHEN k.expires_at <= $12 OR k.grace_expires_at <= $12 THEN 'expired' \
     WHEN k.replaced_by_key_id IS NOT NULL THEN 'rotating' ELSE 'active' END";

/// SQLSTATE of a deadlock PostgreSQL broke by aborting one of the transactions.
const DEADLOCK_DETECTED: &str = "40P01";

/// How many times a usage batch is tried when PostgreSQL aborts it to break a deadlock.
const USAGE_ATTEMPTS: usize = 3;

/// The key at `seq`, which the caller's transaction just wrote.
async fn by_seq(tx: &Tx, seq: i64, what: &str) -> Result<KeyRecord, StoreError> {
    select_one(tx, "k.seq = $1", &[&seq])
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("{what} key vanished")))
}

/// A list as the JSON text it is stored as.
fn to_json(list: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(list).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The advisory lock under which the first key of an empty database is minted.
const FIRST_KEY_LOCK: i64 = 0x6f70_6761_7465_0002;

#[async_trait::async_trait]
impl KeyStore for PgStore {
    async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError> {
        let events = self.key_payload();
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&key.org_id).await?;
                let seq = insert(tx, &key).await?;
                let record = by_seq(tx, seq, "inserted").await?;
                key_event(tx, &events, "created", &record, record.created_at).await?;
                Ok(record)
            })
        })
        .await
    }

    async fn insert_first_key(&self, key: NewKey) -> Result<Option<KeyRecord>, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                // One lock for the whole database: instances starting together check and insert in turn.
                tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&FIRST_KEY_LOCK])
                    .await?;
                if tx
                    .query_opt("SELECT 1 FROM api_keys LIMIT 1", &[])
                    .await?
                    .is_some()
                {
                    return Ok(None);
                }
                let seq = insert(tx, &key).await?;
                Ok(Some(by_seq(tx, seq, "inserted").await?))
            })
        })
        .await
    }

    async fn insert_keys(&self, keys: Vec<NewKey>) -> Result<(), StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                // Every organization's lock, in one order, so that two batches cannot deadlock.
                let orgs: BTreeSet<&str> = keys.iter().map(|k| k.org_id.as_str()).collect();
                for org in orgs {
                    tx.lock_org(org).await?;
                }
                for key in &keys {
                    insert(tx, key).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn key_by_hash(&self, hash: Vec<u8>) -> Result<Option<KeyRecord>, StoreError> {
        self.read(move |tx| {
            Box::pin(async move { select_one(tx, "k.key_hash = $1", &[&hash]).await })
        })
        .await
    }

    async fn get_key(&self, scope: &Scope, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let (scope, id) = (scope.clone(), id.to_owned());
        self.read(move |tx| Box::pin(async move { select_in_scope(tx, &scope, &id).await }))
            .await
    }

    async fn list_keys(&self, page: KeyPage<'_>) -> Result<Vec<KeyRecord>, StoreError> {
        let scope = page.scope.clone();
        let filters = page.filters.clone();
        let (after, before, include_revoked) = (
            page.after_seq,
            page.before_seq.unwrap_or(i64::MAX),
            page.include_revoked,
        );
        // SQLite reads a negative limit as none; PostgreSQL refuses one.
        let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
        let (status, now) = (page.status.map(KeyStatus::as_str), page.now);
        self.read(move |tx| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {KEY_COLUMNS} FROM {KEYS_FROM}
                     WHERE {IN_SCOPE} AND k.seq > $4 AND k.seq < $5
                       AND ($6::TEXT IS NULL OR k.workspace_id = $6)
                       AND ($7::TEXT IS NULL OR k.environment_id = $7)
                       AND ($8::TEXT IS NULL OR k.service_account_id = $8)
                       AND ($9::TEXT IS NULL OR k.created_by = $9)
                       AND (CASE WHEN $11::TEXT IS NULL THEN ($10 OR k.revoked_at IS NULL)
                                 ELSE {STATUS_SQL} = $11 END)
                     ORDER BY k.seq LIMIT $13"
                );
                let rows = tx
                    .query(
                        &sql,
                        &[
                            &scope.org_id,
                            &scope.mode.as_str(),
                            &scope.workspace_id,
                            &after,
                            &before,
                            &filters.workspace_id,
                            &filters.environment_id,
                            &filters.service_account_id,
                            &filters.created_by,
                            &include_revoked,
                            &status,
                            &now,
                            &limit,
                        ],
                    )
                    .await?;
                rows.iter().map(key_from_row).collect()
            })
        })
        .await
    }

    async fn revoke_key(
        &self,
        scope: &Scope,
        id: &str,
        now: i64,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let (scope, id) = (scope.clone(), id.to_owned());
        let events = self.key_payload();
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&scope.org_id).await?;
                let Some(found) = select_in_scope(tx, &scope, &id).await? else {
                    return Ok(None);
                };
                let changed = tx
                    .execute(
                        "UPDATE api_keys SET revoked_at = $2 WHERE seq = $1 AND revoked_at IS NULL",
                        &[&found.seq, &now],
                    )
                    .await?;
                let record = select_one(tx, "k.seq = $1", &[&found.seq]).await?;
                if let (1, Some(record)) = (changed, &record) {
                    tx.key_changed(&found.key_hash, now).await?;
                    crate::rotation::cancel_rotation(tx, &found, now).await?;
                    key_event(tx, &events, "revoked", record, now).await?;
                }
                Ok(record)
            })
        })
        .await
    }

    async fn count_keys(&self) -> Result<u64, StoreError> {
        self.read(|tx| {
            Box::pin(async move {
                let count: i64 = tx
                    .query_one("SELECT count(*) FROM api_keys", &[])
                    .await?
                    .try_get(0)
                    .map_err(pg)?;
                Ok(count as u64)
            })
        })
        .await
    }

    async fn update_key(
        &self,
        scope: &Scope,
        id: &str,
        patch: KeyPatch,
        now: i64,
    ) -> Result<Update, StoreError> {
        let (scope, id) = (scope.clone(), id.to_owned());
        let events = self.key_payload();
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&scope.org_id).await?;
                let Some(current) = select_in_scope(tx, &scope, &id).await? else {
                    return Ok(Update::NotFound);
                };
                // Checked under the organization's lock, so two concurrent updates cannot widen a key.
                let widening = patch
                    .permissions
                    .iter()
                    .flatten()
                    .find(|p| !opgate_core::scope::covers(&current.permissions, p));
                if let Some(p) = widening {
                    return Ok(Update::Widens(p.clone()));
                }
                let permissions = patch.permissions.as_deref().map(to_json).transpose()?;
                let allowed_ips = patch.allowed_ips.as_deref().map(to_json).transpose()?;
                let set_description = patch.description.is_some();
                let description = patch.description.flatten();
                let set_rate_limit = patch.rate_limit.is_some();
                let rate_limit = patch.rate_limit.flatten().map(i64::from);
                let set_interval = patch.rotation_interval_days.is_some();
                let interval = patch.rotation_interval_days.flatten().map(i64::from);
                let set_url = patch.rotation_webhook_url.is_some();
                let url = patch.rotation_webhook_url.flatten();
                tx.execute(
                    "UPDATE api_keys SET
                        name = coalesce($1::TEXT, name),
                        description = CASE WHEN $2 THEN $3::TEXT ELSE description END,
                        rate_limit = CASE WHEN $4 THEN $5::BIGINT ELSE rate_limit END,
                        allowed_ips = coalesce($6::TEXT, allowed_ips),
                        permissions = coalesce($7::TEXT, permissions),
                        rotation_interval_days =
                            CASE WHEN $8 THEN $9::BIGINT ELSE rotation_interval_days END,
                        next_rotation_at = CASE WHEN NOT $8 THEN next_rotation_at
                            WHEN $9::BIGINT IS NULL THEN NULL ELSE $10 + $9::BIGINT * 86400 END,
                        rotation_webhook_url = CASE WHEN $11 THEN $12::TEXT ELSE rotation_webhook_url END
                     WHERE seq = $13",
                    &[
                        &patch.name,
                        &set_description,
                        &description,
                        &set_rate_limit,
                        &rate_limit,
                        &allowed_ips,
                        &permissions,
                        &set_interval,
                        &interval,
                        &now,
                        &set_url,
                        &url,
                        &current.seq,
                    ],
                )
                .await?;
                let updated = select_one(tx, "k.seq = $1", &[&current.seq]).await?;
                if let Some(record) = &updated {
                    tx.key_changed(&record.key_hash, now).await?;
                    key_event(tx, &events, "updated", record, now).await?;
                }
                Ok(updated.map_or(Update::NotFound, |r| Update::Updated(Box::new(r))))
            })
        })
        .await
    }

    async fn rotate_key(
        &self,
        scope: &Scope,
        old_id: &str,
        new: NewKey,
        grace_expires_at: i64,
        now: i64,
    ) -> Result<Rotation, StoreError> {
        let (scope, old_id) = (scope.clone(), old_id.to_owned());
        let events = self.key_payload();
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&scope.org_id).await?;
                let Some(old) = select_in_scope(tx, &scope, &old_id).await? else {
                    return Ok(Rotation::NotFound);
                };
                // The replacement was built from a read before this transaction: if the key changed meanwhile
                // (e.g. an update narrowed it), rotating now would hand out the old settings.
                let unchanged = old.permissions == new.permissions
                    && old.rate_limit == new.rate_limit
                    && old.allowed_ips == new.allowed_ips;
                if old.status_at(now) != KeyStatus::Active || !unchanged {
                    return Ok(Rotation::Conflict(Box::new(old)));
                }
                let seq = insert(tx, &new).await?;
                crate::rotation::cancel_rotation(tx, &old, now).await?;
                tx.execute(
                    "UPDATE api_keys SET replaced_by_key_id = $2, grace_expires_at = $3 WHERE seq = $1",
                    &[&old.seq, &new.id, &grace_expires_at],
                )
                .await?;
                let old = by_seq(tx, old.seq, "rotated").await?;
                tx.key_changed(&old.key_hash, now).await?;
                let new = by_seq(tx, seq, "inserted").await?;
                key_event(tx, &events, "rotated", &old, now).await?;
                Ok(Rotation::Rotated {
                    old: Box::new(old),
                    new: Box::new(new),
                })
            })
        })
        .await
    }

    async fn record_usage(&self, usage: Vec<KeyUsage>) -> Result<(), StoreError> {
        // Rows are locked in id order (a stable sort keeps one key's observations in their order), so that
        // concurrent batches queue rather than deadlock; a batch PostgreSQL still aborts to break a deadlock
        // with another kind of write is tried again.
        let mut usage = usage;
        usage.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        let usage = Arc::new(usage);
        let mut attempt = 1;
        loop {
            let batch = Arc::clone(&usage);
            let result = self
                .write(move |tx| {
                    Box::pin(async move {
                        for u in batch.iter() {
                            tx.execute(
                                "UPDATE api_keys SET last_used_at = $2, last_used_ip = $3, last_used_user_agent = $4
                                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $2)",
                                &[&u.key_id, &u.at, &u.ip, &u.user_agent],
                            )
                            .await?;
                        }
                        Ok(())
                    })
                })
                .await;
            match result {
                Err(StoreError::Postgres {
                    code: Some(code), ..
                }) if code == DEADLOCK_DETECTED && attempt < USAGE_ATTEMPTS => {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn find_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |tx| Box::pin(async move { select_one(tx, "k.id = $1", &[&id]).await }))
            .await
    }

    async fn key_changes(&self, after: i64) -> Result<KeyChanges, StoreError> {
        // On a connection of its own: see `Inner::follower`.
        self.on_follower_connection(move |client| {
            Box::pin(async move {
                let rows = client
                    .query(
                        "SELECT seq, key_hash FROM key_changes WHERE seq > $1 ORDER BY seq LIMIT 10000",
                        &[&after],
                    )
                    .await?;
                let mut changes = KeyChanges {
                    last: after,
                    hashes: Vec::with_capacity(rows.len()),
                };
                for row in &rows {
                    changes.last = row.try_get(0)?;
                    changes.hashes.push(row.try_get(1)?);
                }
                if changes.hashes.is_empty() {
                    // Nothing after `after`: stay there. This is a second statement with a snapshot of its
                    // own: jumping to the log's end here skipped a change committed between the two (its key
                    // stayed cached on other instances until the TTL). Only a log that ends before `after`
                    // (the first read, or a restored database) moves the follower back to its end.
                    let end: i64 = client
                        .query_one("SELECT coalesce(max(seq), 0) FROM key_changes", &[])
                        .await?
                        .try_get(0)?;
                    changes.last = end.min(after);
                }
                Ok(changes)
            })
        })
        .await
    }

    async fn trim_key_changes(&self, before: i64) -> Result<(), StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                tx.execute("DELETE FROM key_changes WHERE at < $1", &[&before])
                    .await?;
                Ok(())
            })
        })
        .await
    }

    fn change_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(PgStore::change_signal(self))
    }

    fn on_change(&self, listener: ChangeListener) {
        self.hooks()
            .key_listeners
            .write()
            .expect("hooks lock")
            .push(listener);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, OnceLock};

    use opgate_core::{AuditRecord, Outcome, Unit};
    use opgate_store::KeyFilters;

    use super::*;

    pub(crate) fn new_key(i: usize, org: &str) -> NewKey {
        NewKey {
            id: format!("key_{i:04}"),
            org_id: org.into(),
            name: format!("k{i}"),
            description: None,
            key_prefix: "opg_abcdefgh".into(),
            key_hash: format!("hash{i}").into_bytes(),
            permissions: vec!["api_keys:read".into()],
            rate_limit: None,
            allowed_ips: vec![],
            created_by: "test".into(),
            created_at: 1_700_000_000,
            expires_at: None,
            workspace_id: None,
            environment_id: None,
            mode: Mode::Live,
            key_type: KeyType::Admin,
            service_account_id: None,
            rotation_interval_days: None,
            rotation_webhook_url: None,
            rotation_key_sealed: None,
        }
    }

    fn live(org: &str) -> Scope {
        Scope {
            org_id: org.into(),
            mode: Mode::Live,
            workspace_id: None,
        }
    }

    fn page<'a>(scope: &'a Scope, filters: &'a KeyFilters) -> KeyPage<'a> {
        KeyPage {
            scope,
            after_seq: 0,
            before_seq: None,
            filters,
            limit: 1000,
            include_revoked: true,
            status: None,
            now: 1_700_000_000,
        }
    }

    /// Registers a payload builder and an endpoint of organization `org` that wants every event, so that
    /// key events reach the outbox.
    pub(crate) async fn listen_to_events(store: &PgStore, org: &str) {
        *store.hooks().key_payload.write().unwrap() =
            Some(Arc::new(|r: &KeyRecord, _| serde_json::json!({"id": r.id})));
        let org = org.to_owned();
        store
            .write(move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO webhooks (id, org_id, mode, url, event_types, secret_sealed, created_by,
                                               created_at, updated_at)
                         VALUES ($1, $2, 'live', 'https://example.test/', '[]', '\\x01', 't', 1, 1)",
                        &[&opgate_store::new_id("wh"), &org],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
            .unwrap();
    }

    /// The types of the events in the outbox, oldest first.
    pub(crate) async fn event_types(store: &PgStore) -> Vec<String> {
        store
            .read(|tx| {
                Box::pin(async move {
                    let rows = tx
                        .query("SELECT type FROM webhook_events ORDER BY seq", &[])
                        .await?;
                    Ok(rows.iter().map(|r| r.get(0)).collect())
                })
            })
            .await
            .unwrap()
    }

    /// A scalar the query returns.
    pub(crate) async fn scalar(store: &PgStore, sql: &'static str) -> i64 {
        store
            .read(move |tx| Box::pin(async move { Ok(tx.query_one(sql, &[]).await?.get(0)) }))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn concurrent_writes_commit_and_a_failing_write_fails_alone() {
        let Some(url) = crate::fresh_test_database().await else {
            return;
        };
        let store = PgStore::connect(&url).await.unwrap();
        store.insert_key(new_key(0, "a")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 1..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.insert_key(new_key(i, "a")).await
            }));
        }
        // A duplicate id fails on its own, without rolling back the writes around it.
        let dup = {
            let store = store.clone();
            tokio::spawn(async move { store.insert_key(new_key(0, "a")).await })
        };
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let dup = dup.await.unwrap().unwrap_err();
        assert!(crate::is_unique_violation(&dup), "{dup:?}");
        assert_eq!(store.count_keys().await.unwrap(), 200);

        let filters = KeyFilters::default();
        let listed = store.list_keys(page(&live("a"), &filters)).await.unwrap();
        assert_eq!(listed.len(), 200);
        assert!(listed.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(store
            .get_key(&live("b"), &listed[0].id)
            .await
            .unwrap()
            .is_none());

        let revoked = store
            .revoke_key(&live("a"), &listed[0].id, 1_800_000_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(1_800_000_000));
        let again = store
            .revoke_key(&live("a"), &listed[0].id, 1_900_000_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            again.revoked_at,
            Some(1_800_000_000),
            "a second revoke keeps the first time"
        );
        assert!(store
            .revoke_key(&live("b"), &listed[1].id, 1)
            .await
            .unwrap()
            .is_none());
        store.close().await;

        let reopened = PgStore::connect(&url).await.unwrap();
        assert_eq!(reopened.count_keys().await.unwrap(), 200);
        let found = reopened
            .key_by_hash(b"hash0".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert!(found.revoked_at.is_some());
        assert_eq!(reopened.find_key(&found.id).await.unwrap(), Some(found));
        assert!(reopened.find_key("key_none").await.unwrap().is_none());
    }

    fn applied(u: Update) -> KeyRecord {
        match u {
            Update::Updated(r) => *r,
            other => panic!("not updated: {other:?}"),
        }
    }

    #[tokio::test]
    async fn lifecycle_update_rotate_usage_and_status_filter() {
        let Some(url) = crate::fresh_test_database().await else {
            return;
        };
        let store = PgStore::connect(&url).await.unwrap();
        let now = 1_700_000_100;
        let a = store.insert_key(new_key(1, "o")).await.unwrap();
        let mut expiring = new_key(2, "o");
        expiring.expires_at = Some(now - 1);
        store.insert_key(expiring).await.unwrap();
        let c = store.insert_key(new_key(3, "o")).await.unwrap();
        store.revoke_key(&live("o"), &c.id, now).await.unwrap();

        let patch = KeyPatch {
            name: Some("renamed".into()),
            description: Some(Some("d".into())),
            rate_limit: Some(Some(60)),
            ..KeyPatch::default()
        };
        let updated = applied(store.update_key(&live("o"), &a.id, patch, 1).await.unwrap());
        assert_eq!(
            (updated.name.as_str(), updated.rate_limit),
            ("renamed", Some(60))
        );
        assert_eq!(updated.permissions, a.permissions, "unset fields stay");
        let cleared = store
            .update_key(
                &live("o"),
                &a.id,
                KeyPatch {
                    rate_limit: Some(None),
                    ..KeyPatch::default()
                },
                1,
            )
            .await
            .unwrap();
        let cleared = applied(cleared);
        assert_eq!(
            (cleared.rate_limit, cleared.description.as_deref()),
            (None, Some("d"))
        );
        let scheduled = applied(
            store
                .update_key(
                    &live("o"),
                    &a.id,
                    KeyPatch {
                        rotation_interval_days: Some(Some(2)),
                        rotation_webhook_url: Some(Some("https://example.test/r".into())),
                        ..KeyPatch::default()
                    },
                    10,
                )
                .await
                .unwrap(),
        );
        assert_eq!(
            (
                scheduled.rotation_interval_days,
                scheduled.next_rotation_at,
                scheduled.rotation_webhook_url.as_deref()
            ),
            (
                Some(2),
                Some(10 + 2 * 86_400),
                Some("https://example.test/r")
            )
        );
        let unscheduled = applied(
            store
                .update_key(
                    &live("o"),
                    &a.id,
                    KeyPatch {
                        rotation_interval_days: Some(None),
                        rotation_webhook_url: Some(None),
                        ..KeyPatch::default()
                    },
                    11,
                )
                .await
                .unwrap(),
        );
        assert_eq!(
            (
                unscheduled.rotation_interval_days,
                unscheduled.next_rotation_at,
                unscheduled.rotation_webhook_url
            ),
            (None, None, None)
        );
        assert!(matches!(
            store
                .update_key(&live("x"), &a.id, KeyPatch::default(), 1)
                .await
                .unwrap(),
            Update::NotFound
        ));
        let widen = KeyPatch {
            permissions: Some(vec!["*".into()]),
            ..KeyPatch::default()
        };
        assert!(matches!(
            store.update_key(&live("o"), &a.id, widen, 1).await.unwrap(),
            Update::Widens(p) if p == "*"
        ));

        let Rotation::Rotated { old, new } = store
            .rotate_key(&live("o"), &a.id, new_key(4, "o"), now + 10, now)
            .await
            .unwrap()
        else {
            panic!("rotation failed")
        };
        assert_eq!(old.replaced_by_key_id.as_deref(), Some(new.id.as_str()));
        assert_eq!(old.status_at(now), KeyStatus::Rotating);
        assert_eq!(old.status_at(now + 10), KeyStatus::Expired);
        assert!(matches!(
            store
                .rotate_key(&live("o"), &a.id, new_key(5, "o"), now + 10, now)
                .await
                .unwrap(),
            Rotation::Conflict(_)
        ));
        assert!(matches!(
            store
                .rotate_key(&live("o"), &c.id, new_key(6, "o"), now + 10, now)
                .await
                .unwrap(),
            Rotation::Conflict(_)
        ));
        assert!(matches!(
            store
                .rotate_key(&live("p"), &new.id, new_key(7, "p"), now + 10, now)
                .await
                .unwrap(),
            Rotation::NotFound
        ));
        // A replacement built before the key was narrowed is refused.
        let mut stale = new_key(8, "o");
        stale.permissions = vec!["*".into()];
        assert!(matches!(
            store
                .rotate_key(&live("o"), &new.id, stale, now + 10, now)
                .await
                .unwrap(),
            Rotation::Conflict(_)
        ));
        assert_eq!(
            store.count_keys().await.unwrap(),
            4,
            "refused rotations insert nothing"
        );

        let statuses = |status| {
            let store = store.clone();
            async move {
                let filters = KeyFilters::default();
                let scope = live("o");
                store
                    .list_keys(KeyPage {
                        include_revoked: false,
                        status,
                        now,
                        ..page(&scope, &filters)
                    })
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.name)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(statuses(Some(KeyStatus::Active)).await, vec!["k4"]);
        assert_eq!(statuses(Some(KeyStatus::Expired)).await, vec!["k2"]);
        assert_eq!(statuses(Some(KeyStatus::Revoked)).await, vec!["k3"]);
        assert_eq!(statuses(Some(KeyStatus::Rotating)).await, vec!["renamed"]);
        assert_eq!(statuses(None).await, vec!["renamed", "k2", "k4"]);

        let usage = |at, ip: &str| KeyUsage {
            key_id: new.id.clone(),
            at,
            ip: Some(ip.into()),
            user_agent: None,
        };
        let changes = store.key_changes(0).await.unwrap().last;
        store
            .record_usage(vec![usage(now + 5, "::1"), usage(now + 2, "10.0.0.1")])
            .await
            .unwrap();
        let got = store.get_key(&live("o"), &new.id).await.unwrap().unwrap();
        assert_eq!(
            (got.last_used_at, got.last_used_ip.as_deref()),
            (Some(now + 5), Some("::1"))
        );
        // A later batch with an older observation changes nothing; an equal one is taken, as on SQLite.
        store
            .record_usage(vec![usage(now + 1, "10.0.0.2")])
            .await
            .unwrap();
        store
            .record_usage(vec![usage(now + 5, "10.0.0.3")])
            .await
            .unwrap();
        let got = store.get_key(&live("o"), &new.id).await.unwrap().unwrap();
        assert_eq!(
            (got.last_used_at, got.last_used_ip.as_deref()),
            (Some(now + 5), Some("10.0.0.3"))
        );
        assert_eq!(
            store.key_changes(0).await.unwrap().last,
            changes,
            "usage is no key change"
        );
    }

    #[tokio::test]
    async fn list_keys_filters_and_pages() {
        let Some(url) = crate::fresh_test_database().await else {
            return;
        };
        let store = PgStore::connect(&url).await.unwrap();
        let mut keys = Vec::new();
        for i in 0..6 {
            let mut key = new_key(i, "o");
            key.created_by = if i % 2 == 0 { "even" } else { "odd" }.into();
            if i == 5 {
                key.mode = Mode::Test;
            }
            keys.push(key);
        }
        keys.push(new_key(9, "other"));
        store.insert_keys(keys).await.unwrap();
        assert_eq!(store.count_keys().await.unwrap(), 7);
        store.revoke_key(&live("o"), "key_0002", 5).await.unwrap();

        let scope = live("o");
        let all = KeyFilters::default();
        let names = |keys: Vec<KeyRecord>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
        let listed = store.list_keys(page(&scope, &all)).await.unwrap();
        assert_eq!(
            names(listed.clone()),
            ["key_0000", "key_0001", "key_0002", "key_0003", "key_0004"]
        );
        let unrevoked = KeyPage {
            include_revoked: false,
            ..page(&scope, &all)
        };
        assert_eq!(names(store.list_keys(unrevoked).await.unwrap()).len(), 4);
        let window = KeyPage {
            after_seq: listed[0].seq,
            before_seq: Some(listed[4].seq),
            limit: 2,
            ..page(&scope, &all)
        };
        assert_eq!(
            names(store.list_keys(window).await.unwrap()),
            ["key_0001", "key_0002"]
        );
        let unbounded = KeyPage {
            limit: usize::MAX,
            ..page(&scope, &all)
        };
        assert_eq!(store.list_keys(unbounded).await.unwrap().len(), 5);
        let by_creator = KeyFilters {
            created_by: Some("odd".into()),
            ..KeyFilters::default()
        };
        assert_eq!(
            names(store.list_keys(page(&scope, &by_creator)).await.unwrap()),
            ["key_0001", "key_0003"]
        );
        let by_workspace = KeyFilters {
            workspace_id: Some("ws_none".into()),
            ..KeyFilters::default()
        };
        assert!(store
            .list_keys(page(&scope, &by_workspace))
            .await
            .unwrap()
            .is_empty());
        let in_workspace = Scope {
            workspace_id: Some("ws_none".into()),
            ..live("o")
        };
        assert!(store
            .list_keys(page(&in_workspace, &all))
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .get_key(&in_workspace, "key_0000")
            .await
            .unwrap()
            .is_none());
        let test = Scope {
            mode: Mode::Test,
            ..live("o")
        };
        assert_eq!(
            names(store.list_keys(page(&test, &all)).await.unwrap()),
            ["key_0005"]
        );
    }

    #[tokio::test]
    async fn concurrent_revokes_and_updates_of_one_key_act_as_one_writer() {
        let Some(url) = crate::fresh_test_database().await else {
            return;
        };
        let (a, b) = (
            PgStore::connect(&url).await.unwrap(),
            PgStore::connect(&url).await.unwrap(),
        );
        listen_to_events(&a, "o").await;
        listen_to_events(&b, "o").await;
        let mut key = new_key(1, "o");
        key.permissions = vec!["api_keys:read".into(), "webhooks:read".into()];
        let key = a.insert_key(key).await.unwrap();

        // Two narrowings that exclude each other: the first to commit wins, the second widens what it finds.
        let narrow = |store: &PgStore, p: &str| {
            let (store, id, p) = (store.clone(), key.id.clone(), p.to_owned());
            tokio::spawn(async move {
                let patch = KeyPatch {
                    permissions: Some(vec![p]),
                    ..KeyPatch::default()
                };
                store.update_key(&live("o"), &id, patch, 5).await.unwrap()
            })
        };
        let (x, y) = (narrow(&a, "api_keys:read"), narrow(&b, "webhooks:read"));
        let (x, y) = (x.await.unwrap(), y.await.unwrap());
        let winner = match (&x, &y) {
            (Update::Updated(r), Update::Widens(p)) if p == "webhooks:read" => r.clone(),
            (Update::Widens(p), Update::Updated(r)) if p == "api_keys:read" => r.clone(),
            other => panic!("not one winner: {other:?}"),
        };
        let stored = a.get_key(&live("o"), &key.id).await.unwrap().unwrap();
        assert_eq!(stored.permissions, winner.permissions);
        assert_eq!(stored.permissions.len(), 1);

        // Many revokes at once: one revokes, all see the first time, one change and one event.
        let mut revokes = Vec::new();
        for i in 0..16 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = key.id.clone();
            revokes.push(tokio::spawn(async move {
                store
                    .revoke_key(&live("o"), &id, 100 + i)
                    .await
                    .unwrap()
                    .unwrap()
            }));
        }
        let mut times = Vec::new();
        for r in revokes {
            times.push(r.await.unwrap().revoked_at.unwrap());
        }
        assert!(times.iter().all(|t| *t == times[0]), "{times:?}");
        assert_eq!(
            event_types(&a).await,
            ["api_key.created", "api_key.updated", "api_key.revoked"]
        );
        assert_eq!(
            scalar(&a, "SELECT count(*) FROM key_changes").await,
            2,
            "the update and the revoke"
        );
    }

    #[tokio::test]
    async fn changes_are_logged_heard_and_trimmed() {
        let Some(url) = crate::fresh_test_database().await else {
            return;
        };
        let store = PgStore::connect(&url).await.unwrap();
        let heard: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let ear = Arc::clone(&heard);
        store.on_change(Arc::new(move |hash: &[u8]| {
            ear.lock().unwrap().push(hash.to_vec())
        }));
        assert_eq!(store.key_changes(0).await.unwrap(), KeyChanges::default());

        for i in 0..3 {
            store.insert_key(new_key(i, "o")).await.unwrap();
        }
        assert!(
            heard.lock().unwrap().is_empty(),
            "an insert changes no cached key"
        );
        store.revoke_key(&live("o"), "key_0000", 10).await.unwrap();
        store.revoke_key(&live("o"), "key_0000", 11).await.unwrap();
        store
            .update_key(&live("o"), "key_0001", KeyPatch::default(), 20)
            .await
            .unwrap();
        assert_eq!(
            *heard.lock().unwrap(),
            [b"hash0".to_vec(), b"hash1".to_vec()]
        );

        let changes = store.key_changes(0).await.unwrap();
        assert_eq!(changes.hashes, [b"hash0".to_vec(), b"hash1".to_vec()]);
        let after = store.key_changes(changes.last).await.unwrap();
        assert_eq!((after.last, after.hashes.len()), (changes.last, 0));
        let first = store.key_changes(0).await.unwrap().last - 1;
        assert_eq!(
            store.key_changes(first).await.unwrap().hashes,
            [b"hash1".to_vec()]
        );

        store.trim_key_changes(15).await.unwrap();
        let left = store.key_changes(0).await.unwrap();
        assert_eq!(
            (left.last, left.hashes),
            (changes.last, vec![b"hash1".to_vec()])
        );
        store.trim_key_changes(i64::MAX).await.unwrap();
        assert_eq!(store.key_changes(0).await.unwrap().hashes.len(), 0);
    }

    #[tokio::test]
    async fn a_call_is_audited_only_when_its_write_changed_something() {
        let Some(url) = crate::fresh_test_database().await else {
            return;
        };
        let store = PgStore::connect(&url).await.unwrap();
        store.insert_key(new_key(0, "o")).await.unwrap();
        let unit = || {
            let record = AuditRecord {
                at: 1,
                request_id: "req".into(),
                principal_kind: "api_key".into(),
                principal_id: "key_x".into(),
                org_id: "o".into(),
                workspace_id: None,
                mode: Mode::Live,
                operation: "api_keys.revoke".into(),
                target_id: None,
                client_ip: None,
                status: 200,
                error_code: None,
                count: 1,
                via: opgate_core::Via::Http,
            };
            Unit::new(Some(record), Arc::new(OnceLock::new()), false)
        };
        let revoke = |unit: Arc<Unit>| {
            let store = store.clone();
            async move {
                Arc::clone(&unit)
                    .scope(
                        async move { store.revoke_key(&live("o"), "key_0000", 5).await.unwrap() },
                    )
                    .await;
                unit.outcome()
            }
        };
        assert!(matches!(revoke(unit()).await, Outcome::Committed));
        assert!(
            matches!(revoke(unit()).await, Outcome::Open),
            "nothing left to revoke"
        );
        assert_eq!(scalar(&store, "SELECT count(*) FROM audit_log").await, 1);
    }

    #[tokio::test]
    async fn usage_batches_from_many_instances_keep_the_newest() {
        let Some(url) = crate::fresh_test_database().await else {
            return;
        };
        let store = PgStore::connect(&url).await.unwrap();
        let ids: Vec<String> = (0..20).map(|i| format!("key_{i:04}")).collect();
        store
            .insert_keys(
                (0..20)
                    .map(|i| new_key(i, if i % 2 == 0 { "o" } else { "p" }))
                    .collect(),
            )
            .await
            .unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let mut batches = Vec::new();
        for b in 0..8_i64 {
            let (store, ids, done) = (store.clone(), ids.clone(), Arc::clone(&done));
            batches.push(tokio::spawn(async move {
                // Each batch names the keys in another order.
                let mut usage: Vec<KeyUsage> = ids
                    .iter()
                    .map(|id| KeyUsage {
                        key_id: id.clone(),
                        at: 100 + b,
                        ip: Some(format!("10.0.0.{b}")),
                        user_agent: None,
                    })
                    .collect();
                usage.rotate_left(b as usize * 3 % 20);
                store.record_usage(usage).await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        for b in batches {
            b.await.unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 8);
        for id in &ids {
            let key = store.find_key(id).await.unwrap().unwrap();
            assert_eq!(
                (key.last_used_at, key.last_used_ip.as_deref()),
                (Some(107), Some("10.0.0.7"))
            );
        }
        assert_eq!(scalar(&store, "SELECT count(*) FROM key_changes").await, 0);
    }
}
