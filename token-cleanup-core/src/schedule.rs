//! Scheduling: the [`Scheduler`] trait and the jobs it runs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::Result;
use crate::reporting::ReportPeriod;
use crate::request::CleanupRequest;
use crate::run::RunStatus;

/// What a job does on each tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobAction {
    /// A cleanup run with these parameters (trigger and job name are set per tick).
    Cleanup(CleanupRequest),
    /// Build a report for the period ending at the tick and send it through the notifier.
    Report(ReportPeriod),
}

/// A named job on a cron schedule (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobSpec {
    /// Unique name (also the lease name across instances).
    pub name: String,
    /// Standard 5-field cron expression, UTC (`0 * * * *`).
    pub cron: String,
    /// Disabled jobs are listed but never run.
    pub enabled: bool,
    /// What to do.
    pub action: JobAction,
}

/// Name of the default hourly cleanup job.
pub const HOURLY_CLEANUP: &str = "hourly_cleanup";
/// Name of the default daily comprehensive cleanup job.
pub const DAILY_CLEANUP: &str = "daily_cleanup";
/// Name of the default weekly report job.
pub const WEEKLY_REPORT: &str = "weekly_report";

impl JobSpec {
    /// A job.
    pub fn new(name: impl Into<String>, cron: impl Into<String>, action: JobAction) -> Self {
        Self {
            name: name.into(),
            cron: cron.into(),
            enabled: true,
            action,
        }
    }

    /// Enables or disables the job.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Every hour at minute 0: expired tokens of every type.
    pub fn hourly_cleanup() -> Self {
        Self::new(
            HOURLY_CLEANUP,
            "0 * * * *",
            JobAction::Cleanup(CleanupRequest::all_types()),
        )
    }

    /// 02:00 every day: expired tokens and used tokens past their grace.
    pub fn daily_cleanup() -> Self {
        Self::new(
            DAILY_CLEANUP,
            "0 2 * * *",
            JobAction::Cleanup(CleanupRequest::all_types().include_used(true)),
        )
    }

    /// 03:00 every Sunday: the weekly report, sent through the notifier.
    pub fn weekly_report() -> Self {
        Self::new(
            WEEKLY_REPORT,
            "0 3 * * 0",
            JobAction::Report(ReportPeriod::Weekly),
        )
    }

    /// The three default jobs of the specification.
    ///
    /// ```
    /// let jobs = token_cleanup_core::JobSpec::defaults();
    /// assert_eq!(jobs.iter().map(|j| j.cron.as_str()).collect::<Vec<_>>(),
    ///            ["0 * * * *", "0 2 * * *", "0 3 * * 0"]);
    /// ```
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::hourly_cleanup(),
            Self::daily_cleanup(),
            Self::weekly_report(),
        ]
    }
}

/// The last run of a job, as listed by [`Scheduler::jobs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LastJobRun {
    /// The tick it ran for.
    pub fired_at: DateTime<Utc>,
    /// The cleanup run, for cleanup jobs.
    pub run_id: Option<Uuid>,
    /// Outcome.
    pub status: RunStatus,
    /// Error text, if it failed.
    pub error: Option<String>,
}

/// A job as listed by the scheduler (the admin API's scheduled-tasks endpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobInfo {
    /// Job name.
    pub name: String,
    /// Cron expression.
    pub cron: String,
    /// Human-readable schedule.
    pub description: String,
    /// Whether it runs.
    pub enabled: bool,
    /// Next tick, if enabled.
    pub next_run: Option<DateTime<Utc>>,
    /// Last run and its outcome.
    pub last_run: Option<LastJobRun>,
}

/// Runs named jobs on cron schedules inside the host's runtime.
#[async_trait]
pub trait Scheduler: Send + Sync + std::fmt::Debug + 'static {
    /// Every job with its schedule, next run and last outcome.
    async fn jobs(&self) -> Result<Vec<JobInfo>>;

    /// Runs until `shutdown` is cancelled; a job running then stops at its next batch
    /// boundary before this returns.
    async fn run(&self, shutdown: CancellationToken) -> Result<()>;
}
