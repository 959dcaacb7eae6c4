//! The `api_keys.*` operations, one file each.

mod create;
mod get;
mod list;
mod revoke;
mod rotate;
mod update;

pub(crate) use create::CreateKey;
pub(crate) use get::GetKey;
pub(crate) use list::ListKeys;
pub(crate) use revoke::RevokeKey;
pub(crate) use rotate::RotateKey;
pub(crate) use update::UpdateKey;
