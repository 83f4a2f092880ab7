//! Per-type grace periods, retries and the other knobs of the engine.

use std::collections::HashMap;
use std::time::Duration;

use chrono::TimeDelta;

use crate::error::{Error, Result};

/// Grace periods: how long after expiry (or use) a token is kept.
///
/// ```
/// use chrono::TimeDelta;
/// use token_cleanup_core::{token_types, GracePolicy};
///
/// let grace = GracePolicy::default()
///     .expired(token_types::INVITE, TimeDelta::days(7))
///     .used_default(TimeDelta::days(1));
/// assert_eq!(grace.expired_grace(token_types::INVITE), TimeDelta::days(7));
/// assert_eq!(grace.expired_grace(token_types::MAGIC_LINK), TimeDelta::zero());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracePolicy {
    expired_default: TimeDelta,
    expired: HashMap<String, TimeDelta>,
    used_default: TimeDelta,
    used: HashMap<String, TimeDelta>,
}

impl Default for GracePolicy {
    fn default() -> Self {
        Self {
            expired_default: TimeDelta::zero(),
            expired: HashMap::new(),
            used_default: TimeDelta::zero(),
            used: HashMap::new(),
        }
    }
}

impl GracePolicy {
    /// Grace after expiry for every type without its own (default 0).
    pub fn expired_default(mut self, grace: TimeDelta) -> Self {
        self.expired_default = grace;
        self
    }
    /// Grace after expiry for one type.
    pub fn expired(mut self, token_type: impl Into<String>, grace: TimeDelta) -> Self {
        self.expired.insert(token_type.into(), grace);
        self
    }
    /// Grace after use for every type without its own (default 0), for runs with
    /// `include_used`.
    pub fn used_default(mut self, grace: TimeDelta) -> Self {
        self.used_default = grace;
        self
    }
    /// Grace after use for one type.
    pub fn used(mut self, token_type: impl Into<String>, grace: TimeDelta) -> Self {
        self.used.insert(token_type.into(), grace);
        self
    }

    /// Grace after expiry for `token_type`.
    pub fn expired_grace(&self, token_type: &str) -> TimeDelta {
        self.expired
            .get(token_type)
            .copied()
            .unwrap_or(self.expired_default)
    }
    /// Grace after use for `token_type`.
    pub fn used_grace(&self, token_type: &str) -> TimeDelta {
        self.used
            .get(token_type)
            .copied()
            .unwrap_or(self.used_default)
    }

    /// Refuses negative graces (the cutoff would be later than now).
    pub fn validate(&self) -> Result<()> {
        let negative = |(t, g): (&String, &TimeDelta)| (*g < TimeDelta::zero()).then(|| t.clone());
        if self.expired_default < TimeDelta::zero() || self.used_default < TimeDelta::zero() {
            return Err(Error::NegativeGrace {
                token_type: "*".into(),
            });
        }
        match self
            .expired
            .iter()
            .chain(self.used.iter())
            .find_map(negative)
        {
            Some(token_type) => Err(Error::NegativeGrace { token_type }),
            None => Ok(()),
        }
    }
}

/// How a failing batch is retried.
///
/// ```
/// use std::time::Duration;
/// use token_cleanup_core::RetryPolicy;
///
/// let retry = RetryPolicy::new(5, Duration::from_millis(50));
/// assert_eq!(retry.backoff(1), Duration::from_millis(50));
/// assert_eq!(retry.backoff(3), Duration::from_millis(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per batch, including the first (at least 1).
    pub max_attempts: u32,
    /// Wait before the second try; doubles after each failure.
    pub initial_backoff: Duration,
    /// Longest wait between tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// `max_attempts` tries starting with `initial_backoff`, capped at 5 s.
    pub fn new(max_attempts: u32, initial_backoff: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            initial_backoff,
            ..Self::default()
        }
    }

    /// No retries.
    pub fn none() -> Self {
        Self::new(1, Duration::ZERO)
    }

    /// Wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}
