//! Metric names and recording through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! The library only records; the host installs whichever recorder it uses (Prometheus,
//! OpenTelemetry, StatsD ...). Without a recorder these calls cost next to nothing.
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `token_cleanup_tokens_deleted_total` | counter | `token_type` |
//! | `token_cleanup_batch_duration_seconds` | histogram | `token_type` (a sweep's types joined by commas) |
//! | `token_cleanup_run_duration_seconds` | histogram | `status` |
//! | `token_cleanup_runs_total` | counter | `status` |
//! | `token_cleanup_expired_backlog` | gauge | `token_type` |

use std::time::Duration;

use crate::run::RunStatus;

/// Tokens deleted, per type.
pub const TOKENS_DELETED: &str = "token_cleanup_tokens_deleted_total";
/// Duration of each committed batch: as the engine waited for it, or, for a batch of a
/// store call of several (`PostgresStore`), as the database measured it (lock to delete).
pub const BATCH_DURATION: &str = "token_cleanup_batch_duration_seconds";
/// Duration of each run.
pub const RUN_DURATION: &str = "token_cleanup_run_duration_seconds";
/// Finished runs, per status.
pub const RUNS: &str = "token_cleanup_runs_total";
/// Expired tokens still in the table, per type (set by statistics and health checks).
pub const EXPIRED_BACKLOG: &str = "token_cleanup_expired_backlog";

pub(crate) fn tokens_deleted(token_type: &str, rows: u64) {
    metrics::counter!(TOKENS_DELETED, "token_type" => token_type.to_owned()).increment(rows);
}

/// `label`: the batch's token type, or a sweep's types joined by commas.
pub(crate) fn batch_duration(label: &str, took: Duration) {
    metrics::histogram!(BATCH_DURATION, "token_type" => label.to_owned())
        .record(took.as_secs_f64());
}

pub(crate) fn run_finished(status: RunStatus, took: Duration) {
    let labels = [("status", status.as_str())];
    metrics::counter!(RUNS, &labels).increment(1);
    metrics::histogram!(RUN_DURATION, &labels).record(took.as_secs_f64());
}

pub(crate) fn backlog(token_type: &str, expired: u64) {
    metrics::gauge!(EXPIRED_BACKLOG, "token_type" => token_type.to_owned()).set(expired as f64);
}
