//! Idempotent retries for `write` and `destructive` operations: the first response to an `Idempotency-Key` is
//! stored durably for 24 hours per principal and replayed for a retry with the same body; a different body is a
//! 422, and a retry while the first request still runs is a 409. `export` operations refuse the header: their
//! responses carry secrets, which are never stored.

use std::collections::HashSet;
use std::sync::Mutex;

use opgate_core::{Code, Entry, Error, Principal, SideEffect};
use sha2::{Digest, Sha256};

/// How long a stored response is replayed.
pub const RETENTION_SECS: i64 = 24 * 60 * 60;
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// Keys whose first request is still running, per principal.
#[derive(Default)]
pub struct InFlight {
    keys: Mutex<HashSet<String>>,
}

/// Holds a key in flight until dropped.
pub struct Claim<'a> {
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
    /// Claims `slot`, or `None` when another request holds it.
    pub fn claim(&self, slot: String) -> Option<Claim<'_>> {
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

/// The idempotency key of a request, if the operation honours one. `Err` for a malformed key or an `export`
/// operation; `Ok(None)` when the header is absent or the operation only reads.
pub fn key_for(header: Option<&http::HeaderValue>, entry: &Entry) -> Result<Option<String>, Error> {
    let Some(header) = header else {
        return Ok(None);
    };
    match entry.meta.side_effect {
        SideEffect::Read => return Ok(None),
        SideEffect::Export => {
            return Err(Error::invalid_argument(format!(
                "Idempotency-Key: `{}` returns secret material, which is never stored for replay; retry without \
                 the header (a retried create makes a second key: revoke the one you did not receive)",
                entry.meta.id
            )))
        }
        SideEffect::Write | SideEffect::Destructive => {}
    }
    let key = header
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            Error::invalid_argument(format!(
                "Idempotency-Key: must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

/// Who a key belongs to: keys of different principals never collide, including session subjects of the same
/// name in different organizations.
pub fn owner(principal: &Principal) -> String {
    format!(
        "{}:{}:{}",
        principal.kind.as_str(),
        principal.org,
        principal.id
    )
}

/// What a stored response must match: the operation and the exact body.
pub fn request_hash(entry: &Entry, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(entry.meta.id.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

/// The 409 for a key whose first request is still running.
pub fn in_progress() -> Error {
    Error::conflict(
        "Idempotency-Key: a request with this key is still in progress; retry after it completes",
    )
}

/// The 422 for a key reused with another body.
pub fn mismatch() -> Error {
    Error::new(
        Code::IdempotencyMismatch,
        "Idempotency-Key: this key was used with a different request body or operation",
    )
}

/// Whether a response is kept for replay: definitive answers only, not failures worth retrying.
pub fn keep(status: u16) -> bool {
    status < 500 && status != 429 && status != 409
}
