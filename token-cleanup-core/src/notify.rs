//! Notifications: the [`Notifier`] trait, the messages and what counts as significant.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::health::HealthReport;
use crate::report::CleanupReport;
use crate::reporting::{PeriodReport, escape_html};

/// Something worth telling a human about. Carries counts and identifiers, never token
/// values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // built once per event; boxing would only add noise
pub enum Notification {
    /// A run finished.
    CleanupCompleted(CleanupReport),
    /// A run failed; `report` has the counts it reached.
    CleanupFailed {
        /// Progress before the failure.
        report: CleanupReport,
        /// The error.
        error: String,
    },
    /// A periodic report is ready.
    ReportReady(PeriodReport),
    /// Health is degraded or unhealthy.
    HealthAlert(HealthReport),
}

impl Notification {
    /// Stable kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            Notification::CleanupCompleted(_) => "cleanup_completed",
            Notification::CleanupFailed { .. } => "cleanup_failed",
            Notification::ReportReady(_) => "report_ready",
            Notification::HealthAlert(_) => "health_alert",
        }
    }

    /// A subject line.
    pub fn subject(&self) -> String {
        match self {
            Notification::CleanupCompleted(r) => format!(
                "Token cleanup removed {} expired tokens in {:.1} s",
                r.total_cleaned,
                r.duration.as_secs_f64()
            ),
            Notification::CleanupFailed { report, .. } => format!(
                "Token cleanup run {} failed after removing {} tokens",
                report.run_id, report.total_cleaned
            ),
            Notification::ReportReady(r) => r.title(),
            Notification::HealthAlert(h) => format!("Token cleanup health: {:?}", h.status),
        }
    }

    /// Plain-text body.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        match self {
            Notification::CleanupCompleted(r) => write_run(&mut out, r),
            Notification::CleanupFailed { report, error } => {
                let _ = writeln!(out, "Error: {error}");
                write_run(&mut out, report);
            }
            Notification::ReportReady(r) => out.push_str(&r.render_text()),
            Notification::HealthAlert(h) => {
                let _ = writeln!(out, "Status: {:?}", h.status);
                for reason in &h.reasons {
                    let _ = writeln!(out, "- {reason}");
                }
            }
        }
        out
    }

    /// HTML body.
    pub fn render_html(&self) -> String {
        match self {
            Notification::ReportReady(r) => r.render_html(),
            other => format!(
                "<h2>{}</h2><pre>{}</pre>",
                escape_html(&other.subject()),
                escape_html(&other.render_text())
            ),
        }
    }
}

fn write_run(out: &mut String, r: &CleanupReport) {
    let _ = writeln!(out, "Run: {}", r.run_id);
    let _ = writeln!(out, "Tokens removed: {}", r.total_cleaned);
    for (t, n) in &r.by_type {
        let _ = writeln!(out, "  {t}: {n}");
    }
    let _ = writeln!(
        out,
        "Batches: {} (size {}), duration {} ms, {:.0} tokens/s",
        r.batches,
        r.batch_size,
        r.duration.as_millis(),
        r.tokens_per_second
    );
    if let Some(stopped) = r.stopped {
        let _ = writeln!(out, "Stopped early: {stopped:?}");
    }
}

/// Delivers notifications (e-mail, webhook, chat ...).
///
/// Failures are returned to the engine, which logs them at WARN; they never fail a run.
#[async_trait]
pub trait Notifier: Send + Sync + fmt::Debug + 'static {
    /// Name for logs.
    fn name(&self) -> &str;

    /// Delivers one notification.
    async fn notify(&self, notification: &Notification) -> Result<()>;
}

/// What is significant enough to send. Defaults: any failure, any run above 10,000
/// tokens, every report, every health alert.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Thresholds {
    /// Notify completed runs that removed more than this many tokens.
    pub tokens_cleaned_above: u64,
    /// Notify failed runs.
    pub failures: bool,
    /// Notify reports.
    pub reports: bool,
    /// Notify health alerts.
    pub health_alerts: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            tokens_cleaned_above: 10_000,
            failures: true,
            reports: true,
            health_alerts: true,
        }
    }
}

impl Thresholds {
    /// Whether `n` passes.
    pub fn is_significant(&self, n: &Notification) -> bool {
        match n {
            Notification::CleanupCompleted(r) => r.total_cleaned > self.tokens_cleaned_above,
            Notification::CleanupFailed { .. } => self.failures,
            Notification::ReportReady(_) => self.reports,
            Notification::HealthAlert(_) => self.health_alerts,
        }
    }
}

/// Writes notifications to `tracing` (target `token_cleanup::notify`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingNotifier;

#[async_trait]
impl Notifier for TracingNotifier {
    fn name(&self) -> &str {
        "tracing"
    }

    async fn notify(&self, n: &Notification) -> Result<()> {
        tracing::info!(target: "token_cleanup::notify", kind = n.kind(), "{}", n.subject());
        Ok(())
    }
}

/// Sends every notification to several notifiers; one failing does not stop the others.
#[derive(Debug, Clone, Default)]
pub struct FanOutNotifier {
    notifiers: Vec<Arc<dyn Notifier>>,
}

impl FanOutNotifier {
    /// An empty fan-out.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a notifier.
    pub fn with(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifiers.push(notifier);
        self
    }
}

#[async_trait]
impl Notifier for FanOutNotifier {
    fn name(&self) -> &str {
        "fan-out"
    }

    async fn notify(&self, n: &Notification) -> Result<()> {
        let mut failed = Vec::new();
        for notifier in &self.notifiers {
            if let Err(e) = notifier.notify(n).await {
                tracing::warn!(notifier = notifier.name(), error = %e, "notifier failed");
                failed.push(notifier.name().to_owned());
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::Notify {
                notifier: failed.join(", "),
                source: format!(
                    "{} of {} notifiers failed",
                    failed.len(),
                    self.notifiers.len()
                )
                .into(),
            })
        }
    }
}
