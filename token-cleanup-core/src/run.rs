//! Run records: every cleanup run, so that any instance can answer for it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::report::CleanupReport;
use crate::reporting::{PeriodReport, ReportPeriod};
use crate::request::{CleanupRequest, TokenTypes, Trigger};

/// Lifecycle of a run.
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted, not started.
    Queued,
    /// In progress.
    Running,
    /// Finished (possibly stopped early by a limit; see the report).
    Succeeded,
    /// Stopped by an error; the counts reached are kept.
    Failed,
    /// Stopped by a cancel or shutdown at a batch boundary.
    Cancelled,
}

impl RunStatus {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// `true` once the run can no longer change.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// One recorded run: parameters, status, progress and outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunRecord {
    /// Run id (the admin API's task id).
    pub id: Uuid,
    /// Manual or scheduled.
    pub trigger: Trigger,
    /// Scheduler job, for scheduled runs.
    pub job: Option<String>,
    /// Who asked.
    pub requested_by: Option<String>,
    /// What was asked (token types as resolved for this run).
    pub request: CleanupRequest,
    /// Token types the run covers, resolved from the request.
    pub token_types: Vec<String>,
    /// Current status.
    pub status: RunStatus,
    /// Progress so far; the final report once finished.
    pub progress: CleanupReport,
    /// When the record was created.
    pub created_at: DateTime<Utc>,
    /// When the run finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Error text of a failed run (store errors only; never token values).
    pub error: Option<String>,
    /// What the run does. Records written before report tasks existed have no kind and
    /// read back as cleanups.
    #[serde(default, skip_serializing_if = "RunKind::is_cleanup")]
    pub kind: RunKind,
    /// The finished report of a [`RunKind::Report`] task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<PeriodReport>,
}

/// What a recorded run does.
///
/// Report generation started through the admin API is recorded like a cleanup run, so
/// that its status and result can be read from any instance through the same
/// [`RunStore`](crate::RunStore). Such records cover no token types, so they never block
/// a cleanup, and statistics, reports and health leave them out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunKind {
    /// A cleanup run.
    #[default]
    Cleanup,
    /// Generation of a periodic report.
    Report {
        /// The period.
        period: ReportPeriod,
        /// Whether the report is sent through the notifier once built.
        send: bool,
    },
}

impl RunKind {
    /// `true` for [`RunKind::Cleanup`].
    pub fn is_cleanup(&self) -> bool {
        matches!(self, RunKind::Cleanup)
    }
}

impl RunRecord {
    pub(crate) fn new(
        request: &CleanupRequest,
        token_types: Vec<String>,
        now: DateTime<Utc>,
    ) -> Self {
        let id = Uuid::now_v7();
        Self {
            id,
            trigger: request.trigger,
            job: request.job.clone(),
            requested_by: request.requested_by.clone(),
            request: request.clone(),
            token_types,
            status: RunStatus::Queued,
            progress: CleanupReport::new(id, request.batch_size, request.dry_run, now),
            created_at: now,
            finished_at: None,
            error: None,
            kind: RunKind::Cleanup,
            report: None,
        }
    }

    /// A queued report task (no token types, an empty cleanup progress).
    pub(crate) fn report_task(
        period: ReportPeriod,
        send: bool,
        requested_by: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut request = CleanupRequest::all_types();
        request.token_types = TokenTypes::Only(Vec::new());
        request.requested_by = requested_by;
        let mut record = Self::new(&request, Vec::new(), now);
        record.kind = RunKind::Report { period, send };
        record
    }

    /// Wall time of a finished run.
    pub fn duration(&self) -> Option<Duration> {
        self.status.is_finished().then_some(self.progress.duration)
    }
}

/// Filter for [`RunStore::runs`](crate::RunStore::runs). Results are newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunQuery {
    /// Only runs created at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only runs created before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// At most this many (newest first).
    pub limit: Option<u32>,
}

impl RunQuery {
    /// Runs created in `[since, until)`.
    pub fn between(since: DateTime<Utc>, until: DateTime<Utc>) -> Self {
        Self {
            since: Some(since),
            until: Some(until),
            ..Self::default()
        }
    }

    /// The `limit` newest runs.
    pub fn latest(limit: u32) -> Self {
        Self {
            limit: Some(limit),
            ..Self::default()
        }
    }

    /// Restricts to one status.
    pub fn with_status(mut self, status: RunStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Whether `run` passes the time and status filters (not the limit).
    pub fn matches(&self, run: &RunRecord) -> bool {
        self.since.is_none_or(|s| run.created_at >= s)
            && self.until.is_none_or(|u| run.created_at < u)
            && self.status.is_none_or(|s| run.status == s)
    }
}
