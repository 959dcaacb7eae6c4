//! Webhook endpoints and the outbox: events are written in the transaction of the change that caused them,
//! with one delivery per subscribed endpoint, and a dispatcher takes them from here at least once, in order per
//! endpoint.

use std::cell::Cell;
use std::sync::{Arc, RwLock};

use opgate_core::Mode;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::{new_id, SqliteStore, StoreError};

/// An endpoint events are delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Insertion order.
    pub seq: i64,
    /// `wh_` and a lowercase ULID.
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// The mode whose events it gets.
    pub mode: Mode,
    /// Where events are POSTed.
    pub url: String,
    /// Free text.
    pub description: Option<String>,
    /// The event types it wants; empty: every type.
    pub event_types: Vec<String>,
    /// Its signing secret, sealed under a key derived from the server secret.
    pub secret_sealed: Vec<u8>,
    /// When it was disabled (nothing is delivered to it meanwhile), if it is.
    pub disabled_at: Option<i64>,
    /// Why: by a caller, or because deliveries kept failing.
    pub disabled_reason: Option<String>,
    /// The principal that created it.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl Webhook {
    /// Whether it wants events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    /// New URL.
    pub url: Option<String>,
    /// New description; `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// New event types.
    pub event_types: Option<Vec<String>>,
    /// Disable (`Some(false)`) or enable again (`Some(true)`).
    pub enabled: Option<bool>,
    /// A new sealed signing secret.
    pub secret_sealed: Option<Vec<u8>>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its (next) attempt.
    Pending,
    /// Answered 2xx.
    Delivered,
    /// Every attempt failed, or it was given up.
    Failed,
}

impl DeliveryState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

/// How long a delivery handed out by [`WebhookStore::due_deliveries`] is leased (longer than any attempt may
/// take): not handed out again meanwhile, and counted as under way for its organization; a dispatcher that dies
/// mid-attempt delays it by this much at most.
pub const DELIVERY_LEASE_SECS: i64 = 90;

/// The endpoints an organization may have in each mode, so that one tenant cannot crowd the dispatcher.
pub const MAX_ENDPOINTS: i64 = 20;

/// The refusal of an endpoint past [`MAX_ENDPOINTS`].
pub fn too_many_endpoints() -> StoreError {
    StoreError::Refused(format!(
        "an organization has at most {MAX_ENDPOINTS} webhook endpoints in each mode; delete one first"
    ))
}

/// The most deliveries of one organization under way (leased) at once, unless the dispatcher asks for fewer.
pub const PER_ORG_DUE: i64 = 4;

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Insertion order.
    pub seq: i64,
    /// `whd_` and a lowercase ULID.
    pub id: String,
    /// The endpoint.
    pub webhook_id: String,
    /// The event's id: the `webhook-id` header, the same on every attempt.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (unix seconds), while pending.
    pub next_attempt_at: i64,
    /// The last attempt's HTTP status, if it got one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// How long the last attempt took.
    pub last_latency_ms: Option<u32>,
    /// Unix seconds.
    pub created_at: i64,
    /// When it was delivered or given up.
    pub finished_at: Option<i64>,
    /// Its attempts, oldest first (the last [`HISTORY_LIMIT`]); empty where the caller does not need them.
    pub history: Vec<AttemptRecord>,
}

/// How many of a delivery's attempts [`Delivery::history`] keeps: more than one run of the backoff makes.
pub const HISTORY_LIMIT: usize = 50;

/// One attempt at a delivery, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// When it was made (unix seconds).
    pub at: i64,
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// How long it took.
    pub latency_ms: Option<u32>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// A delivery due now, with what sending it takes.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The delivery.
    pub delivery: Delivery,
    /// The endpoint's URL.
    pub url: String,
    /// The endpoint's sealed signing secret.
    pub secret_sealed: Vec<u8>,
    /// The exact body to send.
    pub payload: String,
    /// The body, sealed, when it holds a secret (a rotation webhook): it replaces `payload`.
    pub payload_sealed: Option<Vec<u8>>,
    /// When the event happened (unix seconds).
    pub event_at: i64,
}

/// How an attempt ended, as the dispatcher judged it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it was made.
    pub at: i64,
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// How long it took.
    pub latency_ms: u32,
    /// Why it failed (a refused address, a timeout, a non-2xx answer, the start of its body), if it did.
    pub error: Option<String>,
    /// What follows: delivered, another attempt at this time, or given up (the endpoint is then disabled).
    pub next: AttemptNext,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    /// It was delivered.
    Delivered,
    /// Try again at this time (unix seconds).
    RetryAt(i64),
    /// Give up: the delivery fails, and the endpoint is disabled.
    GiveUp,
}

/// An event to put in the outbox, built by whoever knows its payload.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The organization.
    pub org_id: String,
    /// The mode.
    pub mode: Mode,
    /// e.g. `api_key.created`.
    pub event_type: String,
    /// The `data` object of the payload.
    pub data: serde_json::Value,
    /// Unix seconds.
    pub at: i64,
}

/// Turns a stored row into the `data` of an event about it (the keys crate knows the wire shape of a key's
/// metadata; the store does not).
pub type PayloadBuilder<T> = Arc<dyn Fn(&T, i64) -> serde_json::Value + Send + Sync>;

/// Called after a commit that wrote events, so that the dispatcher wakes at once.
pub type EventListener = Arc<dyn Fn() + Send + Sync>;

thread_local! {
    /// Events written by the transaction under way (writer thread only).
    static WRITTEN: Cell<usize> = const { Cell::new(0) };
}

/// How many events the transaction under way has written; the writer reads it after commit.
pub(crate) fn written() -> usize {
    WRITTEN.with(Cell::get)
}

/// Notes that the transaction under way wrote deliveries (the dispatcher is woken after its commit).
pub(crate) fn note_written() {
    WRITTEN.with(|w| w.set(w.get() + 1));
}

/// Resets the count to `mark` (after a rolled-back savepoint) or 0 (after a commit).
pub(crate) fn reset_written(mark: usize) {
    WRITTEN.with(|w| w.set(mark));
}

/// The webhook part of a store's state: the payload builders the other crates registered.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) keys: RwLock<Option<PayloadBuilder<crate::KeyRecord>>>,
    pub(crate) workspaces: RwLock<Option<PayloadBuilder<crate::Workspace>>>,
    pub(crate) accounts: RwLock<Option<PayloadBuilder<crate::ServiceAccount>>>,
    pub(crate) listeners: RwLock<Vec<EventListener>>,
}

/// Writes `event` to the outbox with a delivery for every enabled endpoint of its organization and mode that
/// wants it, inside the caller's transaction; nothing when none does.
pub(crate) fn append(conn: &Connection, event: &NewEvent) -> Result<(), StoreError> {
    let endpoints: Vec<Webhook> = {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE org_id = ?1 AND mode = ?2 AND disabled_at IS NULL"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![event.org_id, event.mode.as_str()], webhook_from_row)?;
        rows.collect::<Result<_, _>>()?
    };
    let wanting: Vec<&Webhook> = endpoints
        .iter()
        .filter(|w| w.wants(&event.event_type))
        .collect();
    if wanting.is_empty() {
        return Ok(());
    }
    let id = new_id("msg");
    let payload = serde_json::json!({
        "type": event.event_type,
        "timestamp": opgate_core::Timestamp(event.at).to_rfc3339(),
        "data": event.data,
    })
    .to_string();
    conn.prepare_cached(
        "INSERT INTO webhook_events (id, org_id, mode, type, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        id,
        event.org_id,
        event.mode.as_str(),
        event.event_type,
        payload,
        event.at
    ])?;
    let event_seq = conn.last_insert_rowid();
    for endpoint in wanting {
        conn.prepare_cached(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_seq, state, attempts, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)",
        )?
        .execute(params![new_id("whd"), endpoint.id, event_seq, event.at])?;
    }
    WRITTEN.with(|w| w.set(w.get() + 1));
    Ok(())
}

const WEBHOOK_COLUMNS: &str =
    "seq, id, org_id, mode, url, description, event_types, secret_sealed, \
     disabled_at, disabled_reason, created_by, created_at, updated_at";

fn mode_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Mode> {
    let text: String = row.get(idx)?;
    Mode::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("unknown mode `{text}`").into(),
        )
    })
}

fn webhook_from_row(row: &Row<'_>) -> rusqlite::Result<Webhook> {
    let types: String = row.get(6)?;
    Ok(Webhook {
        seq: row.get(0)?,
        id: row.get(1)?,
        org_id: row.get(2)?,
        mode: mode_at(row, 3)?,
        url: row.get(4)?,
        description: row.get(5)?,
        event_types: serde_json::from_str(&types).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e))
        })?,
        secret_sealed: row.get(7)?,
        disabled_at: row.get(8)?,
        disabled_reason: row.get(9)?,
        created_by: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
    })
}

/// A delivery at the head of its endpoint's queue that can be sent (its endpoint enabled, or a rotation's).
const SENDABLE_HEAD: &str = "d.state = 'pending'
     AND (d.target_url IS NOT NULL OR (w.id IS NOT NULL AND w.disabled_at IS NULL))
     AND d.seq = (SELECT min(seq) FROM webhook_deliveries h WHERE h.webhook_id = d.webhook_id AND h.state = 'pending')";

const DELIVERY_COLUMNS: &str = "d.seq, d.id, d.webhook_id, e.id, e.type, d.state, d.attempts, \
     d.next_attempt_at, d.last_status, d.last_error, d.last_latency_ms, d.created_at, d.finished_at";
const DELIVERIES_FROM: &str = "webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq";

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let state: String = row.get(5)?;
    Ok(Delivery {
        seq: row.get(0)?,
        id: row.get(1)?,
        webhook_id: row.get(2)?,
        event_id: row.get(3)?,
        event_type: row.get(4)?,
        state: DeliveryState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                5,
                rusqlite::types::Type::Text,
                format!("unknown delivery state `{state}`").into(),
            )
        })?,
        attempts: row.get(6)?,
        next_attempt_at: row.get(7)?,
        last_status: row.get(8)?,
        last_error: row.get(9)?,
        last_latency_ms: row.get(10)?,
        created_at: row.get(11)?,
        finished_at: row.get(12)?,
        history: Vec::new(),
    })
}

/// Fills in each delivery's [`Delivery::history`].
fn with_history(conn: &Connection, deliveries: &mut [Delivery]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, status, latency_ms, error FROM webhook_attempts
         WHERE delivery_id = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    for d in deliveries {
        let rows = stmt.query_map(params![d.id, HISTORY_LIMIT as i64], |r| {
            Ok(AttemptRecord {
                at: r.get(0)?,
                status: r.get(1)?,
                latency_ms: r.get(2)?,
                error: r.get(3)?,
            })
        })?;
        d.history = rows.collect::<Result<Vec<_>, _>>()?;
        d.history.reverse();
    }
    Ok(())
}

/// The outcome of [`WebhookStore::redeliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivery {
    /// Queued again.
    Queued(Box<Delivery>),
    /// The caller sees no such delivery.
    NotFound,
    /// Its endpoint was deleted: there is nowhere to send it.
    Gone,
}

/// Which endpoints a call sees: its organization's, of its mode.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The organization.
    pub org_id: String,
    /// The mode.
    pub mode: Mode,
}

/// One page of deliveries, newest first.
#[derive(Debug, Clone)]
pub struct DeliveryPage {
    /// Whose.
    pub owner: Owner,
    /// Only this endpoint's.
    pub webhook_id: Option<String>,
    /// Only deliveries older than this sequence number.
    pub before_seq: Option<i64>,
    /// Only deliveries in this state.
    pub state: Option<DeliveryState>,
    /// Page size.
    pub limit: usize,
}

/// Storage of webhook endpoints and the outbox.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Stores a new endpoint.
    async fn insert_webhook(&self, webhook: Webhook) -> Result<Webhook, StoreError>;
    /// The endpoint `id` if `owner` has it.
    async fn get_webhook(&self, owner: &Owner, id: &str) -> Result<Option<Webhook>, StoreError>;
    /// One page of `owner`'s endpoints, oldest first.
    async fn list_webhooks(
        &self,
        owner: &Owner,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Webhook>, StoreError>;
    /// Applies `patch`; enabling again lets its pending deliveries go on where they stopped.
    async fn update_webhook(
        &self,
        owner: &Owner,
        id: &str,
        patch: WebhookPatch,
        now: i64,
    ) -> Result<Option<Webhook>, StoreError>;
    /// Deletes an endpoint; its pending deliveries are given up.
    async fn delete_webhook(
        &self,
        owner: &Owner,
        id: &str,
        now: i64,
    ) -> Result<Option<Webhook>, StoreError>;
    /// One page of deliveries, newest first.
    async fn list_deliveries(&self, page: DeliveryPage) -> Result<Vec<Delivery>, StoreError>;
    /// The delivery `id` if `owner` has it.
    async fn get_delivery(&self, owner: &Owner, id: &str) -> Result<Option<Delivery>, StoreError>;
    /// Puts a delivery back in its endpoint's queue, due at `now` (same event, same `webhook-id`); `Gone` when
    /// its endpoint was deleted.
    async fn redeliver(&self, owner: &Owner, id: &str, now: i64) -> Result<Redelivery, StoreError>;
    /// Deliveries due at `now`, leased for [`DELIVERY_LEASE_SECS`]: for each enabled endpoint only its oldest
    /// pending one, so that an endpoint gets its events in order, and no more than would make `per_org` of one
    /// organization under way (1: only organizations with nothing under way), least busy organizations and
    /// first attempts first.
    async fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
        per_org: i64,
    ) -> Result<Vec<DueDelivery>, StoreError>;
    /// When the next delivery at the head of an enabled endpoint's queue is due, if any.
    async fn next_due(&self) -> Result<Option<i64>, StoreError>;
    /// Records an attempt and what follows it. Giving up disables the endpoint and emits `webhook.disabled`.
    async fn record_attempt(&self, delivery_id: &str, attempt: Attempt) -> Result<(), StoreError>;
    /// Writes `event` to the outbox on its own (events no change of this store causes).
    async fn emit(&self, event: NewEvent) -> Result<(), StoreError>;
    /// Calls `listener` after every commit that wrote events.
    fn on_events(&self, listener: EventListener);
    /// Builds the `data` of `api_key.*` events from a key's row.
    fn key_payloads(&self, builder: PayloadBuilder<crate::KeyRecord>);
    /// Builds the `data` of `workspace.*` events.
    fn workspace_payloads(&self, builder: PayloadBuilder<crate::Workspace>);
    /// Builds the `data` of `service_account.*` events.
    fn account_payloads(&self, builder: PayloadBuilder<crate::ServiceAccount>);
}

fn find_webhook(conn: &Connection, owner: &Owner, id: &str) -> Result<Option<Webhook>, StoreError> {
    let sql = format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1 AND org_id = ?2 AND mode = ?3"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(
            params![id, owner.org_id, owner.mode.as_str()],
            webhook_from_row,
        )
        .optional()?)
}

fn find_delivery(
    conn: &Connection,
    owner: &Owner,
    id: &str,
) -> Result<Option<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM {DELIVERIES_FROM}
         WHERE d.id = ?1 AND e.org_id = ?2 AND e.mode = ?3 AND d.target_url IS NULL"
    );
    let found = conn
        .prepare_cached(&sql)?
        .query_row(
            params![id, owner.org_id, owner.mode.as_str()],
            delivery_from_row,
        )
        .optional()?;
    let mut found: Vec<Delivery> = found.into_iter().collect();
    with_history(conn, &mut found)?;
    Ok(found.pop())
}

impl SqliteStore {
    /// Deletes deliveries that ended (delivered or failed) before `cutoff`, with their attempts, and then the
    /// events older than `cutoff` that no delivery refers to any more; returns how many deliveries went.
    /// Pending deliveries are never deleted. Batched, so that writers are not held up.
    pub async fn expire_outbox(&self, cutoff: i64) -> Result<usize, StoreError> {
        let batch = crate::audit::SWEEP_BATCH;
        let mut total = 0;
        loop {
            let n = self
                .write(move |conn| {
                    let ids: Vec<(i64, String)> = {
                        let mut stmt = conn.prepare_cached(
                            "SELECT seq, id FROM webhook_deliveries
                             WHERE finished_at < ?1 ORDER BY finished_at LIMIT ?2",
                        )?;
                        let rows =
                            stmt.query_map(params![cutoff, batch], |r| Ok((r.get(0)?, r.get(1)?)))?;
                        rows.collect::<Result<_, _>>()?
                    };
                    let mut attempts =
                        conn.prepare_cached("DELETE FROM webhook_attempts WHERE delivery_id = ?1")?;
                    let mut delivery =
                        conn.prepare_cached("DELETE FROM webhook_deliveries WHERE seq = ?1")?;
                    for (seq, id) in &ids {
                        attempts.execute([id])?;
                        delivery.execute([seq])?;
                    }
                    Ok(ids.len())
                })
                .await?;
            total += n;
            if n < batch as usize {
                break;
            }
        }
        loop {
            let n = self
                .write(move |conn| {
                    Ok(conn
                        .prepare_cached(
                            "DELETE FROM webhook_events WHERE seq IN (
                                SELECT e.seq FROM webhook_events e WHERE e.created_at < ?1
                                  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = e.seq)
                                LIMIT ?2)",
                        )?
                        .execute(params![cutoff, batch])?)
                })
                .await?;
            if n < batch as usize {
                return Ok(total);
            }
        }
    }

    /// The builder of `workspace.*` payloads, if one is registered.
    pub(crate) fn workspace_payload(&self) -> Option<PayloadBuilder<crate::Workspace>> {
        self.inner
            .outbox
            .workspaces
            .read()
            .expect("outbox lock")
            .clone()
    }

    /// The builder of `service_account.*` payloads, if one is registered.
    pub(crate) fn account_payload(&self) -> Option<PayloadBuilder<crate::ServiceAccount>> {
        self.inner
            .outbox
            .accounts
            .read()
            .expect("outbox lock")
            .clone()
    }

    /// The builder of `api_key.*` payloads, if one is registered.
    pub(crate) fn key_payload(&self) -> Option<PayloadBuilder<crate::KeyRecord>> {
        self.inner.outbox.keys.read().expect("outbox lock").clone()
    }
}

/// Writes the `<kind>.<what>` event of `row` of organization `org` through `builder`, inside the caller's
/// transaction. The organization's structure is shared by both modes and changed by live callers: its events
/// are live events.
pub(crate) fn structure_event<T>(
    conn: &Connection,
    builder: &Option<PayloadBuilder<T>>,
    event_type: &str,
    org: &str,
    row: &T,
    at: i64,
) -> Result<(), StoreError> {
    emit(
        conn,
        builder,
        event_type.to_owned(),
        org,
        Mode::Live,
        row,
        at,
    )
}

/// Writes the `api_key.<what>` event of `record` through `builder`, inside the caller's transaction.
pub(crate) fn key_event(
    conn: &Connection,
    builder: &Option<PayloadBuilder<crate::KeyRecord>>,
    what: &str,
    record: &crate::KeyRecord,
    at: i64,
) -> Result<(), StoreError> {
    let event_type = format!("api_key.{what}");
    emit(
        conn,
        builder,
        event_type,
        &record.org_id,
        record.mode,
        record,
        at,
    )
}

/// Appends the event built from `row`, or nothing when no builder is registered (the store used alone).
fn emit<T>(
    conn: &Connection,
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
    append(conn, &event)
}

#[async_trait::async_trait]
impl WebhookStore for SqliteStore {
    async fn insert_webhook(&self, w: Webhook) -> Result<Webhook, StoreError> {
        self.write(move |conn| {
            let existing: i64 = conn
                .prepare_cached("SELECT count(*) FROM webhooks WHERE org_id = ?1 AND mode = ?2")?
                .query_row(params![w.org_id, w.mode.as_str()], |r| r.get(0))?;
            if existing >= MAX_ENDPOINTS {
                return Err(too_many_endpoints());
            }
            let types = serde_json::to_string(&w.event_types)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            conn.prepare_cached(
                "INSERT INTO webhooks (id, org_id, mode, url, description, event_types, secret_sealed,
                                       disabled_at, disabled_reason, created_by, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL, ?8, ?9, ?9)",
            )?
            .execute(params![
                w.id,
                w.org_id,
                w.mode.as_str(),
                w.url,
                w.description,
                types,
                w.secret_sealed,
                w.created_by,
                w.created_at
            ])?;
            Ok(Webhook {
                seq: conn.last_insert_rowid(),
                updated_at: w.created_at,
                ..w
            })
        })
        .await
    }

    async fn get_webhook(&self, owner: &Owner, id: &str) -> Result<Option<Webhook>, StoreError> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.read(move |conn| find_webhook(conn, &owner, &id)).await
    }

    async fn list_webhooks(
        &self,
        owner: &Owner,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Webhook>, StoreError> {
        let owner = owner.clone();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE org_id = ?1 AND mode = ?2 AND seq > ?3
                 ORDER BY seq LIMIT ?4"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![owner.org_id, owner.mode.as_str(), after_seq, limit as i64],
                webhook_from_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
        self.write(move |conn| {
            let Some(found) = find_webhook(conn, &owner, &id)? else {
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
            conn.prepare_cached(
                "UPDATE webhooks SET url = coalesce(:url, url),
                    description = CASE WHEN :set_description THEN :description ELSE description END,
                    event_types = coalesce(:types, event_types),
                    secret_sealed = coalesce(:secret, secret_sealed),
                    disabled_at = :disabled_at, disabled_reason = :reason, updated_at = :now
                 WHERE seq = :seq",
            )?
            .execute(rusqlite::named_params! {
                ":url": patch.url,
                ":set_description": patch.description.is_some(),
                ":description": patch.description.flatten(),
                ":types": types,
                ":secret": patch.secret_sealed,
                ":disabled_at": disabled_at,
                ":reason": reason,
                ":now": now,
                ":seq": found.seq,
            })?;
            if found.disabled_at.is_some() && disabled_at.is_none() {
                // Enabled again: its queue goes on now.
                conn.prepare_cached(
                    "UPDATE webhook_deliveries SET next_attempt_at = min(next_attempt_at, ?2)
                     WHERE webhook_id = ?1 AND state = 'pending'",
                )?
                .execute(params![id, now])?;
                WRITTEN.with(|w| w.set(w.get() + 1));
            }
            find_webhook(conn, &owner, &id)
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
        self.write(move |conn| {
            let Some(found) = find_webhook(conn, &owner, &id)? else {
                return Ok(None);
            };
            conn.prepare_cached(
                "UPDATE webhook_deliveries SET state = 'failed', finished_at = ?2,
                    last_error = coalesce(last_error, 'the endpoint was deleted')
                 WHERE webhook_id = ?1 AND state = 'pending'",
            )?
            .execute(params![id, now])?;
            conn.prepare_cached("DELETE FROM webhooks WHERE seq = ?1")?
                .execute([found.seq])?;
            Ok(Some(found))
        })
        .await
    }

    async fn list_deliveries(&self, page: DeliveryPage) -> Result<Vec<Delivery>, StoreError> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM {DELIVERIES_FROM}
                 WHERE e.org_id = :org AND e.mode = :mode AND d.target_url IS NULL
                   AND (:webhook IS NULL OR d.webhook_id = :webhook)
                   AND (:state IS NULL OR d.state = :state)
                   AND d.seq < :before
                 ORDER BY d.seq DESC LIMIT :limit"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                rusqlite::named_params! {
                    ":org": page.owner.org_id,
                    ":mode": page.owner.mode.as_str(),
                    ":webhook": page.webhook_id,
                    ":state": page.state.map(DeliveryState::as_str),
                    ":before": page.before_seq.unwrap_or(i64::MAX),
                    ":limit": page.limit as i64,
                },
                delivery_from_row,
            )?;
            let mut deliveries = rows.collect::<Result<Vec<_>, _>>()?;
            with_history(conn, &mut deliveries)?;
            Ok(deliveries)
        })
        .await
    }

    async fn get_delivery(&self, owner: &Owner, id: &str) -> Result<Option<Delivery>, StoreError> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.read(move |conn| find_delivery(conn, &owner, &id))
            .await
    }

    async fn redeliver(&self, owner: &Owner, id: &str, now: i64) -> Result<Redelivery, StoreError> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.write(move |conn| {
            let Some(found) = find_delivery(conn, &owner, &id)? else {
                return Ok(Redelivery::NotFound);
            };
            if find_webhook(conn, &owner, &found.webhook_id)?.is_none() {
                return Ok(Redelivery::Gone);
            }
            conn.prepare_cached(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?2, leased_until = NULL, finished_at = NULL
                 WHERE seq = ?1",
            )?
            .execute(params![found.seq, now])?;
            WRITTEN.with(|w| w.set(w.get() + 1));
            Ok(find_delivery(conn, &owner, &id)?.map_or(Redelivery::NotFound, |d| Redelivery::Queued(Box::new(d))))
        })
        .await
    }

    async fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
        per_org: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.write(move |conn| {
            // Each endpoint's oldest pending delivery, if due and not leased, while its organization has fewer
            // than PER_ORG_DUE under way: one tenant's many endpoints cannot fill every slot. The least busy
            // organizations go first, and first attempts before retries, so that a slot freed by tenants whose
            // endpoints hang goes to one that has nothing under way.
            let sql = format!(
                "WITH heads AS (
                    SELECT d.seq, e.org_id, d.next_attempt_at, coalesce(d.leased_until, 0) > ?1 AS busy
                    FROM {DELIVERIES_FROM} LEFT JOIN webhooks w ON w.id = d.webhook_id
                    WHERE {SENDABLE_HEAD}),
                 ranked AS (
                    SELECT h.seq, ROW_NUMBER() OVER (PARTITION BY h.org_id ORDER BY h.next_attempt_at, h.seq)
                           + (SELECT count(*) FROM heads b WHERE b.org_id = h.org_id AND b.busy) AS r
                    FROM heads h WHERE NOT h.busy AND h.next_attempt_at <= ?1)
                 SELECT {DELIVERY_COLUMNS}, coalesce(d.target_url, w.url), coalesce(d.signing_sealed, w.secret_sealed),
                        e.payload, e.created_at, d.payload_sealed
                 FROM ranked JOIN webhook_deliveries d ON d.seq = ranked.seq
                      JOIN webhook_events e ON e.seq = d.event_seq
                      LEFT JOIN webhooks w ON w.id = d.webhook_id
                 WHERE ranked.r <= ?3
                 ORDER BY ranked.r, d.attempts, d.next_attempt_at, d.seq LIMIT ?2"
            );
            let due = {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![now, limit as i64, per_org], |row| {
                    Ok(DueDelivery {
                        delivery: delivery_from_row(row)?,
                        url: row.get(13)?,
                        secret_sealed: row.get(14)?,
                        payload: row.get(15)?,
                        event_at: row.get(16)?,
                        payload_sealed: row.get(17)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            // Leased while attempted, so that the next look does not take it again; the attempt's record (or,
            // after a crash, the lease's end) makes it due again.
            let mut lease = conn
                .prepare_cached("UPDATE webhook_deliveries SET leased_until = ?2 WHERE seq = ?1")?;
            for d in &due {
                lease.execute(params![d.delivery.seq, now + DELIVERY_LEASE_SECS])?;
            }
            Ok(due)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT min(max(d.next_attempt_at, coalesce(d.leased_until, 0)))
                         FROM webhook_deliveries d LEFT JOIN webhooks w ON w.id = d.webhook_id
                         WHERE {SENDABLE_HEAD}"
                ))?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    async fn record_attempt(&self, delivery_id: &str, a: Attempt) -> Result<(), StoreError> {
        let id = delivery_id.to_owned();
        let builder = self.key_payload();
        self.write(move |conn| {
            let (state, next, finished) = match a.next {
                AttemptNext::Delivered => ("delivered", a.at, Some(a.at)),
                AttemptNext::RetryAt(t) => ("pending", t, None),
                AttemptNext::GiveUp => ("failed", a.at, Some(a.at)),
            };
            let changed = conn
                .prepare_cached(
                    "UPDATE webhook_deliveries SET state = ?2, attempts = attempts + 1, next_attempt_at = ?3, leased_until = NULL,
                        last_status = ?4, last_error = ?5, last_latency_ms = ?6, finished_at = ?7
                     WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![
                    id,
                    state,
                    next,
                    a.status,
                    a.error,
                    a.latency_ms,
                    finished
                ])?;
            if changed == 0 {
                return Ok(());
            }
            conn.prepare_cached(
                "INSERT INTO webhook_attempts (delivery_id, at, status, latency_ms, error)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, a.at, a.status, a.latency_ms, a.error])?;
            if let AttemptNext::RetryAt(_) = a.next {
                return Ok(());
            }
            let rotation: Option<String> = conn
                .prepare_cached("SELECT rotation_of FROM webhook_deliveries WHERE id = ?1")?
                .query_row([&id], |r| r.get(0))?;
            if rotation.is_some() {
                // A rotation webhook has no endpoint to disable: its end is the rotation's.
                let delivered = a.next == AttemptNext::Delivered;
                return crate::rotation::end_rotation(conn, &id, delivered, a.error.as_deref(), a.at, &builder);
            }
            if a.next == AttemptNext::GiveUp {
                // An endpoint that keeps failing is disabled, and says so to the organization's others.
                let webhook: Option<(String, String, String, String)> = conn
                    .prepare_cached(
                        "SELECT w.id, w.org_id, w.mode, w.url FROM webhooks w
                         JOIN webhook_deliveries d ON d.webhook_id = w.id
                         WHERE d.id = ?1 AND w.disabled_at IS NULL",
                    )?
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                if let Some((webhook_id, org_id, mode, url)) = webhook {
                    conn.prepare_cached(
                        "UPDATE webhooks SET disabled_at = ?2, updated_at = ?2,
                            disabled_reason = 'deliveries kept failing'
                         WHERE id = ?1",
                    )?
                    .execute(params![webhook_id, a.at])?;
                    append(
                        conn,
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
                    )?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn emit(&self, event: NewEvent) -> Result<(), StoreError> {
        self.write(move |conn| append(conn, &event)).await
    }

    fn on_events(&self, listener: EventListener) {
        self.inner
            .outbox
            .listeners
            .write()
            .expect("outbox lock")
            .push(listener);
    }

    fn key_payloads(&self, builder: PayloadBuilder<crate::KeyRecord>) {
        *self.inner.outbox.keys.write().expect("outbox lock") = Some(builder);
    }

    fn workspace_payloads(&self, builder: PayloadBuilder<crate::Workspace>) {
        *self.inner.outbox.workspaces.write().expect("outbox lock") = Some(builder);
    }

    fn account_payloads(&self, builder: PayloadBuilder<crate::ServiceAccount>) {
        *self.inner.outbox.accounts.write().expect("outbox lock") = Some(builder);
    }
}

#[cfg(test)]
mod tests {
    use opgate_core::{KeyType, Mode};

    use super::*;
    use crate::{KeyStore, NewKey, Scope};

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

    #[tokio::test]
    async fn events_are_written_with_their_change_and_delivered_in_order_per_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&woken);
        store.on_events(Arc::new(move || {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        // Without endpoints, or without a payload builder, nothing goes to the outbox.
        store.insert_key(key(0)).await.unwrap();
        store.key_payloads(Arc::new(
            |r: &crate::KeyRecord, _| serde_json::json!({"id": r.id}),
        ));
        store.insert_key(key(1)).await.unwrap();
        assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 0);

        store.insert_webhook(endpoint("wh_a", &[])).await.unwrap();
        store
            .insert_webhook(endpoint("wh_b", &["api_key.revoked"]))
            .await
            .unwrap();
        store.insert_key(key(2)).await.unwrap();
        let scope = Scope {
            org_id: "o".into(),
            mode: Mode::Live,
            workspace_id: None,
        };
        store.revoke_key(&scope, "key_2", 200).await.unwrap();
        assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 2);

        // wh_a has created then revoked: only its oldest is due; wh_b has revoked.
        let due = store
            .due_deliveries(1_000, 10, crate::PER_ORG_DUE)
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
        let body: serde_json::Value = serde_json::from_str(&first.payload).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "api_key.created", "timestamp": "1970-01-01T00:01:42Z", "data": {"id": "key_2"}})
        );
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
            .due_deliveries(1_001, 10, crate::PER_ORG_DUE)
            .await
            .unwrap()
            .iter()
            .all(|d| d.delivery.webhook_id != "wh_a"));
        // wh_b's head is leased until 1 090 (handed out at 1 000): wh_a's retry comes first.
        assert_eq!(store.next_due().await.unwrap(), Some(1_005));
        let ok = Attempt {
            at: 1_005,
            status: Some(204),
            latency_ms: 2,
            error: None,
            next: AttemptNext::Delivered,
        };
        store.record_attempt(&id, ok).await.unwrap();
        let next = store
            .due_deliveries(1_005, 10, crate::PER_ORG_DUE)
            .await
            .unwrap();
        assert!(
            next.iter()
                .any(|d| d.delivery.webhook_id == "wh_a"
                    && d.delivery.event_type == "api_key.revoked")
        );
        let owner = Owner {
            org_id: "o".into(),
            mode: Mode::Live,
        };
        let delivered = store.get_delivery(&owner, &id).await.unwrap().unwrap();
        assert_eq!(
            (delivered.state, delivered.attempts, delivered.last_status),
            (DeliveryState::Delivered, 2, Some(204))
        );

        // Giving up disables the endpoint and tells the others (wh_b's head, handed out at 1 000, is leased).
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
        let wh_b = store.get_webhook(&owner, "wh_b").await.unwrap().unwrap();
        assert_eq!(
            (wh_b.disabled_at, wh_b.disabled_reason.as_deref()),
            (Some(2_000), Some("deliveries kept failing"))
        );
        let told = store
            .list_deliveries(DeliveryPage {
                owner: owner.clone(),
                webhook_id: Some("wh_a".into()),
                before_seq: None,
                state: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(told[0].event_type, "webhook.disabled");
        // Another organization sees none of it.
        let other = Owner {
            org_id: "p".into(),
            mode: Mode::Live,
        };
        assert!(store.get_webhook(&other, "wh_a").await.unwrap().is_none());
        assert!(store.get_delivery(&other, &id).await.unwrap().is_none());
    }
}
