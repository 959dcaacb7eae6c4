//! Per-principal rate limits with GCRA (the generic cell rate algorithm): a limit of N requests per minute
//! allows a burst of N, then one request every 60/N seconds — smooth, with no window edges to game. State is
//! one "theoretical arrival time" per principal, in sharded maps; entries whose time has passed carry no
//! information and are dropped when a shard grows, so memory stays bounded by the keys active in the last minute.

use std::collections::HashMap;
use std::hash::BuildHasher;

/// Keys are principals and organizations: foldhash with a random seed, cheaper per request than SipHash.
type RandomState = foldhash::fast::RandomState;
use std::sync::Mutex;

use std::sync::Arc;

use opgate_core::{Error, Principal, RateCells};

const SHARDS: usize = 32;
/// A shard is swept of idle entries when it reaches this many.
const SWEEP_AT: usize = 1_024;

/// The limiter's verdict for one request of a limited principal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Requests per minute allowed (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests still allowed right now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the full burst is available again (`RateLimit-Reset`).
    pub reset_secs: u64,
    /// Seconds until the next request may succeed (`Retry-After`), when refused.
    pub retry_after_secs: Option<u64>,
}

/// The rate limiter shared by every connection.
pub struct RateLimiter {
    shards: Vec<Mutex<HashMap<String, f64, RandomState>>>,
    hasher: RandomState,
    default_limit: Option<u32>,
    org_limit: Option<u32>,
    fleet: Option<Fleet>,
}

/// What an instance of a fleet does when the shared cells cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenShareDown {
    /// Limit on its own, at `1 / fleet_size` of each limit (the fleet then admits about the limit, if traffic
    /// is spread evenly and the size is right).
    Open {
        /// The instances of the fleet (1: each applies the whole limit).
        fleet_size: u32,
    },
    /// Refuse limited principals' requests (503) until the cells answer again.
    Closed,
}

/// Limits shared by a fleet: requests are taken from the shared cells a lease at a time and spent locally.
struct Fleet {
    cells: Arc<dyn RateCells>,
    leases: Vec<Mutex<HashMap<String, Lease, RandomState>>>,
    when_down: WhenShareDown,
}

/// Requests taken from a shared cell and not yet spent here.
struct Lease {
    limit: u32,
    tokens: u32,
    until: std::time::Instant,
    /// What the shared allowance had left, and when it is whole again, when the lease was taken.
    shared_left: u32,
    full_at_us: i64,
}

/// How long leased requests may be spent before they lapse: what a lapsed lease leaves unspent is the only
/// way a fleet admits fewer than a limit.
const LEASE_LIFE: std::time::Duration = std::time::Duration::from_secs(2);

/// Requests one lease takes: 2% of the limit (at least 1, at most 100), so that the requests leased but not
/// spent on other instances are a small part of a limit, while a busy key costs a database round trip only
/// every few dozen requests.
fn lease_size(limit: u32) -> u32 {
    (limit / 50).clamp(1, 100)
}

impl RateLimiter {
    /// A limiter applying each principal's own limit, else `default_limit` (none: unlimited).
    pub fn new(default_limit: Option<u32>) -> Self {
        Self::with_org_limit(default_limit, None)
    }

    /// A limiter that also holds every organization, all its keys and sessions together, to `org_limit`
    /// requests per minute: keys can mint keys, so only a limit on the organization bounds a tenant.
    pub fn with_org_limit(default_limit: Option<u32>, org_limit: Option<u32>) -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::default(),
            default_limit,
            org_limit: org_limit.filter(|&l| l > 0),
            fleet: None,
        }
    }

    /// Shares every limit with the other instances of a fleet through `cells`; `when_down` says what happens
    /// while they cannot be reached.
    pub fn shared(mut self, cells: Arc<dyn RateCells>, when_down: WhenShareDown) -> Self {
        self.fleet = Some(Fleet {
            cells,
            leases: (0..SHARDS).map(|_| Mutex::default()).collect(),
            when_down,
        });
        self
    }

    /// Counts one request of `principal` (then of its organization) against the fleet's shared limits, or
    /// this instance's own without a fleet, at `clock`'s time (monotonic locally, wall-clock microseconds in a
    /// fleet). `Err` only when the shared cells cannot be reached and the limiter is set to fail closed.
    pub async fn check_all(
        &self,
        principal: &Principal,
        clock: &dyn opgate_core::Clock,
    ) -> Result<(Option<Decision>, Option<Decision>), Error> {
        let now = clock.monotonic();
        let Some(fleet) = &self.fleet else {
            // A request its principal's limit refuses is not also counted against its organization.
            let own = self.check(principal, now);
            if own.is_some_and(|d| !d.allowed) {
                return Ok((own, None));
            }
            return Ok((own, self.check_org(principal, now)));
        };
        let now_us = clock.now_micros();
        let own = match principal
            .rate_limit
            .or(self.default_limit)
            .filter(|&l| l > 0)
        {
            Some(limit) => Some(
                self.shared_check(fleet, principal.unique_key(), limit, now, now_us)
                    .await?,
            ),
            None => None,
        };
        if own.is_some_and(|d| !d.allowed) {
            return Ok((own, None));
        }
        let org = match self.org_limit {
            Some(limit) => {
                let key = format!("org:{}:{}", principal.org.len(), principal.org);
                Some(self.shared_check(fleet, key, limit, now, now_us).await?)
            }
            None => None,
        };
        Ok((own, org))
    }

    async fn shared_check(
        &self,
        fleet: &Fleet,
        key: String,
        limit: u32,
        now: std::time::Duration,
        now_us: i64,
    ) -> Result<Decision, Error> {
        let shard = &fleet.leases[self.hasher.hash_one(&key) as usize % SHARDS];
        {
            let mut leases = shard.lock().expect("lease shard lock");
            if let Some(lease) = leases.get_mut(&key) {
                if lease.limit == limit
                    && lease.tokens > 0
                    && std::time::Instant::now() < lease.until
                {
                    lease.tokens -= 1;
                    return Ok(spent(
                        limit,
                        lease.tokens + lease.shared_left,
                        lease.full_at_us - now_us,
                    ));
                }
            }
        }
        match fleet
            .cells
            .take(&key, limit, lease_size(limit), now_us)
            .await
        {
            Ok(taken) if taken.granted > 0 => {
                let mut leases = shard.lock().expect("lease shard lock");
                if leases.len() >= SWEEP_AT && !leases.contains_key(&key) {
                    let now = std::time::Instant::now();
                    leases.retain(|_, l| l.until > now);
                }
                leases.insert(
                    key,
                    Lease {
                        limit,
                        tokens: taken.granted - 1,
                        until: std::time::Instant::now() + LEASE_LIFE,
                        shared_left: taken.remaining,
                        full_at_us: taken.full_at_us,
                    },
                );
                Ok(spent(
                    limit,
                    taken.granted - 1 + taken.remaining,
                    taken.full_at_us - now_us,
                ))
            }
            Ok(taken) => {
                let wait = (taken.next_free_us - now_us).max(0) as u64;
                Ok(Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_secs: micros_to_secs(taken.full_at_us - now_us),
                    retry_after_secs: Some(wait.div_ceil(1_000_000).max(1)),
                })
            }
            Err(e) => match fleet.when_down {
                WhenShareDown::Open { fleet_size } => {
                    let share = (limit / fleet_size.max(1)).max(1);
                    let decision = self.check_at(key, share, now.as_secs_f64());
                    Ok(Decision { limit, ..decision })
                }
                WhenShareDown::Closed => Err(Error::unavailable(
                    "the fleet's rate limits cannot be read; retry shortly",
                )
                .with_reason("rate_limits_unavailable")
                .with_cause(e)),
            },
        }
    }

    /// Counts one request of `principal`'s organization at `now`; `None` without an organization limit.
    pub fn check_org(&self, principal: &Principal, now: std::time::Duration) -> Option<Decision> {
        let limit = self.org_limit?;
        let key = format!("org:{}:{}", principal.org.len(), principal.org);
        Some(self.check_at(key, limit, now.as_secs_f64()))
    }

    /// Counts one request of `principal` at `now` (monotonic time); `None` when the principal is not limited.
    pub fn check(&self, principal: &Principal, now: std::time::Duration) -> Option<Decision> {
        let limit = principal
            .rate_limit
            .or(self.default_limit)
            .filter(|&l| l > 0)?;
        let now = now.as_secs_f64();
        // Kind and organization are part of the key: session subjects are only unique within one.
        Some(self.check_at(principal.unique_key(), limit, now))
    }

    fn check_at(&self, key: String, limit: u32, now: f64) -> Decision {
        let interval = 60.0 / f64::from(limit);
        let tolerance = interval * f64::from(limit - 1);
        let shard = &self.shards[self.hasher.hash_one(&key) as usize % SHARDS];
        let mut tats = shard.lock().expect("rate limit shard lock");
        let tat = tats.get(&key).copied().unwrap_or(now).max(now);
        if now < tat - tolerance {
            // Refused: nothing is recorded, so a client hammering a spent limit does not push it further out.
            return Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset_secs: (tat - now).ceil() as u64,
                retry_after_secs: Some(((tat - tolerance - now).ceil() as u64).max(1)),
            };
        }
        let new_tat = tat + interval;
        if tats.len() >= SWEEP_AT && !tats.contains_key(&key) {
            tats.retain(|_, t| *t > now);
        }
        tats.insert(key, new_tat);
        let remaining = ((now + tolerance + interval - new_tat) / interval + 1e-9)
            .floor()
            .max(0.0) as u32;
        Decision {
            allowed: true,
            limit,
            remaining,
            reset_secs: (new_tat - now).ceil() as u64,
            retry_after_secs: None,
        }
    }

    /// Principals currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("rate limit shard lock").len())
            .sum()
    }
}

/// An allowed request of a fleet: `remaining` is this instance's lease plus what the shared allowance had
/// left when the lease was taken (others may have spent some since), `full_in_us` until the burst is whole.
fn spent(limit: u32, remaining: u32, full_in_us: i64) -> Decision {
    Decision {
        allowed: true,
        limit,
        remaining,
        reset_secs: micros_to_secs(full_in_us),
        retry_after_secs: None,
    }
}

/// Whole seconds, rounded up, of a span in microseconds (0 for none).
fn micros_to_secs(us: i64) -> u64 {
    (us.max(0) as u64).div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_smooth_refill() {
        let rl = RateLimiter::new(None);
        // 60 per minute: a burst of 60, then one per second.
        for i in 0..60 {
            let d = rl.check_at("k".into(), 60, 0.0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 59 - i);
        }
        let refused = rl.check_at("k".into(), 60, 0.0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, Some(1));
        assert_eq!(refused.reset_secs, 60);
        assert!(!rl.check_at("k".into(), 60, 0.5).allowed);
        let later = rl.check_at("k".into(), 60, 1.0);
        assert!(later.allowed);
        assert_eq!(later.remaining, 0);
        assert!(
            rl.check_at("other".into(), 60, 1.0).allowed,
            "limits are per principal"
        );
        let rested = rl.check_at("k".into(), 60, 120.0);
        assert_eq!(
            rested.remaining, 59,
            "a full minute idle restores the whole burst"
        );
    }

    #[test]
    fn idle_entries_are_dropped() {
        let rl = RateLimiter::new(None);
        let n = SHARDS * SWEEP_AT;
        for i in 0..n {
            rl.check_at(format!("old{i}"), 600, 0.0);
        }
        // Much later every old entry is idle: new principals sweep them out as their shards fill up.
        for i in 0..n {
            rl.check_at(format!("new{i}"), 600, 1000.0);
        }
        assert!(rl.tracked() < n * 3 / 2, "{} tracked", rl.tracked());
    }
}
