//! [`WebhookStore`] on PostgreSQL: endpoints, the outbox written in the change's transaction, deliveries
//! and their attempts.

use std::collections::HashMap;

use opgate_core::Mode;
use opgate_store::{
    Attempt, AttemptNext, AttemptRecord, Delivery, DeliveryPage, DeliveryState, DueDelivery,
    EventListener, KeyRecord, NewEvent, Owner, PayloadBuilder, Redelivery, StoreError, Webhook,
    WebhookPatch, WebhookStore, DELIVERY_LEASE_SECS, HISTORY_LIMIT,
};
use tokio_postgres::Row;

use crate::keys::{named, small};
use crate::{pg, PgStore, Tx};

pub(crate) const WEBHOOK_COLUMNS: &str =
    "seq, id, org_id, mode, url, description, event_types, secret_sealed, \
     disabled_at, disabled_reason, created_by, created_at, updated_at";

pub(crate) fn webhook_from_row(row: &Row) -> Result<Webhook, StoreError> {
    let types: String = row.try_get(6).map_err(pg)?;
    Ok(Webhook {
        seq: row.try_get(0).map_err(pg)?,
        id: row.try_get(1).map_err(pg)?,
        org_id: row.try_get(2).map_err(pg)?,
        mode: named(row, 3, Mode::parse)?,
        url: row.try_get(4).map_err(pg)?,
        description: row.try_get(5).map_err(pg)?,
        event_types: serde_json::from_str(&types)
            .map_err(|e| StoreError::Corrupt(format!("event types: {e}")))?,
        secret_sealed: row.try_get(7).map_err(pg)?,
        disabled_at: row.try_get(8).map_err(pg)?,
        disabled_reason: row.try_get(9).map_err(pg)?,
        created_by: row.try_get(10).map_err(pg)?,
        created_at: row.try_get(11).map_err(pg)?,
        updated_at: row.try_get(12).map_err(pg)?,
    })
}

/// Writes `event` to the outbox with a delivery for every enabled endpoint of its organization and mode that
/// wants it, inside the caller's transaction; nothing when none does. Takes the organization's write lock
/// (if the write has not already): events of one organization are numbered in commit order, so that each
/// endpoint gets them in order.
pub(crate) async fn append(tx: &mut Tx, event: &NewEvent) -> Result<(), StoreError> {
    let sql = format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE org_id = $1 AND mode = $2 AND disabled_at IS NULL"
    );
    let endpoints = tx
        .query(&sql, &[&event.org_id, &event.mode.as_str()])
        .await?
        .iter()
        .map(webhook_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let wanting: Vec<&Webhook> = endpoints
        .iter()
        .filter(|w| w.wants(&event.event_type))
        .collect();
    if wanting.is_empty() {
        return Ok(());
    }
    tx.lock_org(&event.org_id).await?;
    let id = opgate_store::new_id("msg");
    let payload = serde_json::json!({
        "type": event.event_type,
        "timestamp": opgate_core::Timestamp(event.at).to_rfc3339(),
        "data": event.data,
    })
    .to_string();
    let rows = tx
        .modify(
            "INSERT INTO webhook_events (id, org_id, mode, type, payload, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
            &[
                &id,
                &event.org_id,
                &event.mode.as_str(),
                &event.event_type,
                &payload,
                &event.at,
            ],
        )
        .await?;
    let event_seq: i64 = rows[0].try_get(0).map_err(pg)?;
    for endpoint in wanting {
        tx.execute(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_seq, state, attempts, next_attempt_at, created_at)
             VALUES ($1, $2, $3, 'pending', 0, $4, $4)",
            &[&opgate_store::new_id("whd"), &endpoint.id, &event_seq, &event.at],
        )
        .await?;
    }
    tx.event_written();
    Ok(())
}

/// Writes the `<kind>.<what>` event of `row` of organization `org` through `builder`, inside the caller's
/// transaction. The organization's structure is shared by both modes and changed by live callers: its events
/// are live events.
pub(crate) async fn structure_event<T>(
    tx: &mut Tx,
    builder: &Option<PayloadBuilder<T>>,
    event_type: &str,
    org: &str,
    row: &T,
    at: i64,
) -> Result<(), StoreError> {
    emit(tx, builder, event_type.to_owned(), org, Mode::Live, row, at).await
}

/// Writes the `api_key.<what>` event of `record` through `builder`, inside the caller's transaction.
pub(crate) async fn key_event(
    tx: &mut Tx,
    builder: &Option<PayloadBuilder<KeyRecord>>,
    what: &str,
    record: &KeyRecord,
    at: i64,
) -> Result<(), StoreError> {
    let event_type = format!("api_key.{what}");
    emit(
        tx,
        builder,
        event_type,
        &record.org_id,
        record.mode,
        record,
        at,
    )
    .await
}

/// Appends the event built from `row`, or nothing when no builder is registered (the store used alone).
async fn emit<T>(
    tx: &mut Tx,
    builder: &Option<PayloadBuilder<T>>,
    event_type: String,
    org: &str,
    mode: Mode,
    row: &T,
    at: i64,
) -> Result<(), StoreError> {
    let Some(builder) = builder else {
        return Ok(());
    };
    let event = NewEvent {
        org_id: org.to_owned(),
        mode,
        event_type,
        data: builder(row, at),
        at,
    };
    append(tx, &event).await
}

/// How many rows [`PgStore::expire_outbox`] deletes per transaction, so that writers are not held up.
const SWEEP_BATCH: i64 = 5_000;

const DELIVERY_COLUMNS: &str = "d.seq, d.id, d.webhook_id, e.id, e.type, d.state, d.attempts, \
     d.next_attempt_at, d.last_status, d.last_error, d.last_latency_ms, d.created_at, d.finished_at";
const DELIVERIES_FROM: &str = "webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq";

/// Deliveries that head their queue (the oldest pending one of their `webhook_id`) and can be sent: a rotation
/// webhook's (it names its own target) or an enabled endpoint's. Over `webhook_deliveries d LEFT JOIN webhooks w`.
const SENDABLE_HEAD: &str = "d.state = 'pending'
     AND (d.target_url IS NOT NULL OR (w.id IS NOT NULL AND w.disabled_at IS NULL))
     AND d.seq = (SELECT min(seq) FROM webhook_deliveries h
                  WHERE h.webhook_id = d.webhook_id AND h.state = 'pending')";

fn parse_state(text: &str) -> Option<DeliveryState> {
    match text {
        "pending" => Some(DeliveryState::Pending),
        "delivered" => Some(DeliveryState::Delivered),
        "failed" => Some(DeliveryState::Failed),
        _ => None,
    }
}

/// A `BIGINT` column that holds an HTTP status.
fn status(row: &Row, idx: usize) -> Result<Option<u16>, StoreError> {
    let value: Option<i64> = row.try_get(idx).map_err(pg)?;
    value
        .map(|v| {
            u16::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("column {idx}: {v} out of range")))
        })
        .transpose()
}

fn delivery_from_row(row: &Row) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        seq: row.try_get(0).map_err(pg)?,
        id: row.try_get(1).map_err(pg)?,
        webhook_id: row.try_get(2).map_err(pg)?,
        event_id: row.try_get(3).map_err(pg)?,
        event_type: row.try_get(4).map_err(pg)?,
        state: named(row, 5, parse_state)?,
        attempts: small(row, 6)?.unwrap_or_default(),
        next_attempt_at: row.try_get(7).map_err(pg)?,
        last_status: status(row, 8)?,
        last_error: row.try_get(9).map_err(pg)?,
        last_latency_ms: small(row, 10)?,
        created_at: row.try_get(11).map_err(pg)?,
        finished_at: row.try_get(12).map_err(pg)?,
        history: Vec::new(),
    })
}

/// Fills in each delivery's [`Delivery::history`]: its last [`HISTORY_LIMIT`] attempts, oldest first.
async fn with_history(tx: &Tx, deliveries: &mut [Delivery]) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
    let limit = HISTORY_LIMIT as i64;
    let rows = tx
        .query(
            "SELECT delivery_id, at, status, latency_ms, error FROM (
                 SELECT delivery_id, seq, at, status, latency_ms, error,
                        row_number() OVER (PARTITION BY delivery_id ORDER BY seq DESC) AS n
                 FROM webhook_attempts WHERE delivery_id = ANY($1)) a
             WHERE n <= $2 ORDER BY seq",
            &[&ids, &limit],
        )
        .await?;
    let mut history: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
    for row in rows {
        let id: String = row.try_get(0).map_err(pg)?;
        history.entry(id).or_default().push(AttemptRecord {
            at: row.try_get(1).map_err(pg)?,
            status: status(&row, 2)?,
            latency_ms: small(&row, 3)?,
            error: row.try_get(4).map_err(pg)?,
        });
    }
    for d in deliveries {
        d.history = history.remove(&d.id).unwrap_or_default();
    }
    Ok(())
}

async fn find_webhook(tx: &Tx, owner: &Owner, id: &str) -> Result<Option<Webhook>, StoreError> {
    let sql = format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND org_id = $2 AND mode = $3"
    );
    tx.query_opt(&sql, &[&id, &owner.org_id, &owner.mode.as_str()])
        .await?
        .map(|row| webhook_from_row(&row))
        .transpose()
}

async fn find_delivery(tx: &Tx, owner: &Owner, id: &str) -> Result<Option<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM {DELIVERIES_FROM}
         WHERE d.id = $1 AND e.org_id = $2 AND e.mode = $3 AND d.target_url IS NULL"
    );
    let found = tx
        .query_opt(&sql, &[&id, &owner.org_id, &owner.mode.as_str()])
        .await?
        .map(|row| delivery_from_row(&row))
        .transpose()?;
    let mut found: Vec<Delivery> = found.into_iter().collect();
    with_history(tx, &mut found).await?;
    Ok(found.pop())
}

impl PgStore {
    /// Deletes deliveries that ended (delivered or failed) before `cutoff`, with their attempts, and then the
    /// events older than `cutoff` that no delivery refers to any more; returns how many deliveries went.
    /// Pending deliveries are never deleted (nor one redelivered meanwhile). Batched, so that writers are not
    /// held up.
    pub async fn expire_outbox(&self, cutoff: i64) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self
                .write(move |tx| {
                    Box::pin(async move {
                        // `finished_at` is checked again on the row deleted: a redelivery that committed
                        // since the subquery read it keeps it.
                        let rows = tx
                            .modify(
                                "DELETE FROM webhook_deliveries
                                 WHERE seq IN (SELECT seq FROM webhook_deliveries
                                               WHERE finished_at < $1 ORDER BY finished_at LIMIT $2)
                                   AND finished_at < $1
                                 RETURNING id",
                                &[&cutoff, &SWEEP_BATCH],
                            )
                            .await?;
                        let ids = rows
                            .iter()
                            .map(|r| r.try_get::<_, String>(0).map_err(pg))
                            .collect::<Result<Vec<_>, _>>()?;
                        if !ids.is_empty() {
                            tx.execute(
                                "DELETE FROM webhook_attempts WHERE delivery_id = ANY($1)",
                                &[&ids],
                            )
                            .await?;
                        }
                        Ok(ids.len())
                    })
                })
                .await?;
            total += n;
            if n < SWEEP_BATCH as usize {
                break;
            }
        }
        loop {
            let n = self
                .write(move |tx| {
                    Box::pin(async move {
                        tx.execute(
                            "DELETE FROM webhook_events WHERE seq IN (
                                SELECT e.seq FROM webhook_events e WHERE e.created_at < $1
                                  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = e.seq)
                                LIMIT $2)",
                            &[&cutoff, &SWEEP_BATCH],
                        )
                        .await
                    })
                })
                .await?;
            if n < SWEEP_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

#[async_trait::async_trait]
impl WebhookStore for PgStore {
    async fn insert_webhook(&self, w: Webhook) -> Result<Webhook, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&w.org_id).await?;
                let existing: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM webhooks WHERE org_id = $1 AND mode = $2",
                        &[&w.org_id, &w.mode.as_str()],
                    )
                    .await?
                    .try_get(0)
                    .map_err(pg)?;
                if existing >= opgate_store::MAX_ENDPOINTS {
                    return Err(opgate_store::too_many_endpoints());
                }
                let types = serde_json::to_string(&w.event_types)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let rows = tx
                    .modify(
                        "INSERT INTO webhooks (id, org_id, mode, url, description, event_types, secret_sealed,
                                               disabled_at, disabled_reason, created_by, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, $8, $9, $9) RETURNING seq",
                        &[
                            &w.id,
                            &w.org_id,
                            &w.mode.as_str(),
                            &w.url,
                            &w.description,
                            &types,
                            &w.secret_sealed,
                            &w.created_by,
                            &w.created_at,
                        ],
                    )
                    .await?;
                Ok(Webhook {
                    seq: rows[0].try_get(0).map_err(pg)?,
                    updated_at: w.created_at,
                    ..w
                })
            })
        })
        .await
    }

    async fn get_webhook(&self, owner: &Owner, id: &str) -> Result<Option<Webhook>, StoreError> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.read(move |tx| Box::pin(async move { find_webhook(tx, &owner, &id).await }))
            .await
    }

    async fn list_webhooks(
        &self,
        owner: &Owner,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Webhook>, StoreError> {
        let owner = owner.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |tx| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE org_id = $1 AND mode = $2 AND seq > $3
                     ORDER BY seq LIMIT $4"
                );
                tx.query(&sql, &[&owner.org_id, &owner.mode.as_str(), &after_seq, &limit])
                    .await?
                    .iter()
                    .map(webhook_from_row)
                    .collect()
            })
        })
        .await
    }

    async fn update_webhook(
        &self,
        owner: &Owner,
        id: &str,
        patch: WebhookPatch,
        now: i64,
    ) -> Result<Option<Webhook>, StoreError> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&owner.org_id).await?;
                let Some(found) = find_webhook(tx, &owner, &id).await? else {
                    return Ok(None);
                };
                let types = patch
                    .event_types
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let (disabled_at, reason) = match patch.enabled {
                    None => (found.disabled_at, found.disabled_reason.clone()),
                    Some(true) => (None, None),
                    // Already disabled: its time and reason stay.
                    Some(false) => match found.disabled_at {
                        Some(at) => (Some(at), found.disabled_reason.clone()),
                        None => (Some(now), Some("disabled by a caller".to_owned())),
                    },
                };
                let set_description = patch.description.is_some();
                let description = patch.description.flatten();
                tx.execute(
                    "UPDATE webhooks SET url = coalesce($1, url),
                        description = CASE WHEN $2 THEN $3 ELSE description END,
                        event_types = coalesce($4, event_types),
                        secret_sealed = coalesce($5, secret_sealed),
                        disabled_at = $6, disabled_reason = $7, updated_at = $8
                     WHERE seq = $9",
                    &[
                        &patch.url,
                        &set_description,
                        &description,
                        &types,
                        &patch.secret_sealed,
                        &disabled_at,
                        &reason,
                        &now,
                        &found.seq,
                    ],
                )
                .await?;
                if found.disabled_at.is_some() && disabled_at.is_none() {
                    // Enabled again: its queue goes on now.
                    tx.execute(
                        "UPDATE webhook_deliveries SET next_attempt_at = LEAST(next_attempt_at, $2)
                         WHERE webhook_id = $1 AND state = 'pending'",
                        &[&id, &now],
                    )
                    .await?;
                    tx.event_written();
                }
                find_webhook(tx, &owner, &id).await
            })
        })
        .await
    }

    async fn delete_webhook(
        &self,
        owner: &Owner,
        id: &str,
        now: i64,
    ) -> Result<Option<Webhook>, StoreError> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&owner.org_id).await?;
                let Some(found) = find_webhook(tx, &owner, &id).await? else {
                    return Ok(None);
                };
                tx.execute(
                    "UPDATE webhook_deliveries SET state = 'failed', finished_at = $2,
                        last_error = coalesce(last_error, 'the endpoint was deleted')
                     WHERE webhook_id = $1 AND state = 'pending'",
                    &[&id, &now],
                )
                .await?;
                tx.execute("DELETE FROM webhooks WHERE seq = $1", &[&found.seq])
                    .await?;
                Ok(Some(found))
            })
        })
        .await
    }

    async fn list_deliveries(&self, page: DeliveryPage) -> Result<Vec<Delivery>, StoreError> {
        self.read(move |tx| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {DELIVERY_COLUMNS} FROM {DELIVERIES_FROM}
                     WHERE e.org_id = $1 AND e.mode = $2 AND d.target_url IS NULL
                       AND ($3::TEXT IS NULL OR d.webhook_id = $3)
                       AND ($4::TEXT IS NULL OR d.state = $4)
                       AND d.seq < $5
                     ORDER BY d.seq DESC LIMIT $6"
                );
                let state = page.state.map(DeliveryState::as_str);
                let before = page.before_seq.unwrap_or(i64::MAX);
                let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
                let mut deliveries = tx
                    .query(
                        &sql,
                        &[
                            &page.owner.org_id,
                            &page.owner.mode.as_str(),
                            &page.webhook_id,
                            &state,
                            &before,
                            &limit,
                        ],
                    )
                    .await?
                    .iter()
                    .map(delivery_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                with_history(tx, &mut deliveries).await?;
                Ok(deliveries)
            })
        })
        .await
    }

    async fn get_delivery(&self, owner: &Owner, id: &str) -> Result<Option<Delivery>, StoreError> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.read(move |tx| Box::pin(async move { find_delivery(tx, &owner, &id).await }))
            .await
    }

    async fn redeliver(&self, owner: &Owner, id: &str, now: i64) -> Result<Redelivery, StoreError> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&owner.org_id).await?;
                let Some(found) = find_delivery(tx, &owner, &id).await? else {
                    return Ok(Redelivery::NotFound);
                };
                if find_webhook(tx, &owner, &found.webhook_id).await?.is_none() {
                    return Ok(Redelivery::Gone);
                }
                tx.execute(
                    "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = $2, leased_until = NULL, finished_at = NULL
                     WHERE seq = $1",
                    &[&found.seq, &now],
                )
                .await?;
                tx.event_written();
                Ok(find_delivery(tx, &owner, &id)
                    .await?
                    .map_or(Redelivery::NotFound, |d| Redelivery::Queued(Box::new(d))))
            })
        })
        .await
    }

    /// On a fleet, each due delivery goes to one instance: the heads are locked as they are read (those
    /// another instance is taking are skipped) and leased (`DELIVERY_LEASE_SECS`) in the same transaction, so that
    /// no other instance takes them while this one attempts them ([`WebhookStore::record_attempt`] then sets
    /// what follows). A leased head still heads its queue, so an endpoint never has two deliveries in flight.
    async fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
        per_org: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |tx| {
            Box::pin(async move {
                // Each endpoint's oldest pending delivery, if due, at most PER_ORG_DUE of one organization (one
                // tenant's many endpoints cannot fill every slot); then those another instance is not taking.
                let candidates = format!(
                    "WITH heads AS (
                        SELECT d.seq, e.org_id, d.next_attempt_at, d.attempts, coalesce(d.leased_until, 0) > $1 AS busy
                        FROM {DELIVERIES_FROM} LEFT JOIN webhooks w ON w.id = d.webhook_id
                        WHERE {SENDABLE_HEAD}),
                     ranked AS (
                        SELECT h.seq, h.next_attempt_at, h.attempts,
                               ROW_NUMBER() OVER (PARTITION BY h.org_id ORDER BY h.next_attempt_at, h.seq)
                               + (SELECT count(*) FROM heads b WHERE b.org_id = h.org_id AND b.busy) AS r
                        FROM heads h WHERE NOT h.busy AND h.next_attempt_at <= $1)
                     SELECT seq FROM ranked WHERE r <= $3 ORDER BY r, attempts, next_attempt_at, seq LIMIT $2"
                );
                let seqs: Vec<i64> = tx
                    .query(&candidates, &[&now, &limit, &per_org])
                    .await?
                    .iter()
                    .map(|r| r.try_get(0).map_err(pg))
                    .collect::<Result<_, _>>()?;
                if seqs.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "SELECT {DELIVERY_COLUMNS}, coalesce(d.target_url, w.url),
                            coalesce(d.signing_sealed, w.secret_sealed), e.payload, e.created_at, d.payload_sealed
                     FROM {DELIVERIES_FROM} LEFT JOIN webhooks w ON w.id = d.webhook_id
                     WHERE d.seq = ANY($2) AND d.next_attempt_at <= $1 AND d.state = 'pending'
                       AND coalesce(d.leased_until, 0) <= $1
                     ORDER BY d.next_attempt_at, d.seq
                     FOR UPDATE OF d SKIP LOCKED"
                );
                let due = tx
                    .query(&sql, &[&now, &seqs])
                    .await?
                    .iter()
                    .map(|row| {
                        Ok(DueDelivery {
                            delivery: delivery_from_row(row)?,
                            url: row.try_get(13).map_err(pg)?,
                            secret_sealed: row.try_get(14).map_err(pg)?,
                            payload: row.try_get(15).map_err(pg)?,
                            event_at: row.try_get(16).map_err(pg)?,
                            payload_sealed: row.try_get(17).map_err(pg)?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                if !due.is_empty() {
                    let seqs: Vec<i64> = due.iter().map(|d| d.delivery.seq).collect();
                    tx.execute(
                        "UPDATE webhook_deliveries SET leased_until = $2 WHERE seq = ANY($1)",
                        &[&seqs, &(now + DELIVERY_LEASE_SECS)],
                    )
                    .await?;
                }
                Ok(due)
            })
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        self.read(|tx| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT min(GREATEST(d.next_attempt_at, coalesce(d.leased_until, 0))) FROM webhook_deliveries d
                     LEFT JOIN webhooks w ON w.id = d.webhook_id
                     WHERE {SENDABLE_HEAD}"
                );
                tx.query_one(&sql, &[]).await?.try_get(0).map_err(pg)
            })
        })
        .await
    }

    async fn record_attempt(&self, delivery_id: &str, a: Attempt) -> Result<(), StoreError> {
        let id = delivery_id.to_owned();
        let builder = self.key_payload();
        self.write(move |tx| {
            Box::pin(async move {
                // The organization is the event's: read it to take its lock, then decide under the lock.
                let org = tx
                    .query_opt(
                        "SELECT e.org_id FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq
                         WHERE d.id = $1",
                        &[&id],
                    )
                    .await?;
                let Some(org) = org else {
                    return Ok(());
                };
                let org: String = org.try_get(0).map_err(pg)?;
                tx.lock_org(&org).await?;
                let (state, next, finished) = match a.next {
                    AttemptNext::Delivered => ("delivered", a.at, Some(a.at)),
                    AttemptNext::RetryAt(t) => ("pending", t, None),
                    AttemptNext::GiveUp => ("failed", a.at, Some(a.at)),
                };
                let status = a.status.map(i64::from);
                let latency = i64::from(a.latency_ms);
                let changed = tx
                    .execute(
                        "UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, next_attempt_at = $3, leased_until = NULL,
                            last_status = $4, last_error = $5, last_latency_ms = $6, finished_at = $7
                         WHERE id = $1 AND state = 'pending'",
                        &[&id, &state, &next, &status, &a.error, &latency, &finished],
                    )
                    .await?;
                if changed == 0 {
                    return Ok(());
                }
                tx.execute(
                    "INSERT INTO webhook_attempts (delivery_id, at, status, latency_ms, error)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&id, &a.at, &status, &latency, &a.error],
                )
                .await?;
                if let AttemptNext::RetryAt(_) = a.next {
                    return Ok(());
                }
                let rotation: Option<String> = tx
                    .query_one("SELECT rotation_of FROM webhook_deliveries WHERE id = $1", &[&id])
                    .await?
                    .try_get(0)
                    .map_err(pg)?;
                if rotation.is_some() {
                    // A rotation webhook has no endpoint to disable: its end is the rotation's.
                    let delivered = a.next == AttemptNext::Delivered;
                    return crate::rotation::end_rotation(
                        tx,
                        &id,
                        delivered,
                        a.error.as_deref(),
                        a.at,
                        &builder,
                    )
                    .await;
                }
                if a.next == AttemptNext::GiveUp {
                    // An endpoint that keeps failing is disabled, and says so to the organization's others.
                    let webhook = tx
                        .query_opt(
                            "SELECT w.id, w.org_id, w.mode, w.url FROM webhooks w
                             JOIN webhook_deliveries d ON d.webhook_id = w.id
                             WHERE d.id = $1 AND w.disabled_at IS NULL",
                            &[&id],
                        )
                        .await?;
                    if let Some(row) = webhook {
                        let webhook_id: String = row.try_get(0).map_err(pg)?;
                        let org_id: String = row.try_get(1).map_err(pg)?;
                        let mode: String = row.try_get(2).map_err(pg)?;
                        let url: String = row.try_get(3).map_err(pg)?;
                        tx.execute(
                            "UPDATE webhooks SET disabled_at = $2, updated_at = $2,
                                disabled_reason = 'deliveries kept failing'
                             WHERE id = $1",
                            &[&webhook_id, &a.at],
                        )
                        .await?;
                        append(
                            tx,
                            &NewEvent {
                                org_id,
                                mode: Mode::parse(&mode).unwrap_or_default(),
                                event_type: "webhook.disabled".into(),
                                data: serde_json::json!({
                                    "id": webhook_id,
                                    "url": url,
                                    "reason": "deliveries kept failing",
                                    "delivery_id": id,
                                }),
                                at: a.at,
                            },
                        )
                        .await?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    async fn emit(&self, event: NewEvent) -> Result<(), StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&event.org_id).await?;
                append(tx, &event).await
            })
        })
        .await
    }

    fn on_events(&self, listener: EventListener) {
        self.hooks()
            .event_listeners
            .write()
            .expect("hooks lock")
            .push(listener);
    }

    fn key_payloads(&self, builder: PayloadBuilder<KeyRecord>) {
        *self.hooks().key_payload.write().expect("hooks lock") = Some(builder);
    }

    fn workspace_payloads(&self, builder: PayloadBuilder<opgate_store::Workspace>) {
        *self.hooks().workspace_payload.write().expect("hooks lock") = Some(builder);
    }

    fn account_payloads(&self, builder: PayloadBuilder<opgate_store::ServiceAccount>) {
        *self.hooks().account_payload.write().expect("hooks lock") = Some(builder);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use opgate_core::{KeyType, Mode};
    use opgate_store::NewKey;

    use super::*;

    async fn store() -> Option<(String, PgStore)> {
        let url = crate::fresh_test_database().await?;
        let store = PgStore::connect(&url).await.unwrap();
        Some((url, store))
    }

    fn endpoint(id: &str, types: &[&str]) -> Webhook {
        Webhook {
            seq: 0,
            id: id.into(),
            org_id: "o".into(),
            mode: Mode::Live,
            url: format!("https://example.test/{id}"),
            description: None,
            event_types: types.iter().map(|t| t.to_string()).collect(),
            secret_sealed: vec![1, 2, 3],
            disabled_at: None,
            disabled_reason: None,
            created_by: "k".into(),
            created_at: 10,
            updated_at: 10,
        }
    }

    fn key(i: usize) -> NewKey {
        NewKey {
            id: format!("key_{i}"),
            org_id: "o".into(),
            name: "k".into(),
            description: None,
            key_prefix: "opg_x".into(),
            key_hash: format!("h{i}").into_bytes(),
            permissions: vec![],
            rate_limit: None,
            allowed_ips: vec![],
            created_by: "t".into(),
            created_at: 100 + i as i64,
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

    /// Inserts a key with its `api_key.created` event, as the key store does (it is not this module's).
    async fn insert_key(store: &PgStore, key: NewKey) {
        let builder = store.key_payload();
        store
            .write(move |tx| {
                Box::pin(async move {
                    tx.lock_org(&key.org_id).await?;
                    crate::keys::insert(tx, &key).await?;
                    let record = crate::keys::select_one(tx, "k.id = $1", &[&key.id])
                        .await?
                        .expect("inserted");
                    key_event(tx, &builder, "created", &record, record.created_at).await
                })
            })
            .await
            .unwrap();
    }

    /// Revokes a key with its `api_key.revoked` event, as the key store does.
    async fn revoke_key(store: &PgStore, id: &str, now: i64) {
        let builder = store.key_payload();
        let id = id.to_owned();
        store
            .write(move |tx| {
                Box::pin(async move {
                    tx.lock_org("o").await?;
                    tx.execute(
                        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1",
                        &[&id, &now],
                    )
                    .await?;
                    let record = crate::keys::select_one(tx, "k.id = $1", &[&id])
                        .await?
                        .expect("inserted");
                    key_event(tx, &builder, "revoked", &record, now).await
                })
            })
            .await
            .unwrap();
    }

    fn owner() -> Owner {
        Owner {
            org_id: "o".into(),
            mode: Mode::Live,
        }
    }

    fn page(webhook: Option<&str>) -> DeliveryPage {
        DeliveryPage {
            owner: owner(),
            webhook_id: webhook.map(Into::into),
            before_seq: None,
            state: None,
            limit: 10,
        }
    }

    fn event(at: i64) -> NewEvent {
        NewEvent {
            org_id: "o".into(),
            mode: Mode::Live,
            event_type: "test.event".into(),
            data: serde_json::json!({"at": at}),
            at,
        }
    }

    #[tokio::test]
    async fn events_are_written_with_their_change_and_delivered_in_order_per_endpoint() {
        let Some((_, store)) = store().await else {
            return;
        };
        let woken = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&woken);
        store.on_events(Arc::new(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        // Without endpoints, or without a payload builder, nothing goes to the outbox.
        insert_key(&store, key(0)).await;
        store.key_payloads(Arc::new(|r: &KeyRecord, _| serde_json::json!({"id": r.id})));
        insert_key(&store, key(1)).await;
        assert_eq!(woken.load(Ordering::SeqCst), 0);

        store.insert_webhook(endpoint("wh_a", &[])).await.unwrap();
        store
            .insert_webhook(endpoint("wh_b", &["api_key.revoked"]))
            .await
            .unwrap();
        insert_key(&store, key(2)).await;
        revoke_key(&store, "key_2", 200).await;
        assert_eq!(woken.load(Ordering::SeqCst), 2);

        // wh_a has created then revoked: only its oldest is due; wh_b has revoked.
        let due = store
            .due_deliveries(1_000, 10, opgate_store::PER_ORG_DUE)
            .await
            .unwrap();
        let mut heads: Vec<(String, String)> = due
            .iter()
            .map(|d| (d.delivery.webhook_id.clone(), d.delivery.event_type.clone()))
            .collect();
        heads.sort();
        assert_eq!(
            heads,
            [
                ("wh_a".to_owned(), "api_key.created".to_owned()),
                ("wh_b".to_owned(), "api_key.revoked".to_owned())
            ]
        );
        let first = due
            .iter()
            .find(|d| d.delivery.webhook_id == "wh_a")
            .unwrap();
        assert_eq!(
            (
                first.url.as_str(),
                first.secret_sealed.as_slice(),
                first.event_at
            ),
            ("https://example.test/wh_a", &[1u8, 2, 3][..], 102)
        );
        assert_eq!(
            (first.delivery.next_attempt_at, first.delivery.attempts),
            (102, 0),
            "as it stood when it was handed out"
        );
        let body: serde_json::Value = serde_json::from_str(&first.payload).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "api_key.created", "timestamp": "1970-01-01T00:01:42Z", "data": {"id": "key_2"}})
        );
        // Handed out, they are not handed out again while attempted.
        assert!(store
            .due_deliveries(1_000, 10, opgate_store::PER_ORG_DUE)
            .await
            .unwrap()
            .is_empty());
        // A retry keeps the queue behind it; a success lets the next one through.
        let id = first.delivery.id.clone();
        let retry = Attempt {
            at: 1_000,
            status: Some(500),
            latency_ms: 3,
            error: Some("HTTP 500".into()),
            next: AttemptNext::RetryAt(1_005),
        };
        store.record_attempt(&id, retry).await.unwrap();
        assert!(store
            .due_deliveries(1_001, 10, opgate_store::PER_ORG_DUE)
            .await
            .unwrap()
            .iter()
            .all(|d| d.delivery.webhook_id != "wh_a"));
        // wh_b's head is leased until 1 090: wh_a's retry comes first.
        assert_eq!(store.next_due().await.unwrap(), Some(1_005));
        let ok = Attempt {
            at: 1_005,
            status: Some(204),
            latency_ms: 2,
            error: None,
            next: AttemptNext::Delivered,
        };
        store.record_attempt(&id, ok.clone()).await.unwrap();
        // A second record of the same outcome changes nothing.
        store.record_attempt(&id, ok).await.unwrap();
        let next = store
            .due_deliveries(1_005, 10, opgate_store::PER_ORG_DUE)
            .await
            .unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(
            (
                next[0].delivery.webhook_id.as_str(),
                next[0].delivery.event_type.as_str()
            ),
            ("wh_a", "api_key.revoked")
        );
        let delivered = store.get_delivery(&owner(), &id).await.unwrap().unwrap();
        assert_eq!(
            (delivered.state, delivered.attempts, delivered.last_status),
            (DeliveryState::Delivered, 2, Some(204))
        );
        assert_eq!(
            delivered.history,
            [
                AttemptRecord {
                    at: 1_000,
                    status: Some(500),
                    latency_ms: Some(3),
                    error: Some("HTTP 500".into())
                },
                AttemptRecord {
                    at: 1_005,
                    status: Some(204),
                    latency_ms: Some(2),
                    error: None
                },
            ]
        );

        // Giving up disables the endpoint and tells the others.
        let b = due
            .iter()
            .find(|d| d.delivery.webhook_id == "wh_b")
            .unwrap();
        let give_up = Attempt {
            at: 2_000,
            status: None,
            latency_ms: 10_000,
            error: Some("timed out".into()),
            next: AttemptNext::GiveUp,
        };
        store.record_attempt(&b.delivery.id, give_up).await.unwrap();
        assert_eq!(woken.load(Ordering::SeqCst), 3);
        let wh_b = store.get_webhook(&owner(), "wh_b").await.unwrap().unwrap();
        assert_eq!(
            (wh_b.disabled_at, wh_b.disabled_reason.as_deref()),
            (Some(2_000), Some("deliveries kept failing"))
        );
        let told = store.list_deliveries(page(Some("wh_a"))).await.unwrap();
        assert_eq!(told[0].event_type, "webhook.disabled");
        assert_eq!(told.len(), 3);
        assert_eq!(told[2].history.len(), 2, "histories of a page");
        let failed = DeliveryPage {
            state: Some(DeliveryState::Failed),
            ..page(None)
        };
        let failed = store.list_deliveries(failed).await.unwrap();
        assert_eq!(
            (failed.len(), failed[0].id.as_str(), failed[0].finished_at),
            (1, b.delivery.id.as_str(), Some(2_000))
        );
        // Another organization sees none of it.
        let other = Owner {
            org_id: "p".into(),
            mode: Mode::Live,
        };
        assert!(store.get_webhook(&other, "wh_a").await.unwrap().is_none());
        assert!(store.get_delivery(&other, &id).await.unwrap().is_none());
        assert_eq!(
            store.redeliver(&other, &id, 3_000).await.unwrap(),
            Redelivery::NotFound
        );
    }

    #[tokio::test]
    async fn endpoints_are_updated_enabled_redelivered_and_deleted() {
        let Some((_, store)) = store().await else {
            return;
        };
        store.insert_webhook(endpoint("wh_a", &[])).await.unwrap();
        let listed = store.list_webhooks(&owner(), 0, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(store
            .list_webhooks(&owner(), listed[0].seq, 10)
            .await
            .unwrap()
            .is_empty());
        // Disabled: nothing is due, and its time and reason stay through a second disable.
        let disable = WebhookPatch {
            enabled: Some(false),
            ..Default::default()
        };
        let off = store
            .update_webhook(&owner(), "wh_a", disable.clone(), 50)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (off.disabled_at, off.disabled_reason.as_deref()),
            (Some(50), Some("disabled by a caller"))
        );
        let off = store
            .update_webhook(&owner(), "wh_a", disable, 60)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(off.disabled_at, Some(50));
        store.emit(event(100)).await.unwrap();
        assert!(
            store.list_deliveries(page(None)).await.unwrap().is_empty(),
            "a disabled endpoint gets no deliveries"
        );
        let patch = WebhookPatch {
            enabled: Some(true),
            ..Default::default()
        };
        store
            .update_webhook(&owner(), "wh_a", patch, 70)
            .await
            .unwrap();
        store.emit(event(100)).await.unwrap();
        // Disabled with a pending delivery, then enabled: the queue goes on at once.
        let disable = WebhookPatch {
            enabled: Some(false),
            ..Default::default()
        };
        store
            .update_webhook(&owner(), "wh_a", disable, 110)
            .await
            .unwrap();
        assert_eq!(store.next_due().await.unwrap(), None);
        assert!(store
            .due_deliveries(1_000, 10, opgate_store::PER_ORG_DUE)
            .await
            .unwrap()
            .is_empty());
        let patch = WebhookPatch {
            url: Some("https://example.test/new".into()),
            description: Some(Some("new".into())),
            event_types: Some(vec!["test.event".into()]),
            enabled: Some(true),
            secret_sealed: Some(vec![9]),
        };
        let on = store
            .update_webhook(&owner(), "wh_a", patch, 120)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                on.url.as_str(),
                on.description.as_deref(),
                on.event_types.as_slice(),
                on.secret_sealed.as_slice(),
                on.disabled_at,
                on.updated_at
            ),
            (
                "https://example.test/new",
                Some("new"),
                &["test.event".to_owned()][..],
                &[9u8][..],
                None,
                120
            )
        );
        assert_eq!(store.next_due().await.unwrap(), Some(100));
        let due = store
            .due_deliveries(1_000, 10, opgate_store::PER_ORG_DUE)
            .await
            .unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].url.as_str(), due[0].secret_sealed.as_slice()),
            ("https://example.test/new", &[9u8][..])
        );
        let id = due[0].delivery.id.clone();
        let delivered = Attempt {
            at: 1_000,
            status: Some(200),
            latency_ms: 1,
            error: None,
            next: AttemptNext::Delivered,
        };
        store.record_attempt(&id, delivered).await.unwrap();
        // Redelivered: pending again, due now, same event.
        let Redelivery::Queued(again) = store.redeliver(&owner(), &id, 2_000).await.unwrap() else {
            panic!("not queued")
        };
        assert_eq!(
            (
                again.state,
                again.next_attempt_at,
                again.finished_at,
                again.event_id.clone()
            ),
            (
                DeliveryState::Pending,
                2_000,
                None,
                due[0].delivery.event_id.clone()
            )
        );
        // Deleted: its pending deliveries are given up, and redelivering is pointless.
        let gone = store.delete_webhook(&owner(), "wh_a", 2_100).await.unwrap();
        assert_eq!(gone.map(|w| w.id), Some("wh_a".to_owned()));
        assert!(store
            .delete_webhook(&owner(), "wh_a", 2_100)
            .await
            .unwrap()
            .is_none());
        let after = store.get_delivery(&owner(), &id).await.unwrap().unwrap();
        assert_eq!(
            (after.state, after.finished_at, after.last_error),
            (
                DeliveryState::Failed,
                Some(2_100),
                Some("the endpoint was deleted".into())
            )
        );
        assert_eq!(
            store.redeliver(&owner(), &id, 2_200).await.unwrap(),
            Redelivery::Gone
        );
        assert!(store
            .update_webhook(&owner(), "wh_a", WebhookPatch::default(), 2_300)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn the_outbox_expires_ended_deliveries_and_their_events() {
        let Some((_, store)) = store().await else {
            return;
        };
        store.insert_webhook(endpoint("wh_a", &[])).await.unwrap();
        store.insert_webhook(endpoint("wh_b", &[])).await.unwrap();
        store.emit(event(100)).await.unwrap();
        store.emit(event(110)).await.unwrap();
        // wh_a's first is delivered, wh_b's first fails; both second ones stay pending.
        let due = store
            .due_deliveries(1_000, 10, opgate_store::PER_ORG_DUE)
            .await
            .unwrap();
        assert_eq!(due.len(), 2);
        for d in &due {
            let next = if d.delivery.webhook_id == "wh_a" {
                AttemptNext::Delivered
            } else {
                AttemptNext::GiveUp
            };
            let attempt = Attempt {
                at: 500,
                status: None,
                latency_ms: 1,
                error: None,
                next,
            };
            store.record_attempt(&d.delivery.id, attempt).await.unwrap();
        }
        assert_eq!(
            store.expire_outbox(500).await.unwrap(),
            0,
            "not ended before the cutoff"
        );
        assert_eq!(store.expire_outbox(501).await.unwrap(), 2);
        let count = |sql: &'static str| {
            let store = store.clone();
            async move {
                store
                    .read(move |tx| {
                        Box::pin(async move {
                            tx.query_one(sql, &[])
                                .await?
                                .try_get::<_, i64>(0)
                                .map_err(pg)
                        })
                    })
                    .await
                    .unwrap()
            }
        };
        assert_eq!(count("SELECT count(*) FROM webhook_attempts").await, 0);
        // The first event went with its deliveries; the second one still has pending ones; the
        // `webhook.disabled` event is newer than the cutoff.
        assert_eq!(count("SELECT count(*) FROM webhook_deliveries").await, 3);
        assert_eq!(count("SELECT count(*) FROM webhook_events").await, 2);
        assert_eq!(
            count("SELECT count(*) FROM webhook_events WHERE created_at = 100").await,
            0
        );
        assert_eq!(
            store.expire_outbox(10_000).await.unwrap(),
            0,
            "pending ones stay"
        );
    }

    /// Two instances over one database dispatch at once: each delivery is handed to one of them, and an
    /// endpoint never has two deliveries in flight, so it gets its events in order.
    #[tokio::test]
    async fn instances_never_share_a_delivery_and_keep_each_endpoint_in_order() {
        let Some((url, a)) = store().await else {
            return;
        };
        let b = PgStore::connect(&url).await.unwrap();
        // As many as one organization gets at once (PER_ORG_DUE).
        const ENDPOINTS: usize = 4;
        const EVENTS: usize = 8;
        for i in 0..ENDPOINTS {
            a.insert_webhook(endpoint(&format!("wh_{i}"), &[]))
                .await
                .unwrap();
        }
        for i in 0..EVENTS {
            a.emit(event(100 + i as i64)).await.unwrap();
        }
        // While instance b holds wh_0's head (mid-lease), a skips it and does not take the one behind it.
        let (locked_tx, locked) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let holder = b.clone();
        let holding = tokio::spawn(async move {
            holder
                .write(move |tx| {
                    Box::pin(async move {
                        tx.query(
                            "SELECT 1 FROM webhook_deliveries WHERE seq =
                                 (SELECT min(seq) FROM webhook_deliveries WHERE webhook_id = 'wh_0')
                             FOR UPDATE",
                            &[],
                        )
                        .await?;
                        let _ = locked_tx.send(());
                        let _ = released.await;
                        Ok(())
                    })
                })
                .await
        });
        locked.await.unwrap();
        let first = a
            .due_deliveries(1_000, 100, opgate_store::PER_ORG_DUE)
            .await
            .unwrap();
        assert_eq!(first.len(), ENDPOINTS - 1);
        assert!(first.iter().all(|d| d.delivery.webhook_id != "wh_0"));
        release.send(()).unwrap();
        holding.await.unwrap().unwrap();
        // Both at once: disjoint, and together the one head left.
        let (x, y) = tokio::join!(
            a.due_deliveries(1_000, 100, opgate_store::PER_ORG_DUE),
            b.due_deliveries(1_000, 100, opgate_store::PER_ORG_DUE)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        let taken: Vec<&str> = x
            .iter()
            .chain(&y)
            .map(|d| d.delivery.webhook_id.as_str())
            .collect();
        assert_eq!(taken, ["wh_0"], "each head is handed out once");
        assert_eq!(
            x.iter().chain(&y).next().unwrap().delivery.event_type,
            "test.event"
        );
        // Those are leased; deliver them, then let both instances run a dispatcher's loop.
        for d in first.iter().chain(&x).chain(&y) {
            let ok = Attempt {
                at: 1_000,
                status: Some(200),
                latency_ms: 1,
                error: None,
                next: AttemptNext::Delivered,
            };
            a.record_attempt(&d.delivery.id, ok).await.unwrap();
        }
        let in_flight: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let log: Arc<Mutex<Vec<(String, i64, String)>>> = Arc::default();
        let worker = |store: PgStore| {
            let (in_flight, log) = (Arc::clone(&in_flight), Arc::clone(&log));
            async move {
                let mut idle = 0;
                let mut handled = 0;
                while idle < 20 {
                    let due = store
                        .due_deliveries(1_000, 4, opgate_store::PER_ORG_DUE)
                        .await
                        .unwrap();
                    if due.is_empty() {
                        idle += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        continue;
                    }
                    idle = 0;
                    for d in &due {
                        let w = &d.delivery.webhook_id;
                        let previous = in_flight
                            .lock()
                            .unwrap()
                            .insert(w.clone(), d.delivery.id.clone());
                        assert!(previous.is_none(), "two deliveries of {w} in flight");
                        log.lock().unwrap().push((
                            w.clone(),
                            d.delivery.seq,
                            d.delivery.id.clone(),
                        ));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    for d in due {
                        in_flight.lock().unwrap().remove(&d.delivery.webhook_id);
                        let ok = Attempt {
                            at: 1_000,
                            status: Some(200),
                            latency_ms: 1,
                            error: None,
                            next: AttemptNext::Delivered,
                        };
                        store.record_attempt(&d.delivery.id, ok).await.unwrap();
                        handled += 1;
                    }
                }
                handled
            }
        };
        let (from_a, from_b) = tokio::join!(worker(a.clone()), worker(b.clone()));
        let log = log.lock().unwrap().clone();
        assert_eq!(from_a + from_b, ENDPOINTS * (EVENTS - 1));
        let ids: HashSet<&str> = log.iter().map(|(_, _, id)| id.as_str()).collect();
        assert_eq!(ids.len(), log.len(), "a delivery was handed out twice");
        for i in 0..ENDPOINTS {
            let w = format!("wh_{i}");
            let seqs: Vec<i64> = log
                .iter()
                .filter(|(x, _, _)| *x == w)
                .map(|(_, s, _)| *s)
                .collect();
            assert_eq!(seqs.len(), EVENTS - 1);
            assert!(
                seqs.windows(2).all(|p| p[0] < p[1]),
                "{w} out of order: {seqs:?}"
            );
        }
        let pending = DeliveryPage {
            state: Some(DeliveryState::Pending),
            ..page(None)
        };
        assert!(a.list_deliveries(pending).await.unwrap().is_empty());
    }
}
