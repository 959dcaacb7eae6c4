//! The `api_keys.*` operations, one file each.

mod create;
mod get;
mod list;
mod revoke;
mod rotate;
mod update;

pub use create::CreateKey;
pub use get::GetKey;
pub use list::ListKeys;
pub use revoke::RevokeKey;
pub use rotate::RotateKey;
pub use update::UpdateKey;
