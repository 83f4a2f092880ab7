//! Daily, weekly and monthly reports built from the run records.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::notify::Notification;
use crate::run::{RunQuery, RunStatus};
use crate::service::TokenCleanupService;
use crate::stats::RunHistory;

/// Report window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportPeriod {
    /// The last 24 hours.
    Daily,
    /// The last 7 days.
    Weekly,
    /// The last 30 days.
    Monthly,
}

impl ReportPeriod {
    /// Length of the window.
    pub fn length(self) -> TimeDelta {
        match self {
            ReportPeriod::Daily => TimeDelta::days(1),
            ReportPeriod::Weekly => TimeDelta::days(7),
            ReportPeriod::Monthly => TimeDelta::days(30),
        }
    }
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportPeriod::Daily => "daily",
            ReportPeriod::Weekly => "weekly",
            ReportPeriod::Monthly => "monthly",
        }
    }
}

impl fmt::Display for ReportPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReportPeriod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "daily" => Ok(ReportPeriod::Daily),
            "weekly" => Ok(ReportPeriod::Weekly),
            "monthly" => Ok(ReportPeriod::Monthly),
            other => Err(Error::InvalidArgument {
                name: "report_type",
                message: format!("`{other}` is not one of daily, weekly, monthly"),
            }),
        }
    }
}

/// A failed run, as listed in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunError {
    /// The run.
    pub run_id: Uuid,
    /// When it failed.
    pub at: DateTime<Utc>,
    /// The recorded error.
    pub message: String,
}

/// Aggregates of the runs in one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PeriodReport {
    /// Daily, weekly or monthly.
    pub period: ReportPeriod,
    /// Start of the window (inclusive).
    pub from: DateTime<Utc>,
    /// End of the window (when the report was built).
    pub to: DateTime<Utc>,
    /// All runs of the window.
    pub runs: RunHistory,
    /// Scheduled runs only.
    pub scheduled: RunHistory,
    /// Manual runs only.
    pub manual: RunHistory,
    /// Failed runs, newest first (at most 20).
    pub errors: Vec<RunError>,
}

impl TokenCleanupService {
    /// Builds the report for the period ending now.
    pub async fn generate_report(&self, period: ReportPeriod) -> Result<PeriodReport> {
        let to = self.clock().now();
        let from = to - period.length();
        // Everything since `from`: the window ends now, and no run is newer than now.
        let runs = self
            .run_store()
            .runs(&RunQuery {
                since: Some(from),
                ..RunQuery::default()
            })
            .await?;
        let (scheduled, manual): (Vec<_>, Vec<_>) = runs
            .iter()
            .partition(|r| r.trigger == crate::Trigger::Scheduled);
        let errors = runs
            .iter()
            .filter(|r| r.status == RunStatus::Failed)
            .take(20)
            .map(|r| RunError {
                run_id: r.id,
                at: r.finished_at.unwrap_or(r.created_at),
                message: r.error.clone().unwrap_or_default(),
            })
            .collect();
        Ok(PeriodReport {
            period,
            from,
            to,
            runs: RunHistory::from_runs(&runs),
            scheduled: RunHistory::from_runs(scheduled),
            manual: RunHistory::from_runs(manual),
            errors,
        })
    }

    /// Builds the report and sends it through the notifier (reports are always
    /// significant unless the thresholds say otherwise).
    pub async fn generate_and_send_report(&self, period: ReportPeriod) -> Result<PeriodReport> {
        let report = self.generate_report(period).await?;
        self.notify(Notification::ReportReady(report.clone())).await;
        Ok(report)
    }
}

impl PeriodReport {
    /// One-line summary (used as an e-mail subject).
    pub fn title(&self) -> String {
        format!(
            "Token cleanup {} report: {} tokens removed in {} runs",
            self.period, self.runs.tokens_cleaned, self.runs.runs
        )
    }

    /// Plain-text rendering.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let r = &self.runs;
        let _ = writeln!(out, "{}", self.title());
        let _ = writeln!(
            out,
            "Period: {} .. {} (UTC)\n",
            self.from.format("%Y-%m-%d %H:%M"),
            self.to.format("%Y-%m-%d %H:%M")
        );
        let _ = writeln!(
            out,
            "Runs: {} ({} succeeded, {} failed, {} cancelled, {} in progress)",
            r.runs, r.succeeded, r.failed, r.cancelled, r.in_progress
        );
        let _ = writeln!(
            out,
            "Scheduled runs: {}, manual runs: {}",
            self.scheduled.runs, self.manual.runs
        );
        let _ = writeln!(out, "Tokens removed: {}", r.tokens_cleaned);
        for (t, n) in &r.by_type {
            let _ = writeln!(out, "  {t}: {n}");
        }
        let _ = writeln!(
            out,
            "Performance: {:.0} tokens/s, mean run {:.0} ms, longest run {} ms, mean batch {:.1} ms",
            r.tokens_per_second, r.mean_duration_ms, r.max_duration_ms, r.mean_batch_ms
        );
        let _ = writeln!(out, "Error rate: {:.1}%", r.error_rate * 100.0);
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\nErrors:");
            for e in &self.errors {
                let _ = writeln!(
                    out,
                    "  {} run {}: {}",
                    e.at.format("%F %T"),
                    e.run_id,
                    e.message
                );
            }
        }
        out
    }

    /// HTML rendering (a self-contained fragment suitable for an e-mail body).
    pub fn render_html(&self) -> String {
        let r = &self.runs;
        let mut out = String::new();
        let _ = write!(
            out,
            "<h2>{}</h2><p>Period: {} &ndash; {} (UTC)</p>",
            escape_html(&self.title()),
            self.from.format("%Y-%m-%d %H:%M"),
            self.to.format("%Y-%m-%d %H:%M")
        );
        let _ = write!(
            out,
            "<table><tr><th align=\"left\">Runs</th><td>{}</td></tr>\
             <tr><th align=\"left\">Succeeded</th><td>{}</td></tr>\
             <tr><th align=\"left\">Failed</th><td>{}</td></tr>\
             <tr><th align=\"left\">Cancelled</th><td>{}</td></tr>\
             <tr><th align=\"left\">Tokens removed</th><td>{}</td></tr>\
             <tr><th align=\"left\">Tokens/s</th><td>{:.0}</td></tr>\
             <tr><th align=\"left\">Mean run</th><td>{:.0} ms</td></tr>\
             <tr><th align=\"left\">Error rate</th><td>{:.1}%</td></tr></table>",
            r.runs,
            r.succeeded,
            r.failed,
            r.cancelled,
            r.tokens_cleaned,
            r.tokens_per_second,
            r.mean_duration_ms,
            r.error_rate * 100.0
        );
        if !r.by_type.is_empty() {
            out.push_str("<h3>By token type</h3><table>");
            for (t, n) in &r.by_type {
                let _ = write!(out, "<tr><td>{}</td><td>{n}</td></tr>", escape_html(t));
            }
            out.push_str("</table>");
        }
        if !self.errors.is_empty() {
            out.push_str("<h3>Errors</h3><ul>");
            for e in &self.errors {
                let _ = write!(
                    out,
                    "<li>{} run {}: {}</li>",
                    e.at.format("%F %T"),
                    e.run_id,
                    escape_html(&e.message)
                );
            }
            out.push_str("</ul>");
        }
        out
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_type_parses_and_refuses_unknown() {
        assert_eq!(
            "weekly".parse::<ReportPeriod>().unwrap(),
            ReportPeriod::Weekly
        );
        assert!(matches!(
            "yearly".parse::<ReportPeriod>(),
            Err(Error::InvalidArgument {
                name: "report_type",
                ..
            })
        ));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
