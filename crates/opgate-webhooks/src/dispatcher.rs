//! The dispatcher: takes due deliveries from the outbox and POSTs them, signed, at least once and in order per
//! endpoint. A failed attempt is retried with exponential backoff and jitter (about 5 s up to a day); when the
//! last one fails the delivery fails for good and its endpoint is disabled (with a `webhook.disabled` event).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use opgate_core::Clock;
use opgate_store::{Attempt, AttemptNext, DueDelivery, WebhookStore};
use tokio::sync::Notify;

use crate::guard::{vetted_addresses, NameResolver, Policy};
use crate::seal::Sealer;
use crate::signature::sign;

/// Bytes of an answer's body kept (in `last_error`) when it is not 2xx.
const KEPT_ANSWER_BYTES: usize = 256;

/// How the dispatcher works.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// What outbound requests may reach.
    pub policy: Policy,
    /// The most one attempt may take, connecting included.
    pub attempt_timeout: Duration,
    /// How often the outbox is looked at when nothing woke the dispatcher (a commit with events does).
    pub poll_interval: Duration,
    /// The wait before each retry; after the last, the delivery fails. Each wait is jittered by ±20%.
    pub retry_delays: Vec<Duration>,
    /// Deliveries attempted at once (each to a different endpoint).
    pub max_in_flight: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        DispatchConfig {
            policy: Policy::default(),
            attempt_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            // 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 6 h, 8 h: about 22 hours in all.
            retry_delays: vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                minutes(2),
                minutes(10),
                minutes(30),
                minutes(60),
                minutes(120),
                minutes(240),
                minutes(360),
                minutes(480),
            ],
            max_in_flight: 16,
        }
    }
}

/// Delivers the outbox.
pub struct Dispatcher {
    store: Arc<dyn WebhookStore>,
    sealer: Sealer,
    clock: Arc<dyn Clock>,
    resolver: Arc<dyn NameResolver>,
    config: DispatchConfig,
    wake: Arc<Notify>,
}

/// A resolver for the HTTP client that resolves nothing: every address it may use was vetted and handed to
/// it beforehand, so a name it was not given is an error, never a lookup.
struct NoLookups;

impl reqwest::dns::Resolve for NoLookups {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_owned();
        Box::pin(async move { Err(format!("{name} was not vetted for this delivery").into()) })
    }
}

impl Dispatcher {
    /// A dispatcher over `store`, opening secrets with `sealer`, telling time by `clock`, resolving names with
    /// `resolver`. It wakes whenever the store commits events.
    pub fn new(
        store: Arc<dyn WebhookStore>,
        sealer: Sealer,
        clock: Arc<dyn Clock>,
        resolver: Arc<dyn NameResolver>,
        config: DispatchConfig,
    ) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let notify = Arc::clone(&wake);
        store.on_events(Arc::new(move || notify.notify_one()));
        Arc::new(Dispatcher {
            store,
            sealer,
            clock,
            resolver,
            config,
            wake,
        })
    }

    /// Runs until aborted, keeping up to `max_in_flight` attempts under way: a slot freed by one attempt is
    /// filled at once, so a slow endpoint holds one slot for its timeout, not the whole batch. Waits for the
    /// next due time, a commit with events, a finished attempt, or the poll interval.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let dispatcher = Arc::clone(self);
        tokio::spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            // What this dispatcher is attempting: never attempted twice at once here, even if its lease ran
            // out meanwhile (a clock that jumped). Looking for due deliveries and recording an attempt (which
            // ends its lease) both hold the set, so a delivery is never taken between its record and its
            // leaving the set (it would stay leased, and wait for the lease to end).
            let in_flight = Arc::new(tokio::sync::Mutex::new(std::collections::HashSet::new()));
            loop {
                let free = dispatcher
                    .config
                    .max_in_flight
                    .saturating_sub(running.len());
                let mut filled = false;
                if free > 0 {
                    let mut attempting = in_flight.lock().await;
                    match dispatcher.due(free).await {
                        Ok(due) => {
                            filled = due.len() == free;
                            for d in due {
                                let id = d.delivery.id.clone();
                                if !attempting.insert(id.clone()) {
                                    continue;
                                }
                                let (dispatcher, in_flight) =
                                    (Arc::clone(&dispatcher), Arc::clone(&in_flight));
                                running.spawn(async move {
                                    let attempt = dispatcher.attempt(&d).await;
                                    let mut attempting = in_flight.lock().await;
                                    dispatcher.record(&id, attempt).await;
                                    attempting.remove(&id);
                                });
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "reading the webhook outbox failed"),
                    }
                }
                if filled {
                    // Possibly more due: look again as soon as a slot frees.
                    if running.join_next().await.is_some() {
                        continue;
                    }
                }
                // What is due now but was not handed out waits for its organization's turn (a finished
                // attempt) or the poll: looking again at once would only spin.
                let wait = match dispatcher.store.next_due().await {
                    Ok(Some(at)) if at > dispatcher.clock.now().unix() => {
                        let secs = (at - dispatcher.clock.now().unix()) as u64;
                        Duration::from_secs(secs).min(dispatcher.config.poll_interval)
                    }
                    _ => dispatcher.config.poll_interval,
                };
                tokio::select! {
                    _ = dispatcher.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                }
            }
        })
    }

    /// Up to `free` deliveries to attempt now. A quarter of all slots is kept for organizations with nothing
    /// under way: however many organizations' endpoints hang, another's events still find a slot.
    async fn due(&self, free: usize) -> Result<Vec<DueDelivery>, opgate_store::StoreError> {
        let now = self.clock.now().unix();
        let reserve = self.config.max_in_flight / 4;
        let in_flight = self.config.max_in_flight.saturating_sub(free);
        let general = (self.config.max_in_flight - reserve).saturating_sub(in_flight);
        let general = general.min(free);
        let mut due = Vec::new();
        if general > 0 {
            due = self
                .store
                .due_deliveries(now, general, opgate_store::PER_ORG_DUE)
                .await?;
        }
        // Fewer than asked means every organization with nothing under way was served already: the reserve
        // is looked at only when the general slots ran out.
        let left = free - due.len();
        if left > 0 && due.len() == general {
            due.extend(self.store.due_deliveries(now, left, 1).await?);
        }
        Ok(due)
    }

    /// Attempts `d` and records the outcome.
    async fn deliver(&self, d: DueDelivery) {
        let attempt = self.attempt(&d).await;
        self.record(&d.delivery.id, attempt).await;
    }

    /// Records an attempt at delivery `id` (which ends its lease).
    async fn record(&self, id: &str, attempt: Attempt) {
        if let Err(e) = self.store.record_attempt(id, attempt).await {
            tracing::warn!(error = %e, delivery = %id, "recording a webhook attempt failed");
        }
    }

    /// Attempts every delivery due now (at most one per endpoint, its oldest); returns how many.
    pub async fn run_once(&self) -> Result<usize, opgate_store::StoreError> {
        let due = self.due(self.config.max_in_flight).await?;
        let n = due.len();
        futures_util::stream::iter(due)
            .for_each_concurrent(self.config.max_in_flight, |d| self.deliver(d))
            .await;
        Ok(n)
    }

    /// One attempt at `due`, and what follows it.
    async fn attempt(&self, due: &DueDelivery) -> Attempt {
        let at = self.clock.now().unix();
        let started = Instant::now();
        let outcome = self.send(due, at).await;
        let latency_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
        let (status, error) = match outcome {
            Ok((status, None)) => {
                tracing::info!(delivery = %due.delivery.id, event = %due.delivery.event_id, status, latency_ms, "webhook delivered");
                return Attempt {
                    at,
                    status: Some(status),
                    latency_ms,
                    error: None,
                    next: AttemptNext::Delivered,
                };
            }
            Ok((status, Some(why))) => (Some(status), why),
            Err(why) => (None, why),
        };
        let tried = due.delivery.attempts as usize;
        let next = match self.config.retry_delays.get(tried) {
            Some(delay) => AttemptNext::RetryAt(at + jittered(*delay).as_secs() as i64),
            None => AttemptNext::GiveUp,
        };
        tracing::warn!(delivery = %due.delivery.id, event = %due.delivery.event_id, ?status, error = %error, ?next, "webhook attempt failed");
        Attempt {
            at,
            status,
            latency_ms,
            error: Some(error),
            next,
        }
    }

    /// POSTs the event: the HTTP status and, when it is not 2xx, why; or why nothing was sent or answered.
    async fn send(&self, due: &DueDelivery, at: i64) -> Result<(u16, Option<String>), String> {
        let key = self
            .sealer
            .open(&due.secret_sealed)
            .map_err(|e| e.to_string())?;
        let url = reqwest::Url::parse(&due.url).map_err(|e| format!("url: {e}"))?;
        // The tenant sees one message whatever the cause: which internal names resolve, and to what, is the
        // operator's to know (the log has it).
        // Resolving counts against the attempt's time: a slow name server cannot hold a slot longer.
        let vetting = vetted_addresses(&url, self.config.policy, &self.resolver);
        let addrs = tokio::time::timeout(self.config.attempt_timeout, vetting)
            .await
            .unwrap_or_else(|_| Err("resolving the host timed out".to_owned()))
            .map_err(|why| {
                tracing::warn!(delivery = %due.delivery.id, reason = %why, "webhook target refused");
                REFUSED_TARGET.to_owned()
            })?;
        let client = self.client(&url, &addrs)?;
        // A rotation webhook's body holds the new secret: it is sealed in the outbox and opened only here.
        let body = match &due.payload_sealed {
            Some(sealed) => self.sealer.open(sealed).map_err(|e| e.to_string())?,
            None => due.payload.clone().into_bytes(),
        };
        let signature = sign(&key, &due.delivery.event_id, at, &body);
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &due.delivery.event_id)
            .header("webhook-timestamp", at.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| describe(e, self.config.attempt_timeout))?;
        let status = response.status();
        if status.is_success() {
            return Ok((status.as_u16(), None));
        }
        if due.payload_sealed.is_some() {
            // The answer to a body holding a secret may echo it: none of it is kept or logged.
            return Ok((status.as_u16(), Some(format!("HTTP {status}"))));
        }
        // Only the start of the answer is read and kept.
        let mut kept = Vec::new();
        let mut response = response;
        while let Ok(Some(chunk)) = response.chunk().await {
            kept.extend_from_slice(&chunk[..chunk.len().min(KEPT_ANSWER_BYTES - kept.len())]);
            if kept.len() >= KEPT_ANSWER_BYTES {
                break;
            }
        }
        let text: String = String::from_utf8_lossy(&kept)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let why = if status.is_redirection() {
            format!("HTTP {status} (redirects are not followed)")
        } else {
            format!("HTTP {status}: {}", text.trim())
        };
        Ok((status.as_u16(), Some(why)))
    }

    /// A client that connects only to `addrs` for `url`'s host, follows no redirect, and gives up after the
    /// attempt timeout.
    fn client(&self, url: &reqwest::Url, addrs: &[SocketAddr]) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.config.attempt_timeout)
            .connect_timeout(self.config.attempt_timeout.min(CONNECT_TIMEOUT))
            .user_agent(concat!("opgate-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(NoLookups))
            .no_proxy();
        if let Some(url::Host::Domain(name)) = url.host() {
            builder = builder.resolve_to_addrs(name, addrs);
        }
        builder
            .build()
            .map_err(|e| format!("building the HTTP client failed: {e}"))
    }

    /// Wakes the dispatcher now (after a redelivery, or in tests).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The most connecting may take, within the attempt timeout: an endpoint that does not even accept holds its
/// slot no longer than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a delivery to a host that does not resolve, or resolves to a refused address, records.
pub const REFUSED_TARGET: &str =
    "the host does not resolve, or resolves to an address webhooks may not reach \
     (loopback, private or otherwise special); nothing was sent";

/// Why a request got no answer, without the URL's query (it may carry a token).
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("timed out after {} s", timeout.as_secs_f64())
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        let mut why = e.without_url().to_string();
        why.truncate(KEPT_ANSWER_BYTES);
        why
    }
}

/// `delay` ±20%, so that retries of many deliveries do not all fall in the same second.
fn jittered(delay: Duration) -> Duration {
    let mut byte = [0u8; 2];
    getrandom::fill(&mut byte).expect("the OS random source failed");
    let unit = u16::from_le_bytes(byte) as f64 / u16::MAX as f64; // 0..=1
    delay.mul_f64(0.8 + 0.4 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(100));
            assert!(
                d >= Duration::from_secs(80) && d <= Duration::from_secs(120),
                "{d:?}"
            );
        }
    }
}
