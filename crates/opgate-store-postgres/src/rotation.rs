//! [`ScheduleStore`] on PostgreSQL: scheduled rotations and expiry notices, as the SQLite store keeps them.
//! Several gateway instances run the scheduler against one database: each decision is taken again under the
//! organization's lock, so that a rotation is started, and a notice sent, once.

use opgate_core::AuditRecord;
use opgate_store::{
    DueRotation, KeyRecord, NewEvent, PayloadBuilder, RotationStart, ScheduleStore, StoreError,
    RETRY_FAILED_ROTATION_SECS, SCHEDULED_GRACE_SECS,
};

use crate::keys::{insert, key_from_row, select_one, KEYS_FROM, KEY_COLUMNS};
use crate::webhooks::{append, key_event};
use crate::{insert_audit, pg, PgStore, Tx};

/// Usable, not replaced, not rotating, due at `$1`.
const DUE: &str = "k.next_rotation_at IS NOT NULL AND k.next_rotation_at <= $1 AND k.revoked_at IS NULL
     AND (k.expires_at IS NULL OR k.expires_at > $1) AND k.replaced_by_key_id IS NULL
     AND k.rotating_to_key_id IS NULL AND k.rotation_webhook_url IS NOT NULL AND k.rotation_key_sealed IS NOT NULL
     AND (k.service_account_id IS NULL OR sa.id IS NOT NULL AND sa.disabled_at IS NULL)
     AND (k.environment_id IS NULL OR EXISTS (SELECT 1 FROM environments env WHERE env.id = k.environment_id))";

/// Keys that expire within 7 days of `$1` and lack a notice they are due: bit 1 is the 7-day notice, bit 2
/// the 1-day one.
const EXPIRING: &str = "revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at > $1
     AND expires_at <= $1 + 7 * 86400
     AND ((expiry_notices & 1) = 0 OR ((expiry_notices & 2) = 0 AND expires_at <= $1 + 86400))";

/// The organization of key `id`, if the key exists.
async fn org_of(tx: &Tx, id: &str) -> Result<Option<String>, StoreError> {
    tx.query_opt("SELECT org_id FROM api_keys WHERE id = $1", &[&id])
        .await?
        .map(|row| row.try_get(0).map_err(pg))
        .transpose()
}

/// The key `id`, which the caller's transaction reads again.
async fn by_id(tx: &Tx, id: &str) -> Result<Option<KeyRecord>, StoreError> {
    select_one(tx, "k.id = $1", &[&id]).await
}

/// Cancels the scheduled rotation under way for `old` (revoked or rotated by hand), inside the caller's
/// transaction: its replacement is revoked, and its webhook, if not yet delivered, is failed with its sealed
/// body (the replacement's secret) erased, so the secret is never sent.
pub(crate) async fn cancel_rotation(
    tx: &mut Tx,
    old: &KeyRecord,
    at: i64,
) -> Result<(), StoreError> {
    let Some(new_id) = &old.rotating_to_key_id else {
        return Ok(());
    };
    tx.execute(
        "UPDATE webhook_deliveries SET state = 'failed', payload_sealed = NULL, finished_at = $2, last_error = $3
         WHERE rotation_of = $1 AND state = 'pending'",
        &[&old.id, &at, &opgate_store::ROTATION_CANCELLED],
    )
    .await?;
    if let Some(new) = by_id(tx, new_id).await? {
        tx.execute(
            "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[new_id, &at],
        )
        .await?;
        tx.key_changed(&new.key_hash, at).await?;
    }
    tx.execute(
        "UPDATE api_keys SET rotating_to_key_id = NULL, next_rotation_at = NULL WHERE id = $1",
        &[&old.id],
    )
    .await?;
    Ok(())
}

/// The rotation a delivery of `delivery_id` carries, if it carries one: ends it as the delivery ended, inside
/// the caller's transaction (see the SQLite store's `end_rotation`). Delivered: the old key's grace period
/// starts and the new key's schedule runs; given up: the new key is revoked and the old key tries again in a
/// day. Either way the sealed body (the new secret) is erased, and the outcome is audited and emitted. Takes
/// the old key's organization lock before it reads the keys.
pub(crate) async fn end_rotation(
    tx: &mut Tx,
    delivery_id: &str,
    delivered: bool,
    error: Option<&str>,
    at: i64,
    builder: &Option<PayloadBuilder<KeyRecord>>,
) -> Result<(), StoreError> {
    let rotation_of: Option<String> = match tx
        .query_opt(
            "SELECT rotation_of FROM webhook_deliveries WHERE id = $1",
            &[&delivery_id],
        )
        .await?
    {
        Some(row) => row.try_get(0).map_err(pg)?,
        None => None,
    };
    let Some(old_id) = rotation_of else {
        return Ok(());
    };
    if let Some(org) = org_of(tx, &old_id).await? {
        tx.lock_org(&org).await?;
    }
    tx.execute(
        "UPDATE webhook_deliveries SET payload_sealed = NULL WHERE id = $1",
        &[&delivery_id],
    )
    .await?;
    let Some(old) = by_id(tx, &old_id).await? else {
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
        tx.execute(
            "UPDATE webhook_deliveries SET state = 'failed', last_error = $2 WHERE id = $1",
            &[&delivery_id, &opgate_store::ROTATION_SUPERSEDED],
        )
        .await?;
    }
    let delivered = delivered && !superseded;
    let error = if superseded {
        Some(opgate_store::ROTATION_SUPERSEDED)
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
        tx.execute(
            "UPDATE api_keys AS n SET name = o.name, description = o.description, permissions = o.permissions,
                rate_limit = o.rate_limit, allowed_ips = o.allowed_ips, expires_at = o.expires_at
             FROM api_keys AS o WHERE o.id = $1 AND n.id = $2",
            &[&old_id, &new_id],
        )
        .await?;
        let grace = at + SCHEDULED_GRACE_SECS;
        tx.execute(
            "UPDATE api_keys SET replaced_by_key_id = $2, grace_expires_at = $3, rotating_to_key_id = NULL,
                next_rotation_at = NULL
             WHERE id = $1",
            &[&old_id, &new_id, &grace],
        )
        .await?;
        tx.execute(
            "UPDATE api_keys SET next_rotation_at = $2 + rotation_interval_days * 86400
             WHERE id = $1 AND rotation_interval_days IS NOT NULL",
            &[&new_id, &at],
        )
        .await?;
        tx.key_changed(&old.key_hash, at).await?;
        if let Some(rotated) = by_id(tx, &old_id).await? {
            key_event(tx, builder, "rotated", &rotated, at).await?;
        }
        insert_audit(tx, &audit(200, None)).await?;
    } else {
        if let Some(new) = by_id(tx, &new_id).await? {
            tx.execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&new_id, &at],
            )
            .await?;
            tx.key_changed(&new.key_hash, at).await?;
        }
        let retry = (!superseded).then_some(at + RETRY_FAILED_ROTATION_SECS);
        tx.execute(
            "UPDATE api_keys SET rotating_to_key_id = NULL, next_rotation_at = $2 WHERE id = $1",
            &[&old_id, &retry],
        )
        .await?;
        if let Some(builder) = builder {
            if let Some(old) = by_id(tx, &old_id).await? {
                let mut data = builder(&old, at);
                data["rotation_error"] =
                    serde_json::json!(error.unwrap_or("the rotation webhook failed"));
                data["revoked_key_id"] = serde_json::json!(new_id);
                append(
                    tx,
                    &NewEvent {
                        org_id: old.org_id.clone(),
                        mode: old.mode,
                        event_type: "api_key.rotation_failed".into(),
                        data,
                        at,
                    },
                )
                .await?;
            }
        }
        insert_audit(tx, &audit(502, Some("rotation_webhook_failed"))).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl ScheduleStore for PgStore {
    async fn due_rotations(&self, now: i64, limit: usize) -> Result<Vec<DueRotation>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |tx| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {KEY_COLUMNS}, k.rotation_key_sealed FROM {KEYS_FROM} WHERE {DUE}
                     ORDER BY k.next_rotation_at, k.seq LIMIT $2"
                );
                let rows = tx.query(&sql, &[&now, &limit]).await?;
                rows.iter()
                    .map(|row| {
                        Ok(DueRotation {
                            key: key_from_row(row)?,
                            signing_sealed: row.try_get(30).map_err(pg)?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn start_rotation(
        &self,
        old_id: &str,
        start: RotationStart,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let old_id = old_id.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let Some(org) = org_of(tx, &old_id).await? else {
                    return Ok(None);
                };
                tx.lock_org(&org).await?;
                // Checked again under the lock: another instance may have started this rotation meanwhile.
                let still_due = select_one(
                    tx,
                    &format!("k.id = $2 AND {DUE}"),
                    &[&start.at, &old_id],
                )
                .await?;
                let Some(old) = still_due else {
                    return Ok(None);
                };
                let seq = insert(tx, &start.new_key).await?;
                let new = select_one(tx, "k.seq = $1", &[&seq])
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("inserted key vanished".into()))?;
                tx.execute(
                    "UPDATE api_keys SET rotating_to_key_id = $2 WHERE id = $1",
                    &[&old.id, &new.id],
                )
                .await?;
                // The event names the rotation; its body (with the new secret) is the delivery's, sealed.
                let event_seq: i64 = tx
                    .modify(
                        "INSERT INTO webhook_events (id, org_id, mode, type, payload, created_at)
                         VALUES ($1, $2, $3, 'api_key.rotation', '{}', $4) RETURNING seq",
                        &[
                            &opgate_store::new_id("msg"),
                            &old.org_id,
                            &old.mode.as_str(),
                            &start.at,
                        ],
                    )
                    .await?[0]
                    .try_get(0)
                    .map_err(pg)?;
                tx.execute(
                    "INSERT INTO webhook_deliveries (id, webhook_id, event_seq, state, attempts, next_attempt_at,
                                                     created_at, target_url, signing_sealed, payload_sealed,
                                                     rotation_of)
                     VALUES ($1, $2, $3, 'pending', 0, $4, $4, $5, $6, $7, $8)",
                    &[
                        &opgate_store::new_id("whd"),
                        &format!("rotation:{}", old.id),
                        &event_seq,
                        &start.at,
                        &start.url,
                        &start.signing_sealed,
                        &start.payload_sealed,
                        &old.id,
                    ],
                )
                .await?;
                tx.event_written();
                Ok(Some(new))
            })
        })
        .await
    }

    async fn expiry_notices(&self, now: i64, limit: usize) -> Result<usize, StoreError> {
        let Some(builder) = self.key_payload() else {
            return Ok(0);
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |tx| {
            Box::pin(async move {
                let candidates = tx
                    .query(
                        &format!(
                            "SELECT id, org_id FROM api_keys WHERE {EXPIRING} ORDER BY expires_at LIMIT $2"
                        ),
                        &[&now, &limit],
                    )
                    .await?;
                let mut due = candidates
                    .iter()
                    .map(|row| Ok((row.try_get(1).map_err(pg)?, row.try_get(0).map_err(pg)?)))
                    .collect::<Result<Vec<(String, String)>, StoreError>>()?;
                // Organizations are locked in one order, so that two instances' passes cannot deadlock; each
                // key is checked again under its organization's lock, so that a notice goes out once.
                due.sort();
                let recheck = format!(
                    "SELECT expires_at, expiry_notices FROM api_keys WHERE id = $2 AND {EXPIRING}"
                );
                let mut sent = 0;
                for (org, id) in &due {
                    tx.lock_org(org).await?;
                    let Some(row) = tx.query_opt(&recheck, &[&now, id]).await? else {
                        continue;
                    };
                    let expires_at: i64 = row.try_get(0).map_err(pg)?;
                    let notices: i64 = row.try_get(1).map_err(pg)?;
                    // A key first seen within a day gets only the 1-day notice.
                    let (bits, notice) = if expires_at <= now + 86_400 {
                        (3, "1 day")
                    } else {
                        (notices | 1, "7 days")
                    };
                    tx.execute(
                        "UPDATE api_keys SET expiry_notices = $2 WHERE id = $1",
                        &[id, &bits],
                    )
                    .await?;
                    sent += 1;
                    if let Some(key) = by_id(tx, id).await? {
                        let mut data = builder(&key, now);
                        data["expires_within"] = serde_json::json!(notice);
                        append(
                            tx,
                            &NewEvent {
                                org_id: key.org_id.clone(),
                                mode: key.mode,
                                event_type: "api_key.expiring".into(),
                                data,
                                at: now,
                            },
                        )
                        .await?;
                    }
                }
                Ok(sent)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use opgate_store::KeyStore;

    use super::*;
    use crate::keys::tests::{event_types, listen_to_events, new_key, scalar};

    /// A key of organization `o` that rotates every day, made at 0: due from 86 400.
    fn rotating(i: usize) -> opgate_store::NewKey {
        opgate_store::NewKey {
            created_at: 0,
            rotation_interval_days: Some(1),
            rotation_webhook_url: Some("https://example.test/rotate".into()),
            rotation_key_sealed: Some(vec![7; 4]),
            ..new_key(i, "o")
        }
    }

    fn start(i: usize, at: i64) -> RotationStart {
        RotationStart {
            new_key: opgate_store::NewKey {
                created_at: at,
                ..rotating(i)
            },
            url: "https://example.test/rotate".into(),
            signing_sealed: vec![7; 4],
            payload_sealed: b"sealed secret".to_vec(),
            at,
        }
    }

    /// The one rotation delivery's id and whether its body is still kept.
    async fn rotation_delivery(store: &PgStore) -> (String, bool) {
        store
            .read(|tx| {
                Box::pin(async move {
                    let row = tx
                        .query_one(
                            "SELECT id, payload_sealed IS NOT NULL FROM webhook_deliveries
                             WHERE rotation_of IS NOT NULL",
                            &[],
                        )
                        .await?;
                    Ok((row.get(0), row.get(1)))
                })
            })
            .await
            .unwrap()
    }

    async fn end(store: &PgStore, delivery: &str, delivered: bool, at: i64) {
        let (delivery, builder) = (delivery.to_owned(), store.key_payload());
        store
            .write(move |tx| {
                Box::pin(async move {
                    end_rotation(tx, &delivery, delivered, Some("HTTP 500"), at, &builder).await
                })
            })
            .await
            .unwrap();
    }

    /// The audit records written, as (status, error code).
    async fn audits(store: &PgStore) -> Vec<(i64, Option<String>)> {
        store
            .read(|tx| {
                Box::pin(async move {
                    let rows = tx
                        .query("SELECT status, error_code FROM audit_log ORDER BY seq", &[])
                        .await?;
                    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
                })
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_delivered_rotation_starts_once_and_ends_the_old_key_after_grace() {
        let Some(url) = crate::fresh_test_database().await else {
            return;
        };
        let (a, b) = (
            PgStore::connect(&url).await.unwrap(),
            PgStore::connect(&url).await.unwrap(),
        );
        listen_to_events(&a, "o").await;
        let old = a.insert_key(rotating(1)).await.unwrap();
        let mut unscheduled = rotating(2);
        unscheduled.rotation_key_sealed = None;
        a.insert_key(unscheduled).await.unwrap();
        assert!(a.due_rotations(86_399, 10).await.unwrap().is_empty());
        let due = a.due_rotations(86_400, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].key.id.as_str(), due[0].signing_sealed.as_slice()),
            (old.id.as_str(), &[7; 4][..])
        );

        // Two instances start it at once: one does.
        let now = 90_000;
        let (x, y) = tokio::join!(
            a.start_rotation(&old.id, start(10, now)),
            b.start_rotation(&old.id, start(11, now))
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        let new = match (x, y) {
            (Some(new), None) | (None, Some(new)) => new,
            other => panic!("not one start: {other:?}"),
        };
        assert_eq!(a.count_keys().await.unwrap(), 3);
        assert!(
            a.due_rotations(now, 10).await.unwrap().is_empty(),
            "under way"
        );
        assert!(a
            .start_rotation("key_none", start(12, now))
            .await
            .unwrap()
            .is_none());
        let rotating_old = a.find_key(&old.id).await.unwrap().unwrap();
        assert_eq!(
            rotating_old.rotating_to_key_id.as_deref(),
            Some(new.id.as_str())
        );
        let (delivery, kept) = rotation_delivery(&a).await;
        assert!(kept);

        let changes = a.key_changes(0).await.unwrap().hashes.len();
        end(&a, &delivery, true, now + 5).await;
        let ended = a.find_key(&old.id).await.unwrap().unwrap();
        assert_eq!(
            (
                ended.replaced_by_key_id.as_deref(),
                ended.grace_expires_at,
                ended.rotating_to_key_id.as_deref(),
                ended.next_rotation_at
            ),
            (
                Some(new.id.as_str()),
                Some(now + 5 + SCHEDULED_GRACE_SECS),
                None,
                None
            )
        );
        let new = a.find_key(&new.id).await.unwrap().unwrap();
        assert_eq!(
            new.next_rotation_at,
            Some(now + 5 + 86_400),
            "the new key's schedule runs"
        );
        assert!(!rotation_delivery(&a).await.1, "the secret is erased");
        assert_eq!(a.key_changes(0).await.unwrap().hashes.len(), changes + 1);
        assert_eq!(audits(&a).await, [(200, None)]);
        assert_eq!(
            event_types(&a).await,
            [
                "api_key.created",
                "api_key.created",
                "api_key.rotation",
                "api_key.rotated"
            ]
        );
        // The end of a delivery that carries no rotation, or of one already ended, changes nothing more.
        end(&a, "whd_none", true, now + 6).await;
        end(&a, &delivery, false, now + 7).await;
        assert_eq!(audits(&a).await.len(), 1);
        assert!(a
            .find_key(&new.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none());
    }

    #[tokio::test]
    async fn a_failed_rotation_revokes_the_replacement_and_retries_in_a_day() {
        let Some(url) = crate::fresh_test_database().await else {
            return;
        };
        let store = PgStore::connect(&url).await.unwrap();
        listen_to_events(&store, "o").await;
        let old = store.insert_key(rotating(1)).await.unwrap();
        let now = 90_000;
        let new = store
            .start_rotation(&old.id, start(10, now))
            .await
            .unwrap()
            .unwrap();
        let (delivery, _) = rotation_delivery(&store).await;
        end(&store, &delivery, false, now + 5).await;

        let new = store.find_key(&new.id).await.unwrap().unwrap();
        assert_eq!(new.revoked_at, Some(now + 5));
        let old = store.find_key(&old.id).await.unwrap().unwrap();
        assert_eq!(
            (
                old.rotating_to_key_id,
                old.replaced_by_key_id,
                old.next_rotation_at
            ),
            (None, None, Some(now + 5 + RETRY_FAILED_ROTATION_SECS))
        );
        assert!(!rotation_delivery(&store).await.1);
        assert_eq!(
            store.key_changes(0).await.unwrap().hashes,
            std::slice::from_ref(&new.key_hash)
        );
        assert_eq!(
            audits(&store).await,
            [(502, Some("rotation_webhook_failed".into()))]
        );
        assert_eq!(
            event_types(&store).await.last().map(String::as_str),
            Some("api_key.rotation_failed")
        );
        let payload: String = store
            .read(|tx| {
                Box::pin(async move {
                    Ok(tx
                        .query_one(
                            "SELECT payload FROM webhook_events ORDER BY seq DESC LIMIT 1",
                            &[],
                        )
                        .await?
                        .get(0))
                })
            })
            .await
            .unwrap();
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(payload["data"]["rotation_error"], "HTTP 500");
        assert_eq!(payload["data"]["revoked_key_id"], new.id.as_str());
        // Due again a day later.
        assert!(store
            .due_rotations(now + 5 + RETRY_FAILED_ROTATION_SECS - 1, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store
                .due_rotations(now + 5 + RETRY_FAILED_ROTATION_SECS, 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn expiry_notices_go_out_once_each_even_from_two_instances() {
        let Some(url) = crate::fresh_test_database().await else {
            return;
        };
        let (a, b) = (
            PgStore::connect(&url).await.unwrap(),
            PgStore::connect(&url).await.unwrap(),
        );
        let day = 86_400;
        let expiring = |i, at| opgate_store::NewKey {
            expires_at: Some(at),
            ..new_key(i, "o")
        };
        a.insert_key(expiring(1, 10 * day)).await.unwrap();
        a.insert_key(expiring(2, day / 2)).await.unwrap();
        a.insert_key(expiring(3, 30 * day)).await.unwrap();
        assert_eq!(
            a.expiry_notices(0, 10).await.unwrap(),
            0,
            "without a payload builder, none"
        );
        listen_to_events(&a, "o").await;
        listen_to_events(&b, "o").await;

        let expiring_events = |store: PgStore| async move {
            event_types(&store)
                .await
                .iter()
                .filter(|t| *t == "api_key.expiring")
                .count()
        };
        // At 0: key 2 within a day (its 1-day notice only); key 1 not within 7 days yet.
        let (x, y) = tokio::join!(a.expiry_notices(0, 10), b.expiry_notices(0, 10));
        assert_eq!(x.unwrap() + y.unwrap(), 1);
        assert_eq!(expiring_events(a.clone()).await, 1);
        // Within 7 days of key 1: its 7-day notice, once.
        let (x, y) = tokio::join!(a.expiry_notices(4 * day, 10), b.expiry_notices(4 * day, 10));
        assert_eq!(x.unwrap() + y.unwrap(), 1);
        assert_eq!(a.expiry_notices(4 * day, 10).await.unwrap(), 0);
        // Within a day of key 1: its 1-day notice, once.
        let (x, y) = tokio::join!(
            a.expiry_notices(9 * day + 1, 10),
            b.expiry_notices(9 * day + 1, 10)
        );
        assert_eq!(x.unwrap() + y.unwrap(), 1);
        assert_eq!(a.expiry_notices(9 * day + 2, 10).await.unwrap(), 0);
        assert_eq!(expiring_events(a.clone()).await, 3);
        assert_eq!(
            scalar(
                &a,
                "SELECT expiry_notices FROM api_keys WHERE id = 'key_0001'"
            )
            .await,
            3
        );
        assert_eq!(
            scalar(
                &a,
                "SELECT expiry_notices FROM api_keys WHERE id = 'key_0003'"
            )
            .await,
            0
        );
    }
}
