//! Signed webhooks: endpoints (`webhooks.*`), the Standard Webhooks [`signature`], secrets sealed under the
//! server secret, and the [`Dispatcher`] that delivers the outbox at least once, in order per endpoint.
//!
//! Events are written by the store in the transaction of the change that caused them (see
//! `opgate_store::WebhookStore`): a change that commits has its event, and an event never exists without its
//! change. Endpoints belong to an organization and a mode (a test key's events go to test endpoints), and are
//! managed by organization-wide callers only.
//!
//! The wire types ([`types`]) and [`signature`] need no storage; the rest sits behind the default feature
//! `server`.

pub mod signature;
pub mod types;

#[cfg(feature = "server")]
mod dispatcher;
#[cfg(feature = "server")]
pub mod guard;
#[cfg(feature = "server")]
mod ops;
#[cfg(feature = "server")]
mod seal;

#[cfg(feature = "server")]
pub use dispatcher::{DispatchConfig, Dispatcher, REFUSED_TARGET};
#[cfg(feature = "server")]
pub use seal::{Sealer, Unsealable};

#[cfg(feature = "server")]
pub use server::{Webhooks, SEALING_PURPOSE};

#[cfg(feature = "server")]
mod server {
    use std::sync::Arc;

    use opgate_core::{Context, Error, Registry, RegistryError, Timestamp};
    use opgate_store::{Delivery, DeliveryState, Owner, Webhook, WebhookStore};

    use crate::guard::Policy;
    use crate::ops;
    use crate::seal::Sealer;
    use crate::types::{
        AttemptDetails, DeliveryDetails, DeliveryStatus, EventType, WebhookDetails,
    };

    /// The purpose under which the key sealing webhook secrets is derived from the server secret.
    pub const SEALING_PURPOSE: &str = "opgate webhook secrets v1";

    /// The `webhooks.*` operations' shared state.
    pub struct Webhooks {
        pub(crate) store: Arc<dyn WebhookStore>,
        pub(crate) sealer: Sealer,
        pub(crate) policy: Policy,
    }

    impl Webhooks {
        /// The operations over `store`, sealing secrets with `sealer`, accepting URLs `policy` allows.
        pub fn new(store: Arc<dyn WebhookStore>, sealer: Sealer, policy: Policy) -> Arc<Self> {
            Arc::new(Webhooks {
                store,
                sealer,
                policy,
            })
        }

        /// Registers every `webhooks.*` operation.
        pub fn register(self: &Arc<Self>, registry: &mut Registry) -> Result<(), RegistryError> {
            registry
                .register(ops::Create(self.clone()))?
                .register_stream(ops::List(self.clone()))?
                .register(ops::Get(self.clone()))?
                .register(ops::Update(self.clone()))?
                .register(ops::Delete(self.clone()))?
                .register(ops::RotateSecret(self.clone()))?
                .register_stream(ops::Deliveries(self.clone()))?
                .register(ops::Redeliver(self.clone()))?;
            Ok(())
        }

        /// The addresses webhook URLs may have.
        pub fn policy(&self) -> Policy {
            self.policy
        }

        /// A new signing secret: the `whsec_…` text for the caller, and its key sealed for the store.
        pub(crate) fn new_secret(&self) -> (String, Vec<u8>) {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).expect("the OS random source failed");
            (
                crate::signature::encode_secret(&key),
                self.sealer.seal(&key),
            )
        }

        /// The URL if the policy allows it, else 400 naming why.
        pub(crate) fn check_url(&self, url: &str) -> Result<String, Error> {
            crate::guard::check_url(url, self.policy)
                .map(|u| u.to_string())
                .map_err(Error::invalid_argument)
        }
    }

    /// The wire names of `types`, each once, in the order given.
    pub(crate) fn type_names(types: &[EventType]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for t in types {
            if !names.iter().any(|n| n == t.as_str()) {
                names.push(t.as_str().to_owned());
            }
        }
        names
    }

    /// Whose endpoints a call sees: its organization's, of its mode. Endpoints are organization-wide: a
    /// workspace key, or a call confined to a workspace by `X-Workspace-ID`, is 403.
    pub(crate) fn owner(ctx: &Context) -> Result<Owner, Error> {
        if !ctx.principal.is_org_wide() || ctx.workspace.is_some() {
            return Err(Error::permission_denied(
                "webhook endpoints belong to the organization: use an organization-wide credential (an admin key \
                 or a session) without X-Workspace-ID",
            ));
        }
        Ok(Owner {
            org_id: ctx.principal.org.clone(),
            mode: ctx.mode(),
        })
    }

    /// The 404 for an endpoint the caller cannot see.
    pub(crate) fn not_found(id: &str) -> Error {
        Error::not_found(format!(
            "webhook_id: no webhook endpoint `{id}` in this organization"
        ))
    }

    impl From<Webhook> for WebhookDetails {
        fn from(w: Webhook) -> Self {
            WebhookDetails {
                id: w.id,
                org_id: w.org_id,
                mode: w.mode,
                url: w.url,
                description: w.description,
                event_types: w
                    .event_types
                    .iter()
                    .filter_map(|t| EventType::parse(t))
                    .collect(),
                enabled: w.disabled_at.is_none(),
                disabled_at: w.disabled_at.map(Timestamp),
                disabled_reason: w.disabled_reason,
                created_by: w.created_by,
                created_at: Timestamp(w.created_at),
                updated_at: Timestamp(w.updated_at),
            }
        }
    }

    impl From<Delivery> for DeliveryDetails {
        fn from(d: Delivery) -> Self {
            let status = match d.state {
                DeliveryState::Pending => DeliveryStatus::Pending,
                DeliveryState::Delivered => DeliveryStatus::Delivered,
                DeliveryState::Failed => DeliveryStatus::Failed,
            };
            DeliveryDetails {
                id: d.id,
                webhook_id: d.webhook_id,
                event_id: d.event_id,
                event_type: d.event_type,
                status,
                attempts: d.attempts,
                next_attempt_at: (d.state == DeliveryState::Pending)
                    .then_some(Timestamp(d.next_attempt_at)),
                last_status: d.last_status,
                last_error: d.last_error,
                last_latency_ms: d.last_latency_ms,
                created_at: Timestamp(d.created_at),
                finished_at: d.finished_at.map(Timestamp),
                history: d
                    .history
                    .into_iter()
                    .map(|a| AttemptDetails {
                        at: Timestamp(a.at),
                        status: a.status,
                        latency_ms: a.latency_ms,
                        error: a.error,
                    })
                    .collect(),
            }
        }
    }
}
