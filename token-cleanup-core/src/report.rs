//! What a run did.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a run ended before it ran out of expired tokens.
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `max_rows` was reached.
    MaxRows,
    /// `max_duration` was reached.
    MaxDuration,
    /// The run was cancelled (shutdown or an explicit cancel).
    Cancelled,
}

/// The outcome of [`TokenCleanupService::cleanup_expired_tokens`].
///
/// In a dry run the counts are what a real run would have deleted and `batches` is 0.
///
/// [`TokenCleanupService::cleanup_expired_tokens`]: crate::TokenCleanupService::cleanup_expired_tokens
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CleanupReport {
    /// The run's id (also the task id of the admin API).
    pub run_id: Uuid,
    /// Rows deleted (or, in a dry run, that would be deleted).
    pub total_cleaned: u64,
    /// Rows per token type.
    pub by_type: BTreeMap<String, u64>,
    /// Expiry cutoff used for each type (`now - grace`), fixed once per run.
    pub cutoffs: BTreeMap<String, DateTime<Utc>>,
    /// Committed delete batches.
    pub batches: u64,
    /// Batch size asked for.
    pub batch_size: u32,
    /// Wall time of the run.
    #[serde(with = "crate::serde_util::millis", rename = "duration_ms")]
    #[cfg_attr(feature = "admin", schema(value_type = u64))]
    pub duration: Duration,
    /// Slowest committed batch.
    #[serde(with = "crate::serde_util::millis", rename = "slowest_batch_ms")]
    #[cfg_attr(feature = "admin", schema(value_type = u64))]
    pub slowest_batch: Duration,
    /// `total_cleaned / duration`.
    pub tokens_per_second: f64,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Batches that failed and were retried successfully.
    pub retries: u32,
    /// Set when the run stopped early at a batch boundary.
    pub stopped: Option<StopReason>,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When the run finished.
    pub finished_at: DateTime<Utc>,
}

impl CleanupReport {
    pub(crate) fn new(run_id: Uuid, batch_size: u32, dry_run: bool, now: DateTime<Utc>) -> Self {
        Self {
            run_id,
            total_cleaned: 0,
            by_type: BTreeMap::new(),
            cutoffs: BTreeMap::new(),
            batches: 0,
            batch_size,
            duration: Duration::ZERO,
            slowest_batch: Duration::ZERO,
            tokens_per_second: 0.0,
            dry_run,
            retries: 0,
            stopped: None,
            started_at: now,
            finished_at: now,
        }
    }

    pub(crate) fn add(&mut self, token_type: &str, rows: u64) {
        self.total_cleaned += rows;
        *self.by_type.entry(token_type.to_owned()).or_default() += rows;
    }

    pub(crate) fn finish(&mut self, elapsed: Duration, now: DateTime<Utc>) {
        self.duration = elapsed;
        self.finished_at = now;
        self.tokens_per_second = rate(self.total_cleaned, elapsed);
    }
}

/// Rows per second, 0 for an empty interval.
pub(crate) fn rate(rows: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { rows as f64 / secs } else { 0.0 }
}
