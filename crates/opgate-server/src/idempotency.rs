//! Idempotent retries, as one wrapper around the handler: [`begin`] checks the `Idempotency-Key` header and
//! claims it (a retry while the first request still runs is a 409), [`Idempotent::lookup`] replays a stored
//! response for the same body (or refuses another body with 422), and [`Idempotent::response`] is the record
//! that keeps the answer for [`IDEMPOTENCY_RETENTION_SECS`], committed with the call's change. Which operations take part is the side effect's decision
//! ([`SideEffect::is_idempotent`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use opgate_core::{
    Clock, Code, Entry, Error, IdempotentResponse, Journal, Principal, SideEffect, StoredResponse,
    IDEMPOTENCY_RETENTION_SECS, MAX_IDEMPOTENCY_KEY_LEN,
};
use sha2::{Digest, Sha256};

/// Keys whose first request is still running, per principal.
#[derive(Default)]
pub(crate) struct InFlight {
    keys: Mutex<HashSet<String>>,
}

/// Holds a key in flight until dropped.
struct Claim<'a> {
    inflight: &'a InFlight,
    slot: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.inflight
            .keys
            .lock()
            .expect("idempotency lock")
            .remove(&self.slot);
    }
}

impl InFlight {
    fn claim(&self, slot: String) -> Option<Claim<'_>> {
        let mut keys = self.keys.lock().expect("idempotency lock");
        if !keys.insert(slot.clone()) {
            return None;
        }
        Some(Claim {
            inflight: self,
            slot,
        })
    }
}

/// A request under an `Idempotency-Key`, claimed until dropped.
pub(crate) struct Idempotent<'a> {
    journal: &'a Arc<dyn Journal>,
    clock: &'a Arc<dyn Clock>,
    owner: String,
    key: String,
    hash: [u8; 32],
    _claim: Claim<'a>,
}

/// A stored response to send again.
pub(crate) struct Replay {
    pub status: u16,
    pub body: Bytes,
}

/// Checks and claims the request's `Idempotency-Key`. `Ok(None)` when there is none, the operation only
/// reads, or no store is configured; 400 for a malformed key or an operation returning secrets; 409 when a
/// request with the same key is still running.
pub(crate) fn begin<'a>(
    journal: Option<&'a Arc<dyn Journal>>,
    inflight: &'a InFlight,
    clock: &'a Arc<dyn Clock>,
    entry: &Entry,
    header: Option<&http::HeaderValue>,
    principal: &Principal,
) -> Result<Option<Idempotent<'a>>, Error> {
    let (Some(journal), Some(header)) = (journal, header) else {
        return Ok(None);
    };
    let side_effect = entry.meta.side_effect;
    if side_effect.returns_secrets() {
        return Err(Error::invalid_argument(format!(
            "Idempotency-Key: `{}` returns secret material, which is never stored for replay; retry without \
             the header (a retried create makes a second key: revoke the one you did not receive)",
            entry.meta.id
        )));
    }
    if !side_effect.is_idempotent() {
        debug_assert_eq!(side_effect, SideEffect::Read);
        return Ok(None);
    }
    let key = header
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            Error::invalid_argument(format!(
                "Idempotency-Key: must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ))
        })?;
    let owner = principal.unique_key();
    // Claimed before the body is read: a retry arriving while the first request still uploads or runs gets
    // 409 rather than running twice.
    let claim = inflight
        .claim(format!("{owner}\n{key}"))
        .ok_or_else(|| {
            Error::conflict(
                "Idempotency-Key: a request with this key is still in progress; retry after it completes",
            )
        })?;
    Ok(Some(Idempotent {
        journal,
        clock,
        owner,
        key: key.to_owned(),
        hash: [0; 32],
        _claim: claim,
    }))
}

impl Idempotent<'_> {
    /// The stored response for this key if the same operation and body made it; 422 for another body.
    pub(crate) async fn lookup(
        &mut self,
        entry: &Entry,
        workspace: Option<&str>,
        body: &[u8],
    ) -> Result<Option<Replay>, Error> {
        let mut h = Sha256::new();
        h.update(entry.meta.id.as_bytes());
        h.update([0]);
        // The workspace is part of the request: a retry naming another one is another request (hashed only
        // when there is one, so records from before workspaces existed still match).
        if let Some(workspace) = workspace {
            h.update(b"workspace\0");
            h.update(workspace.as_bytes());
            h.update([0]);
        }
        h.update(body);
        self.hash = h.finalize().into();
        let not_before = self.clock.now().unix() - IDEMPOTENCY_RETENTION_SECS;
        match self
            .journal
            .stored_response(&self.owner, &self.key, not_before)
            .await?
        {
            None => Ok(None),
            Some(stored) if stored.request_hash == self.hash => Ok(Some(Replay {
                status: stored.status,
                body: Bytes::from(stored.body),
            })),
            Some(_) => Err(Error::new(
                Code::IdempotencyMismatch,
                "Idempotency-Key: this key was used with a different request body or operation",
            )),
        }
    }

    /// The record keeping a definitive answer (2xx, or a 4xx other than 409 and 429) for replay; `None` for
    /// failures worth retrying, which are not kept.
    pub(crate) fn response(&self, status: u16, body: &[u8]) -> Option<IdempotentResponse> {
        if status >= 500 || status == 429 || status == 409 {
            return None;
        }
        Some(IdempotentResponse {
            owner: self.owner.clone(),
            key: self.key.clone(),
            response: StoredResponse {
                request_hash: self.hash,
                status,
                body: body.to_vec(),
                created_at: self.clock.now().unix(),
            },
        })
    }
}
