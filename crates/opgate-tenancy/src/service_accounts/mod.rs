//! The `service_accounts.*` operations, one file each.

mod create;
mod delete;
mod get;
mod list;
mod update;

pub(crate) use create::Create;
pub(crate) use delete::Delete;
pub(crate) use get::Get;
pub(crate) use list::List;
pub(crate) use update::Update;

/// The 404 for a service account the caller cannot see.
pub(crate) fn not_found(id: &str) -> opgate_core::Error {
    opgate_core::Error::not_found(format!(
        "service_account_id: no service account `{id}` in this organization"
    ))
}

/// The 403 for a change that would stop or revive a key more powerful than the caller.
pub(crate) fn beyond(permission: &str) -> opgate_core::Error {
    opgate_core::Error::permission_denied(format!(
        "service_account_id: a key of the account holds `{permission}`, beyond the caller's own permissions"
    ))
}
