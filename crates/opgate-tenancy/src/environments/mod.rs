//! The `environments.*` operations, one file each.

mod create;
mod delete;
mod list;

pub(crate) use create::Create;
pub(crate) use delete::Delete;
pub(crate) use list::List;
