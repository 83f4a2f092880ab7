//! Report generation as a recorded background task.

use std::time::Instant;

use tracing::{info, warn};
use uuid::Uuid;

use crate::AUDIT_TARGET;
use crate::error::{Error, Result};
use crate::reporting::{PeriodReport, ReportPeriod};
use crate::run::{RunRecord, RunStatus};
use crate::service::TokenCleanupService;

/// A report task started by [`TokenCleanupService::spawn_report`].
#[derive(Debug)]
pub struct ReportHandle {
    run_id: Uuid,
    join: tokio::task::JoinHandle<Result<PeriodReport>>,
}

impl ReportHandle {
    /// The task's id (its run record's id).
    pub fn run_id(&self) -> Uuid {
        self.run_id
    }

    /// Waits for the report.
    pub async fn wait(self) -> Result<PeriodReport> {
        match self.join.await {
            Ok(result) => result,
            Err(join) => Err(Error::store("engine", "finish a report task", join)),
        }
    }
}

impl TokenCleanupService {
    /// Records a report task, then builds the report (and, with `send`, sends it through
    /// the notifier) on a tokio task.
    ///
    /// The task is a [`RunRecord`] of kind [`RunKind::Report`](crate::RunKind::Report):
    /// its status and, once finished, the report itself are readable from any instance
    /// through [`run`](Self::run).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use token_cleanup_core::{MemoryStore, ReportPeriod, RunStatus, TokenCleanupService};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), token_cleanup_core::Error> {
    /// let service = TokenCleanupService::builder(Arc::new(MemoryStore::new())).build()?;
    /// let task = service.spawn_report(ReportPeriod::Weekly, false, Some("alice".into())).await?;
    /// let id = task.run_id();
    /// task.wait().await?;
    /// let record = service.run(id).await?.expect("recorded");
    /// assert_eq!(record.status, RunStatus::Succeeded);
    /// assert!(record.report.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn spawn_report(
        &self,
        period: ReportPeriod,
        send: bool,
        requested_by: Option<String>,
    ) -> Result<ReportHandle> {
        let mut record = RunRecord::report_task(period, send, requested_by, self.clock().now());
        self.run_store().insert_run(&record).await?;
        info!(
            target: AUDIT_TARGET,
            event = "report_started",
            run_id = %record.id,
            requested_by = record.requested_by.as_deref(),
            period = period.as_str(),
            send,
        );
        let run_id = record.id;
        let this = self.clone();
        let join = tokio::spawn(async move {
            let started = Instant::now();
            record.status = RunStatus::Running;
            record.progress.started_at = this.clock().now();
            this.save_task(&record).await;
            let result = if send {
                this.generate_and_send_report(period).await
            } else {
                this.generate_report(period).await
            };
            record
                .progress
                .finish(started.elapsed(), this.clock().now());
            record.finished_at = Some(record.progress.finished_at);
            match &result {
                Ok(report) => {
                    record.status = RunStatus::Succeeded;
                    record.report = Some(report.clone());
                }
                Err(e) => {
                    record.status = RunStatus::Failed;
                    record.error = Some(e.to_string());
                }
            }
            this.save_task(&record).await;
            info!(
                target: AUDIT_TARGET,
                event = "report_finished",
                run_id = %record.id,
                status = record.status.as_str(),
                requested_by = record.requested_by.as_deref(),
                duration_ms = record.progress.duration.as_millis() as u64,
            );
            result
        });
        Ok(ReportHandle { run_id, join })
    }

    async fn save_task(&self, record: &RunRecord) {
        if let Err(e) = self.run_store().update_run(record).await {
            warn!(run_id = %record.id, error = %e, "could not save the report task");
        }
    }
}
