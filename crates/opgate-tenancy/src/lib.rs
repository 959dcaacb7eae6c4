//! The structure of an organization as operations: `workspaces.*`, `environments.*` and
//! `service_accounts.*`.
//!
//! Workspaces, environments and service accounts are shared by both modes: a test key sees the same
//! workspaces as a live one, and keys of either mode may belong to the same service account. Changing the
//! structure takes a live caller, since it changes the live world too; a test caller may only read it. A
//! workspace key sees only its own workspace (and what is in it); creating or deleting workspaces takes an
//! organization-wide caller.
//!
//! The wire types ([`types`]) need no storage; the operations sit behind the default feature `server`.

pub mod types;

#[cfg(feature = "server")]
mod environments;
#[cfg(feature = "server")]
mod service_accounts;
#[cfg(feature = "server")]
mod workspaces;

#[cfg(feature = "server")]
pub use server::Tenancy;

#[cfg(feature = "server")]
mod server {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;

    use futures_util::{stream, StreamExt};
    use opgate_core::{Context, Error, Items, Mode, Registry, RegistryError, Timestamp};
    use opgate_store::{
        Environment, Listing, ServiceAccount, StoreError, TenancyStore, Within, Workspace,
    };

    use crate::types::{EnvironmentDetails, ServiceAccountDetails, WorkspaceDetails};
    use crate::{environments, service_accounts, workspaces};

    /// Objects read from storage per query; memory stays flat whatever their number.
    const PAGE_SIZE: usize = 500;

    /// The tenancy operations' shared state: the store of workspaces, environments and service accounts.
    pub struct Tenancy {
        pub(crate) store: Arc<dyn TenancyStore>,
    }

    impl Tenancy {
        /// The operations over `store`.
        pub fn new(store: Arc<dyn TenancyStore>) -> Arc<Self> {
            Arc::new(Tenancy { store })
        }

        /// Registers every `workspaces.*`, `environments.*` and `service_accounts.*` operation.
        pub fn register(self: &Arc<Self>, registry: &mut Registry) -> Result<(), RegistryError> {
            registry
                .register(workspaces::Create(self.clone()))?
                .register_stream(workspaces::List(self.clone()))?
                .register(workspaces::Get(self.clone()))?
                .register(workspaces::Update(self.clone()))?
                .register(workspaces::Delete(self.clone()))?
                .register(environments::Create(self.clone()))?
                .register_stream(environments::List(self.clone()))?
                .register(environments::Delete(self.clone()))?
                .register(service_accounts::Create(self.clone()))?
                .register_stream(service_accounts::List(self.clone()))?
                .register(service_accounts::Get(self.clone()))?
                .register(service_accounts::Update(self.clone()))?
                .register(service_accounts::Delete(self.clone()))?;
            Ok(())
        }

        /// The workspace a new environment or service account goes in: the call's own if it works in one
        /// (naming another is refused), else the one named (which must exist), else `""` for the
        /// organization's default workspace.
        pub(crate) async fn workspace_for_new(
            &self,
            ctx: &Context,
            asked: Option<String>,
        ) -> Result<String, Error> {
            match (&ctx.workspace, asked) {
                (Some(own), Some(asked)) if *own != asked => Err(if ctx.principal.is_org_wide() {
                    Error::permission_denied(format!(
                        "workspace_id: X-Workspace-ID confines the call to workspace `{own}`; name that one \
                         or omit workspace_id"
                    ))
                } else {
                    Error::permission_denied(format!(
                        "workspace_id: this key is confined to workspace `{own}`"
                    ))
                }),
                (Some(own), _) => Ok(own.clone()),
                (None, Some(asked)) => {
                    let within = Within {
                        org_id: &ctx.principal.org,
                        workspace_id: None,
                    };
                    match self.store.get_workspace(within, &asked).await? {
                        Some(_) => Ok(asked),
                        None => Err(Error::not_found(format!(
                            "workspace_id: no workspace `{asked}` in this organization"
                        ))),
                    }
                }
                (None, None) => Ok(String::new()),
            }
        }
    }

    /// What a call sees: its organization, and its workspace if it works in one.
    pub(crate) fn within(ctx: &Context) -> Within<'_> {
        Within {
            org_id: &ctx.principal.org,
            workspace_id: ctx.workspace.as_deref(),
        }
    }

    /// Within the call's view, narrowed to `filter`; `None` when the two name different workspaces (the
    /// listing is then empty).
    pub(crate) fn narrowed<'a>(ctx: &'a Context, filter: Option<&'a str>) -> Option<Within<'a>> {
        let within = within(ctx);
        match (within.workspace_id, filter) {
            (Some(own), Some(f)) if own != f => None,
            (own, f) => Some(Within {
                org_id: within.org_id,
                workspace_id: own.or(f),
            }),
        }
    }

    /// 403 for a test-mode caller: the structure is shared by both modes, so only a live caller changes it.
    pub(crate) fn live_only(ctx: &Context) -> Result<(), Error> {
        if ctx.mode() == Mode::Live {
            Ok(())
        } else {
            Err(Error::permission_denied(
                "workspaces, environments and service accounts are shared by both modes: change them with a \
                 live-mode credential",
            ))
        }
    }

    /// 403 for a workspace key: some changes reach beyond any one workspace.
    pub(crate) fn org_wide_only(ctx: &Context, what: &str) -> Result<(), Error> {
        if ctx.principal.is_org_wide() {
            Ok(())
        } else {
            Err(Error::permission_denied(format!(
                "{what} takes an organization-wide caller (an admin key or a session); this key is confined to \
                 its workspace"
            )))
        }
    }

    /// A store future, as the store's trait methods return them.
    pub(crate) type StoreFuture<'a, T> =
        Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

    /// One kind of object the tenancy lists page through.
    pub(crate) trait Listed: Sized + Send + 'static {
        /// What it is called in messages.
        const WHAT: &'static str;
        /// Its insertion order.
        fn seq(&self) -> i64;
        /// The object `id` if `within` sees it.
        fn find<'a>(
            store: &'a dyn TenancyStore,
            within: Within<'a>,
            id: &'a str,
        ) -> StoreFuture<'a, Option<Self>>;
        /// One page.
        fn page<'a>(store: &'a dyn TenancyStore, page: Listing<'a>) -> StoreFuture<'a, Vec<Self>>;
    }

    impl Listed for Workspace {
        const WHAT: &'static str = "workspace";
        fn seq(&self) -> i64 {
            self.seq
        }
        fn find<'a>(
            s: &'a dyn TenancyStore,
            w: Within<'a>,
            id: &'a str,
        ) -> StoreFuture<'a, Option<Self>> {
            s.get_workspace(w, id)
        }
        fn page<'a>(s: &'a dyn TenancyStore, p: Listing<'a>) -> StoreFuture<'a, Vec<Self>> {
            s.list_workspaces(p)
        }
    }

    impl Listed for Environment {
        const WHAT: &'static str = "environment";
        fn seq(&self) -> i64 {
            self.seq
        }
        fn find<'a>(
            s: &'a dyn TenancyStore,
            w: Within<'a>,
            id: &'a str,
        ) -> StoreFuture<'a, Option<Self>> {
            s.get_environment(w, id)
        }
        fn page<'a>(s: &'a dyn TenancyStore, p: Listing<'a>) -> StoreFuture<'a, Vec<Self>> {
            s.list_environments(p)
        }
    }

    impl Listed for ServiceAccount {
        const WHAT: &'static str = "service account";
        fn seq(&self) -> i64 {
            self.seq
        }
        fn find<'a>(
            s: &'a dyn TenancyStore,
            w: Within<'a>,
            id: &'a str,
        ) -> StoreFuture<'a, Option<Self>> {
            s.get_service_account(w, id)
        }
        fn page<'a>(s: &'a dyn TenancyStore, p: Listing<'a>) -> StoreFuture<'a, Vec<Self>> {
            s.list_service_accounts(p)
        }
    }

    /// Where a list reads and how far.
    pub(crate) struct Paging {
        /// Stop after this many.
        pub limit: Option<u32>,
        /// Start after this object.
        pub after_id: Option<String>,
        /// Only objects before this one.
        pub before_id: Option<String>,
    }

    /// Streams the `T`s `view` sees (none when `None`), oldest first, page by page, as `O`. A cursor must be
    /// an object the caller sees, else 404: a hidden object's position tells nothing.
    pub(crate) async fn list<T: Listed, O: From<T> + Send + 'static>(
        tenancy: &Tenancy,
        view: Option<Within<'_>>,
        paging: Paging,
    ) -> Result<Items<O>, Error> {
        let Some(view) = view else {
            return Ok(Box::pin(stream::empty()));
        };
        let store = Arc::clone(&tenancy.store);
        let position = |field: &'static str, id: Option<String>| {
            let store = Arc::clone(&store);
            async move {
                let Some(id) = id else { return Ok(None) };
                match T::find(&*store, view, &id).await? {
                    Some(found) => Ok(Some(found.seq())),
                    None => Err(Error::not_found(format!(
                        "{field}: no {} `{id}` in this organization",
                        T::WHAT
                    ))),
                }
            }
        };
        let after = position("after_id", paging.after_id).await?.unwrap_or(0);
        let before = position("before_id", paging.before_id).await?;
        let (org, ws) = (view.org_id.to_owned(), view.workspace_id.map(str::to_owned));
        let remaining = paging.limit.map_or(usize::MAX, |l| l as usize);
        let pages = stream::unfold(Some((after, remaining)), move |state| {
            let (store, org, ws) = (Arc::clone(&store), org.clone(), ws.clone());
            async move {
                let (after_seq, remaining) = state?;
                if remaining == 0 {
                    return None;
                }
                let limit = remaining.min(PAGE_SIZE);
                let page = Listing {
                    within: Within {
                        org_id: &org,
                        workspace_id: ws.as_deref(),
                    },
                    after_seq,
                    before_seq: before,
                    limit,
                };
                match T::page(&*store, page).await {
                    Err(e) => Some((vec![Err(Error::from(e))], None)),
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let next = (rows.len() == limit)
                            .then(|| rows.last().map(|r| (r.seq(), remaining - limit)))
                            .flatten();
                        Some((rows.into_iter().map(|r| Ok(O::from(r))).collect(), next))
                    }
                }
            }
        });
        Ok(Box::pin(pages.flat_map(stream::iter)))
    }

    impl From<Workspace> for WorkspaceDetails {
        fn from(w: Workspace) -> Self {
            WorkspaceDetails {
                id: w.id,
                org_id: w.org_id,
                name: w.name,
                description: w.description,
                is_default: w.is_default,
                created_at: Timestamp(w.created_at),
                updated_at: Timestamp(w.updated_at),
            }
        }
    }

    impl From<Environment> for EnvironmentDetails {
        fn from(e: Environment) -> Self {
            EnvironmentDetails {
                id: e.id,
                org_id: e.org_id,
                workspace_id: e.workspace_id,
                name: e.name,
                created_at: Timestamp(e.created_at),
            }
        }
    }

    impl From<ServiceAccount> for ServiceAccountDetails {
        fn from(a: ServiceAccount) -> Self {
            ServiceAccountDetails {
                id: a.id,
                org_id: a.org_id,
                workspace_id: a.workspace_id,
                name: a.name,
                description: a.description,
                is_active: a.disabled_at.is_none(),
                disabled_at: a.disabled_at.map(Timestamp),
                created_by: a.created_by,
                created_at: Timestamp(a.created_at),
                updated_at: Timestamp(a.updated_at),
            }
        }
    }
}
