//! Per-admin rate limit on the mutating endpoints (GCRA, from `governor`).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{Error, Result};

/// How many mutating requests one admin may make: a sustained rate and a burst.
///
/// The limit is kept in memory per instance; with several instances an admin gets the
/// limit on each.
///
/// ```
/// use token_cleanup_core::admin::RateLimit;
///
/// // 20 a minute on average, at most 5 back to back.
/// let limit = RateLimit::per_minute(20).burst(5);
/// # let _ = limit;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    per: Duration,
    count: u32,
    burst: Option<u32>,
}

impl RateLimit {
    /// `count` requests per `per`, with a burst of `count`.
    pub fn new(count: u32, per: Duration) -> Self {
        Self {
            per,
            count,
            burst: None,
        }
    }
    /// `count` requests a minute.
    pub fn per_minute(count: u32) -> Self {
        Self::new(count, Duration::from_secs(60))
    }
    /// `count` requests an hour.
    pub fn per_hour(count: u32) -> Self {
        Self::new(count, Duration::from_secs(3600))
    }
    /// At most `burst` requests back to back (default: the count).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    fn quota(self) -> Result<Quota> {
        let invalid = |message: &str| Error::InvalidArgument {
            name: "rate_limit",
            message: message.to_owned(),
        };
        let count =
            NonZeroU32::new(self.count).ok_or_else(|| invalid("count must be at least 1"))?;
        let burst = NonZeroU32::new(self.burst.unwrap_or(self.count))
            .ok_or_else(|| invalid("burst must be at least 1"))?;
        let period = self.per / count.get();
        Quota::with_period(period)
            .map(|q| q.allow_burst(burst))
            .ok_or_else(|| invalid("the period must be longer than zero"))
    }
}

impl Default for RateLimit {
    /// 20 a minute, bursts of 5.
    fn default() -> Self {
        Self::per_minute(20).burst(5)
    }
}

/// The limiter: one GCRA cell per admin subject.
pub(crate) struct AdminRateLimiter {
    limit: RateLimit,
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl fmt::Debug for AdminRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminRateLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl AdminRateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Result<Self> {
        let clock = DefaultClock::default();
        Ok(Self {
            limit,
            limiter: RateLimiter::keyed(limit.quota()?),
            clock,
            checks: AtomicU64::new(0),
        })
    }

    /// Takes one request from `subject`'s allowance, or says when to come back.
    pub(crate) fn check(&self, subject: &str) -> Result<()> {
        // Forget idle admins now and then so the map only holds recent ones.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(&subject.to_owned())
            .map_err(|not_until| Error::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_admin_separately() {
        let limiter = AdminRateLimiter::new(RateLimit::per_hour(2)).unwrap();
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        match limiter.check("a") {
            Err(Error::RateLimited { retry_after }) => {
                assert!(retry_after > Duration::from_secs(60), "{retry_after:?}");
                assert!(retry_after <= Duration::from_secs(1800), "{retry_after:?}");
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        assert!(limiter.check("b").is_ok());
    }

    #[test]
    fn zero_is_refused() {
        assert!(AdminRateLimiter::new(RateLimit::per_minute(0)).is_err());
        assert!(AdminRateLimiter::new(RateLimit::per_minute(3).burst(0)).is_err());
    }
}
