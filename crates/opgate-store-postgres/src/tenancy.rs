//! [`TenancyStore`] on PostgreSQL: workspaces, environments and service accounts.

use opgate_store::{
    Creation, Environment, Guarded, Listing, Removal, ServiceAccount, ServiceAccountPatch,
    StoreError, TenancyStore, Within, Workspace, WorkspacePatch,
};
use tokio_postgres::Row;

use crate::webhooks::structure_event;
use crate::{pg, PgStore, Tx};

pub(crate) const WORKSPACE_COLUMNS: &str =
    "seq, id, org_id, name, description, is_default, created_at, updated_at";

pub(crate) fn workspace_from_row(row: &Row) -> Result<Workspace, StoreError> {
    Ok(Workspace {
        seq: row.try_get(0).map_err(pg)?,
        id: row.try_get(1).map_err(pg)?,
        org_id: row.try_get(2).map_err(pg)?,
        name: row.try_get(3).map_err(pg)?,
        description: row.try_get(4).map_err(pg)?,
        is_default: row.try_get(5).map_err(pg)?,
        created_at: row.try_get(6).map_err(pg)?,
        updated_at: row.try_get(7).map_err(pg)?,
    })
}

/// The organization's default workspace, made in the caller's transaction if it has none yet. Two first
/// calls at once make one: the second insert yields to the first on the one-default index, then reads it.
pub(crate) async fn ensure_default(
    tx: &mut Tx,
    org: &str,
    now: i64,
) -> Result<Workspace, StoreError> {
    let select =
        format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE org_id = $1 AND is_default");
    if let Some(row) = tx.query_opt(&select, &[&org]).await? {
        return workspace_from_row(&row);
    }
    let id = opgate_store::new_id("ws");
    tx.execute(
        "INSERT INTO workspaces (id, org_id, name, description, is_default, created_at, updated_at)
         VALUES ($1, $2, 'Default', NULL, TRUE, $3, $3)
         ON CONFLICT (org_id) WHERE is_default DO NOTHING",
        &[&id, &org, &now],
    )
    .await?;
    let row = tx.query_one(&select, &[&org]).await?;
    workspace_from_row(&row)
}

/// Checks, inside the write, that workspace `ws` of `org` still exists, and the environment and (enabled)
/// service account are still in it: the caller checked before, but a delete or disable may have committed
/// since. The rows read are share-locked until the write commits, so none can be deleted or disabled under it.
pub(crate) async fn check_placement(
    tx: &mut Tx,
    org: &str,
    ws: &str,
    environment: Option<&str>,
    account: Option<&str>,
) -> Result<(), StoreError> {
    let found = tx
        .query_opt(
            "SELECT 1 FROM workspaces WHERE id = $1 AND org_id = $2 FOR SHARE",
            &[&ws, &org],
        )
        .await?;
    if found.is_none() {
        return Err(StoreError::Gone(format!(
            "the workspace `{ws}` was deleted meanwhile"
        )));
    }
    if let Some(env) = environment {
        let found = tx
            .query_opt(
                "SELECT 1 FROM environments WHERE id = $1 AND org_id = $2 AND workspace_id = $3 FOR SHARE",
                &[&env, &org, &ws],
            )
            .await?;
        if found.is_none() {
            return Err(StoreError::Gone(format!(
                "the environment `{env}` was deleted meanwhile"
            )));
        }
    }
    if let Some(sa) = account {
        let found = tx
            .query_opt(
                "SELECT 1 FROM service_accounts
                 WHERE id = $1 AND org_id = $2 AND workspace_id = $3 AND disabled_at IS NULL FOR SHARE",
                &[&sa, &org, &ws],
            )
            .await?;
        if found.is_none() {
            return Err(StoreError::Gone(format!(
                "the service account `{sa}` was deleted or disabled meanwhile"
            )));
        }
    }
    Ok(())
}

const ENVIRONMENT_COLUMNS: &str = "seq, id, org_id, workspace_id, name, created_at";
const ACCOUNT_COLUMNS: &str = "seq, id, org_id, workspace_id, name, description, disabled_at, \
     created_by, created_at, updated_at";

/// Keys that still authenticate at `$2`, in SQL.
const USABLE_KEY: &str = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
     AND (grace_expires_at IS NULL OR grace_expires_at > $2)";

fn environment_from_row(row: &Row) -> Result<Environment, StoreError> {
    Ok(Environment {
        seq: row.try_get(0).map_err(pg)?,
        id: row.try_get(1).map_err(pg)?,
        org_id: row.try_get(2).map_err(pg)?,
        workspace_id: row.try_get(3).map_err(pg)?,
        name: row.try_get(4).map_err(pg)?,
        created_at: row.try_get(5).map_err(pg)?,
    })
}

fn account_from_row(row: &Row) -> Result<ServiceAccount, StoreError> {
    Ok(ServiceAccount {
        seq: row.try_get(0).map_err(pg)?,
        id: row.try_get(1).map_err(pg)?,
        org_id: row.try_get(2).map_err(pg)?,
        workspace_id: row.try_get(3).map_err(pg)?,
        name: row.try_get(4).map_err(pg)?,
        description: row.try_get(5).map_err(pg)?,
        disabled_at: row.try_get(6).map_err(pg)?,
        created_by: row.try_get(7).map_err(pg)?,
        created_at: row.try_get(8).map_err(pg)?,
        updated_at: row.try_get(9).map_err(pg)?,
    })
}

/// A table of the organization's structure: how to read its rows and which column names their workspace.
struct Table<T> {
    name: &'static str,
    columns: &'static str,
    /// The workspace column (`id` for the workspaces themselves).
    ws_column: &'static str,
    from_row: fn(&Row) -> Result<T, StoreError>,
}

static WORKSPACES: Table<Workspace> = Table {
    name: "workspaces",
    columns: WORKSPACE_COLUMNS,
    ws_column: "id",
    from_row: workspace_from_row,
};
static ENVIRONMENTS: Table<Environment> = Table {
    name: "environments",
    columns: ENVIRONMENT_COLUMNS,
    ws_column: "workspace_id",
    from_row: environment_from_row,
};
static ACCOUNTS: Table<ServiceAccount> = Table {
    name: "service_accounts",
    columns: ACCOUNT_COLUMNS,
    ws_column: "workspace_id",
    from_row: account_from_row,
};

/// An owned [`Within`], to move into a store closure.
#[derive(Clone)]
struct View {
    org: String,
    ws: Option<String>,
}

impl From<Within<'_>> for View {
    fn from(w: Within<'_>) -> Self {
        View {
            org: w.org_id.to_owned(),
            ws: w.workspace_id.map(str::to_owned),
        }
    }
}

impl<T> Table<T> {
    /// The row `id` if `view` sees it; with `lock`, locked until the write ends (a key placed in it, or a
    /// change of it, then waits for this write and sees its outcome).
    async fn find(
        &self,
        tx: &Tx,
        view: &View,
        id: &str,
        lock: bool,
    ) -> Result<Option<T>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE id = $1 AND org_id = $2 AND ($3::TEXT IS NULL OR {} = $3){}",
            self.columns,
            self.name,
            self.ws_column,
            if lock { " FOR UPDATE" } else { "" }
        );
        tx.query_opt(&sql, &[&id, &view.org, &view.ws])
            .await?
            .map(|row| (self.from_row)(&row))
            .transpose()
    }

    /// One page of the rows `view` sees, oldest first: after `after`, before `before`, at most `limit`.
    async fn page(
        &self,
        tx: &Tx,
        view: &View,
        (after, before, limit): (i64, i64, i64),
    ) -> Result<Vec<T>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE org_id = $1 AND ($2::TEXT IS NULL OR {} = $2)
               AND seq > $3 AND seq < $4 ORDER BY seq LIMIT $5",
            self.columns, self.name, self.ws_column
        );
        tx.query(&sql, &[&view.org, &view.ws, &after, &before, &limit])
            .await?
            .iter()
            .map(self.from_row)
            .collect()
    }
}

impl PgStore {
    /// Reads row `id` of `table` if `within` sees it.
    async fn find<T: Send + 'static>(
        &self,
        table: &'static Table<T>,
        within: Within<'_>,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let (view, id) = (View::from(within), id.to_owned());
        self.read(move |tx| Box::pin(async move { table.find(tx, &view, &id, false).await }))
            .await
    }

    /// Reads one page of `table`.
    async fn list<T: Send + 'static>(
        &self,
        table: &'static Table<T>,
        page: Listing<'_>,
    ) -> Result<Vec<T>, StoreError> {
        let view = View::from(page.within);
        let bounds = (
            page.after_seq,
            page.before_seq.unwrap_or(i64::MAX),
            i64::try_from(page.limit).unwrap_or(i64::MAX),
        );
        self.read(move |tx| Box::pin(async move { table.page(tx, &view, bounds).await }))
            .await
    }
}

/// The workspace an object goes to: the default one for an empty id (made if needed), else `workspace`,
/// checked to still exist (and share-locked until the write ends).
async fn in_workspace(
    tx: &mut Tx,
    org: &str,
    workspace: &str,
    now: i64,
) -> Result<String, StoreError> {
    if workspace.is_empty() {
        Ok(ensure_default(tx, org, now).await?.id)
    } else {
        check_placement(tx, org, workspace, None, None).await?;
        Ok(workspace.to_owned())
    }
}

/// A `count(*)` query's answer.
async fn count(
    tx: &Tx,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<i64, StoreError> {
    tx.query_one(sql, params).await?.try_get(0).map_err(pg)
}

/// The first permission of an unrevoked key of service account `id` that `caller` does not cover.
async fn beyond(tx: &Tx, id: &str, caller: &[String]) -> Result<Option<String>, StoreError> {
    let rows = tx
        .query(
            "SELECT permissions FROM api_keys WHERE service_account_id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    for row in rows {
        let list: String = row.try_get(0).map_err(pg)?;
        let permissions: Vec<String> = serde_json::from_str(&list)
            .map_err(|e| StoreError::Corrupt(format!("permissions of a key: {e}")))?;
        if let Some(p) = permissions
            .into_iter()
            .find(|p| !opgate_core::scope::covers(caller, p))
        {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Drops every key of service account `id` from the verification caches (this instance's and, through the
/// change log, every other one's on the same database).
async fn forget_account_keys(tx: &mut Tx, id: &str, now: i64) -> Result<(), StoreError> {
    let rows = tx
        .query(
            "SELECT key_hash FROM api_keys WHERE service_account_id = $1 ORDER BY seq",
            &[&id],
        )
        .await?;
    for row in rows {
        let hash: Vec<u8> = row.try_get(0).map_err(pg)?;
        tx.key_changed(&hash, now).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl TenancyStore for PgStore {
    async fn default_workspace(&self, org_id: &str, now: i64) -> Result<Workspace, StoreError> {
        let org = org_id.to_owned();
        let found = self
            .read(move |tx| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE org_id = $1 AND is_default"
                    );
                    tx.query_opt(&sql, &[&org])
                        .await?
                        .map(|row| workspace_from_row(&row))
                        .transpose()
                })
            })
            .await?;
        match found {
            Some(found) => Ok(found),
            None => {
                let org = org_id.to_owned();
                self.write(move |tx| {
                    Box::pin(async move {
                        tx.lock_org(&org).await?;
                        ensure_default(tx, &org, now).await
                    })
                })
                .await
            }
        }
    }

    async fn insert_workspace(&self, ws: Workspace) -> Result<Workspace, StoreError> {
        let events = self.workspace_payload();
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&ws.org_id).await?;
                // The default workspace first, so that it is the oldest of its organization.
                ensure_default(tx, &ws.org_id, ws.created_at).await?;
                let rows = tx
                    .modify(
                        "INSERT INTO workspaces (id, org_id, name, description, is_default, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, FALSE, $5, $5) RETURNING seq",
                        &[&ws.id, &ws.org_id, &ws.name, &ws.description, &ws.created_at],
                    )
                    .await?;
                let created = Workspace {
                    seq: rows[0].try_get(0).map_err(pg)?,
                    is_default: false,
                    updated_at: ws.created_at,
                    ..ws
                };
                structure_event(
                    tx,
                    &events,
                    "workspace.created",
                    &created.org_id,
                    &created,
                    created.created_at,
                )
                .await?;
                Ok(created)
            })
        })
        .await
    }

    async fn get_workspace(
        &self,
        within: Within<'_>,
        id: &str,
    ) -> Result<Option<Workspace>, StoreError> {
        self.find(&WORKSPACES, within, id).await
    }

    async fn list_workspaces(&self, page: Listing<'_>) -> Result<Vec<Workspace>, StoreError> {
        self.list(&WORKSPACES, page).await
    }

    async fn update_workspace(
        &self,
        within: Within<'_>,
        id: &str,
        patch: WorkspacePatch,
        now: i64,
    ) -> Result<Option<Workspace>, StoreError> {
        let (view, id) = (View::from(within), id.to_owned());
        let events = self.workspace_payload();
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&view.org).await?;
                let Some(found) = WORKSPACES.find(tx, &view, &id, true).await? else {
                    return Ok(None);
                };
                let set_description = patch.description.is_some();
                let description = patch.description.flatten();
                tx.execute(
                    "UPDATE workspaces SET name = coalesce($1, name),
                        description = CASE WHEN $2 THEN $3 ELSE description END,
                        updated_at = $4
                     WHERE seq = $5",
                    &[
                        &patch.name,
                        &set_description,
                        &description,
                        &now,
                        &found.seq,
                    ],
                )
                .await?;
                let updated = WORKSPACES.find(tx, &view, &id, false).await?;
                if let Some(ws) = &updated {
                    structure_event(tx, &events, "workspace.updated", &ws.org_id, ws, now).await?;
                }
                Ok(updated)
            })
        })
        .await
    }

    async fn delete_workspace(
        &self,
        within: Within<'_>,
        id: &str,
        now: i64,
    ) -> Result<Removal<Workspace>, StoreError> {
        let (view, id) = (View::from(within), id.to_owned());
        let events = self.workspace_payload();
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&view.org).await?;
                let Some(found) = WORKSPACES.find(tx, &view, &id, true).await? else {
                    return Ok(Removal::NotFound);
                };
                if found.is_default {
                    return Ok(Removal::InUse(
                        "the default workspace cannot be deleted".into(),
                    ));
                }
                let keys = count(
                    tx,
                    &format!("SELECT count(*) FROM api_keys WHERE workspace_id = $1 AND {USABLE_KEY}"),
                    &[&id, &now],
                )
                .await?;
                if keys > 0 {
                    return Ok(Removal::InUse(
                        "the workspace still has active API keys (of either mode); revoke them first"
                            .into(),
                    ));
                }
                let accounts = count(
                    tx,
                    "SELECT count(*) FROM service_accounts WHERE workspace_id = $1",
                    &[&id],
                )
                .await?;
                if accounts > 0 {
                    return Ok(Removal::InUse(
                        "the workspace still has service accounts; delete them first".into(),
                    ));
                }
                tx.execute("DELETE FROM environments WHERE workspace_id = $1", &[&id])
                    .await?;
                tx.execute("DELETE FROM workspaces WHERE seq = $1", &[&found.seq])
                    .await?;
                structure_event(tx, &events, "workspace.deleted", &found.org_id, &found, now)
                    .await?;
                Ok(Removal::Removed(found))
            })
        })
        .await
    }

    async fn insert_environment(
        &self,
        env: Environment,
    ) -> Result<Creation<Environment>, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&env.org_id).await?;
                let workspace_id =
                    in_workspace(tx, &env.org_id, &env.workspace_id, env.created_at).await?;
                let env = Environment {
                    workspace_id,
                    ..env
                };
                let rows = tx
                    .modify(
                        "INSERT INTO environments (id, org_id, workspace_id, name, created_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (workspace_id, name) DO NOTHING
                         RETURNING seq",
                        &[
                            &env.id,
                            &env.org_id,
                            &env.workspace_id,
                            &env.name,
                            &env.created_at,
                        ],
                    )
                    .await?;
                let Some(row) = rows.first() else {
                    return Ok(Creation::NameTaken);
                };
                Ok(Creation::Created(Environment {
                    seq: row.try_get(0).map_err(pg)?,
                    ..env
                }))
            })
        })
        .await
    }

    async fn get_environment(
        &self,
        within: Within<'_>,
        id: &str,
    ) -> Result<Option<Environment>, StoreError> {
        self.find(&ENVIRONMENTS, within, id).await
    }

    async fn list_environments(&self, page: Listing<'_>) -> Result<Vec<Environment>, StoreError> {
        self.list(&ENVIRONMENTS, page).await
    }

    async fn delete_environment(
        &self,
        within: Within<'_>,
        id: &str,
        now: i64,
    ) -> Result<Removal<Environment>, StoreError> {
        let (view, id) = (View::from(within), id.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&view.org).await?;
                let Some(found) = ENVIRONMENTS.find(tx, &view, &id, true).await? else {
                    return Ok(Removal::NotFound);
                };
                let keys = count(
                    tx,
                    &format!("SELECT count(*) FROM api_keys WHERE environment_id = $1 AND {USABLE_KEY}"),
                    &[&id, &now],
                )
                .await?;
                if keys > 0 {
                    return Ok(Removal::InUse(
                        "the environment still has active API keys (of either mode) bound to it; revoke them first"
                            .into(),
                    ));
                }
                tx.execute("DELETE FROM environments WHERE seq = $1", &[&found.seq])
                    .await?;
                Ok(Removal::Removed(found))
            })
        })
        .await
    }

    async fn insert_service_account(
        &self,
        sa: ServiceAccount,
    ) -> Result<ServiceAccount, StoreError> {
        let events = self.account_payload();
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&sa.org_id).await?;
                let workspace_id =
                    in_workspace(tx, &sa.org_id, &sa.workspace_id, sa.created_at).await?;
                let sa = ServiceAccount { workspace_id, ..sa };
                let rows = tx
                    .modify(
                        "INSERT INTO service_accounts (id, org_id, workspace_id, name, description, disabled_at,
                                                       created_by, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $7) RETURNING seq",
                        &[
                            &sa.id,
                            &sa.org_id,
                            &sa.workspace_id,
                            &sa.name,
                            &sa.description,
                            &sa.created_by,
                            &sa.created_at,
                        ],
                    )
                    .await?;
                let created = ServiceAccount {
                    seq: rows[0].try_get(0).map_err(pg)?,
                    disabled_at: None,
                    updated_at: sa.created_at,
                    ..sa
                };
                structure_event(
                    tx,
                    &events,
                    "service_account.created",
                    &created.org_id,
                    &created,
                    created.created_at,
                )
                .await?;
                Ok(created)
            })
        })
        .await
    }

    async fn get_service_account(
        &self,
        within: Within<'_>,
        id: &str,
    ) -> Result<Option<ServiceAccount>, StoreError> {
        self.find(&ACCOUNTS, within, id).await
    }

    async fn list_service_accounts(
        &self,
        page: Listing<'_>,
    ) -> Result<Vec<ServiceAccount>, StoreError> {
        self.list(&ACCOUNTS, page).await
    }

    async fn update_service_account(
        &self,
        within: Within<'_>,
        id: &str,
        patch: ServiceAccountPatch,
        now: i64,
        caller: &[String],
    ) -> Result<Guarded<ServiceAccount>, StoreError> {
        let (view, id, caller) = (View::from(within), id.to_owned(), caller.to_vec());
        let events = self.account_payload();
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&view.org).await?;
                let Some(found) = ACCOUNTS.find(tx, &view, &id, true).await? else {
                    return Ok(Guarded::NotFound);
                };
                if patch.disabled.is_some() {
                    if let Some(p) = beyond(tx, &id, &caller).await? {
                        return Ok(Guarded::Beyond(p));
                    }
                }
                let disabled_at = match patch.disabled {
                    None => found.disabled_at,
                    Some(true) => found.disabled_at.or(Some(now)),
                    Some(false) => None,
                };
                let set_description = patch.description.is_some();
                let description = patch.description.flatten();
                tx.execute(
                    "UPDATE service_accounts SET name = coalesce($1, name),
                        description = CASE WHEN $2 THEN $3 ELSE description END,
                        disabled_at = $4, updated_at = $5
                     WHERE seq = $6",
                    &[
                        &patch.name,
                        &set_description,
                        &description,
                        &disabled_at,
                        &now,
                        &found.seq,
                    ],
                )
                .await?;
                if disabled_at != found.disabled_at {
                    forget_account_keys(tx, &id, now).await?;
                }
                let updated = ACCOUNTS.find(tx, &view, &id, false).await?;
                if let Some(account) = &updated {
                    let what = match (found.disabled_at, disabled_at) {
                        (None, Some(_)) => "service_account.disabled",
                        (Some(_), None) => "service_account.enabled",
                        _ => "service_account.updated",
                    };
                    structure_event(tx, &events, what, &account.org_id, account, now).await?;
                }
                Ok(updated.map_or(Guarded::NotFound, Guarded::Done))
            })
        })
        .await
    }

    async fn delete_service_account(
        &self,
        within: Within<'_>,
        id: &str,
        now: i64,
        caller: &[String],
        mode: opgate_core::Mode,
    ) -> Result<Guarded<(ServiceAccount, u64)>, StoreError> {
        let (view, id, caller) = (View::from(within), id.to_owned(), caller.to_vec());
        let events = self.account_payload();
        self.write(move |tx| {
            Box::pin(async move {
                tx.lock_org(&view.org).await?;
                let Some(found) = ACCOUNTS.find(tx, &view, &id, true).await? else {
                    return Ok(Guarded::NotFound);
                };
                if let Some(p) = beyond(tx, &id, &caller).await? {
                    return Ok(Guarded::Beyond(p));
                }
                let revoked = count(
                    tx,
                    "SELECT count(*) FROM api_keys
                     WHERE service_account_id = $1 AND mode = $2 AND revoked_at IS NULL",
                    &[&id, &mode.as_str()],
                )
                .await?;
                // Rotations under way of its keys end with them: their secrets are never sent.
                let rotating: Vec<String> = tx
                    .query(
                        "SELECT id FROM api_keys WHERE service_account_id = $1 AND rotating_to_key_id IS NOT NULL",
                        &[&id],
                    )
                    .await?
                    .iter()
                    .map(|r| r.try_get(0).map_err(crate::pg))
                    .collect::<Result<_, _>>()?;
                for key in rotating {
                    if let Some(record) = crate::keys::select_one(tx, "k.id = $1", &[&key]).await? {
                        crate::rotation::cancel_rotation(tx, &record, now).await?;
                    }
                }
                tx.execute(
                    "UPDATE api_keys SET revoked_at = $2 WHERE service_account_id = $1 AND revoked_at IS NULL",
                    &[&id, &now],
                )
                .await?;
                forget_account_keys(tx, &id, now).await?;
                tx.execute("DELETE FROM service_accounts WHERE seq = $1", &[&found.seq])
                    .await?;
                structure_event(
                    tx,
                    &events,
                    "service_account.deleted",
                    &found.org_id,
                    &found,
                    now,
                )
                .await?;
                Ok(Guarded::Done((found, revoked.max(0) as u64)))
            })
        })
        .await
    }
}

#[async_trait::async_trait]
impl opgate_core::Workspaces for PgStore {
    async fn exists(&self, org_id: &str, workspace_id: &str) -> Result<bool, opgate_core::Error> {
        let within = Within {
            org_id,
            workspace_id: None,
        };
        Ok(self.get_workspace(within, workspace_id).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opgate_core::{KeyType, Mode};
    use opgate_store::{KeyRecord, NewKey, WebhookStore};

    use super::*;

    async fn store() -> Option<PgStore> {
        let url = crate::fresh_test_database().await?;
        Some(PgStore::connect(&url).await.unwrap())
    }

    /// A workspace key (in `ws`, else the default workspace).
    fn key(i: usize, org: &str, ws: Option<&str>, mode: Mode, sa: Option<&str>) -> NewKey {
        with_type(i, org, ws, mode, sa, KeyType::Workspace)
    }

    fn with_type(
        i: usize,
        org: &str,
        ws: Option<&str>,
        mode: Mode,
        sa: Option<&str>,
        key_type: KeyType,
    ) -> NewKey {
        NewKey {
            id: format!("key_{i:04}"),
            org_id: org.into(),
            name: format!("k{i}"),
            description: None,
            key_prefix: "opg_abcdefgh".into(),
            key_hash: format!("hash{i}").into_bytes(),
            permissions: vec!["api_keys:write".into()],
            rate_limit: None,
            allowed_ips: vec![],
            created_by: "test".into(),
            created_at: 100,
            expires_at: None,
            workspace_id: ws.map(Into::into),
            environment_id: None,
            mode,
            key_type,
            service_account_id: sa.map(Into::into),
            rotation_interval_days: None,
            rotation_webhook_url: None,
            rotation_key_sealed: None,
        }
    }

    fn ws(id: &str, org: &str) -> Workspace {
        Workspace {
            seq: 0,
            id: id.into(),
            org_id: org.into(),
            name: id.into(),
            description: None,
            is_default: false,
            created_at: 100,
            updated_at: 100,
        }
    }

    fn account(id: &str, org: &str, ws: &str) -> ServiceAccount {
        ServiceAccount {
            seq: 0,
            id: id.into(),
            org_id: org.into(),
            workspace_id: ws.into(),
            name: "ci".into(),
            description: None,
            disabled_at: None,
            created_by: "test".into(),
            created_at: 100,
            updated_at: 100,
        }
    }

    /// Inserts a key as the key store does (the key store itself is not this module's).
    async fn insert_key(store: &PgStore, key: NewKey) -> Result<KeyRecord, StoreError> {
        store
            .write(move |tx| {
                Box::pin(async move {
                    crate::keys::insert(tx, &key).await?;
                    Ok(crate::keys::select_one(tx, "k.id = $1", &[&key.id])
                        .await?
                        .expect("inserted"))
                })
            })
            .await
    }

    async fn key_by_hash(store: &PgStore, hash: &[u8]) -> KeyRecord {
        let hash = hash.to_vec();
        store
            .read(move |tx| {
                Box::pin(
                    async move { crate::keys::select_one(tx, "k.key_hash = $1", &[&hash]).await },
                )
            })
            .await
            .unwrap()
            .unwrap()
    }

    async fn revoke(store: &PgStore, id: &str, now: i64) {
        let id = id.to_owned();
        store
            .write(move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1",
                        &[&id, &now],
                    )
                    .await
                })
            })
            .await
            .unwrap();
    }

    const ALL: Within<'static> = Within {
        org_id: "o",
        workspace_id: None,
    };

    #[tokio::test]
    async fn one_default_workspace_per_org_made_on_first_need_and_never_deleted() {
        let Some(store) = store().await else { return };
        let (a, b) = tokio::join!(
            store.default_workspace("o", 1),
            store.default_workspace("o", 2)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.id, b.id, "two first calls make one default workspace");
        assert!(a.is_default);
        let other = store.default_workspace("p", 3).await.unwrap();
        assert_ne!(other.id, a.id);
        // A workspace key without a workspace lands in the default one.
        let k = insert_key(&store, key(1, "o", None, Mode::Live, None))
            .await
            .unwrap();
        assert_eq!(k.workspace_id.as_deref(), Some(a.id.as_str()));
        assert_eq!(
            store.delete_workspace(ALL, &a.id, 100).await.unwrap(),
            Removal::InUse("the default workspace cannot be deleted".into())
        );
        let foreign = Within {
            org_id: "p",
            workspace_id: None,
        };
        assert_eq!(store.get_workspace(foreign, &a.id).await.unwrap(), None);
        // An organization's first workspace is made after its default one.
        let made = store.insert_workspace(ws("ws_q", "q")).await.unwrap();
        let listed = store
            .list_workspaces(Listing {
                within: Within {
                    org_id: "q",
                    workspace_id: None,
                },
                after_seq: 0,
                before_seq: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[0].is_default);
        assert_eq!(listed[1], made);
    }

    #[tokio::test]
    async fn workspaces_with_usable_keys_or_accounts_are_kept_and_deleted_with_their_environments()
    {
        let Some(store) = store().await else { return };
        store.insert_workspace(ws("ws_a", "o")).await.unwrap();
        store.insert_workspace(ws("ws_b", "o")).await.unwrap();
        insert_key(&store, key(1, "o", Some("ws_a"), Mode::Live, None))
            .await
            .unwrap();
        insert_key(&store, key(2, "o", Some("ws_a"), Mode::Test, None))
            .await
            .unwrap();
        insert_key(
            &store,
            with_type(4, "o", None, Mode::Live, None, KeyType::Admin),
        )
        .await
        .unwrap();
        assert!(matches!(
            store.delete_workspace(ALL, "ws_a", 100).await.unwrap(),
            Removal::InUse(_)
        ));
        revoke(&store, "key_0001", 100).await;
        assert!(
            matches!(
                store.delete_workspace(ALL, "ws_a", 100).await.unwrap(),
                Removal::InUse(_)
            ),
            "a test key counts too"
        );
        revoke(&store, "key_0002", 100).await;

        // Environments: names unique per workspace, an empty workspace id is the default one.
        let env = |id: &str, ws: &str, name: &str| Environment {
            seq: 0,
            id: id.into(),
            org_id: "o".into(),
            workspace_id: ws.into(),
            name: name.into(),
            created_at: 100,
        };
        let (x, y) = tokio::join!(
            store.insert_environment(env("env_1", "ws_a", "prod")),
            store.insert_environment(env("env_2", "ws_a", "prod"))
        );
        let outcomes = [x.unwrap(), y.unwrap()];
        assert_eq!(
            outcomes
                .iter()
                .filter(|c| matches!(c, Creation::NameTaken))
                .count(),
            1,
            "{outcomes:?}"
        );
        assert!(matches!(
            store
                .insert_environment(env("env_3", "ws_b", "prod"))
                .await
                .unwrap(),
            Creation::Created(_)
        ));
        let Creation::Created(default_env) = store
            .insert_environment(env("env_4", "", "prod"))
            .await
            .unwrap()
        else {
            panic!("name taken in the default workspace")
        };
        assert_eq!(
            default_env.workspace_id,
            store.default_workspace("o", 100).await.unwrap().id
        );
        let gone = store
            .insert_environment(env("env_5", "ws_gone", "prod"))
            .await;
        assert!(matches!(gone, Err(StoreError::Gone(_))), "{gone:?}");

        // An environment with a bound usable key is kept.
        let mut bound = key(5, "o", Some("ws_b"), Mode::Live, None);
        bound.environment_id = Some("env_3".into());
        insert_key(&store, bound).await.unwrap();
        assert!(matches!(
            store.delete_environment(ALL, "env_3", 100).await.unwrap(),
            Removal::InUse(_)
        ));
        let confined = Within {
            org_id: "o",
            workspace_id: Some("ws_a"),
        };
        assert_eq!(
            store.get_environment(confined, "env_3").await.unwrap(),
            None
        );
        assert_eq!(
            store
                .delete_environment(confined, "env_3", 100)
                .await
                .unwrap(),
            Removal::NotFound
        );
        revoke(&store, "key_0005", 100).await;
        assert!(matches!(
            store.delete_environment(ALL, "env_3", 100).await.unwrap(),
            Removal::Removed(e) if e.id == "env_3"
        ));

        // A workspace with a service account is kept; deleting one takes its environments along.
        store
            .insert_service_account(account("sa_1", "o", "ws_a"))
            .await
            .unwrap();
        assert_eq!(
            store.delete_workspace(ALL, "ws_a", 100).await.unwrap(),
            Removal::InUse("the workspace still has service accounts; delete them first".into())
        );
        let all = ["*".to_owned()];
        store
            .delete_service_account(ALL, "sa_1", 100, &all, Mode::Live)
            .await
            .unwrap();
        assert!(matches!(
            store.delete_workspace(ALL, "ws_a", 100).await.unwrap(),
            Removal::Removed(w) if w.id == "ws_a"
        ));
        let page = Listing {
            within: ALL,
            after_seq: 0,
            before_seq: None,
            limit: 10,
        };
        let left: Vec<String> = store
            .list_environments(page)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(left, ["env_4"]);
        assert_eq!(
            store.delete_workspace(ALL, "ws_a", 100).await.unwrap(),
            Removal::NotFound
        );

        // Updates: a name, a cleared description.
        let patch = WorkspacePatch {
            name: Some("renamed".into()),
            description: Some(None),
        };
        let updated = store
            .update_workspace(ALL, "ws_b", patch, 150)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                updated.name.as_str(),
                updated.description,
                updated.updated_at
            ),
            ("renamed", None, 150)
        );
        assert!(store
            .update_workspace(confined, "ws_b", WorkspacePatch::default(), 150)
            .await
            .unwrap()
            .is_none());
        assert!(opgate_core::Workspaces::exists(&store, "o", "ws_b")
            .await
            .unwrap());
        assert!(!opgate_core::Workspaces::exists(&store, "p", "ws_b")
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn disabling_or_deleting_a_service_account_stops_its_keys() {
        let Some(store) = store().await else { return };
        let changed = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&changed);
        store
            .hooks()
            .key_listeners
            .write()
            .unwrap()
            .push(Arc::new(move |h: &[u8]| {
                seen.lock().unwrap().push(h.to_vec())
            }));
        let sa = store
            .insert_service_account(account("sa_1", "o", ""))
            .await
            .unwrap();
        assert!(!sa.workspace_id.is_empty(), "the default workspace");
        insert_key(
            &store,
            key(1, "o", Some(&sa.workspace_id), Mode::Live, Some("sa_1")),
        )
        .await
        .unwrap();
        assert!(key_by_hash(&store, b"hash1").await.service_account_active);
        let patch = ServiceAccountPatch {
            disabled: Some(true),
            ..Default::default()
        };
        // A caller whose permissions do not cover the account's keys can neither disable nor delete it.
        let narrow = ["api_keys:read".to_owned()];
        assert_eq!(
            store
                .update_service_account(ALL, "sa_1", patch.clone(), 150, &narrow)
                .await
                .unwrap(),
            Guarded::Beyond("api_keys:write".into())
        );
        let all = ["*".to_owned()];
        let Guarded::Done(disabled) = store
            .update_service_account(ALL, "sa_1", patch, 200, &all)
            .await
            .unwrap()
        else {
            panic!("disable refused")
        };
        assert_eq!(disabled.disabled_at, Some(200));
        assert!(!key_by_hash(&store, b"hash1").await.service_account_active);
        assert_eq!(changed.lock().unwrap().as_slice(), [b"hash1".to_vec()]);
        // A key made for it after the caller's check, but after the disable committed, is refused in the write.
        let late = insert_key(
            &store,
            key(2, "o", Some(&sa.workspace_id), Mode::Live, Some("sa_1")),
        )
        .await;
        assert!(matches!(late, Err(StoreError::Gone(_))), "{late:?}");
        let nowhere = insert_key(&store, key(3, "o", Some("ws_gone"), Mode::Live, None)).await;
        assert!(matches!(nowhere, Err(StoreError::Gone(_))), "{nowhere:?}");
        // Renaming keeps it disabled and leaves the caches alone.
        let rename = ServiceAccountPatch {
            name: Some("deploy".into()),
            ..Default::default()
        };
        let Guarded::Done(renamed) = store
            .update_service_account(ALL, "sa_1", rename, 220, &narrow)
            .await
            .unwrap()
        else {
            panic!("rename refused")
        };
        assert_eq!(
            (renamed.name.as_str(), renamed.disabled_at),
            ("deploy", Some(200))
        );
        assert_eq!(changed.lock().unwrap().len(), 1);
        assert_eq!(
            store
                .delete_service_account(ALL, "sa_1", 250, &narrow, Mode::Live)
                .await
                .unwrap(),
            Guarded::Beyond("api_keys:write".into())
        );
        let Guarded::Done((gone, revoked)) = store
            .delete_service_account(ALL, "sa_1", 300, &all, Mode::Test)
            .await
            .unwrap()
        else {
            panic!("delete refused")
        };
        assert_eq!((gone.id.as_str(), revoked), ("sa_1", 0), "no test keys");
        let key = key_by_hash(&store, b"hash1").await;
        assert_eq!(
            (key.service_account_active, key.revoked_at),
            (false, Some(300))
        );
        assert_eq!(
            store
                .delete_service_account(ALL, "sa_1", 300, &all, Mode::Live)
                .await
                .unwrap(),
            Guarded::NotFound
        );
    }

    #[tokio::test]
    async fn structure_changes_write_their_events_in_the_same_transaction() {
        let Some(store) = store().await else { return };
        store.workspace_payloads(Arc::new(|w: &Workspace, _| serde_json::json!({"id": w.id})));
        store.account_payloads(Arc::new(|a: &ServiceAccount, _| {
            serde_json::json!({"id": a.id, "disabled": a.disabled_at.is_some()})
        }));
        let endpoint = opgate_store::Webhook {
            seq: 0,
            id: "wh_1".into(),
            org_id: "o".into(),
            mode: Mode::Live,
            url: "https://example.test/".into(),
            description: None,
            event_types: vec![],
            secret_sealed: vec![1],
            disabled_at: None,
            disabled_reason: None,
            created_by: "t".into(),
            created_at: 10,
            updated_at: 10,
        };
        store.insert_webhook(endpoint).await.unwrap();
        store.insert_workspace(ws("ws_a", "o")).await.unwrap();
        store
            .update_workspace(ALL, "ws_a", WorkspacePatch::default(), 110)
            .await
            .unwrap();
        store
            .insert_service_account(account("sa_1", "o", "ws_a"))
            .await
            .unwrap();
        let all = ["*".to_owned()];
        let disable = ServiceAccountPatch {
            disabled: Some(true),
            ..Default::default()
        };
        store
            .update_service_account(ALL, "sa_1", disable, 120, &all)
            .await
            .unwrap();
        let enable = ServiceAccountPatch {
            disabled: Some(false),
            ..Default::default()
        };
        store
            .update_service_account(ALL, "sa_1", enable, 130, &all)
            .await
            .unwrap();
        store
            .delete_service_account(ALL, "sa_1", 140, &all, Mode::Live)
            .await
            .unwrap();
        store.delete_workspace(ALL, "ws_a", 150).await.unwrap();
        // A refused change writes nothing.
        store
            .delete_workspace(ALL, "ws_missing", 160)
            .await
            .unwrap();
        let owner = opgate_store::Owner {
            org_id: "o".into(),
            mode: Mode::Live,
        };
        let page = opgate_store::DeliveryPage {
            owner,
            webhook_id: None,
            before_seq: None,
            state: None,
            limit: 100,
        };
        let mut types: Vec<String> = store
            .list_deliveries(page)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.event_type)
            .collect();
        types.reverse();
        assert_eq!(
            types,
            [
                "workspace.created",
                "workspace.updated",
                "service_account.created",
                "service_account.disabled",
                "service_account.enabled",
                "service_account.deleted",
                "workspace.deleted",
            ]
        );
    }
}
