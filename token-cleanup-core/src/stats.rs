//! Statistics: what is in the table now and what the runs of the last N days did.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::rate;
use crate::run::{RunQuery, RunRecord, RunStatus};
use crate::service::TokenCleanupService;
use crate::store::TypeCounts;
use crate::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, metrics as m};

/// Largest `days` accepted by [`TokenCleanupService::statistics`].
pub const MAX_STATISTICS_DAYS: u32 = 365;

/// Counts for one type plus the age of its oldest expired token.
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TypeStatistics {
    /// The counts.
    #[serde(flatten)]
    pub counts: TypeCounts,
    /// Seconds since the oldest expired token expired.
    pub oldest_expired_age_secs: Option<i64>,
}

/// Aggregate of a set of runs (dry runs excluded from token counts).
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunHistory {
    /// Runs recorded.
    pub runs: u64,
    /// Succeeded runs.
    pub succeeded: u64,
    /// Failed runs.
    pub failed: u64,
    /// Cancelled runs.
    pub cancelled: u64,
    /// Runs still queued or running.
    pub in_progress: u64,
    /// Tokens deleted by real (not dry) runs.
    pub tokens_cleaned: u64,
    /// Tokens deleted per type.
    pub by_type: BTreeMap<String, u64>,
    /// Committed batches.
    pub batches: u64,
    /// Mean wall time of finished runs, ms.
    pub mean_duration_ms: f64,
    /// Longest finished run, ms.
    pub max_duration_ms: u64,
    /// Tokens deleted per second of run time.
    pub tokens_per_second: f64,
    /// Mean batch time, ms (deleting runs only).
    pub mean_batch_ms: f64,
    /// `failed / finished`.
    pub error_rate: f64,
    /// Last finished run.
    pub last_run_at: Option<DateTime<Utc>>,
}

impl RunHistory {
    /// Aggregates the cleanup runs among `runs` (report tasks are left out).
    pub fn from_runs<'a>(runs: impl IntoIterator<Item = &'a RunRecord>) -> Self {
        let mut h = RunHistory::default();
        let mut total_ms = 0u128;
        let mut finished = 0u64;
        let mut deleting_ms = 0u128;
        for run in runs.into_iter().filter(|r| r.kind.is_cleanup()) {
            h.runs += 1;
            match run.status {
                RunStatus::Succeeded => h.succeeded += 1,
                RunStatus::Failed => h.failed += 1,
                RunStatus::Cancelled => h.cancelled += 1,
                RunStatus::Queued | RunStatus::Running => h.in_progress += 1,
            }
            if run.status.is_finished() {
                finished += 1;
                let ms = run.progress.duration.as_millis();
                total_ms += ms;
                h.max_duration_ms = h.max_duration_ms.max(ms as u64);
                h.last_run_at = h.last_run_at.max(run.finished_at);
            }
            if !run.progress.dry_run {
                h.tokens_cleaned += run.progress.total_cleaned;
                h.batches += run.progress.batches;
                for (t, n) in &run.progress.by_type {
                    *h.by_type.entry(t.clone()).or_default() += n;
                }
                if run.progress.batches > 0 {
                    deleting_ms += run.progress.duration.as_millis();
                }
            }
        }
        if finished > 0 {
            h.mean_duration_ms = total_ms as f64 / finished as f64;
            h.error_rate = h.failed as f64 / finished as f64;
        }
        if h.batches > 0 {
            h.mean_batch_ms = deleting_ms as f64 / h.batches as f64;
        }
        h.tokens_per_second = rate(
            h.tokens_cleaned,
            std::time::Duration::from_millis(deleting_ms as u64),
        );
        h
    }
}

/// What to do next, from the backlog and measured batch timings.
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Recommendation {
    /// The expired backlog is above the threshold: run a cleanup now.
    pub run_now: bool,
    /// Batch size that keeps each batch near the target batch time, from measured
    /// batch timings (the default when nothing was measured yet).
    pub suggested_batch_size: u32,
    /// Why, in plain words.
    pub reasons: Vec<String>,
}

/// Batch time the batch-size suggestion aims for: short enough that a batch's locks never
/// hold up live traffic noticeably.
pub const TARGET_BATCH_MS: f64 = 25.0;

impl Recommendation {
    pub(crate) fn new(expired: u64, backlog_threshold: u64, history: &RunHistory) -> Self {
        let mut reasons = Vec::new();
        let run_now = expired > backlog_threshold;
        if run_now {
            reasons.push(format!(
                "{expired} expired tokens wait for cleanup (threshold {backlog_threshold})"
            ));
        }
        let suggested_batch_size = if history.batches > 0 && history.tokens_cleaned > 0 {
            let ms_per_row =
                history.mean_batch_ms * history.batches as f64 / history.tokens_cleaned as f64;
            let size = if ms_per_row > 0.0 {
                (TARGET_BATCH_MS / ms_per_row) as u32
            } else {
                MAX_BATCH_SIZE
            };
            // Round to a readable number within our validated range.
            let size = size.clamp(100, 10_000);
            let size = if size >= 1000 {
                size / 500 * 500
            } else {
                size / 100 * 100
            };
            reasons.push(format!(
                "measured {ms_per_row:.4} ms per row: batches of {size} take about {:.0} ms",
                ms_per_row * size as f64
            ));
            size
        } else {
            DEFAULT_BATCH_SIZE
        };
        Self {
            run_now,
            suggested_batch_size,
            reasons,
        }
    }
}

/// Statistics over a window of days.
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Statistics {
    /// When computed.
    pub generated_at: DateTime<Utc>,
    /// Window in days.
    pub days: u32,
    /// Per-type counts now.
    pub token_types: Vec<TypeStatistics>,
    /// Sum over types.
    pub totals: Totals,
    /// Runs in the window.
    pub history: RunHistory,
    /// What to do next.
    pub recommendation: Recommendation,
}

/// Sum of the per-type counts.
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Totals {
    /// All rows.
    pub total: u64,
    /// Expired rows.
    pub expired: u64,
    /// Active rows.
    pub active: u64,
    /// Used rows.
    pub used: u64,
}

impl TokenCleanupService {
    /// Per-type counts now, plus history and a recommendation over the last `days`
    /// (`1..=365`).
    ///
    /// The per-type counts scan the token table once (one grouped query). Calls that
    /// arrive while a scan is running wait for it and then share the next one, so a
    /// burst of concurrent calls costs two scans, and every answer is as of an instant
    /// after its call.
    pub async fn statistics(&self, days: u32) -> Result<Statistics> {
        if !(1..=MAX_STATISTICS_DAYS).contains(&days) {
            return Err(Error::InvalidArgument {
                name: "days",
                message: format!("{days} is out of range (1..={MAX_STATISTICS_DAYS})"),
            });
        }
        let (now, counts) = self.fresh_type_counts().await?;
        let runs = self
            .run_store()
            .runs(&RunQuery {
                since: Some(now - TimeDelta::days(days.into())),
                ..RunQuery::default()
            })
            .await?;
        let history = RunHistory::from_runs(&runs);
        let mut totals = Totals::default();
        let token_types = counts
            .iter()
            .cloned()
            .map(|c| {
                totals.total += c.total;
                totals.expired += c.expired;
                totals.active += c.active;
                totals.used += c.used;
                m::backlog(&c.token_type, c.expired);
                TypeStatistics {
                    oldest_expired_age_secs: c.oldest_expired.map(|o| (now - o).num_seconds()),
                    counts: c,
                }
            })
            .collect();
        let recommendation = Recommendation::new(
            totals.expired,
            self.health_config().backlog_threshold,
            &history,
        );
        Ok(Statistics {
            generated_at: now,
            days,
            token_types,
            totals,
            history,
            recommendation,
        })
    }
}
