//! The audit log and idempotent responses on SQLite: the [`Journal`] writes a call's records through the writer
//! thread (with the call's change when there is one); `audit.list` reads page newest first.

use opgate_core::{AuditRecord, Error, Journal, Records, StoredResponse};
use rusqlite::{params, OptionalExtension, Row};

use crate::{Scope, SqliteStore, StoreError};

/// An audit record as stored, with its id and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Insertion order; the paging cursor inside the store.
    pub seq: i64,
    /// Public id: `aud_` and a lowercase ULID (`aud_<n>` for records written before ids were random).
    pub id: String,
    /// The record.
    pub record: AuditRecord,
}

/// Which audit entries a page holds: those a scope sees, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage<'a> {
    /// The organization and mode, and the workspace if the caller is confined to one (or named one).
    pub scope: &'a Scope,
    /// Only entries older than this sequence number.
    pub before_seq: Option<i64>,
    /// Only this operation.
    pub operation: Option<&'a str>,
    /// Page size.
    pub limit: usize,
}

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: row.get(0)?,
        id: row.get(11)?,
        record: AuditRecord {
            at: row.get(1)?,
            request_id: row.get(2)?,
            principal_kind: row.get(3)?,
            principal_id: row.get(4)?,
            org_id: row.get(5)?,
            workspace_id: row.get(13)?,
            mode: {
                let text: String = row.get(14)?;
                opgate_core::Mode::parse(&text).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        14,
                        rusqlite::types::Type::Text,
                        format!("unknown mode `{text}`").into(),
                    )
                })?
            },
            operation: row.get(6)?,
            target_id: row.get(7)?,
            client_ip: row.get(8)?,
            status: row.get(9)?,
            error_code: row.get(10)?,
            count: row.get(12)?,
            via: {
                let text: String = row.get(15)?;
                opgate_core::Via::parse(&text).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        15,
                        rusqlite::types::Type::Text,
                        format!("unknown via `{text}`").into(),
                    )
                })?
            },
        },
    })
}

/// Reading the audit log.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// One page of the audit log a scope sees, newest first.
    async fn list_audit(&self, page: AuditPage<'_>) -> Result<Vec<AuditEntry>, StoreError>;
    /// The position of record `id` if `scope` sees it (the `before` cursor).
    async fn audit_seq(&self, scope: &Scope, id: &str) -> Result<Option<i64>, StoreError>;
}

#[async_trait::async_trait]
impl AuditLog for SqliteStore {
    async fn list_audit(&self, page: AuditPage<'_>) -> Result<Vec<AuditEntry>, StoreError> {
        let scope = page.scope.clone();
        let operation = page.operation.map(str::to_owned);
        let (before, limit) = (page.before_seq.unwrap_or(i64::MAX), page.limit as i64);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, at, request_id, principal_kind, principal_id, org_id, operation, target_id,
                        client_ip, status, error_code, id, count, workspace_id, mode, via
                 FROM audit_log
                 WHERE org_id = ?1 AND mode = ?2 AND (?3 IS NULL OR workspace_id = ?3)
                   AND seq < ?4 AND (?5 IS NULL OR operation = ?5)
                 ORDER BY seq DESC LIMIT ?6",
            )?;
            let args = params![
                scope.org_id,
                scope.mode.as_str(),
                scope.workspace_id,
                before,
                operation,
                limit
            ];
            let rows = stmt.query_map(args, entry_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn audit_seq(&self, scope: &Scope, id: &str) -> Result<Option<i64>, StoreError> {
        let (scope, id) = (scope.clone(), id.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT seq FROM audit_log
                     WHERE id = ?1 AND org_id = ?2 AND mode = ?3 AND (?4 IS NULL OR workspace_id = ?4)",
                )?
                .query_row(
                    params![id, scope.org_id, scope.mode.as_str(), scope.workspace_id],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }
}

/// Rows deleted per write by the expiry sweeps: other writes wait at most one such batch.
pub(crate) const SWEEP_BATCH: i64 = 5_000;

impl SqliteStore {
    /// Deletes idempotency records created before `cutoff` (unix seconds); returns how many.
    pub async fn expire_idempotency(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.sweep(
            "DELETE FROM idempotency WHERE (principal, key) IN
               (SELECT principal, key FROM idempotency WHERE created_at < ?1 LIMIT ?2)",
            cutoff,
        )
        .await
    }

    /// Deletes audit records older than `cutoff` (unix seconds), the retention setting; returns how many.
    pub async fn expire_audit(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.sweep(
            "DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_log WHERE at < ?1 LIMIT ?2)",
            cutoff,
        )
        .await
    }

    /// Runs a batched `DELETE` (parameters: cutoff, batch size) until nothing is left to delete.
    async fn sweep(&self, sql: &'static str, cutoff: i64) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self
                .write(move |conn| {
                    Ok(conn
                        .prepare_cached(sql)?
                        .execute(params![cutoff, SWEEP_BATCH])?)
                })
                .await?;
            total += n;
            if n < SWEEP_BATCH as usize {
                return Ok(total);
            }
        }
    }
}

#[async_trait::async_trait]
impl Journal for SqliteStore {
    async fn record(&self, records: Records) -> Result<(), Error> {
        self.write(move |conn| crate::writer::write_records(conn, &records))
            .await
            .map_err(Error::from)
    }

    async fn stored_response(
        &self,
        owner: &str,
        key: &str,
        not_before: i64,
    ) -> Result<Option<StoredResponse>, Error> {
        let (owner, key) = (owner.to_owned(), key.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT request_hash, status, body, created_at FROM idempotency
                 WHERE principal = ?1 AND key = ?2 AND created_at >= ?3",
            )?;
            let row = stmt
                .query_row(params![owner, key, not_before], |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, u16>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })
                .optional()?;
            row.map(|(hash, status, body, created_at)| {
                let request_hash = <[u8; 32]>::try_from(hash.as_slice())
                    .map_err(|_| StoreError::Corrupt("idempotency hash is not 32 bytes".into()))?;
                Ok(StoredResponse {
                    request_hash,
                    status,
                    body,
                    created_at,
                })
            })
            .transpose()
        })
        .await
        .map_err(Error::from)
    }
}
