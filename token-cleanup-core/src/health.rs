//! Health: is cleanup keeping up?

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::notify::Notification;
use crate::run::{RunQuery, RunStatus};
use crate::service::TokenCleanupService;
use crate::store::{BatchFilter, Criterion};
use crate::{Trigger, metrics as m};

/// Thresholds for [`TokenCleanupService::health_check`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Expired tokens above this make the status degraded (default 100,000).
    pub backlog_threshold: u64,
    /// A successful scheduled run must be younger than this, if set (default 2 h: the
    /// hourly job plus slack). `None` when no scheduler runs.
    pub max_scheduled_run_age: Option<Duration>,
    /// Window for the error rate (default 24 h).
    pub error_window: Duration,
    /// Error rate at or above which the status is degraded (default 0.2).
    pub degraded_error_rate: f64,
    /// Error rate at or above which the status is unhealthy (default 0.5).
    pub unhealthy_error_rate: f64,
    /// Database round trips slower than this make the status degraded (default 1 s).
    pub slow_database: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            backlog_threshold: 100_000,
            max_scheduled_run_age: Some(Duration::from_secs(2 * 3600)),
            error_window: Duration::from_secs(24 * 3600),
            degraded_error_rate: 0.2,
            unhealthy_error_rate: 0.5,
            slow_database: Duration::from_secs(1),
        }
    }
}

impl HealthConfig {
    /// Sets the backlog threshold.
    pub fn backlog_threshold(mut self, rows: u64) -> Self {
        self.backlog_threshold = rows;
        self
    }
    /// Sets (or with `None` disables) the scheduled-run freshness check.
    pub fn max_scheduled_run_age(mut self, age: Option<Duration>) -> Self {
        self.max_scheduled_run_age = age;
        self
    }
}

/// Overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// All checks pass.
    Healthy,
    /// Working, but something needs attention.
    Degraded,
    /// Cleanup cannot work (database unreachable, most runs failing).
    Unhealthy,
}

/// The database probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DatabaseHealth {
    /// Whether the ping succeeded.
    pub reachable: bool,
    /// Round-trip time, ms.
    pub latency_ms: f64,
    /// The error, if unreachable.
    pub error: Option<String>,
}

/// Result of a health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// Overall status (the worst of the checks).
    pub status: HealthStatus,
    /// When checked.
    pub checked_at: DateTime<Utc>,
    /// Database probe.
    pub database: DatabaseHealth,
    /// Last successful scheduled run.
    pub last_scheduled_success: Option<DateTime<Utc>>,
    /// Expired tokens in the table (all types), if the database answered.
    pub expired_backlog: Option<u64>,
    /// The backlog threshold.
    pub backlog_threshold: u64,
    /// Failed / finished runs in the error window.
    pub error_rate: f64,
    /// Why the status is not healthy.
    pub reasons: Vec<String>,
}

impl TokenCleanupService {
    /// Checks the database, the backlog, the last scheduled run and the error rate.
    ///
    /// Never fails: an unreachable database is an unhealthy report, not an error.
    pub async fn health_check(&self) -> HealthReport {
        let cfg = self.health_config().clone();
        let now = self.clock().now();
        let mut status = HealthStatus::Healthy;
        let mut reasons = Vec::new();
        let mut worsen = |to: HealthStatus, reason: String| {
            status = status.max(to);
            reasons.push(reason);
        };

        let started = Instant::now();
        let ping = self.store().ping().await;
        let latency = started.elapsed();
        let database = DatabaseHealth {
            reachable: ping.is_ok(),
            latency_ms: latency.as_secs_f64() * 1000.0,
            error: ping.as_ref().err().map(|e| e.to_string()),
        };
        if let Err(e) = &ping {
            worsen(
                HealthStatus::Unhealthy,
                format!("database unreachable: {e}"),
            );
        } else if latency > cfg.slow_database {
            worsen(
                HealthStatus::Degraded,
                format!("database round trip took {} ms", latency.as_millis()),
            );
        }

        let mut expired_backlog = None;
        if ping.is_ok() {
            match self.backlog(now).await {
                Ok(backlog) => {
                    if backlog > cfg.backlog_threshold {
                        worsen(
                            HealthStatus::Degraded,
                            format!(
                                "{backlog} expired tokens wait for cleanup (threshold {})",
                                cfg.backlog_threshold
                            ),
                        );
                    }
                    expired_backlog = Some(backlog);
                }
                Err(e) => worsen(HealthStatus::Degraded, format!("backlog unknown: {e}")),
            }
        }

        let window_start =
            now - TimeDelta::from_std(cfg.error_window).unwrap_or(TimeDelta::days(1));
        let mut error_rate = 0.0;
        let mut last_scheduled_success = None;
        match self
            .run_store()
            .runs(&RunQuery {
                since: Some(window_start.min(now - TimeDelta::days(31))),
                ..RunQuery::default()
            })
            .await
        {
            Ok(runs) => {
                last_scheduled_success = runs
                    .iter()
                    .filter(|r| r.trigger == Trigger::Scheduled && r.status == RunStatus::Succeeded)
                    .filter_map(|r| r.finished_at)
                    .max();
                let recent: Vec<_> = runs
                    .iter()
                    .filter(|r| r.created_at >= window_start && r.status.is_finished())
                    .collect();
                if !recent.is_empty() {
                    let failed = recent
                        .iter()
                        .filter(|r| r.status == RunStatus::Failed)
                        .count();
                    error_rate = failed as f64 / recent.len() as f64;
                }
                if error_rate >= cfg.unhealthy_error_rate {
                    worsen(
                        HealthStatus::Unhealthy,
                        format!("{:.0}% of recent runs failed", error_rate * 100.0),
                    );
                } else if error_rate >= cfg.degraded_error_rate {
                    worsen(
                        HealthStatus::Degraded,
                        format!("{:.0}% of recent runs failed", error_rate * 100.0),
                    );
                }
                if let Some(max_age) = cfg.max_scheduled_run_age {
                    let max_age = TimeDelta::from_std(max_age).unwrap_or(TimeDelta::MAX);
                    match last_scheduled_success {
                        Some(at) if now - at <= max_age => {}
                        Some(at) => worsen(
                            HealthStatus::Degraded,
                            format!(
                                "last successful scheduled run was {} minutes ago",
                                (now - at).num_minutes()
                            ),
                        ),
                        None => worsen(
                            HealthStatus::Degraded,
                            "no successful scheduled run recorded".to_owned(),
                        ),
                    }
                }
            }
            Err(e) => worsen(
                HealthStatus::Degraded,
                format!("run history unavailable: {e}"),
            ),
        }

        let report = HealthReport {
            status,
            checked_at: now,
            database,
            last_scheduled_success,
            expired_backlog,
            backlog_threshold: cfg.backlog_threshold,
            error_rate,
            reasons,
        };
        if report.status != HealthStatus::Healthy {
            self.notify(Notification::HealthAlert(report.clone())).await;
        }
        report
    }

    /// Expired tokens of every type at `now` (index range counts, one per type).
    async fn backlog(&self, now: DateTime<Utc>) -> Result<u64> {
        let types = match self.registered_types() {
            Some(types) => types.to_vec(),
            None => self.store().token_types().await?,
        };
        let mut total = 0;
        for t in types {
            let n = self
                .store()
                .count(&BatchFilter::new(
                    t.clone(),
                    Criterion::Expired { before: now },
                ))
                .await?;
            m::backlog(&t, n);
            total += n;
        }
        Ok(total)
    }
}
