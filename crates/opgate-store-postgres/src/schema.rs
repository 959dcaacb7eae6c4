//! Versioned schema migrations for PostgreSQL. Each runs in its own transaction while the migrating instance
//! holds an advisory lock, so instances of a fleet starting together apply each migration once; the table
//! `opgate_schema` records the versions applied.
//!
//! Conventions (shared with the SQLite schema, column for column): every integer is `BIGINT` (unix seconds,
//! counts, statuses), flags are `BOOLEAN`, hashes and sealed secrets `BYTEA`, lists stored as JSON `TEXT`
//! exactly as the SQLite store writes them.

use opgate_store::StoreError;

use crate::pg;

/// The advisory lock (an arbitrary constant) held while migrating.
const MIGRATION_LOCK: i64 = 0x6f70_6761_7465_0001;

/// Each entry moves the schema from version `index` to `index + 1`. Never edit a released entry: append.
const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite store holds at its version 8, at once.
    "CREATE TABLE api_keys (
        seq                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id                     TEXT    NOT NULL UNIQUE,
        org_id                 TEXT    NOT NULL,
        name                   TEXT    NOT NULL,
        description            TEXT,
        key_prefix             TEXT    NOT NULL,
        key_hash               BYTEA   NOT NULL UNIQUE,
        permissions            TEXT    NOT NULL,
        rate_limit             BIGINT,
        allowed_ips            TEXT    NOT NULL,
        created_by             TEXT    NOT NULL,
        created_at             BIGINT  NOT NULL,
        expires_at             BIGINT,
        revoked_at             BIGINT,
        last_used_at           BIGINT,
        last_used_ip           TEXT,
        last_used_user_agent   TEXT,
        replaced_by_key_id     TEXT,
        grace_expires_at       BIGINT,
        workspace_id           TEXT,
        environment_id         TEXT,
        mode                   TEXT    NOT NULL DEFAULT 'live',
        key_type               TEXT    NOT NULL DEFAULT 'admin',
        service_account_id     TEXT,
        rotation_interval_days BIGINT,
        rotation_webhook_url   TEXT,
        next_rotation_at       BIGINT,
        rotation_key_sealed    BYTEA,
        rotating_to_key_id     TEXT,
        expiry_notices         BIGINT  NOT NULL DEFAULT 0
    );
    CREATE INDEX api_keys_by_org ON api_keys (org_id, seq);
    CREATE INDEX api_keys_by_org_mode ON api_keys (org_id, mode, seq);
    CREATE INDEX api_keys_by_service_account ON api_keys (service_account_id) WHERE service_account_id IS NOT NULL;
    CREATE INDEX api_keys_rotation_due ON api_keys (next_rotation_at) WHERE next_rotation_at IS NOT NULL;
    CREATE INDEX api_keys_expiring ON api_keys (expires_at) WHERE expires_at IS NOT NULL AND revoked_at IS NULL;

    CREATE TABLE audit_log (
        seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id             TEXT    NOT NULL UNIQUE,
        at             BIGINT  NOT NULL,
        request_id     TEXT    NOT NULL,
        principal_kind TEXT    NOT NULL,
        principal_id   TEXT    NOT NULL,
        org_id         TEXT    NOT NULL,
        operation      TEXT    NOT NULL,
        target_id      TEXT,
        client_ip      TEXT,
        status         BIGINT  NOT NULL,
        error_code     TEXT,
        count          BIGINT  NOT NULL DEFAULT 1,
        workspace_id   TEXT,
        mode           TEXT    NOT NULL DEFAULT 'live'
    );
    CREATE INDEX audit_log_by_org ON audit_log (org_id, seq);
    CREATE INDEX audit_log_by_age ON audit_log (at);

    CREATE TABLE idempotency (
        principal    TEXT    NOT NULL,
        key          TEXT    NOT NULL,
        request_hash BYTEA   NOT NULL,
        status       BIGINT  NOT NULL,
        body         BYTEA   NOT NULL,
        created_at   BIGINT  NOT NULL,
        PRIMARY KEY (principal, key)
    );
    CREATE INDEX idempotency_by_age ON idempotency (created_at);

    -- The key change log. `seq` comes from `key_generation`, bumped in the change's transaction: the row lock
    -- makes generations commit in order, so a follower reading `seq > last` never skips one.
    CREATE TABLE key_generation (only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row), value BIGINT NOT NULL);
    INSERT INTO key_generation (value) VALUES (0);
    CREATE TABLE key_changes (
        seq      BIGINT  PRIMARY KEY,
        key_hash BYTEA   NOT NULL,
        at       BIGINT  NOT NULL
    );
    CREATE INDEX key_changes_by_age ON key_changes (at);

    CREATE TABLE workspaces (
        seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id           TEXT    NOT NULL UNIQUE,
        org_id       TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        description  TEXT,
        is_default   BOOLEAN NOT NULL DEFAULT FALSE,
        created_at   BIGINT  NOT NULL,
        updated_at   BIGINT  NOT NULL
    );
    CREATE INDEX workspaces_by_org ON workspaces (org_id, seq);
    CREATE UNIQUE INDEX workspaces_one_default ON workspaces (org_id) WHERE is_default;
    CREATE TABLE environments (
        seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id           TEXT    NOT NULL UNIQUE,
        org_id       TEXT    NOT NULL,
        workspace_id TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        created_at   BIGINT  NOT NULL,
        UNIQUE (workspace_id, name)
    );
    CREATE INDEX environments_by_org ON environments (org_id, seq);
    CREATE TABLE service_accounts (
        seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id           TEXT    NOT NULL UNIQUE,
        org_id       TEXT    NOT NULL,
        workspace_id TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        description  TEXT,
        disabled_at  BIGINT,
        created_by   TEXT    NOT NULL,
        created_at   BIGINT  NOT NULL,
        updated_at   BIGINT  NOT NULL
    );
    CREATE INDEX service_accounts_by_org ON service_accounts (org_id, seq);

    CREATE TABLE webhooks (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id              TEXT    NOT NULL UNIQUE,
        org_id          TEXT    NOT NULL,
        mode            TEXT    NOT NULL,
        url             TEXT    NOT NULL,
        description     TEXT,
        event_types     TEXT    NOT NULL,
        secret_sealed   BYTEA   NOT NULL,
        disabled_at     BIGINT,
        disabled_reason TEXT,
        created_by      TEXT    NOT NULL,
        created_at      BIGINT  NOT NULL,
        updated_at      BIGINT  NOT NULL
    );
    CREATE INDEX webhooks_by_org ON webhooks (org_id, mode, seq);
    CREATE TABLE webhook_events (
        seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id         TEXT    NOT NULL UNIQUE,
        org_id     TEXT    NOT NULL,
        mode       TEXT    NOT NULL,
        type       TEXT    NOT NULL,
        payload    TEXT    NOT NULL,
        created_at BIGINT  NOT NULL
    );
    CREATE INDEX webhook_events_by_age ON webhook_events (created_at);
    CREATE TABLE webhook_deliveries (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id              TEXT    NOT NULL UNIQUE,
        webhook_id      TEXT    NOT NULL,
        event_seq       BIGINT  NOT NULL,
        state           TEXT    NOT NULL,
        attempts        BIGINT  NOT NULL DEFAULT 0,
        next_attempt_at BIGINT  NOT NULL,
        last_status     BIGINT,
        last_error      TEXT,
        last_latency_ms BIGINT,
        created_at      BIGINT  NOT NULL,
        finished_at     BIGINT,
        target_url      TEXT,
        signing_sealed  BYTEA,
        payload_sealed  BYTEA,
        rotation_of     TEXT
    );
    CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (webhook_id, state, seq);
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
    CREATE INDEX webhook_deliveries_ended ON webhook_deliveries (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_seq);
    CREATE TABLE webhook_attempts (
        seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id TEXT    NOT NULL,
        at          BIGINT  NOT NULL,
        status      BIGINT,
        latency_ms  BIGINT,
        error       TEXT
    );
    CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, seq);",
    // 2: as the SQLite store's 9: a delivery handed to an attempt is leased.
    "ALTER TABLE webhook_deliveries ADD COLUMN leased_until BIGINT;",
    // 3: the fleet's rate-limit cells (GCRA: each key's theoretical arrival time, unix microseconds). Unlogged:
    // after a crash of the database they start empty, which only forgives what was spent.
    "CREATE UNLOGGED TABLE rate_cells (key TEXT PRIMARY KEY, tat BIGINT NOT NULL);",
    // 4: as the SQLite store's 10: the door a call came through (`http` or `mcp`).
    "ALTER TABLE audit_log ADD COLUMN via TEXT NOT NULL DEFAULT 'http';",
];

/// The schema version this build writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Applies every migration newer than the database's version, each in its own transaction, under the
/// migration lock (a session-level advisory lock, so that it spans the transactions).
pub(crate) async fn apply(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    let result = apply_locked(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg);
    result.and(unlocked.map(|_| ()))
}

async fn apply_locked(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS opgate_schema (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg)?;
    let current: i64 = client
        .query_one("SELECT COALESCE(max(version), 0) FROM opgate_schema", &[])
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            found: current,
            known: LATEST,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(sql).await.map_err(pg)?;
        tx.execute(
            "INSERT INTO opgate_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(())
}
