//! One function per endpoint. Each carries its OpenAPI description, so the document is
//! written next to the code it describes; answers every adapter serves come from here.

use serde::de::DeserializeOwned;
use serde_json::error::Category;
use uuid::Uuid;

use super::http::AdminResponse;
use super::model::{
    CleanupBody, ErrorBody, ReportParams, RunList, RunsParams, ScheduledTasks, StatisticsParams,
    TaskAccepted, TaskKind, TaskStatus, UnhealthyBody,
};
use super::{AdminApi, Call};
use crate::error::{Error, Result};
use crate::health::{HealthReport, HealthStatus};
use crate::reporting::ReportPeriod;
use crate::run::RunStatus;
use crate::stats::Statistics;

/// Default of `GET /statistics?days=`.
pub(crate) const DEFAULT_DAYS: u32 = 30;
/// Default and largest `GET /runs?limit=`.
pub(crate) const DEFAULT_RUNS: u32 = 20;
pub(crate) const MAX_RUNS: u32 = 100;

/// Decodes the query string into `P`; a bad value is `422`.
fn query<P: DeserializeOwned>(call: &Call<'_>) -> Result<P> {
    serde_urlencoded::from_str(call.head.query().unwrap_or("")).map_err(|e| {
        Error::InvalidArgument {
            name: "query",
            message: e.to_string(),
        }
    })
}

/// Decodes a JSON body; an empty body is `T::default()`. Broken JSON is `400`, JSON of
/// the wrong shape `422`.
fn json_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        Category::Data => Error::InvalidBody { source: e },
        _ => Error::MalformedBody {
            source: Box::new(e),
        },
    })
}

fn accepted(call: &mut Call<'_>, task_id: Uuid, kind: TaskKind) -> AdminResponse {
    call.task_id = Some(task_id);
    let status_url = format!("{}/task-status/{task_id}", call.prefix);
    let body = TaskAccepted {
        task_id,
        kind,
        status: RunStatus::Queued,
        status_url: status_url.clone(),
    };
    AdminResponse::json(202, &body).with_header("location", status_url)
}

/// Statistics: per type counts now, run history and a recommendation.
#[utoipa::path(
    get,
    path = "/statistics",
    operation_id = "statistics",
    tag = "token-cleanup",
    params(StatisticsParams),
    responses(
        (status = 200, description = "Statistics over the window", body = Statistics),
        (status = 422, description = "`days` outside 1..=365 or not a number", body = ErrorBody),
    ),
)]
pub(super) async fn statistics(api: &AdminApi, call: &mut Call<'_>) -> Result<AdminResponse> {
    let params: StatisticsParams = query(call)?;
    let stats = api
        .service()
        .statistics(params.days.unwrap_or(DEFAULT_DAYS))
        .await?;
    Ok(AdminResponse::json(200, &stats))
}

/// Starts a cleanup run in the background.
#[utoipa::path(
    post,
    path = "/expired-tokens",
    operation_id = "start_cleanup",
    tag = "token-cleanup",
    request_body(content = CleanupBody, content_type = "application/json",
        description = "Run parameters; an empty body cleans every type with the defaults"),
    responses(
        (status = 202, description = "Run recorded and started", body = TaskAccepted,
            headers(("Location" = String, description = "The task's status URL"))),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 409, description = "A run over some of the same token types is in progress", body = ErrorBody),
        (status = 422, description = "Invalid parameters: batch size outside 1..=50000, no or unknown token type, unknown field", body = ErrorBody),
    ),
)]
pub(super) async fn start_cleanup(api: &AdminApi, call: &mut Call<'_>) -> Result<AdminResponse> {
    let body: CleanupBody = json_body(call.body)?;
    let request = body.into_request(call.admin_subject());
    let handle = api.service().spawn_cleanup(request).await?;
    Ok(accepted(call, handle.run_id(), TaskKind::Cleanup))
}

/// Status, progress and result of a cleanup run or report task.
#[utoipa::path(
    get,
    path = "/task-status/{task_id}",
    operation_id = "task_status",
    tag = "token-cleanup",
    params(("task_id" = String, Path, description = "Task id returned by a `202` (a UUID)")),
    responses(
        (status = 200, description = "The task", body = TaskStatus),
        (status = 404, description = "No task with this id (or not a task id at all)", body = ErrorBody),
    ),
)]
pub(super) async fn task_status(api: &AdminApi, call: &mut Call<'_>) -> Result<AdminResponse> {
    let not_found = || Error::NotFound { what: "task" };
    let raw = call.head.path().rsplit('/').next().unwrap_or_default();
    let id = Uuid::try_parse(raw).map_err(|_| not_found())?;
    let run = api.service().run(id).await?.ok_or_else(not_found)?;
    Ok(AdminResponse::json(200, &TaskStatus::from(run)))
}

/// Builds a daily, weekly or monthly report in the background.
#[utoipa::path(
    post,
    path = "/generate-report",
    operation_id = "generate_report",
    tag = "token-cleanup",
    params(ReportParams),
    responses(
        (status = 202, description = "Report task recorded and started; the report is in its status once done", body = TaskAccepted,
            headers(("Location" = String, description = "The task's status URL"))),
        (status = 422, description = "Unknown `report_type` or bad `send`", body = ErrorBody),
    ),
)]
pub(super) async fn generate_report(api: &AdminApi, call: &mut Call<'_>) -> Result<AdminResponse> {
    let params: ReportParams = query(call)?;
    let period: ReportPeriod = params.report_type.as_deref().unwrap_or("weekly").parse()?;
    let send = params.send.unwrap_or(false);
    let admin = Some(call.admin_subject().to_owned());
    let handle = api.service().spawn_report(period, send, admin).await?;
    Ok(accepted(call, handle.run_id(), TaskKind::Report))
}

/// Health: database, backlog, last scheduled run, error rate.
#[utoipa::path(
    post,
    path = "/health-check",
    operation_id = "health_check",
    tag = "token-cleanup",
    responses(
        (status = 200, description = "Healthy or degraded (see `reasons`)", body = HealthReport),
        (status = 503, description = "Unhealthy: the error fields plus the report", body = UnhealthyBody),
    ),
)]
pub(super) async fn health_check(api: &AdminApi, _call: &mut Call<'_>) -> Result<AdminResponse> {
    let health = api.service().health_check().await;
    if health.status == HealthStatus::Unhealthy {
        let body = UnhealthyBody {
            error: "unhealthy".to_owned(),
            message: health.reasons.join("; "),
            health,
        };
        return Ok(AdminResponse::json(503, &body));
    }
    Ok(AdminResponse::json(200, &health))
}

/// Every scheduled job: cron expression, enabled, next run, last run and outcome.
#[utoipa::path(
    get,
    path = "/scheduled-tasks",
    operation_id = "scheduled_tasks",
    tag = "token-cleanup",
    responses((status = 200, description = "The jobs", body = ScheduledTasks)),
)]
pub(super) async fn scheduled_tasks(api: &AdminApi, _call: &mut Call<'_>) -> Result<AdminResponse> {
    let body = match api.scheduler() {
        Some(scheduler) => ScheduledTasks {
            scheduler_configured: true,
            jobs: scheduler.jobs().await?,
        },
        None => ScheduledTasks {
            scheduler_configured: false,
            jobs: Vec::new(),
        },
    };
    Ok(AdminResponse::json(200, &body))
}

/// Recent runs and tasks, newest first.
#[utoipa::path(
    get,
    path = "/runs",
    operation_id = "recent_runs",
    tag = "token-cleanup",
    params(RunsParams),
    responses(
        (status = 200, description = "The runs", body = RunList),
        (status = 422, description = "`limit` outside 1..=100 or not a number", body = ErrorBody),
    ),
)]
pub(super) async fn recent_runs(api: &AdminApi, call: &mut Call<'_>) -> Result<AdminResponse> {
    let params: RunsParams = query(call)?;
    let limit = params.limit.unwrap_or(DEFAULT_RUNS);
    if !(1..=MAX_RUNS).contains(&limit) {
        return Err(Error::InvalidArgument {
            name: "limit",
            message: format!("{limit} is out of range (1..={MAX_RUNS})"),
        });
    }
    let runs = api.service().recent_runs(limit).await?;
    let runs = runs.into_iter().map(TaskStatus::from).collect();
    Ok(AdminResponse::json(200, &RunList { runs }))
}

/// This document (OpenAPI 3.1), with the mount point as its server.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "token-cleanup",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)),
)]
pub(super) async fn openapi(api: &AdminApi, call: &mut Call<'_>) -> Result<AdminResponse> {
    Ok(AdminResponse::raw_json(200, api.openapi_json(call.prefix)))
}
