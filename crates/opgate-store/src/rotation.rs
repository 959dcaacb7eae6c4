//! Scheduled rotation and expiry notices. A due key gets its replacement in one transaction with the
//! rotation webhook that delivers the new secret (sealed until the delivery ends); only a 2xx answer starts the
//! old key's grace period, and a delivery given up revokes the replacement, so nobody is ever locked out.

use opgate_core::AuditRecord;
use rusqlite::{params, Connection, OptionalExtension};

use crate::sqlite::{insert, log_change, select_one};
use crate::webhooks::{append, key_event, NewEvent, PayloadBuilder};
use crate::{new_id, KeyRecord, NewKey, SqliteStore, StoreError};

/// How long the old key keeps working once its scheduled replacement was delivered.
pub const SCHEDULED_GRACE_SECS: i64 = 86_400;
/// When a scheduled rotation whose webhook failed is tried again.
pub const RETRY_FAILED_ROTATION_SECS: i64 = 86_400;

/// A scheduled rotation to start: the replacement and the webhook that carries its secret.
#[derive(Debug, Clone)]
pub struct RotationStart {
    /// The replacement key.
    pub new_key: NewKey,
    /// The old key's rotation webhook URL.
    pub url: String,
    /// The key that signs the webhook (derived from the old key's secret), sealed.
    pub signing_sealed: Vec<u8>,
    /// The webhook's body (it holds the new secret), sealed.
    pub payload_sealed: Vec<u8>,
    /// Unix seconds.
    pub at: i64,
}

/// A key due for rotation, with what signs its webhook.
#[derive(Debug, Clone)]
pub struct DueRotation {
    /// The key.
    pub key: KeyRecord,
    /// Its rotation webhook's signing key, sealed.
    pub signing_sealed: Vec<u8>,
}

/// Scheduled rotations and expiry notices.
#[async_trait::async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Keys whose scheduled rotation is due at `now` and not under way: usable, not replaced, with a webhook
    /// URL and a signing key.
    async fn due_rotations(&self, now: i64, limit: usize) -> Result<Vec<DueRotation>, StoreError>;
    /// Starts a scheduled rotation of `old_id` if it is still due and not under way: inserts the replacement
    /// and queues its webhook. `None` when it is no longer due.
    async fn start_rotation(
        &self,
        old_id: &str,
        start: RotationStart,
    ) -> Result<Option<KeyRecord>, StoreError>;
    /// Emits `api_key.expiring` for keys expiring within 7 days and within 1 day, once each; returns how many.
    async fn expiry_notices(&self, now: i64, limit: usize) -> Result<usize, StoreError>;
}

/// Cancels the scheduled rotation under way for `old` (revoked or rotated by hand), inside the caller's
/// transaction: its replacement is revoked, and its webhook, if not yet delivered, is failed with its sealed
/// body (the replacement's secret) erased, so the secret is never sent.
pub(crate) fn cancel_rotation(
    conn: &Connection,
    old: &KeyRecord,
    at: i64,
) -> Result<(), StoreError> {
    let Some(new_id) = &old.rotating_to_key_id else {
        return Ok(());
    };
    conn.prepare_cached(
        "UPDATE webhook_deliveries SET state = 'failed', payload_sealed = NULL, finished_at = ?2, last_error = ?3
         WHERE rotation_of = ?1 AND state = 'pending'",
    )?
    .execute(params![old.id, at, crate::ROTATION_CANCELLED])?;
    if let Some(new) = select_one(conn, "k.id = ?1", [new_id])? {
        conn.prepare_cached(
            "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        )?
        .execute(params![new_id, at])?;
        log_change(conn, &new.key_hash, at)?;
    }
    conn.prepare_cached(
        "UPDATE api_keys SET rotating_to_key_id = NULL, next_rotation_at = NULL WHERE id = ?1",
    )?
    .execute([&old.id])?;
    Ok(())
}

/// The rotation a delivery of `delivery_id` carries, if it carries one: ends it as the delivery ended, inside
/// the caller's transaction. Delivered: the old key's grace period starts and the new key's schedule runs;
/// given up: the new key is revoked and the old key tries again in a day. Either way the sealed body (the new
/// secret) is erased, and the outcome is audited and emitted.
pub(crate) fn end_rotation(
    conn: &Connection,
    delivery_id: &str,
    delivered: bool,
    error: Option<&str>,
    at: i64,
    builder: &Option<PayloadBuilder<KeyRecord>>,
) -> Result<(), StoreError> {
    let rotation_of: Option<String> = conn
        .prepare_cached("SELECT rotation_of FROM webhook_deliveries WHERE id = ?1")?
        .query_row([delivery_id], |r| r.get(0))
        .optional()?
        .flatten();
    let Some(old_id) = rotation_of else {
        return Ok(());
    };
    conn.prepare_cached("UPDATE webhook_deliveries SET payload_sealed = NULL WHERE id = ?1")?
        .execute([delivery_id])?;
    let Some(old) = select_one(conn, "k.id = ?1", [&old_id])? else {
        return Ok(());
    };
    let Some(new_id) = old.rotating_to_key_id.clone() else {
        return Ok(());
    };
    // Revoked, rotated by hand or expired while the webhook was under way: the replacement must not outlive
    // what it replaced (revoke and rotate cancel a rotation under way; this is the backstop).
    let superseded = old.rotation_void_at(at);
    if superseded {
        // The delivery does not count as delivered: the rotation it carried was void.
        conn.prepare_cached(
            "UPDATE webhook_deliveries SET state = 'failed', last_error = ?2 WHERE id = ?1",
        )?
        .execute(params![delivery_id, crate::ROTATION_SUPERSEDED])?;
    }
    let delivered = delivered && !superseded;
    let error = if superseded {
        Some(crate::ROTATION_SUPERSEDED)
    } else {
        error
    };
    let audit = |status: u16, code: Option<&str>| AuditRecord {
        at,
        request_id: format!("rotation_{delivery_id}"),
        principal_kind: "system".into(),
        principal_id: "scheduler".into(),
        org_id: old.org_id.clone(),
        workspace_id: old.workspace_id.clone(),
        mode: old.mode,
        operation: "api_keys.rotate".into(),
        target_id: Some(old_id.clone()),
        client_ip: None,
        status,
        error_code: code.map(str::to_owned),
        count: 1,
        via: opgate_core::Via::Http,
    };
    if delivered {
        // The replacement takes the old key's settings as they are now (an update may have narrowed them since
        // the rotation started).
        conn.prepare_cached(
            "UPDATE api_keys SET (name, description, permissions, rate_limit, allowed_ips, expires_at) =
                (SELECT name, description, permissions, rate_limit, allowed_ips, expires_at FROM api_keys
                 WHERE id = ?1)
             WHERE id = ?2",
        )?
        .execute(params![old_id, new_id])?;
        conn.prepare_cached(
            "UPDATE api_keys SET replaced_by_key_id = ?2, grace_expires_at = ?3, rotating_to_key_id = NULL,
                next_rotation_at = NULL
             WHERE id = ?1",
        )?
        .execute(params![old_id, new_id, at + SCHEDULED_GRACE_SECS])?;
        conn.prepare_cached(
            "UPDATE api_keys SET next_rotation_at = ?2 + rotation_interval_days * 86400
             WHERE id = ?1 AND rotation_interval_days IS NOT NULL",
        )?
        .execute(params![new_id, at])?;
        log_change(conn, &old.key_hash, at)?;
        if let Some(rotated) = select_one(conn, "k.id = ?1", [&old_id])? {
            key_event(conn, builder, "rotated", &rotated, at)?;
        }
        crate::writer::insert_audit(conn, &audit(200, None))?;
    } else {
        if let Some(new) = select_one(conn, "k.id = ?1", [&new_id])? {
            conn.prepare_cached(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![new_id, at])?;
            log_change(conn, &new.key_hash, at)?;
        }
        let retry = (!superseded).then_some(at + RETRY_FAILED_ROTATION_SECS);
        conn.prepare_cached(
            "UPDATE api_keys SET rotating_to_key_id = NULL, next_rotation_at = ?2 WHERE id = ?1",
        )?
        .execute(params![old_id, retry])?;
        if let (Some(builder), Some(old)) = (builder, select_one(conn, "k.id = ?1", [&old_id])?) {
            let mut data = builder(&old, at);
            data["rotation_error"] =
                serde_json::json!(error.unwrap_or("the rotation webhook failed"));
            data["revoked_key_id"] = serde_json::json!(new_id);
            append(
                conn,
                &NewEvent {
                    org_id: old.org_id.clone(),
                    mode: old.mode,
                    event_type: "api_key.rotation_failed".into(),
                    data,
                    at,
                },
            )?;
        }
        crate::writer::insert_audit(conn, &audit(502, Some("rotation_webhook_failed")))?;
    }
    Ok(())
}

/// Usable, not replaced, not rotating, due (parameters `:now`).
const DUE: &str = "k.next_rotation_at IS NOT NULL AND k.next_rotation_at <= :now AND k.revoked_at IS NULL
     AND (k.expires_at IS NULL OR k.expires_at > :now) AND k.replaced_by_key_id IS NULL
     AND k.rotating_to_key_id IS NULL AND k.rotation_webhook_url IS NOT NULL AND k.rotation_key_sealed IS NOT NULL
     AND (k.service_account_id IS NULL OR sa.id IS NOT NULL AND sa.disabled_at IS NULL)
     AND (k.environment_id IS NULL OR EXISTS (SELECT 1 FROM environments env WHERE env.id = k.environment_id))";

#[async_trait::async_trait]
impl ScheduleStore for SqliteStore {
    async fn due_rotations(&self, now: i64, limit: usize) -> Result<Vec<DueRotation>, StoreError> {
        self.read(move |conn| {
            let ids: Vec<(String, Vec<u8>)> = conn
                .prepare_cached(&format!(
                    "SELECT k.id, k.rotation_key_sealed
                     FROM api_keys k LEFT JOIN service_accounts sa ON sa.id = k.service_account_id WHERE {DUE}
                     ORDER BY k.next_rotation_at LIMIT :limit"
                ))?
                .query_map(
                    rusqlite::named_params! {":now": now, ":limit": limit as i64},
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<_, _>>()?;
            let mut due = Vec::with_capacity(ids.len());
            for (id, signing_sealed) in ids {
                if let Some(key) = select_one(conn, "k.id = ?1", [&id])? {
                    due.push(DueRotation {
                        key,
                        signing_sealed,
                    });
                }
            }
            Ok(due)
        })
        .await
    }

    async fn start_rotation(
        &self,
        old_id: &str,
        start: RotationStart,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let old_id = old_id.to_owned();
        self.write(move |conn| {
            let still_due: Option<KeyRecord> = select_one(
                conn,
                &format!("k.id = :id AND {DUE}"),
                rusqlite::named_params! {":id": old_id, ":now": start.at},
            )?;
            let Some(old) = still_due else {
                return Ok(None);
            };
            let seq = insert(conn, &start.new_key)?;
            let new = select_one(conn, "k.seq = ?1", [seq])?
                .ok_or_else(|| StoreError::Corrupt("inserted key vanished".into()))?;
            conn.prepare_cached("UPDATE api_keys SET rotating_to_key_id = ?2 WHERE id = ?1")?
                .execute(params![old.id, new.id])?;
            // The event names the rotation; its body (with the new secret) is the delivery's, sealed.
            conn.prepare_cached(
                "INSERT INTO webhook_events (id, org_id, mode, type, payload, created_at)
                 VALUES (?1, ?2, ?3, 'api_key.rotation', '{}', ?4)",
            )?
            .execute(params![new_id("msg"), old.org_id, old.mode.as_str(), start.at])?;
            let event_seq = conn.last_insert_rowid();
            conn.prepare_cached(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_seq, state, attempts, next_attempt_at,
                                                 created_at, target_url, signing_sealed, payload_sealed,
                                                 rotation_of)
                 VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                new_id("whd"),
                format!("rotation:{}", old.id),
                event_seq,
                start.at,
                start.url,
                start.signing_sealed,
                start.payload_sealed,
                old.id
            ])?;
            crate::webhooks::note_written();
            Ok(Some(new))
        })
        .await
    }

    async fn expiry_notices(&self, now: i64, limit: usize) -> Result<usize, StoreError> {
        let builder = self.key_payload();
        self.write(move |conn| {
            let Some(builder) = builder else {
                return Ok(0);
            };
            // Bit 1: the 7-day notice; bit 2: the 1-day notice. A key first seen within a day gets only the
            // 1-day one.
            let due: Vec<(String, i64, i64)> = conn
                .prepare_cached(
                    "SELECT id, expires_at, expiry_notices FROM api_keys
                     WHERE revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at > ?1
                       AND expires_at <= ?1 + 7 * 86400
                       AND ((expiry_notices & 1) = 0 OR ((expiry_notices & 2) = 0 AND expires_at <= ?1 + 86400))
                     ORDER BY expires_at LIMIT ?2",
                )?
                .query_map(params![now, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?;
            for (id, expires_at, sent) in &due {
                let within_a_day = *expires_at <= now + 86_400;
                let (bits, notice) = if within_a_day {
                    (3, "1 day")
                } else {
                    (sent | 1, "7 days")
                };
                conn.prepare_cached("UPDATE api_keys SET expiry_notices = ?2 WHERE id = ?1")?
                    .execute(params![id, bits])?;
                if let Some(key) = select_one(conn, "k.id = ?1", [id])? {
                    let mut data = builder(&key, now);
                    data["expires_within"] = serde_json::json!(notice);
                    append(
                        conn,
                        &NewEvent {
                            org_id: key.org_id.clone(),
                            mode: key.mode,
                            event_type: "api_key.expiring".into(),
                            data,
                            at: now,
                        },
                    )?;
                }
            }
            Ok(due.len())
        })
        .await
    }
}
