//! JSON shapes of the admin API: request bodies, query parameters and responses.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::health::HealthReport;
use crate::report::CleanupReport;
use crate::reporting::{PeriodReport, ReportPeriod};
use crate::request::{CleanupRequest, Trigger};
use crate::run::{RunKind, RunRecord, RunStatus};
use crate::schedule::JobInfo;

/// Body of `POST /expired-tokens`. Every field is optional; an empty body starts a run
/// over every type with the defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CleanupBody {
    /// Token types to clean (at least one). Omitted: every type.
    #[schema(example = json!(["password_reset", "magic_link"]))]
    pub token_types: Option<Vec<String>>,
    /// Rows per batch, 1..=50000 (default 1000). Each batch is one transaction.
    #[schema(minimum = 1, maximum = 50000, example = 1000)]
    pub batch_size: Option<u32>,
    /// Count what would be deleted, delete nothing (default false).
    #[serde(default)]
    pub dry_run: bool,
    /// Also delete used tokens past their grace period (needs a used-at column).
    #[serde(default)]
    pub include_used: bool,
    /// Stop at a batch boundary after this many rows (at least 1).
    #[schema(minimum = 1)]
    pub max_rows: Option<u64>,
}

impl CleanupBody {
    /// The engine request this body asks for, on behalf of `admin`.
    pub fn into_request(self, admin: &str) -> CleanupRequest {
        let mut request = match self.token_types {
            Some(types) => CleanupRequest::new(types),
            None => CleanupRequest::all_types(),
        };
        request = request
            .batch_size(self.batch_size.unwrap_or(crate::DEFAULT_BATCH_SIZE))
            .dry_run(self.dry_run)
            .include_used(self.include_used)
            .requested_by(admin);
        request.max_rows = self.max_rows;
        request
    }
}

/// Query of `GET /statistics`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatisticsParams {
    /// Window in days, 1..=365 (default 30).
    #[param(minimum = 1, maximum = 365)]
    pub days: Option<u32>,
}

/// Query of `POST /generate-report`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// `daily`, `weekly` (default) or `monthly`.
    #[param(value_type = Option<String>, pattern = "^(daily|weekly|monthly)$")]
    pub report_type: Option<String>,
    /// Also send the report through the notifier (default false).
    pub send: Option<bool>,
}

/// Query of `GET /runs`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsParams {
    /// How many runs, newest first, 1..=100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A cleanup run.
    Cleanup,
    /// Report generation.
    Report,
}

/// `202 Accepted`: the task was recorded and runs in the background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskAccepted {
    /// Poll `status_url` (or `GET /task-status/{task_id}`) for progress and result.
    pub task_id: Uuid,
    /// What the task does.
    pub kind: TaskKind,
    /// Always `queued` at this point.
    pub status: RunStatus,
    /// Path of the task's status, below the same mount point.
    pub status_url: String,
}

/// Counts a cleanup reached so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskProgress {
    /// Rows deleted so far (or counted, in a dry run).
    pub total_cleaned: u64,
    /// Batches committed so far.
    pub batches: u64,
    /// Rows per token type so far.
    pub by_type: BTreeMap<String, u64>,
    /// Run time so far, as last saved by the run, ms.
    pub elapsed_ms: u64,
}

/// The result of a finished task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // one per response; boxing would only add noise
pub enum TaskResult {
    /// A cleanup's report.
    Cleanup(CleanupReport),
    /// A generated report.
    Report(PeriodReport),
}

/// `GET /task-status/{task_id}`: a cleanup run or report task, from the run records (any
/// instance can answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskStatus {
    /// The task id.
    pub task_id: Uuid,
    /// What the task does.
    pub kind: TaskKind,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: RunStatus,
    /// `manual` or `scheduled`.
    pub trigger: Trigger,
    /// Scheduler job, for scheduled runs.
    pub job: Option<String>,
    /// The admin who started it.
    pub requested_by: Option<String>,
    /// Token types a cleanup covers (empty for reports).
    pub token_types: Vec<String>,
    /// Batch size of a cleanup.
    pub batch_size: Option<u32>,
    /// Whether a cleanup is a dry run.
    pub dry_run: Option<bool>,
    /// Period of a report task.
    pub report_type: Option<ReportPeriod>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Progress of a cleanup (final counts once finished).
    pub progress: Option<TaskProgress>,
    /// The full result once finished: the cleanup report (also for failed and cancelled
    /// runs, with the counts reached) or the generated report.
    pub result: Option<TaskResult>,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<RunRecord> for TaskStatus {
    fn from(run: RunRecord) -> Self {
        let finished = run.status.is_finished();
        let (kind, report_type) = match run.kind {
            RunKind::Report { period, .. } => (TaskKind::Report, Some(period)),
            _ => (TaskKind::Cleanup, None),
        };
        let cleanup = kind == TaskKind::Cleanup;
        let progress = cleanup.then(|| TaskProgress {
            total_cleaned: run.progress.total_cleaned,
            batches: run.progress.batches,
            by_type: run.progress.by_type.clone(),
            elapsed_ms: run.progress.duration.as_millis() as u64,
        });
        let result = match (kind, finished) {
            (TaskKind::Cleanup, true) => Some(TaskResult::Cleanup(run.progress)),
            (TaskKind::Report, true) => run.report.map(TaskResult::Report),
            (_, false) => None,
        };
        TaskStatus {
            task_id: run.id,
            kind,
            status: run.status,
            trigger: run.trigger,
            job: run.job,
            requested_by: run.requested_by,
            token_types: run.token_types,
            batch_size: cleanup.then_some(run.request.batch_size),
            dry_run: cleanup.then_some(run.request.dry_run),
            report_type,
            created_at: run.created_at,
            finished_at: run.finished_at,
            progress,
            result,
            error: run.error,
        }
    }
}

/// `GET /runs`: recent runs and tasks, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    /// The runs.
    pub runs: Vec<TaskStatus>,
}

/// `GET /scheduled-tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduledTasks {
    /// Whether the host runs a scheduler (if not, `jobs` is empty).
    pub scheduler_configured: bool,
    /// Every job: name, cron expression, enabled, next run, last run and its outcome.
    pub jobs: Vec<JobInfo>,
}

/// Every error answer: a stable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code (`unauthenticated`, `invalid_batch_size` ...).
    #[schema(example = "invalid_batch_size")]
    pub error: String,
    /// What went wrong, for humans. Never internals.
    pub message: String,
}

/// `503` from `POST /health-check`: the error fields plus the full health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UnhealthyBody {
    /// Always `unhealthy`.
    pub error: String,
    /// The reasons, joined.
    pub message: String,
    /// The health report.
    pub health: HealthReport,
}
