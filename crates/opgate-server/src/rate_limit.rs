//! Per-principal rate limits with GCRA (the generic cell rate algorithm): a limit of N requests per minute
//! allows a burst of N, then one request every 60/N seconds — smooth, with no window edges to game. State is
//! one "theoretical arrival time" per principal, in sharded maps; entries whose time has passed carry no
//! information and are dropped when a shard grows, so memory stays bounded by the keys active in the last minute.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use opgate_core::Principal;

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
    shards: Vec<Mutex<HashMap<String, f64>>>,
    hasher: RandomState,
    default_limit: Option<u32>,
    org_limit: Option<u32>,
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
            hasher: RandomState::new(),
            default_limit,
            org_limit: org_limit.filter(|&l| l > 0),
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
