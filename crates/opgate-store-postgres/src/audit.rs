//! [`AuditLog`] and [`Journal`] on PostgreSQL, and the expiry sweeps of the audit log and idempotent
//! responses.

use opgate_core::{AuditRecord, Error, Journal, Mode, Records, StoredResponse};
use opgate_store::{AuditEntry, AuditLog, AuditPage, Scope, StoreError};
use tokio_postgres::Row;

use crate::keys::named;
use crate::{pg, PgStore};

/// Rows deleted per transaction by the expiry sweeps: other writes wait at most one such batch.
const SWEEP_BATCH: i64 = 5_000;

const ENTRY_COLUMNS: &str =
    "seq, at, request_id, principal_kind, principal_id, org_id, operation, \
     target_id, client_ip, status, error_code, id, count, workspace_id, mode, via";

fn entry_from_row(row: &Row) -> Result<AuditEntry, StoreError> {
    let status: i64 = row.try_get(9).map_err(pg)?;
    let count: i64 = row.try_get(12).map_err(pg)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("audit {what} out of range"));
    Ok(AuditEntry {
        seq: row.try_get(0).map_err(pg)?,
        id: row.try_get(11).map_err(pg)?,
        record: AuditRecord {
            at: row.try_get(1).map_err(pg)?,
            request_id: row.try_get(2).map_err(pg)?,
            principal_kind: row.try_get(3).map_err(pg)?,
            principal_id: row.try_get(4).map_err(pg)?,
            org_id: row.try_get(5).map_err(pg)?,
            workspace_id: row.try_get(13).map_err(pg)?,
            mode: named(row, 14, Mode::parse)?,
            operation: row.try_get(6).map_err(pg)?,
            target_id: row.try_get(7).map_err(pg)?,
            client_ip: row.try_get(8).map_err(pg)?,
            status: u16::try_from(status).map_err(|_| corrupt("status"))?,
            error_code: row.try_get(10).map_err(pg)?,
            count: u32::try_from(count).map_err(|_| corrupt("count"))?,
            via: named(row, 15, opgate_core::Via::parse)?,
        },
    })
}

#[async_trait::async_trait]
impl AuditLog for PgStore {
    async fn list_audit(&self, page: AuditPage<'_>) -> Result<Vec<AuditEntry>, StoreError> {
        let scope = page.scope.clone();
        let operation = page.operation.map(str::to_owned);
        let (before, limit) = (page.before_seq.unwrap_or(i64::MAX), page.limit as i64);
        self.read(move |tx| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {ENTRY_COLUMNS} FROM audit_log
                     WHERE org_id = $1 AND mode = $2 AND ($3::TEXT IS NULL OR workspace_id = $3)
                       AND seq < $4 AND ($5::TEXT IS NULL OR operation = $5)
                     ORDER BY seq DESC LIMIT $6"
                );
                let rows = tx
                    .query(
                        &sql,
                        &[
                            &scope.org_id,
                            &scope.mode.as_str(),
                            &scope.workspace_id,
                            &before,
                            &operation,
                            &limit,
                        ],
                    )
                    .await?;
                rows.iter().map(entry_from_row).collect()
            })
        })
        .await
    }

    async fn audit_seq(&self, scope: &Scope, id: &str) -> Result<Option<i64>, StoreError> {
        let (scope, id) = (scope.clone(), id.to_owned());
        self.read(move |tx| {
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT seq FROM audit_log
                         WHERE id = $1 AND org_id = $2 AND mode = $3 AND ($4::TEXT IS NULL OR workspace_id = $4)",
                        &[&id, &scope.org_id, &scope.mode.as_str(), &scope.workspace_id],
                    )
                    .await?;
                row.map(|r| r.try_get(0).map_err(pg)).transpose()
            })
        })
        .await
    }
}

impl PgStore {
    /// Deletes idempotency records created before `cutoff` (unix seconds); returns how many.
    pub async fn expire_idempotency(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.sweep(
            "DELETE FROM idempotency WHERE (principal, key) IN
               (SELECT principal, key FROM idempotency WHERE created_at < $1 LIMIT $2)",
            cutoff,
        )
        .await
    }

    /// Deletes audit records older than `cutoff` (unix seconds), the retention setting; returns how many.
    pub async fn expire_audit(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.sweep(
            "DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_log WHERE at < $1 LIMIT $2)",
            cutoff,
        )
        .await
    }

    /// Runs a batched `DELETE` (parameters: cutoff, batch size) until nothing is left to delete.
    async fn sweep(&self, sql: &'static str, cutoff: i64) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self
                .write(move |tx| {
                    Box::pin(async move { tx.execute(sql, &[&cutoff, &SWEEP_BATCH]).await })
                })
                .await? as usize;
            total += n;
            if n < SWEEP_BATCH as usize {
                return Ok(total);
            }
        }
    }
}

#[async_trait::async_trait]
impl Journal for PgStore {
    async fn record(&self, records: Records) -> Result<(), Error> {
        self.write(move |tx| Box::pin(async move { crate::write_records(tx, &records).await }))
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
        self.read(move |tx| {
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT request_hash, status, body, created_at FROM idempotency
                         WHERE principal = $1 AND key = $2 AND created_at >= $3",
                        &[&owner, &key, &not_before],
                    )
                    .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let hash: Vec<u8> = row.try_get(0).map_err(pg)?;
                let status: i64 = row.try_get(1).map_err(pg)?;
                let request_hash = <[u8; 32]>::try_from(hash.as_slice())
                    .map_err(|_| StoreError::Corrupt("idempotency hash is not 32 bytes".into()))?;
                Ok(Some(StoredResponse {
                    request_hash,
                    status: u16::try_from(status).map_err(|_| {
                        StoreError::Corrupt("idempotency status out of range".into())
                    })?,
                    body: row.try_get(2).map_err(pg)?,
                    created_at: row.try_get(3).map_err(pg)?,
                }))
            })
        })
        .await
        .map_err(Error::from)
    }
}
