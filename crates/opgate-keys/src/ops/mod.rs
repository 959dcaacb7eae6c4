//! The `api_keys.*` operations, one file each.

mod create;
mod list;
mod revoke;

pub use create::CreateKey;
pub use list::ListKeys;
pub use revoke::RevokeKey;
