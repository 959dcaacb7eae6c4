//! The `webhooks.*` operations, one file each.

mod create;
mod delete;
mod deliveries;
mod get;
mod list;
mod redeliver;
mod rotate_secret;
mod update;

pub(crate) use create::Create;
pub(crate) use delete::Delete;
pub(crate) use deliveries::Deliveries;
pub(crate) use get::Get;
pub(crate) use list::List;
pub(crate) use redeliver::Redeliver;
pub(crate) use rotate_secret::RotateSecret;
pub(crate) use update::Update;
