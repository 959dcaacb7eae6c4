//! The structure of an organization: workspaces (one default each), environments inside them, and service
//! accounts that own keys. This structure is shared by both modes; keys and audit records are what modes
//! partition.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::sqlite::log_change;
use crate::webhooks::structure_event;
use crate::{SqliteStore, StoreError};

/// A workspace of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Insertion order; the paging cursor inside the store.
    pub seq: i64,
    /// `ws_` and a lowercase ULID.
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Whether it is the organization's default workspace (made on first need, never deleted).
    pub is_default: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// An environment of a workspace (`production`, `staging`, …) that keys may be bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// Insertion order.
    pub seq: i64,
    /// `env_` and a lowercase ULID.
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// The workspace.
    pub workspace_id: String,
    /// Unique within the workspace.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A service account: keys that belong to it rather than to the person who created them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Insertion order.
    pub seq: i64,
    /// `sa_` and a lowercase ULID.
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// The workspace its keys live in.
    pub workspace_id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// When it was disabled (its keys fail from then on); `None` while enabled.
    pub disabled_at: Option<i64>,
    /// The principal that created it.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// Where a lookup or listing looks: an organization, and one workspace of it if the caller is confined to
/// (or named) one.
#[derive(Debug, Clone, Copy)]
pub struct Within<'a> {
    /// The organization.
    pub org_id: &'a str,
    /// One workspace, or all of the organization's.
    pub workspace_id: Option<&'a str>,
}

/// One page of a tenancy listing, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct Listing<'a> {
    /// What the caller sees.
    pub within: Within<'a>,
    /// Only objects inserted after this sequence number (0 for the start).
    pub after_seq: i64,
    /// Only objects inserted before this sequence number.
    pub before_seq: Option<i64>,
    /// Page size.
    pub limit: usize,
}

/// Changes to a workspace; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WorkspacePatch {
    /// New name.
    pub name: Option<String>,
    /// New description; `Some(None)` clears it.
    pub description: Option<Option<String>>,
}

/// Changes to a service account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ServiceAccountPatch {
    /// New name.
    pub name: Option<String>,
    /// New description; `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// Disable (its keys fail on the next request) or enable again.
    pub disabled: Option<bool>,
}

/// The outcome of a delete that other objects may block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal<T> {
    /// Deleted; the object as it was.
    Removed(T),
    /// The caller sees no such object.
    NotFound,
    /// Still in use; why.
    InUse(String),
}

/// The outcome of a change that must not reach beyond the caller's own permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded<T> {
    /// Done; the object after the change (or as it was, for a delete).
    Done(T),
    /// The caller sees no such object.
    NotFound,
    /// A key the change would stop or start holds this permission, which the caller could not grant.
    Beyond(String),
}

/// The outcome of creating an object whose name must be unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creation<T> {
    /// Created.
    Created(T),
    /// The name is taken.
    NameTaken,
}

/// Storage of workspaces, environments and service accounts.
#[async_trait::async_trait]
pub trait TenancyStore: Send + Sync + 'static {
    /// The organization's default workspace, made now if it has none yet (organizations from before
    /// workspaces existed get theirs on first need).
    async fn default_workspace(&self, org_id: &str, now: i64) -> Result<Workspace, StoreError>;
    /// Stores a new workspace.
    async fn insert_workspace(&self, workspace: Workspace) -> Result<Workspace, StoreError>;
    /// The workspace `id` if `within` sees it.
    async fn get_workspace(
        &self,
        within: Within<'_>,
        id: &str,
    ) -> Result<Option<Workspace>, StoreError>;
    /// One page of workspaces.
    async fn list_workspaces(&self, page: Listing<'_>) -> Result<Vec<Workspace>, StoreError>;
    /// Applies `patch`; `None` when `within` sees no such workspace.
    async fn update_workspace(
        &self,
        within: Within<'_>,
        id: &str,
        patch: WorkspacePatch,
        now: i64,
    ) -> Result<Option<Workspace>, StoreError>;
    /// Deletes a workspace and its environments, unless it is the default one or still has service
    /// accounts or usable keys (of either mode) at `now`.
    async fn delete_workspace(
        &self,
        within: Within<'_>,
        id: &str,
        now: i64,
    ) -> Result<Removal<Workspace>, StoreError>;
    /// Stores a new environment unless its workspace already has one of that name; an empty
    /// `workspace_id` means the organization's default workspace.
    async fn insert_environment(
        &self,
        environment: Environment,
    ) -> Result<Creation<Environment>, StoreError>;
    /// The environment `id` if `within` sees it.
    async fn get_environment(
        &self,
        within: Within<'_>,
        id: &str,
    ) -> Result<Option<Environment>, StoreError>;
    /// One page of environments.
    async fn list_environments(&self, page: Listing<'_>) -> Result<Vec<Environment>, StoreError>;
    /// Deletes an environment unless usable keys (of either mode) are still bound to it at `now`.
    async fn delete_environment(
        &self,
        within: Within<'_>,
        id: &str,
        now: i64,
    ) -> Result<Removal<Environment>, StoreError>;
    /// Stores a new service account; an empty `workspace_id` means the organization's default workspace.
    async fn insert_service_account(
        &self,
        account: ServiceAccount,
    ) -> Result<ServiceAccount, StoreError>;
    /// The service account `id` if `within` sees it.
    async fn get_service_account(
        &self,
        within: Within<'_>,
        id: &str,
    ) -> Result<Option<ServiceAccount>, StoreError>;
    /// One page of service accounts.
    async fn list_service_accounts(
        &self,
        page: Listing<'_>,
    ) -> Result<Vec<ServiceAccount>, StoreError>;
    /// Applies `patch`; disabling or enabling drops the account's keys from every verification cache in
    /// the same transaction, so the change holds from the next request on. Disabling or enabling is refused
    /// when a key of the account (either mode) holds a permission `caller` does not cover: a narrow key can
    /// neither lock out nor revive a stronger one.
    async fn update_service_account(
        &self,
        within: Within<'_>,
        id: &str,
        patch: ServiceAccountPatch,
        now: i64,
        caller: &[String],
    ) -> Result<Guarded<ServiceAccount>, StoreError>;
    /// Deletes a service account and revokes its keys (both modes) at `now`, in one transaction, unless one
    /// holds a permission `caller` does not cover; returns the account as it was and how many of its keys of
    /// `mode` were revoked (the caller's mode: the other mode's count is not the caller's to know).
    async fn delete_service_account(
        &self,
        within: Within<'_>,
        id: &str,
        now: i64,
        caller: &[String],
        mode: opgate_core::Mode,
    ) -> Result<Guarded<(ServiceAccount, u64)>, StoreError>;
}

const WORKSPACE_COLUMNS: &str =
    "seq, id, org_id, name, description, is_default, created_at, updated_at";
const ENVIRONMENT_COLUMNS: &str = "seq, id, org_id, workspace_id, name, created_at";
const ACCOUNT_COLUMNS: &str = "seq, id, org_id, workspace_id, name, description, disabled_at, \
     created_by, created_at, updated_at";

/// Rows `within` sees (parameters `:org`, `:ws`; the workspace column is `id` for workspaces).
fn within_sql(ws_column: &str) -> String {
    format!("org_id = :org AND (:ws IS NULL OR {ws_column} = :ws)")
}

/// Keys that still authenticate at `:now`, in SQL.
const USABLE_KEY: &str = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > :now) \
     AND (grace_expires_at IS NULL OR grace_expires_at > :now)";

fn workspace_from_row(row: &Row<'_>) -> rusqlite::Result<Workspace> {
    Ok(Workspace {
        seq: row.get(0)?,
        id: row.get(1)?,
        org_id: row.get(2)?,
        name: row.get(3)?,
        description: row.get(4)?,
        is_default: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn environment_from_row(row: &Row<'_>) -> rusqlite::Result<Environment> {
    Ok(Environment {
        seq: row.get(0)?,
        id: row.get(1)?,
        org_id: row.get(2)?,
        workspace_id: row.get(3)?,
        name: row.get(4)?,
        created_at: row.get(5)?,
    })
}

fn account_from_row(row: &Row<'_>) -> rusqlite::Result<ServiceAccount> {
    Ok(ServiceAccount {
        seq: row.get(0)?,
        id: row.get(1)?,
        org_id: row.get(2)?,
        workspace_id: row.get(3)?,
        name: row.get(4)?,
        description: row.get(5)?,
        disabled_at: row.get(6)?,
        created_by: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
    })
}

/// A table of the organization's structure: how to read its rows and which column names their workspace.
struct Table<T> {
    name: &'static str,
    columns: &'static str,
    /// The workspace column (`id` for the workspaces themselves).
    ws_column: &'static str,
    from_row: fn(&Row<'_>) -> rusqlite::Result<T>,
}

const WORKSPACES: Table<Workspace> = Table {
    name: "workspaces",
    columns: WORKSPACE_COLUMNS,
    ws_column: "id",
    from_row: workspace_from_row,
};
const ENVIRONMENTS: Table<Environment> = Table {
    name: "environments",
    columns: ENVIRONMENT_COLUMNS,
    ws_column: "workspace_id",
    from_row: environment_from_row,
};
const ACCOUNTS: Table<ServiceAccount> = Table {
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
    /// The row `id` if `view` sees it.
    fn find(&self, conn: &Connection, view: &View, id: &str) -> Result<Option<T>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE id = :id AND {}",
            self.columns,
            self.name,
            within_sql(self.ws_column)
        );
        Ok(conn
            .prepare_cached(&sql)?
            .query_row(
                rusqlite::named_params! {":id": id, ":org": view.org, ":ws": view.ws},
                self.from_row,
            )
            .optional()?)
    }

    /// One page of the rows `view` sees, oldest first: after `after`, before `before`, at most `limit`.
    fn page(
        &self,
        conn: &Connection,
        view: &View,
        (after, before, limit): (i64, i64, i64),
    ) -> Result<Vec<T>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {} AND seq > :after AND seq < :before ORDER BY seq LIMIT :limit",
            self.columns,
            self.name,
            within_sql(self.ws_column)
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            rusqlite::named_params! {
                ":org": view.org, ":ws": view.ws, ":after": after, ":before": before, ":limit": limit,
            },
            self.from_row,
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

impl SqliteStore {
    /// Reads row `id` of `table` if `within` sees it.
    async fn find<T: Send + 'static>(
        &self,
        table: &'static Table<T>,
        within: Within<'_>,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let (view, id) = (View::from(within), id.to_owned());
        self.read(move |conn| table.find(conn, &view, &id)).await
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
            page.limit as i64,
        );
        self.read(move |conn| table.page(conn, &view, bounds)).await
    }
}

/// `object` with an empty workspace id replaced by the default workspace's.
fn in_workspace<T>(
    conn: &Connection,
    mut object: T,
    fields: impl FnOnce(&mut T) -> (&String, &mut String, i64),
) -> Result<T, StoreError> {
    let (org, workspace, now) = fields(&mut object);
    if workspace.is_empty() {
        *workspace = ensure_default(conn, org, now)?.id;
    } else {
        check_placement(conn, org, workspace, None, None)?;
    }
    Ok(object)
}

fn count(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<i64, StoreError> {
    Ok(conn.prepare_cached(sql)?.query_row(args, |r| r.get(0))?)
}

/// The organization's default workspace, made in the caller's transaction if it has none yet (two first
/// calls make one: the writer runs one transaction at a time).
pub(crate) fn ensure_default(
    conn: &Connection,
    org: &str,
    now: i64,
) -> Result<Workspace, StoreError> {
    let sql =
        format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE org_id = ?1 AND is_default = 1");
    if let Some(found) = conn
        .prepare_cached(&sql)?
        .query_row([org], workspace_from_row)
        .optional()?
    {
        return Ok(found);
    }
    let id = crate::new_id("ws");
    conn.prepare_cached(
        "INSERT INTO workspaces (id, org_id, name, description, is_default, created_at, updated_at)
         VALUES (?1, ?2, 'Default', NULL, 1, ?3, ?3)",
    )?
    .execute(params![id, org, now])?;
    Ok(Workspace {
        seq: conn.last_insert_rowid(),
        id,
        org_id: org.to_owned(),
        name: "Default".into(),
        description: None,
        is_default: true,
        created_at: now,
        updated_at: now,
    })
}

/// Checks, inside the write, that workspace `ws` of `org` still exists, and the environment and (enabled)
/// service account are still in it: the caller checked before, but a delete or disable may have committed
/// since.
pub(crate) fn check_placement(
    conn: &Connection,
    org: &str,
    ws: &str,
    environment: Option<&str>,
    account: Option<&str>,
) -> Result<(), StoreError> {
    let exists = |sql: &str, id: &str| -> Result<bool, StoreError> {
        Ok(count(conn, sql, params![id, org, ws])? > 0)
    };
    if !exists(
        "SELECT count(*) FROM workspaces WHERE id = ?1 AND org_id = ?2 AND id = ?3",
        ws,
    )? {
        return Err(StoreError::Gone(format!(
            "the workspace `{ws}` was deleted meanwhile"
        )));
    }
    if let Some(env) = environment {
        if !exists(
            "SELECT count(*) FROM environments WHERE id = ?1 AND org_id = ?2 AND workspace_id = ?3",
            env,
        )? {
            return Err(StoreError::Gone(format!(
                "the environment `{env}` was deleted meanwhile"
            )));
        }
    }
    if let Some(sa) = account {
        if !exists(
            "SELECT count(*) FROM service_accounts
             WHERE id = ?1 AND org_id = ?2 AND workspace_id = ?3 AND disabled_at IS NULL",
            sa,
        )? {
            return Err(StoreError::Gone(format!(
                "the service account `{sa}` was deleted or disabled meanwhile"
            )));
        }
    }
    Ok(())
}

/// The first permission of an unrevoked key of service account `id` that `caller` does not cover.
fn beyond(conn: &Connection, id: &str, caller: &[String]) -> Result<Option<String>, StoreError> {
    let lists: Vec<String> = conn
        .prepare_cached(
            "SELECT permissions FROM api_keys WHERE service_account_id = ?1 AND revoked_at IS NULL",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for list in lists {
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

/// Drops every key of service account `id` from the verification caches (this process's and, through the
/// change log, every other one's on the same database).
fn forget_account_keys(conn: &Connection, id: &str, now: i64) -> Result<(), StoreError> {
    let hashes: Vec<Vec<u8>> = conn
        .prepare_cached("SELECT key_hash FROM api_keys WHERE service_account_id = ?1")?
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for hash in hashes {
        log_change(conn, &hash, now)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl TenancyStore for SqliteStore {
    async fn default_workspace(&self, org_id: &str, now: i64) -> Result<Workspace, StoreError> {
        let org = org_id.to_owned();
        let sql = format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE org_id = ?1 AND is_default = 1"
        );
        let found = self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&sql)?
                    .query_row([org], workspace_from_row)
                    .optional()?)
            })
            .await?;
        match found {
            Some(found) => Ok(found),
            None => {
                let org = org_id.to_owned();
                self.write(move |conn| ensure_default(conn, &org, now))
                    .await
            }
        }
    }

    async fn insert_workspace(&self, ws: Workspace) -> Result<Workspace, StoreError> {
        let events = self.workspace_payload();
        self.write(move |conn| {
            // The default workspace first, so that it is the oldest of its organization.
            ensure_default(conn, &ws.org_id, ws.created_at)?;
            conn.prepare_cached(
                "INSERT INTO workspaces (id, org_id, name, description, is_default, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
            )?
            .execute(params![ws.id, ws.org_id, ws.name, ws.description, ws.created_at])?;
            let seq = conn.last_insert_rowid();
            let created = Workspace {
                seq,
                is_default: false,
                updated_at: ws.created_at,
                ..ws
            };
            structure_event(conn, &events, "workspace.created", &created.org_id, &created, created.created_at)?;
            Ok(created)
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
        self.write(move |conn| {
            let Some(found) = WORKSPACES.find(conn, &view, &id)? else {
                return Ok(None);
            };
            conn.prepare_cached(
                "UPDATE workspaces SET name = coalesce(:name, name),
                    description = CASE WHEN :set_description THEN :description ELSE description END,
                    updated_at = :now
                 WHERE seq = :seq",
            )?
            .execute(rusqlite::named_params! {
                ":name": patch.name,
                ":set_description": patch.description.is_some(),
                ":description": patch.description.flatten(),
                ":now": now,
                ":seq": found.seq,
            })?;
            let updated = WORKSPACES.find(conn, &view, &id)?;
            if let Some(ws) = &updated {
                structure_event(conn, &events, "workspace.updated", &ws.org_id, ws, now)?;
            }
            Ok(updated)
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
        self.write(move |conn| {
            let Some(found) = WORKSPACES.find(conn, &view, &id)? else {
                return Ok(Removal::NotFound);
            };
            if found.is_default {
                return Ok(Removal::InUse(
                    "the default workspace cannot be deleted".into(),
                ));
            }
            let keys = count(
                conn,
                &format!("SELECT count(*) FROM api_keys WHERE workspace_id = :id AND {USABLE_KEY}"),
                rusqlite::named_params! {":id": id, ":now": now},
            )?;
            if keys > 0 {
                return Ok(Removal::InUse(
                    "the workspace still has active API keys (of either mode); revoke them first"
                        .into(),
                ));
            }
            let accounts = count(
                conn,
                "SELECT count(*) FROM service_accounts WHERE workspace_id = ?1",
                [&id],
            )?;
            if accounts > 0 {
                return Ok(Removal::InUse(
                    "the workspace still has service accounts; delete them first".into(),
                ));
            }
            conn.prepare_cached("DELETE FROM environments WHERE workspace_id = ?1")?
                .execute([&id])?;
            conn.prepare_cached("DELETE FROM workspaces WHERE seq = ?1")?
                .execute([found.seq])?;
            structure_event(
                conn,
                &events,
                "workspace.deleted",
                &found.org_id,
                &found,
                now,
            )?;
            Ok(Removal::Removed(found))
        })
        .await
    }

    async fn insert_environment(
        &self,
        env: Environment,
    ) -> Result<Creation<Environment>, StoreError> {
        self.write(move |conn| {
            let env = in_workspace(conn, env, |e| {
                (&e.org_id, &mut e.workspace_id, e.created_at)
            })?;
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO environments (id, org_id, workspace_id, name, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (workspace_id, name) DO NOTHING",
                )?
                .execute(params![
                    env.id,
                    env.org_id,
                    env.workspace_id,
                    env.name,
                    env.created_at
                ])?;
            if inserted == 0 {
                return Ok(Creation::NameTaken);
            }
            Ok(Creation::Created(Environment {
                seq: conn.last_insert_rowid(),
                ..env
            }))
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
        self.write(move |conn| {
            let Some(found) = ENVIRONMENTS.find(conn, &view, &id)?
            else {
                return Ok(Removal::NotFound);
            };
            let keys = count(
                conn,
                &format!("SELECT count(*) FROM api_keys WHERE environment_id = :id AND {USABLE_KEY}"),
                rusqlite::named_params! {":id": id, ":now": now},
            )?;
            if keys > 0 {
                return Ok(Removal::InUse(
                    "the environment still has active API keys (of either mode) bound to it; revoke them first"
                        .into(),
                ));
            }
            conn.prepare_cached("DELETE FROM environments WHERE seq = ?1")?
                .execute([found.seq])?;
            Ok(Removal::Removed(found))
        })
        .await
    }

    async fn insert_service_account(
        &self,
        sa: ServiceAccount,
    ) -> Result<ServiceAccount, StoreError> {
        let events = self.account_payload();
        self.write(move |conn| {
            let sa = in_workspace(conn, sa, |a| (&a.org_id, &mut a.workspace_id, a.created_at))?;
            conn.prepare_cached(
                "INSERT INTO service_accounts (id, org_id, workspace_id, name, description, disabled_at,
                                               created_by, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?7)",
            )?
            .execute(params![
                sa.id,
                sa.org_id,
                sa.workspace_id,
                sa.name,
                sa.description,
                sa.created_by,
                sa.created_at
            ])?;
            let created = ServiceAccount {
                seq: conn.last_insert_rowid(),
                disabled_at: None,
                updated_at: sa.created_at,
                ..sa
            };
            structure_event(
                conn,
                &events,
                "service_account.created",
                &created.org_id,
                &created,
                created.created_at,
            )?;
            Ok(created)
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
        self.write(move |conn| {
            let Some(found) = ACCOUNTS.find(conn, &view, &id)? else {
                return Ok(Guarded::NotFound);
            };
            if patch.disabled.is_some() {
                if let Some(p) = beyond(conn, &id, &caller)? {
                    return Ok(Guarded::Beyond(p));
                }
            }
            let disabled_at = match patch.disabled {
                None => found.disabled_at,
                Some(true) => found.disabled_at.or(Some(now)),
                Some(false) => None,
            };
            conn.prepare_cached(
                "UPDATE service_accounts SET name = coalesce(:name, name),
                    description = CASE WHEN :set_description THEN :description ELSE description END,
                    disabled_at = :disabled_at, updated_at = :now
                 WHERE seq = :seq",
            )?
            .execute(rusqlite::named_params! {
                ":name": patch.name,
                ":set_description": patch.description.is_some(),
                ":description": patch.description.flatten(),
                ":disabled_at": disabled_at,
                ":now": now,
                ":seq": found.seq,
            })?;
            if disabled_at != found.disabled_at {
                forget_account_keys(conn, &id, now)?;
            }
            let updated = ACCOUNTS.find(conn, &view, &id)?;
            if let Some(account) = &updated {
                let what = match (found.disabled_at, disabled_at) {
                    (None, Some(_)) => "service_account.disabled",
                    (Some(_), None) => "service_account.enabled",
                    _ => "service_account.updated",
                };
                structure_event(conn, &events, what, &account.org_id, account, now)?;
            }
            Ok(updated.map_or(Guarded::NotFound, Guarded::Done))
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
        self.write(move |conn| {
            let Some(found) = ACCOUNTS.find(conn, &view, &id)? else {
                return Ok(Guarded::NotFound);
            };
            if let Some(p) = beyond(conn, &id, &caller)? {
                return Ok(Guarded::Beyond(p));
            }
            let revoked = count(
                conn,
                "SELECT count(*) FROM api_keys WHERE service_account_id = ?1 AND mode = ?2 AND revoked_at IS NULL",
                params![id, mode.as_str()],
            )?;
            // Rotations under way of its keys end with them: their secrets are never sent.
            let rotating: Vec<String> = conn
                .prepare_cached(
                    "SELECT id FROM api_keys WHERE service_account_id = ?1 AND rotating_to_key_id IS NOT NULL",
                )?
                .query_map([&id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for key in rotating {
                if let Some(record) = crate::sqlite::select_one(conn, "k.id = ?1", [&key])? {
                    crate::rotation::cancel_rotation(conn, &record, now)?;
                }
            }
            conn.prepare_cached(
                "UPDATE api_keys SET revoked_at = ?2 WHERE service_account_id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![id, now])?;
            forget_account_keys(conn, &id, now)?;
            conn.prepare_cached("DELETE FROM service_accounts WHERE seq = ?1")?
                .execute([found.seq])?;
            structure_event(conn, &events, "service_account.deleted", &found.org_id, &found, now)?;
            Ok(Guarded::Done((found, revoked as u64)))
        })
        .await
    }
}

#[async_trait::async_trait]
impl opgate_core::Workspaces for SqliteStore {
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
    use opgate_core::{KeyType, Mode};

    use super::*;
    use crate::{KeyFilters, KeyPage, KeyStore, NewKey, Scope};

    /// A workspace key (in `ws`, else the default workspace) unless `admin`.
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

    async fn ids(store: &SqliteStore, scope: Scope) -> Vec<String> {
        let page = KeyPage {
            scope: &scope,
            after_seq: 0,
            before_seq: None,
            filters: &KeyFilters::default(),
            limit: 100,
            include_revoked: true,
            status: None,
            now: 100,
        };
        let rows = store.list_keys(page).await.unwrap();
        rows.into_iter().map(|r| r.id).collect()
    }

    #[tokio::test]
    async fn one_default_workspace_per_org_made_on_first_need_and_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
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
        let k = store
            .insert_key(key(1, "o", None, Mode::Live, None))
            .await
            .unwrap();
        assert_eq!(k.workspace_id.as_deref(), Some(a.id.as_str()));
        let within = Within {
            org_id: "o",
            workspace_id: None,
        };
        assert_eq!(
            store.delete_workspace(within, &a.id, 100).await.unwrap(),
            Removal::InUse("the default workspace cannot be deleted".into())
        );
        let foreign = Within {
            org_id: "p",
            workspace_id: None,
        };
        assert_eq!(store.get_workspace(foreign, &a.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn keys_are_partitioned_by_org_mode_and_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        store.insert_workspace(ws("ws_a", "o")).await.unwrap();
        store.insert_workspace(ws("ws_b", "o")).await.unwrap();
        store
            .insert_keys(vec![
                key(1, "o", Some("ws_a"), Mode::Live, None),
                key(2, "o", Some("ws_a"), Mode::Test, None),
                key(3, "o", Some("ws_b"), Mode::Live, None),
                with_type(4, "o", None, Mode::Live, None, KeyType::Admin),
                with_type(5, "p", None, Mode::Live, None, KeyType::Admin),
            ])
            .await
            .unwrap();
        let scope = |mode, ws: Option<&str>| Scope {
            org_id: "o".into(),
            mode,
            workspace_id: ws.map(Into::into),
        };
        assert_eq!(
            ids(&store, scope(Mode::Live, None)).await,
            ["key_0001", "key_0003", "key_0004"]
        );
        assert_eq!(ids(&store, scope(Mode::Test, None)).await, ["key_0002"]);
        assert_eq!(
            ids(&store, scope(Mode::Live, Some("ws_a"))).await,
            ["key_0001"]
        );
        assert!(store
            .get_key(&scope(Mode::Test, None), "key_0001")
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get_key(&scope(Mode::Live, Some("ws_b")), "key_0001")
            .await
            .unwrap()
            .is_none());
        assert!(store
            .revoke_key(&scope(Mode::Live, Some("ws_b")), "key_0001", 1)
            .await
            .unwrap()
            .is_none());
        let within = Within {
            org_id: "o",
            workspace_id: None,
        };
        assert!(matches!(
            store.delete_workspace(within, "ws_a", 100).await.unwrap(),
            Removal::InUse(_)
        ));
    }

    #[tokio::test]
    async fn disabling_or_deleting_a_service_account_stops_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let changed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&changed);
        store.on_change(std::sync::Arc::new(move |h: &[u8]| {
            seen.lock().unwrap().push(h.to_vec())
        }));
        let sa = store
            .insert_service_account(ServiceAccount {
                seq: 0,
                id: "sa_1".into(),
                org_id: "o".into(),
                workspace_id: String::new(),
                name: "ci".into(),
                description: None,
                disabled_at: None,
                created_by: "test".into(),
                created_at: 100,
                updated_at: 100,
            })
            .await
            .unwrap();
        assert!(!sa.workspace_id.is_empty(), "the default workspace");
        store
            .insert_key(key(
                1,
                "o",
                Some(&sa.workspace_id),
                Mode::Live,
                Some("sa_1"),
            ))
            .await
            .unwrap();
        let active = |store: SqliteStore| async move {
            store.key_by_hash(b"hash1".to_vec()).await.unwrap().unwrap()
        };
        assert!(active(store.clone()).await.service_account_active);
        let within = Within {
            org_id: "o",
            workspace_id: None,
        };
        let patch = ServiceAccountPatch {
            disabled: Some(true),
            ..Default::default()
        };
        // A caller whose permissions do not cover the account's keys can neither disable nor delete it.
        let narrow = ["api_keys:read".to_owned()];
        assert_eq!(
            store
                .update_service_account(within, "sa_1", patch.clone(), 150, &narrow)
                .await
                .unwrap(),
            Guarded::Beyond("api_keys:write".into())
        );
        let all = ["*".to_owned()];
        let Guarded::Done(disabled) = store
            .update_service_account(within, "sa_1", patch, 200, &all)
            .await
            .unwrap()
        else {
            panic!("disable refused")
        };
        assert_eq!(disabled.disabled_at, Some(200));
        assert!(!active(store.clone()).await.service_account_active);
        assert_eq!(changed.lock().unwrap().as_slice(), [b"hash1".to_vec()]);
        // A key made for it after the caller's check, but after the disable committed, is refused in the write.
        let late = store
            .insert_key(key(
                2,
                "o",
                Some(&sa.workspace_id),
                Mode::Live,
                Some("sa_1"),
            ))
            .await;
        assert!(matches!(late, Err(StoreError::Gone(_))), "{late:?}");
        let nowhere = store
            .insert_key(key(3, "o", Some("ws_gone"), Mode::Live, None))
            .await;
        assert!(matches!(nowhere, Err(StoreError::Gone(_))), "{nowhere:?}");
        assert_eq!(
            store
                .delete_service_account(within, "sa_1", 250, &narrow, Mode::Live)
                .await
                .unwrap(),
            Guarded::Beyond("api_keys:write".into())
        );
        let Guarded::Done((gone, revoked)) = store
            .delete_service_account(within, "sa_1", 300, &all, Mode::Test)
            .await
            .unwrap()
        else {
            panic!("delete refused")
        };
        assert_eq!((gone.id.as_str(), revoked), ("sa_1", 0), "no test keys");
        let key = active(store.clone()).await;
        assert_eq!(
            (key.service_account_active, key.revoked_at),
            (false, Some(300))
        );
    }
}
