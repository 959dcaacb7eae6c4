//! Typed methods, one per operation, grouped by resource. Each is a one-liner over [`Client::invoke`] or
//! [`Client::invoke_stream`] with the server's own input and output types.

use crate::types::{
    AuditItem, CreateEnvironmentInput, CreateKeyInput, CreateKeyOutput, CreateServiceAccountInput,
    CreateWebhookInput, CreateWorkspaceInput, DeleteServiceAccountOutput, DeliveryDetails,
    EnvironmentDetails, EnvironmentIdInput, GetKeyInput, KeyDetails, ListAuditInput,
    ListDeliveriesInput, ListEnvironmentsInput, ListKeysInput, ListServiceAccountsInput,
    ListWebhooksInput, ListWorkspacesInput, RedeliverInput, RevokeKeyInput, RotateKeyInput,
    RotateKeyOutput, ServiceAccountDetails, ServiceAccountIdInput, UpdateKeyInput,
    UpdateServiceAccountInput, UpdateWebhookInput, UpdateWorkspaceInput, WebhookDetails,
    WebhookIdInput, WebhookWithSecret, WhoamiInput, WhoamiOutput, WorkspaceDetails,
    WorkspaceIdInput,
};
use crate::{CallOptions, Client, Error, ItemStream};

/// The operations with typed methods here, and whether each streams; a test checks them against the
/// gateway's registry.
pub const TYPED_OPERATIONS: &[(&str, bool)] = &[
    ("api_keys.create", false),
    ("api_keys.list", true),
    ("api_keys.get", false),
    ("api_keys.update", false),
    ("api_keys.rotate", false),
    ("api_keys.revoke", false),
    ("auth.whoami", false),
    ("audit.list", true),
    ("workspaces.create", false),
    ("workspaces.list", true),
    ("workspaces.get", false),
    ("workspaces.update", false),
    ("workspaces.delete", false),
    ("environments.create", false),
    ("environments.list", true),
    ("environments.delete", false),
    ("service_accounts.create", false),
    ("service_accounts.list", true),
    ("service_accounts.get", false),
    ("service_accounts.update", false),
    ("service_accounts.delete", false),
    ("webhooks.create", false),
    ("webhooks.list", true),
    ("webhooks.get", false),
    ("webhooks.update", false),
    ("webhooks.delete", false),
    ("webhooks.rotate_secret", false),
    ("webhooks.deliveries", true),
    ("webhooks.redeliver", false),
];

macro_rules! resource {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name<'a> {
            client: &'a Client,
            options: CallOptions,
        }

        impl<'a> $name<'a> {
            pub(crate) fn new(client: &'a Client) -> Self {
                $name {
                    client,
                    options: CallOptions::default(),
                }
            }

            /// Sends `Idempotency-Key: key` with the next calls (honoured by `write` and `destructive`
            /// operations, refused by `export` ones).
            pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
                self.options.idempotency_key = Some(key.into());
                self
            }

            /// Sends `X-Request-Id: id` with the next calls.
            pub fn request_id(mut self, id: impl Into<String>) -> Self {
                self.options.request_id = Some(id.into());
                self
            }
        }
    };
}

resource!(
    /// `api_keys.*`: the organization's API keys.
    ApiKeys
);
resource!(
    /// `auth.*`: the caller's own credential.
    Auth
);
resource!(
    /// `audit.*`: the organization's audit log.
    Audit
);
resource!(
    /// `workspaces.*`: the parts of the organization that workspace keys, environments and service accounts
    /// belong to.
    Workspaces
);
resource!(
    /// `environments.*`: the named environments of a workspace (`production`, ...) keys may be bound to.
    Environments
);
resource!(
    /// `service_accounts.*`: non-human owners of keys, so that a key outlives the person who made it.
    ServiceAccounts
);
resource!(
    /// `webhooks.*`: the organization's signed webhook endpoints (of the caller's mode) and their
    /// deliveries. Organization-wide callers only: a workspace key, or a client set to a workspace, is 403.
    Webhooks
);

impl ApiKeys<'_> {
    /// `api_keys.create`: a new key; its secret is in the output and nowhere else, ever.
    pub async fn create(&self, input: CreateKeyInput) -> Result<CreateKeyOutput, Error> {
        self.client
            .invoke("api_keys.create", &input, &self.options)
            .await
    }

    /// `api_keys.list`: the organization's keys, oldest first, as they arrive.
    pub async fn list(&self, input: ListKeysInput) -> Result<ItemStream<KeyDetails>, Error> {
        self.client
            .invoke_stream("api_keys.list", &input, &self.options)
            .await
    }

    /// `api_keys.get`: one key's metadata.
    pub async fn get(&self, input: GetKeyInput) -> Result<KeyDetails, Error> {
        self.client
            .invoke("api_keys.get", &input, &self.options)
            .await
    }

    /// `api_keys.update`: changes the fields that are `Some` (`Some(None)` clears).
    pub async fn update(&self, input: UpdateKeyInput) -> Result<KeyDetails, Error> {
        self.client
            .invoke("api_keys.update", &input, &self.options)
            .await
    }

    /// `api_keys.rotate`: a replacement key (its secret is in the output only); the old one works until
    /// `grace_expires_at`.
    pub async fn rotate(&self, input: RotateKeyInput) -> Result<RotateKeyOutput, Error> {
        self.client
            .invoke("api_keys.rotate", &input, &self.options)
            .await
    }

    /// `api_keys.revoke`: the key fails from the very next request.
    pub async fn revoke(&self, input: RevokeKeyInput) -> Result<KeyDetails, Error> {
        self.client
            .invoke("api_keys.revoke", &input, &self.options)
            .await
    }
}

impl Auth<'_> {
    /// `auth.whoami`: who the gateway takes the caller for.
    pub async fn whoami(&self) -> Result<WhoamiOutput, Error> {
        self.client
            .invoke("auth.whoami", &WhoamiInput {}, &self.options)
            .await
    }
}

impl Audit<'_> {
    /// `audit.list`: the organization's audit records, newest first, as they arrive.
    pub async fn list(&self, input: ListAuditInput) -> Result<ItemStream<AuditItem>, Error> {
        self.client
            .invoke_stream("audit.list", &input, &self.options)
            .await
    }
}

impl Workspaces<'_> {
    /// `workspaces.create`: a new workspace (an organization-wide, live-mode caller only).
    pub async fn create(&self, input: CreateWorkspaceInput) -> Result<WorkspaceDetails, Error> {
        self.client
            .invoke("workspaces.create", &input, &self.options)
            .await
    }

    /// `workspaces.list`: the workspaces the caller sees (a workspace key its own), oldest first, as they
    /// arrive.
    pub async fn list(
        &self,
        input: ListWorkspacesInput,
    ) -> Result<ItemStream<WorkspaceDetails>, Error> {
        self.client
            .invoke_stream("workspaces.list", &input, &self.options)
            .await
    }

    /// `workspaces.get`: one workspace.
    pub async fn get(&self, input: WorkspaceIdInput) -> Result<WorkspaceDetails, Error> {
        self.client
            .invoke("workspaces.get", &input, &self.options)
            .await
    }

    /// `workspaces.update`: changes the fields that are `Some` (`Some(None)` clears the description).
    pub async fn update(&self, input: UpdateWorkspaceInput) -> Result<WorkspaceDetails, Error> {
        self.client
            .invoke("workspaces.update", &input, &self.options)
            .await
    }

    /// `workspaces.delete`: removes a workspace with no active keys or service accounts, and its
    /// environments; answers the workspace as it was.
    pub async fn delete(&self, input: WorkspaceIdInput) -> Result<WorkspaceDetails, Error> {
        self.client
            .invoke("workspaces.delete", &input, &self.options)
            .await
    }
}

impl Environments<'_> {
    /// `environments.create`: a new environment, in the named workspace or the one the call works in.
    pub async fn create(&self, input: CreateEnvironmentInput) -> Result<EnvironmentDetails, Error> {
        self.client
            .invoke("environments.create", &input, &self.options)
            .await
    }

    /// `environments.list`: the environments the caller sees, oldest first, as they arrive.
    pub async fn list(
        &self,
        input: ListEnvironmentsInput,
    ) -> Result<ItemStream<EnvironmentDetails>, Error> {
        self.client
            .invoke_stream("environments.list", &input, &self.options)
            .await
    }

    /// `environments.delete`: removes an environment no active key is bound to; answers it as it was.
    pub async fn delete(&self, input: EnvironmentIdInput) -> Result<EnvironmentDetails, Error> {
        self.client
            .invoke("environments.delete", &input, &self.options)
            .await
    }
}

impl ServiceAccounts<'_> {
    /// `service_accounts.create`: a new service account; give its id to `api_keys.create` so that keys
    /// belong to it.
    pub async fn create(
        &self,
        input: CreateServiceAccountInput,
    ) -> Result<ServiceAccountDetails, Error> {
        self.client
            .invoke("service_accounts.create", &input, &self.options)
            .await
    }

    /// `service_accounts.list`: the service accounts the caller sees, oldest first, as they arrive.
    pub async fn list(
        &self,
        input: ListServiceAccountsInput,
    ) -> Result<ItemStream<ServiceAccountDetails>, Error> {
        self.client
            .invoke_stream("service_accounts.list", &input, &self.options)
            .await
    }

    /// `service_accounts.get`: one service account.
    pub async fn get(&self, input: ServiceAccountIdInput) -> Result<ServiceAccountDetails, Error> {
        self.client
            .invoke("service_accounts.get", &input, &self.options)
            .await
    }

    /// `service_accounts.update`: changes the fields that are `Some`; `disabled: Some(true)` makes the
    /// account's keys fail from the very next request.
    pub async fn update(
        &self,
        input: UpdateServiceAccountInput,
    ) -> Result<ServiceAccountDetails, Error> {
        self.client
            .invoke("service_accounts.update", &input, &self.options)
            .await
    }

    /// `service_accounts.delete`: removes a service account and revokes its keys in the same step.
    pub async fn delete(
        &self,
        input: ServiceAccountIdInput,
    ) -> Result<DeleteServiceAccountOutput, Error> {
        self.client
            .invoke("service_accounts.delete", &input, &self.options)
            .await
    }
}

impl Webhooks<'_> {
    /// `webhooks.create`: a new endpoint; its signing secret (`whsec_...`) is in the output and nowhere else,
    /// ever. Check deliveries with [`crate::webhooks_signature::verify`].
    pub async fn create(&self, input: CreateWebhookInput) -> Result<WebhookWithSecret, Error> {
        self.client
            .invoke("webhooks.create", &input, &self.options)
            .await
    }

    /// `webhooks.list`: the organization's endpoints of the caller's mode, oldest first, as they arrive.
    pub async fn list(
        &self,
        input: ListWebhooksInput,
    ) -> Result<ItemStream<WebhookDetails>, Error> {
        self.client
            .invoke_stream("webhooks.list", &input, &self.options)
            .await
    }

    /// `webhooks.get`: one endpoint (never its secret).
    pub async fn get(&self, input: WebhookIdInput) -> Result<WebhookDetails, Error> {
        self.client
            .invoke("webhooks.get", &input, &self.options)
            .await
    }

    /// `webhooks.update`: changes the fields that are `Some` (`description: Some(None)` clears it);
    /// `enabled: Some(false)` holds the endpoint's events, `Some(true)` delivers them again in order.
    pub async fn update(&self, input: UpdateWebhookInput) -> Result<WebhookDetails, Error> {
        self.client
            .invoke("webhooks.update", &input, &self.options)
            .await
    }

    /// `webhooks.delete`: removes an endpoint (its waiting deliveries fail); answers it as it was.
    pub async fn delete(&self, input: WebhookIdInput) -> Result<WebhookDetails, Error> {
        self.client
            .invoke("webhooks.delete", &input, &self.options)
            .await
    }

    /// `webhooks.rotate_secret`: a new signing secret, in the output only; it signs every delivery from now
    /// on, and the old one none.
    pub async fn rotate_secret(&self, input: WebhookIdInput) -> Result<WebhookWithSecret, Error> {
        self.client
            .invoke("webhooks.rotate_secret", &input, &self.options)
            .await
    }

    /// `webhooks.deliveries`: deliveries of the organization's endpoints, newest first (100 unless `limit`
    /// says otherwise), as they arrive.
    pub async fn deliveries(
        &self,
        input: ListDeliveriesInput,
    ) -> Result<ItemStream<DeliveryDetails>, Error> {
        self.client
            .invoke_stream("webhooks.deliveries", &input, &self.options)
            .await
    }

    /// `webhooks.redeliver`: sends a delivery again (same event, same `webhook-id`), delivered or failed
    /// alike; answers it pending.
    pub async fn redeliver(&self, input: RedeliverInput) -> Result<DeliveryDetails, Error> {
        self.client
            .invoke("webhooks.redeliver", &input, &self.options)
            .await
    }
}
