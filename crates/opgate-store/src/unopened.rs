//! A store that was never opened: every call fails with [`StoreError::Closed`]. It lets the registry of the
//! built-in operations be built to describe the API (spec, docs, SDKs) without opening any database.

use crate::{
    AuditEntry, AuditLog, AuditPage, ChangeListener, KeyChanges, KeyPage, KeyPatch, KeyRecord,
    KeyStore, KeyUsage, NewKey, Rotation, StoreError, Update,
};

/// The store of a registry built only to be described.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unopened;

#[async_trait::async_trait]
impl KeyStore for Unopened {
    async fn insert_key(&self, _: NewKey) -> Result<KeyRecord, StoreError> {
        Err(StoreError::Closed)
    }
    async fn insert_keys(&self, _: Vec<NewKey>) -> Result<(), StoreError> {
        Err(StoreError::Closed)
    }
    async fn key_by_hash(&self, _: Vec<u8>) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn get_key(&self, _: &str, _: &str) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn list_keys(&self, _: KeyPage<'_>) -> Result<Vec<KeyRecord>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn revoke_key(&self, _: &str, _: &str, _: i64) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn count_keys(&self) -> Result<u64, StoreError> {
        Err(StoreError::Closed)
    }
    async fn update_key(&self, _: &str, _: &str, _: KeyPatch) -> Result<Update, StoreError> {
        Err(StoreError::Closed)
    }
    async fn rotate_key(
        &self,
        _: &str,
        _: &str,
        _: NewKey,
        _: i64,
        _: i64,
    ) -> Result<Rotation, StoreError> {
        Err(StoreError::Closed)
    }
    async fn record_usage(&self, _: Vec<KeyUsage>) -> Result<(), StoreError> {
        Err(StoreError::Closed)
    }
    async fn find_key(&self, _: &str) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn key_changes(&self, _: i64) -> Result<KeyChanges, StoreError> {
        Err(StoreError::Closed)
    }
    async fn trim_key_changes(&self, _: i64) -> Result<(), StoreError> {
        Err(StoreError::Closed)
    }
    fn on_change(&self, _: ChangeListener) {}
}

#[async_trait::async_trait]
impl AuditLog for Unopened {
    async fn list_audit(&self, _: AuditPage<'_>) -> Result<Vec<AuditEntry>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn audit_seq(&self, _: &str, _: &str) -> Result<Option<i64>, StoreError> {
        Err(StoreError::Closed)
    }
}
