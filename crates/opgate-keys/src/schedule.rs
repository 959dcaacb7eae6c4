//! The key scheduler: starts scheduled rotations that are due (their new secret goes out through the webhook
//! outbox, sealed, and only a 2xx answer ends the rotation) and emits `api_key.expiring` notices. It runs on
//! the gateway's clock, so a key that became due while the server was down rotates on the first pass after
//! start.

use std::sync::Arc;
use std::time::Duration;

use opgate_core::Timestamp;
use opgate_store::{DueRotation, RotationStart, ScheduleStore, StoreError, SCHEDULED_GRACE_SECS};

use crate::{token, ApiKeys, KeySpec};

/// Keys looked at per pass.
const BATCH: usize = 100;

/// Starts due rotations and sends expiry notices.
pub struct Scheduler {
    keys: Arc<ApiKeys>,
    store: Arc<dyn ScheduleStore>,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Scheduled rotations started.
    pub rotations: usize,
    /// Expiry notices emitted.
    pub notices: usize,
}

impl ApiKeys {
    /// The scheduler of these keys over `store`.
    pub fn scheduler(self: &Arc<Self>, store: Arc<dyn ScheduleStore>) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            keys: Arc::clone(self),
            store,
        })
    }
}

impl Scheduler {
    /// Runs a pass every `every` until aborted (the first one at once).
    pub fn spawn(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let scheduler = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = scheduler.run_once().await {
                    tracing::warn!(error = %e, "the key scheduler's pass failed");
                }
            }
        })
    }

    /// One pass: every due rotation started, every due expiry notice emitted.
    pub async fn run_once(&self) -> Result<Pass, StoreError> {
        let now = self.keys.clock.now().unix();
        let mut pass = Pass::default();
        loop {
            let due = self.store.due_rotations(now, BATCH).await?;
            let n = due.len();
            let mut failed = 0;
            for rotation in due {
                let key = rotation.key.id.clone();
                // One key's failure is that key's: it is logged and the others go on.
                match self.start(rotation, now).await {
                    Ok(true) => pass.rotations += 1,
                    Ok(false) => {}
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(key = %key, error = %e, "a scheduled rotation could not start");
                    }
                }
            }
            // A batch of keys that all fail would be found again at once: the next pass tries them.
            if n < BATCH || failed == n {
                break;
            }
        }
        loop {
            let n = self.store.expiry_notices(now, BATCH).await?;
            pass.notices += n;
            if n < BATCH {
                break;
            }
        }
        Ok(pass)
    }

    /// Makes the replacement of `due.key` and queues the webhook that carries its secret.
    async fn start(&self, due: DueRotation, now: i64) -> Result<bool, StoreError> {
        let old = due.key;
        let Some(url) = old.rotation_webhook_url.clone() else {
            return Ok(false);
        };
        let secret = token::generate(old.mode);
        let spec = KeySpec {
            org_id: old.org_id.clone(),
            name: old.name.clone(),
            description: old.description.clone(),
            permissions: old.permissions.clone(),
            rate_limit: old.rate_limit,
            allowed_ips: old.allowed_ips.clone(),
            created_by: "scheduler".into(),
            // A schedule never extends a key's life: the replacement expires when the old key would have.
            expires_at: old.expires_at.map(Timestamp),
            mode: old.mode,
            key_type: old.key_type,
            workspace_id: old.workspace_id.clone(),
            environment_id: old.environment_id.clone(),
            service_account_id: old.service_account_id.clone(),
            rotation_interval_days: old.rotation_interval_days,
            rotation_webhook_url: old.rotation_webhook_url.clone(),
        };
        let new = self.keys.new_key(&secret, spec);
        let body = serde_json::json!({
            "type": "api_key.rotation",
            "timestamp": Timestamp(now).to_rfc3339(),
            "data": {
                "key": secret,
                "key_id": new.id,
                "key_prefix": new.key_prefix,
                "old_key_id": old.id,
                "org_id": old.org_id,
                "mode": old.mode,
                "expires_at": new.expires_at.map(|t| Timestamp(t).to_rfc3339()),
                "grace_period_seconds": SCHEDULED_GRACE_SECS,
            },
        });
        let start = RotationStart {
            new_key: new,
            url,
            signing_sealed: due.signing_sealed,
            payload_sealed: self.keys.sealer.seal(body.to_string().as_bytes()),
            at: now,
        };
        let started = self.store.start_rotation(&old.id, start).await?;
        if let Some(new) = &started {
            tracing::info!(key = %old.id, new_key = %new.id, "scheduled rotation started");
        }
        Ok(started.is_some())
    }
}
