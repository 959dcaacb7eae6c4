//! Versioned schema migrations, applied in order on open; `PRAGMA user_version` records the last applied.

use rusqlite::Connection;

use crate::StoreError;

/// Each entry moves the schema from version `index` to `index + 1`. Never edit a released entry: append.
const MIGRATIONS: &[&str] = &[
    // 1: API keys.
    "CREATE TABLE api_keys (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT    NOT NULL UNIQUE,
        org_id       TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        description  TEXT,
        key_prefix   TEXT    NOT NULL,
        key_hash     BLOB    NOT NULL UNIQUE,
        permissions  TEXT    NOT NULL,
        rate_limit   INTEGER,
        allowed_ips  TEXT    NOT NULL,
        created_by   TEXT    NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        revoked_at   INTEGER
    );
    CREATE INDEX api_keys_by_org ON api_keys (org_id, seq);",
    // 2: key lifecycle: usage tracking and rotation.
    "ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
    ALTER TABLE api_keys ADD COLUMN last_used_ip TEXT;
    ALTER TABLE api_keys ADD COLUMN last_used_user_agent TEXT;
    ALTER TABLE api_keys ADD COLUMN replaced_by_key_id TEXT;
    ALTER TABLE api_keys ADD COLUMN grace_expires_at INTEGER;",
    // 3: the audit log and idempotent responses.
    "CREATE TABLE audit_log (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        at             INTEGER NOT NULL,
        request_id     TEXT    NOT NULL,
        principal_kind TEXT    NOT NULL,
        principal_id   TEXT    NOT NULL,
        org_id         TEXT    NOT NULL,
        operation      TEXT    NOT NULL,
        target_id      TEXT,
        client_ip      TEXT,
        status         INTEGER NOT NULL,
        error_code     TEXT
    );
    CREATE INDEX audit_log_by_org ON audit_log (org_id, seq);
    CREATE TABLE idempotency (
        principal    TEXT    NOT NULL,
        key          TEXT    NOT NULL,
        request_hash BLOB    NOT NULL,
        status       INTEGER NOT NULL,
        body         BLOB    NOT NULL,
        created_at   INTEGER NOT NULL,
        PRIMARY KEY (principal, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_by_age ON idempotency (created_at);",
    // 4: audit ids that tell tenants nothing of each other (random, time-ordered; old rows keep theirs),
    // folded refusals (`count`), retention by age, and the log of key changes other processes follow.
    "ALTER TABLE audit_log ADD COLUMN id TEXT;
    UPDATE audit_log SET id = 'aud_' || seq;
    CREATE UNIQUE INDEX audit_log_by_id ON audit_log (id);
    ALTER TABLE audit_log ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX audit_log_by_age ON audit_log (at);
    CREATE TABLE key_changes (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        key_hash BLOB    NOT NULL,
        at       INTEGER NOT NULL
    );",
    // 5: tenancy. Workspaces (one default per organization), environments in them, service accounts; keys
    // gain a workspace, an environment, a mode, a type and a service account. Keys from before are live admin
    // keys, so nothing changes for their holders.
    "CREATE TABLE workspaces (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT    NOT NULL UNIQUE,
        org_id       TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        description  TEXT,
        is_default   INTEGER NOT NULL DEFAULT 0,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL
    );
    CREATE INDEX workspaces_by_org ON workspaces (org_id, seq);
    CREATE UNIQUE INDEX workspaces_one_default ON workspaces (org_id) WHERE is_default = 1;
    CREATE TABLE environments (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT    NOT NULL UNIQUE,
        org_id       TEXT    NOT NULL,
        workspace_id TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        created_at   INTEGER NOT NULL,
        UNIQUE (workspace_id, name)
    );
    CREATE INDEX environments_by_org ON environments (org_id, seq);
    CREATE TABLE service_accounts (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT    NOT NULL UNIQUE,
        org_id       TEXT    NOT NULL,
        workspace_id TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        description  TEXT,
        disabled_at  INTEGER,
        created_by   TEXT    NOT NULL,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL
    );
    CREATE INDEX service_accounts_by_org ON service_accounts (org_id, seq);
    ALTER TABLE api_keys ADD COLUMN workspace_id TEXT;
    ALTER TABLE api_keys ADD COLUMN environment_id TEXT;
    ALTER TABLE api_keys ADD COLUMN mode TEXT NOT NULL DEFAULT 'live';
    ALTER TABLE api_keys ADD COLUMN key_type TEXT NOT NULL DEFAULT 'admin';
    ALTER TABLE api_keys ADD COLUMN service_account_id TEXT;
    CREATE INDEX api_keys_by_org_mode ON api_keys (org_id, mode, seq);
    CREATE INDEX api_keys_by_service_account ON api_keys (service_account_id) WHERE service_account_id IS NOT NULL;
    ALTER TABLE audit_log ADD COLUMN workspace_id TEXT;
    ALTER TABLE audit_log ADD COLUMN mode TEXT NOT NULL DEFAULT 'live';",
    // 6: webhooks. Endpoints (per organization and mode, secrets sealed), the outbox of events written with
    // the change that caused them, one delivery per event and endpoint, and every attempt.
    "CREATE TABLE webhooks (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        id              TEXT    NOT NULL UNIQUE,
        org_id          TEXT    NOT NULL,
        mode            TEXT    NOT NULL,
        url             TEXT    NOT NULL,
        description     TEXT,
        event_types     TEXT    NOT NULL,
        secret_sealed   BLOB    NOT NULL,
        disabled_at     INTEGER,
        disabled_reason TEXT,
        created_by      TEXT    NOT NULL,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    );
    CREATE INDEX webhooks_by_org ON webhooks (org_id, mode, seq);
    CREATE TABLE webhook_events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT    NOT NULL UNIQUE,
        org_id     TEXT    NOT NULL,
        mode       TEXT    NOT NULL,
        type       TEXT    NOT NULL,
        payload    TEXT    NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        id              TEXT    NOT NULL UNIQUE,
        webhook_id      TEXT    NOT NULL,
        event_seq       INTEGER NOT NULL,
        state           TEXT    NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_status     INTEGER,
        last_error      TEXT,
        last_latency_ms INTEGER,
        created_at      INTEGER NOT NULL,
        finished_at     INTEGER
    );
    CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (webhook_id, state, seq);
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
    CREATE TABLE webhook_attempts (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id TEXT    NOT NULL,
        at          INTEGER NOT NULL,
        status      INTEGER,
        latency_ms  INTEGER,
        error       TEXT
    );
    CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, seq);",
    // 7: scheduled rotation and expiry notices. A key may rotate itself every N days, delivering its new secret
    // to its rotation webhook (signed with a key derived from its own secret, stored sealed); a rotation under
    // way names the new key until delivery ends it. Rotation deliveries have a target URL instead of an
    // endpoint, and their body (which holds the new secret) sealed until they end.
    "ALTER TABLE api_keys ADD COLUMN rotation_interval_days INTEGER;
    ALTER TABLE api_keys ADD COLUMN rotation_webhook_url TEXT;
    ALTER TABLE api_keys ADD COLUMN next_rotation_at INTEGER;
    ALTER TABLE api_keys ADD COLUMN rotation_key_sealed BLOB;
    ALTER TABLE api_keys ADD COLUMN rotating_to_key_id TEXT;
    ALTER TABLE api_keys ADD COLUMN expiry_notices INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX api_keys_rotation_due ON api_keys (next_rotation_at) WHERE next_rotation_at IS NOT NULL;
    CREATE INDEX api_keys_expiring ON api_keys (expires_at) WHERE expires_at IS NOT NULL AND revoked_at IS NULL;
    ALTER TABLE webhook_deliveries ADD COLUMN target_url TEXT;
    ALTER TABLE webhook_deliveries ADD COLUMN signing_sealed BLOB;
    ALTER TABLE webhook_deliveries ADD COLUMN payload_sealed BLOB;
    ALTER TABLE webhook_deliveries ADD COLUMN rotation_of TEXT;",
    // 8: outbox retention. Ended deliveries are deleted by age, then the events nothing refers to.
    "CREATE INDEX webhook_deliveries_ended ON webhook_deliveries (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_seq);
    CREATE INDEX webhook_events_by_age ON webhook_events (created_at);",
    // 9: a delivery handed to an attempt is leased (not due again until the lease ends or the attempt is
    // recorded), which also tells how many attempts of an organization are under way.
    "ALTER TABLE webhook_deliveries ADD COLUMN leased_until INTEGER;",
    // 10: the door a call came through (`http`: the HTTP API; `mcp`: a tool call on the MCP endpoint).
    "ALTER TABLE audit_log ADD COLUMN via TEXT NOT NULL DEFAULT 'http';",
];

/// The schema version this build writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Applies every migration newer than the database's version, each in its own transaction.
pub(crate) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            found: current,
            known: LATEST,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}
