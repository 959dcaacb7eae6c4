//! Typed methods, one per operation, grouped by resource. Each is a one-liner over [`Client::invoke`] or
//! [`Client::invoke_stream`] with the server's own input and output types.

use crate::types::{
    AuditItem, CreateKeyInput, CreateKeyOutput, GetKeyInput, KeyDetails, ListAuditInput,
    ListKeysInput, RevokeKeyInput, RotateKeyInput, RotateKeyOutput, UpdateKeyInput, WhoamiInput,
    WhoamiOutput,
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
