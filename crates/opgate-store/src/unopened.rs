//! A store that was never opened: every call fails with [`StoreError::Closed`]. It lets the registry of the
//! built-in operations be built to describe the API (spec, docs, SDKs) without opening any database.

use crate::{
    Attempt, Delivery, DeliveryPage, DueDelivery, EventListener, NewEvent, Owner, PayloadBuilder,
    Redelivery, Webhook, WebhookPatch, WebhookStore,
};
use crate::{
    AuditEntry, AuditLog, AuditPage, ChangeListener, KeyChanges, KeyPage, KeyPatch, KeyRecord,
    KeyStore, KeyUsage, NewKey, Rotation, Scope, StoreError, Update,
};
use crate::{
    Creation, Environment, Guarded, Listing, Removal, ServiceAccount, ServiceAccountPatch,
    TenancyStore, Within, Workspace, WorkspacePatch,
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
    async fn insert_first_key(&self, _: NewKey) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn key_by_hash(&self, _: Vec<u8>) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn get_key(&self, _: &Scope, _: &str) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn list_keys(&self, _: KeyPage<'_>) -> Result<Vec<KeyRecord>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn revoke_key(
        &self,
        _: &Scope,
        _: &str,
        _: i64,
    ) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn count_keys(&self) -> Result<u64, StoreError> {
        Err(StoreError::Closed)
    }
    async fn update_key(
        &self,
        _: &Scope,
        _: &str,
        _: KeyPatch,
        _: i64,
    ) -> Result<Update, StoreError> {
        Err(StoreError::Closed)
    }
    async fn rotate_key(
        &self,
        _: &Scope,
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
    async fn audit_seq(&self, _: &Scope, _: &str) -> Result<Option<i64>, StoreError> {
        Err(StoreError::Closed)
    }
}

#[async_trait::async_trait]
impl TenancyStore for Unopened {
    async fn default_workspace(&self, _: &str, _: i64) -> Result<Workspace, StoreError> {
        Err(StoreError::Closed)
    }
    async fn insert_workspace(&self, _: Workspace) -> Result<Workspace, StoreError> {
        Err(StoreError::Closed)
    }
    async fn get_workspace(&self, _: Within<'_>, _: &str) -> Result<Option<Workspace>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn list_workspaces(&self, _: Listing<'_>) -> Result<Vec<Workspace>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn update_workspace(
        &self,
        _: Within<'_>,
        _: &str,
        _: WorkspacePatch,
        _: i64,
    ) -> Result<Option<Workspace>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn delete_workspace(
        &self,
        _: Within<'_>,
        _: &str,
        _: i64,
    ) -> Result<Removal<Workspace>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn insert_environment(
        &self,
        _: Environment,
    ) -> Result<Creation<Environment>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn get_environment(
        &self,
        _: Within<'_>,
        _: &str,
    ) -> Result<Option<Environment>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn list_environments(&self, _: Listing<'_>) -> Result<Vec<Environment>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn delete_environment(
        &self,
        _: Within<'_>,
        _: &str,
        _: i64,
    ) -> Result<Removal<Environment>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn insert_service_account(
        &self,
        _: ServiceAccount,
    ) -> Result<ServiceAccount, StoreError> {
        Err(StoreError::Closed)
    }
    async fn get_service_account(
        &self,
        _: Within<'_>,
        _: &str,
    ) -> Result<Option<ServiceAccount>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn list_service_accounts(
        &self,
        _: Listing<'_>,
    ) -> Result<Vec<ServiceAccount>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn update_service_account(
        &self,
        _: Within<'_>,
        _: &str,
        _: ServiceAccountPatch,
        _: i64,
        _: &[String],
    ) -> Result<Guarded<ServiceAccount>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn delete_service_account(
        &self,
        _: Within<'_>,
        _: &str,
        _: i64,
        _: &[String],
        _: opgate_core::Mode,
    ) -> Result<Guarded<(ServiceAccount, u64)>, StoreError> {
        Err(StoreError::Closed)
    }
}

#[async_trait::async_trait]
impl WebhookStore for Unopened {
    async fn insert_webhook(&self, _: Webhook) -> Result<Webhook, StoreError> {
        Err(StoreError::Closed)
    }
    async fn get_webhook(&self, _: &Owner, _: &str) -> Result<Option<Webhook>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn list_webhooks(&self, _: &Owner, _: i64, _: usize) -> Result<Vec<Webhook>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn update_webhook(
        &self,
        _: &Owner,
        _: &str,
        _: WebhookPatch,
        _: i64,
    ) -> Result<Option<Webhook>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn delete_webhook(
        &self,
        _: &Owner,
        _: &str,
        _: i64,
    ) -> Result<Option<Webhook>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn list_deliveries(&self, _: DeliveryPage) -> Result<Vec<Delivery>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn get_delivery(&self, _: &Owner, _: &str) -> Result<Option<Delivery>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn redeliver(&self, _: &Owner, _: &str, _: i64) -> Result<Redelivery, StoreError> {
        Err(StoreError::Closed)
    }
    async fn due_deliveries(
        &self,
        _: i64,
        _: usize,
        _: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn record_attempt(&self, _: &str, _: Attempt) -> Result<(), StoreError> {
        Err(StoreError::Closed)
    }
    async fn emit(&self, _: NewEvent) -> Result<(), StoreError> {
        Err(StoreError::Closed)
    }
    fn on_events(&self, _: EventListener) {}
    fn key_payloads(&self, _: PayloadBuilder<KeyRecord>) {}
    fn workspace_payloads(&self, _: PayloadBuilder<Workspace>) {}
    fn account_payloads(&self, _: PayloadBuilder<ServiceAccount>) {}
}

#[async_trait::async_trait]
impl crate::ScheduleStore for Unopened {
    async fn due_rotations(&self, _: i64, _: usize) -> Result<Vec<crate::DueRotation>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn start_rotation(
        &self,
        _: &str,
        _: crate::RotationStart,
    ) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::Closed)
    }
    async fn expiry_notices(&self, _: i64, _: usize) -> Result<usize, StoreError> {
        Err(StoreError::Closed)
    }
}
