//! [`Database`]: the store as the data directory holds it.

use opgate_store::{Database, StoreError};

use crate::PgStore;

#[async_trait::async_trait]
impl Database for PgStore {
    async fn expire_idempotency(&self, cutoff: i64) -> Result<usize, StoreError> {
        PgStore::expire_idempotency(self, cutoff).await
    }
    async fn expire_audit(&self, cutoff: i64) -> Result<usize, StoreError> {
        PgStore::expire_audit(self, cutoff).await
    }
    async fn expire_outbox(&self, cutoff: i64) -> Result<usize, StoreError> {
        PgStore::expire_outbox(self, cutoff).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        PgStore::ping(self).await
    }
    async fn recover(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn close(&self) {
        PgStore::close(self).await
    }
    fn engine(&self) -> &'static str {
        "postgres"
    }
    fn rate_cells(&self) -> Option<std::sync::Arc<dyn opgate_core::RateCells>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}
