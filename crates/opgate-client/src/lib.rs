//! A typed async client for the opgate gateway.
//!
//! The input and output types are the server's own (re-exported in [`types`]), so a field added to an
//! operation reaches the client with no second definition. Streaming operations answer an [`ItemStream`]
//! that decodes NDJSON a line at a time as it arrives (memory stays flat over any number of items) and
//! surfaces the error line that ends a failed stream as an [`Error`]. Operations this client has no method
//! for are one [`Client::call`] away. [`Client::with_workspace`] makes every call work in one workspace
//! (`X-Workspace-ID`), as an organization-wide key or session may. A webhook receiver checks the signature of
//! each delivery with [`webhooks_signature::verify`].
//!
//! ```no_run
//! use futures_util::TryStreamExt;
//! use opgate_client::types::{CreateKeyInput, ListKeysInput};
//! use opgate_client::Client;
//!
//! # async fn demo() -> Result<(), opgate_client::Error> {
//! let client = Client::new("http://127.0.0.1:8080")?.with_token("opg_...");
//! let created = client
//!     .api_keys()
//!     .create(CreateKeyInput {
//!         permissions: Some(vec!["api_keys:read".into()]),
//!         ..CreateKeyInput::new("ci-reader")
//!     })
//!     .await?;
//! println!("{} {}", created.key_details.id, created.key);
//!
//! let mut keys = client.api_keys().list(ListKeysInput::default()).await?;
//! while let Some(key) = keys.try_next().await? {
//!     println!("{} {}", key.id, key.name);
//! }
//!
//! // Any operation, known to this client or not:
//! let reply = client.call("auth.whoami", serde_json::json!({})).await?;
//! # Ok(()) }
//! ```

mod error;
mod ndjson;
mod resources;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::Error;
pub use ndjson::{ItemStream, Lines, MAX_LINE_BYTES};
pub use opgate_core::{Code, Timestamp};
pub use resources::{
    ApiKeys, Audit, Auth, Environments, ServiceAccounts, Webhooks, Workspaces, TYPED_OPERATIONS,
};

/// Checking a webhook delivery as a receiver: the Standard Webhooks signature the gateway sends
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`) under the `whsec_...` secret that
/// `webhooks.create` and `webhooks.rotate_secret` answer. The server's own code, so it checks exactly what
/// the gateway signs.
///
/// ```
/// use opgate_client::webhooks_signature::{
///     encode_secret, secret_bytes, sign, verify, SignatureError,
/// };
///
/// let secret = encode_secret(b"an example key of thirty-two byt");
/// let body = br#"{"type":"api_key.created","data":{}}"#;
/// let header = sign(&secret_bytes(&secret).unwrap(), "msg_1", 1_800_000_000, body);
/// // As a receiver: the headers, the raw body, and the current unix time.
/// assert_eq!(verify(&secret, "msg_1", "1800000000", &header, body, 1_800_000_010), Ok(()));
/// assert_eq!(
///     verify(&secret, "msg_1", "1800000000", &header, b"{}", 1_800_000_010),
///     Err(SignatureError::NoMatch)
/// );
/// ```
pub use opgate_webhooks::signature as webhooks_signature;

/// The wire types of the operations this client knows: the server's own types.
pub mod types {
    pub use opgate_audit::{AuditItem, ListAuditInput};
    pub use opgate_auth::{CredentialKind, WhoamiInput, WhoamiOutput};
    pub use opgate_keys::types::{
        CreateKeyInput, CreateKeyOutput, GetKeyInput, KeyDetails, KeyType, ListKeysInput, Mode,
        RevokeKeyInput, RotateKeyInput, RotateKeyOutput, Status, UpdateKeyInput,
    };
    pub use opgate_tenancy::types::{
        CreateEnvironmentInput, CreateServiceAccountInput, CreateWorkspaceInput,
        DeleteServiceAccountOutput, EnvironmentDetails, EnvironmentIdInput, ListEnvironmentsInput,
        ListServiceAccountsInput, ListWorkspacesInput, ServiceAccountDetails,
        ServiceAccountIdInput, UpdateServiceAccountInput, UpdateWorkspaceInput, WorkspaceDetails,
        WorkspaceIdInput,
    };
    pub use opgate_webhooks::types::{
        CreateWebhookInput, DeliveryDetails, DeliveryStatus, EventType, ListDeliveriesInput,
        ListWebhooksInput, RedeliverInput, UpdateWebhookInput, WebhookDetails, WebhookIdInput,
        WebhookWithSecret,
    };
}

/// Where a gateway listens unless told otherwise (`opgate serve`'s default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The header that selects the workspace a call works in (`X-Workspace-ID`).
pub const WORKSPACE_HEADER: &str = "X-Workspace-ID";

/// The `Content-Type` of streamed responses.
const NDJSON: &str = "application/x-ndjson";

/// A connection to one gateway, with one bearer token and optionally one workspace. Cheap to clone; clones
/// share the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    workspace: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("workspace", &self.workspace)
            .finish()
    }
}

/// Per-call request headers beyond the token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// `Idempotency-Key`: a retry of a `write` or `destructive` call with the same key and body gets the
    /// first response instead of running again (`export` calls refuse it).
    pub idempotency_key: Option<String>,
    /// `X-Request-Id` to send (1–128 of `A-Za-z0-9._:-`); the gateway generates one otherwise.
    pub request_id: Option<String>,
}

/// The answer of an operation called by id ([`Client::call`]).
pub enum Reply {
    /// A JSON object.
    Json(serde_json::Value),
    /// The items of a streaming operation.
    Stream(ItemStream<serde_json::Value>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Json(v) => f.debug_tuple("Json").field(v).finish(),
            Reply::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// The undecoded answer of an operation ([`Client::call_raw`]): the body exactly as the gateway sent it.
pub enum RawReply {
    /// A JSON object.
    Json {
        /// The body.
        body: Bytes,
        /// The request id of the response (`X-Request-Id`).
        request_id: Option<String>,
    },
    /// NDJSON lines, error line already surfaced as an error.
    Stream(Lines),
}

impl Client {
    /// A client for the gateway at `base_url` (e.g. `http://127.0.0.1:8080`), without a token yet.
    pub fn new(base_url: &str) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("opgate-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("cannot set up the HTTP client: {e}")))?;
        Self::with_http(base_url, http)
    }

    /// A client that also trusts the PEM certificate(s) in `ca_pem` for `https://` gateways (a private CA or a
    /// self-signed gateway certificate); the public web roots stay trusted.
    pub fn with_ca_certificate(base_url: &str, ca_pem: &[u8]) -> Result<Client, Error> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("opgate-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10));
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem)
            .map_err(|e| Error::Config(format!("the CA certificate is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Config(
                "the CA certificate file holds no certificate".into(),
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot set up the HTTP client: {e}")))?;
        Self::with_http(base_url, http)
    }

    /// A client over an HTTP client of your own (timeouts, proxies, TLS).
    pub fn with_http(base_url: &str, http: reqwest::Client) -> Result<Client, Error> {
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| Error::Config(format!("`{base_url}` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Error::Config(format!(
                "`{base_url}` is not an http:// or https:// URL"
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::Config(format!(
                "`{base_url}` has a query or fragment; give the gateway's base URL"
            )));
        }
        Ok(Client {
            http,
            base: url.as_str().trim_end_matches('/').to_owned(),
            token: None,
            workspace: None,
        })
    }

    /// A client configured from the environment, as the `opgate` CLI is: `OPGATE_URL` (default
    /// [`DEFAULT_URL`]), `OPGATE_TOKEN` and `OPGATE_WORKSPACE`.
    pub fn from_env() -> Result<Client, Error> {
        let url = std::env::var("OPGATE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let mut client = Client::new(&url)?;
        if let Ok(token) = std::env::var("OPGATE_TOKEN") {
            if !token.is_empty() {
                client = client.with_token(token);
            }
        }
        if let Ok(workspace) = std::env::var("OPGATE_WORKSPACE") {
            if !workspace.is_empty() {
                client = client.with_workspace(workspace);
            }
        }
        Ok(client)
    }

    /// The same client, sending `Authorization: Bearer <token>` (an API key or a session token).
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    /// The same client, sending `X-Workspace-ID: <workspace_id>` with every call: an organization-wide
    /// credential (an admin key or a session) then works in that workspace, as a workspace key works in its
    /// own. A workspace key naming another workspace is refused (403).
    pub fn with_workspace(mut self, workspace_id: impl Into<String>) -> Client {
        self.workspace = Some(workspace_id.into());
        self
    }

    /// The same client, sending no `X-Workspace-ID`: the credential's own workspace, if any, applies.
    pub fn without_workspace(mut self) -> Client {
        self.workspace = None;
        self
    }

    /// The workspace every call names with `X-Workspace-ID`, if one was set.
    pub fn workspace_id(&self) -> Option<&str> {
        self.workspace.as_deref()
    }

    /// The gateway's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The `api_keys.*` operations.
    pub fn api_keys(&self) -> ApiKeys<'_> {
        ApiKeys::new(self)
    }

    /// The `auth.*` operations.
    pub fn auth(&self) -> Auth<'_> {
        Auth::new(self)
    }

    /// The `audit.*` operations.
    pub fn audit(&self) -> Audit<'_> {
        Audit::new(self)
    }

    /// The `workspaces.*` operations.
    pub fn workspaces(&self) -> Workspaces<'_> {
        Workspaces::new(self)
    }

    /// The `environments.*` operations.
    pub fn environments(&self) -> Environments<'_> {
        Environments::new(self)
    }

    /// The `service_accounts.*` operations.
    pub fn service_accounts(&self) -> ServiceAccounts<'_> {
        ServiceAccounts::new(self)
    }

    /// The `webhooks.*` operations.
    pub fn webhooks(&self) -> Webhooks<'_> {
        Webhooks::new(self)
    }

    /// Calls any operation by id with a JSON object as input: a JSON object back, or the items of a stream.
    /// Whatever operations the gateway has, this reaches them.
    pub async fn call(&self, operation: &str, input: serde_json::Value) -> Result<Reply, Error> {
        if !input.is_object() {
            return Err(Error::Config("the input must be a JSON object".into()));
        }
        match self
            .call_raw(operation, encode(&input)?, &CallOptions::default())
            .await?
        {
            RawReply::Stream(lines) => Ok(Reply::Stream(lines.items())),
            RawReply::Json { body, request_id } => Ok(Reply::Json(decode(&body, 200, request_id)?)),
        }
    }

    /// Calls any operation with `body` (JSON object text, sent as is) and returns the answer undecoded.
    pub async fn call_raw(
        &self,
        operation: &str,
        body: impl Into<Bytes>,
        options: &CallOptions,
    ) -> Result<RawReply, Error> {
        let url = self.op_url(operation)?;
        let mut request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.into());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(workspace) = &self.workspace {
            request = request.header(WORKSPACE_HEADER, workspace);
        }
        if let Some(key) = &options.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(id) = &options.request_id {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_builder() {
                Error::Config(format!(
                    "cannot build the request (check the token and options): {e}"
                ))
            } else {
                Error::connection(&format!("cannot reach {}", self.base), e)
            }
        })?;
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !response.status().is_success() {
            let body = read_body(response).await?;
            return Err(Error::from_response(status, &body, request_id));
        }
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with(NDJSON));
        if streamed {
            let body = response
                .bytes_stream()
                .map(|chunk| chunk.map_err(|e| Error::connection("the stream broke off", e)));
            Ok(RawReply::Stream(Lines::new(
                Box::pin(body),
                status,
                request_id,
            )))
        } else {
            let body = read_body(response).await?;
            Ok(RawReply::Json { body, request_id })
        }
    }

    /// Calls an operation answering one JSON object, with typed input and output.
    pub async fn invoke<I, O>(
        &self,
        operation: &str,
        input: &I,
        options: &CallOptions,
    ) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        match self.call_raw(operation, encode(input)?, options).await? {
            RawReply::Json { body, request_id } => decode(&body, 200, request_id),
            RawReply::Stream(lines) => Err(Error::Protocol {
                message: format!("`{operation}` answered a stream where one object was expected"),
                status: 200,
                request_id: lines.request_id().map(str::to_owned),
            }),
        }
    }

    /// Calls a streaming operation, with typed input and items.
    pub async fn invoke_stream<I, T>(
        &self,
        operation: &str,
        input: &I,
        options: &CallOptions,
    ) -> Result<ItemStream<T>, Error>
    where
        I: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        match self.call_raw(operation, encode(input)?, options).await? {
            RawReply::Stream(lines) => Ok(lines.items()),
            RawReply::Json { request_id, .. } => Err(Error::Protocol {
                message: format!("`{operation}` answered one object where a stream was expected"),
                status: 200,
                request_id,
            }),
        }
    }

    fn op_url(&self, operation: &str) -> Result<String, Error> {
        let sane = !operation.is_empty()
            && operation
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !sane {
            return Err(Error::Config(format!(
                "`{operation}` is not an operation id (`<resource>.<action>`)"
            )));
        }
        Ok(format!("{}/v1/op/{operation}", self.base))
    }
}

async fn read_body(response: reqwest::Response) -> Result<Bytes, Error> {
    response
        .bytes()
        .await
        .map_err(|e| Error::connection("the response broke off", e))
}

fn encode<I: Serialize + ?Sized>(input: &I) -> Result<Vec<u8>, Error> {
    let body = serde_json::to_vec(input)
        .map_err(|e| Error::Config(format!("the input does not serialize: {e}")))?;
    if body.first() != Some(&b'{') {
        return Err(Error::Config(
            "the input must serialize as a JSON object".into(),
        ));
    }
    Ok(body)
}

fn decode<O: DeserializeOwned>(
    body: &[u8],
    status: u16,
    request_id: Option<String>,
) -> Result<O, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Protocol {
        message: format!("the response is not the operation's output: {e}"),
        status,
        request_id,
    })
}

#[cfg(test)]
mod tests;
