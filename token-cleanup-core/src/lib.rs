//! # token-cleanup-core
//!
//! The storage-agnostic core of token-cleanup: it removes expired verification tokens
//! (e-mail verification, password reset, magic links, invites ...) from the host
//! application's own database, in bounded batches that never hold up live traffic, and
//! records every run so that any instance can report on it.
//!
//! - [`TokenCleanupService`]: the engine. [`cleanup_expired_tokens`] fixes the cutoff once
//!   per run, deletes in batches (each its own transaction, retried with backoff), stops at
//!   a batch boundary on limits or cancellation, and returns a [`CleanupReport`].
//! - [`TokenStore`] and [`RunStore`]: where tokens and run records live.
//!   [`MemoryStore`] always, [`SqliteStore`] behind `sqlite`.
//! - [`Notifier`] and [`Scheduler`]: the seams for notifications and cron jobs.
//! - Statistics ([`TokenCleanupService::statistics`]), reports
//!   ([`TokenCleanupService::generate_report`]) and health
//!   ([`TokenCleanupService::health_check`]).
//!
//! ## Features
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `sqlite` | [`SqliteStore`] (sqlx + sea-query, bundled SQLite) |
//! | `postgres` | `PostgresStore` (sqlx + sea-query, PostgreSQL 12+) |
//! | `mysql` | `MySqlStore` (sqlx + sea-query, MySQL 8 / MariaDB 10.6+) |
//! | `scheduler` | [`CronScheduler`]: the default jobs and cron schedules on tokio, one run per tick across instances |
//! | `smtp` | [`notifiers::SmtpNotifier`] (lettre, rustls) |
//! | `sendgrid` | [`notifiers::SendGridNotifier`] (SendGrid v3 HTTP API; reqwest, rustls) |
//! | `webhook` | [`notifiers::WebhookNotifier`] (signed JSON; reqwest, rustls) |
//! | `admin` | the framework-free admin HTTP layer (module `admin`) that the axum and actix-web adapters mount |
//! | `jwt` | `admin::JwtAuthorizer` (jsonwebtoken on aws-lc-rs) |
//! | `test-util` | the store conformance suite ([`test_util`]) and fault injection; with `jwt`, the admin-API conformance suite |
//!
//! No backend is on by default: a host pays only for the database it uses.
//!
//! ## Example
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # async fn example() -> Result<(), token_cleanup_core::Error> {
//! use std::sync::Arc;
//! use token_cleanup_core::{
//!     CleanupRequest, SqliteStore, TokenCleanupService, TokenStore, TokenTable, token_types,
//! };
//!
//! let pool = sqlx::SqlitePool::connect("sqlite://app.db").await.expect("database");
//! let store = Arc::new(SqliteStore::new(pool, TokenTable::default()));
//! store.migrate().await?;
//!
//! let service = TokenCleanupService::builder(store).build()?;
//! let report = service
//!     .cleanup_expired_tokens(CleanupRequest::new([token_types::PASSWORD_RESET]).batch_size(1000))
//!     .await?;
//! println!("removed {} tokens in {} batches", report.total_cleaned, report.batches);
//! # Ok(()) }
//! ```
//!
//! ## Observability
//!
//! Every run is a `token_cleanup.run` span and every batch a `token_cleanup.batch` span
//! (run id, type, batch size, rows, duration). Where a store runs several batches in
//! one call (`PostgresStore`), the call is a `token_cleanup.batches` span, and each of
//! its batches a `token_cleanup.batch` span recorded when the call returns, with the
//! duration the database measured. Audit events (who started what, and the
//! outcome) are emitted on the target [`AUDIT_TARGET`]. Metrics go through the `metrics`
//! facade; see [`metrics`] for the names. Token values never appear in
//! any of them: the engine only ever handles counts, types and instants.
//!
//! [`cleanup_expired_tokens`]: TokenCleanupService::cleanup_expired_tokens
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod clock;
mod error;
mod health;
pub mod metrics;
pub mod notifiers;
mod notify;
mod policy;
mod report;
mod report_task;
mod reporting;
mod request;
mod run;
mod schedule;
#[cfg(feature = "scheduler")]
mod scheduler;
mod serde_util;
mod service;
mod stats;
mod store;
mod table;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{BoxError, Error, Result};
pub use health::{DatabaseHealth, HealthConfig, HealthReport, HealthStatus};
pub use notify::{FanOutNotifier, Notification, Notifier, Thresholds, TracingNotifier};
pub use policy::{GracePolicy, RetryPolicy};
pub use report::{CleanupReport, StopReason};
pub use report_task::ReportHandle;
pub use reporting::{PeriodReport, ReportPeriod, RunError, escape_html};
pub use request::{CleanupRequest, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, TokenTypes, Trigger};
pub use run::{RunKind, RunQuery, RunRecord, RunStatus};
pub use schedule::{
    DAILY_CLEANUP, HOURLY_CLEANUP, JobAction, JobInfo, JobSpec, LastJobRun, Scheduler,
    WEEKLY_REPORT,
};
#[cfg(feature = "scheduler")]
#[cfg_attr(docsrs, doc(cfg(feature = "scheduler")))]
pub use scheduler::{CronScheduler, CronSchedulerBuilder, TokioClock};
pub use service::{RunHandle, TokenCleanupService, TokenCleanupServiceBuilder};
pub use stats::{
    MAX_STATISTICS_DAYS, Recommendation, RunHistory, Statistics, TARGET_BATCH_MS, Totals,
    TypeStatistics,
};
pub use store::{
    BatchFilter, BatchOutcome, Batches, Criterion, MemoryStore, RunStore, SWEEP_SHARE, Sweep,
    SweepMode, SweepOutcome, Token, TokenStore, TypeCounts,
};
pub use table::{Ident, TimeFormat, TokenTable, TokenTableBuilder, token_types};

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::SqliteStore;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::PostgresStore;

#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use store::MySqlStore;

/// The driver, re-exported so that hosts use the same version.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql")))
)]
pub use sqlx;

/// `tracing` target of audit events (who started or changed what, and the outcome).
pub const AUDIT_TARGET: &str = "token_cleanup::audit";

/// Re-exported so hosts can cancel runs without depending on `tokio-util` themselves.
pub use tokio_util::sync::CancellationToken;
