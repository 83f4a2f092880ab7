//! Notifiers that deliver [`Notification`]s to people and systems.
//!
//! | notifier | feature | configured from |
//! | --- | --- | --- |
//! | [`TracingNotifier`](crate::TracingNotifier) | always | nothing: writes to `tracing` |
//! | [`FanOutNotifier`](crate::FanOutNotifier) | always | the notifiers it sends to |
//! | [`SmtpNotifier`] | `smtp` | `SMTP_URL`, `FROM_EMAIL`, `NOTIFY_EMAIL_TO` |
//! | [`SendGridNotifier`] | `sendgrid` | `SENDGRID_API_KEY`, `FROM_EMAIL`, `NOTIFY_EMAIL_TO`, `SENDGRID_BASE_URL` |
//! | [`WebhookNotifier`] | `webhook` | `WEBHOOK_URL`, `WEBHOOK_SECRET` |
//!
//! Every setting is checked when the notifier is built: a URL that does not parse, an
//! address without `@` or a missing variable is an [`Error::InvalidConfig`], never a
//! failure at the first send. Delivery failures are returned to the engine, which logs
//! them at WARN; they never fail a cleanup.
//!
//! E-mails carry a text and an HTML body. The HTML comes from an [`HtmlRenderer`]
//! (default: [`Notification::render_html`]); when it fails, the notifier logs a WARN and
//! sends the text body alone.
//!
//! [`SmtpNotifier`]: crate::notifiers::SmtpNotifier
//! [`SendGridNotifier`]: crate::notifiers::SendGridNotifier
//! [`WebhookNotifier`]: crate::notifiers::WebhookNotifier

use std::fmt;

#[cfg(any(feature = "smtp", feature = "sendgrid", feature = "webhook"))]
use crate::error::Result;
use crate::error::{BoxError, Error};
use crate::notify::Notification;

#[cfg(any(feature = "sendgrid", feature = "webhook"))]
mod http;
#[cfg(feature = "sendgrid")]
mod sendgrid;
#[cfg(feature = "smtp")]
mod smtp;
#[cfg(feature = "webhook")]
mod webhook;

#[cfg(feature = "sendgrid")]
#[cfg_attr(docsrs, doc(cfg(feature = "sendgrid")))]
pub use sendgrid::{SendGridNotifier, SendGridNotifierBuilder};
#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub use smtp::{SmtpNotifier, SmtpNotifierBuilder};
#[cfg(feature = "webhook")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
pub use webhook::{
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookNotifier,
    WebhookNotifierBuilder, sign, verify_signature,
};

/// Environment variable: the SMTP server URL (`smtps://user:pass@host:465`,
/// `smtp://host:587?tls=required`, `smtp://localhost:25` for a local relay).
pub const SMTP_URL: &str = "SMTP_URL";
/// Environment variable: the sender address of e-mail notifications.
pub const FROM_EMAIL: &str = "FROM_EMAIL";
/// Environment variable: comma-separated recipients of e-mail notifications.
pub const NOTIFY_EMAIL_TO: &str = "NOTIFY_EMAIL_TO";
/// Environment variable: the SendGrid API key.
pub const SENDGRID_API_KEY: &str = "SENDGRID_API_KEY";
/// Environment variable: the SendGrid API base URL (default `https://api.sendgrid.com`).
pub const SENDGRID_BASE_URL: &str = "SENDGRID_BASE_URL";
/// Environment variable: where webhooks are posted.
pub const WEBHOOK_URL: &str = "WEBHOOK_URL";
/// Environment variable: the shared secret webhooks are signed with.
pub const WEBHOOK_SECRET: &str = "WEBHOOK_SECRET";

/// Renders the HTML body of an e-mail notification.
///
/// Implement it to use the host's own templates; a failure makes the notifier send the
/// text body alone (and log a WARN), never drop the message.
pub trait HtmlRenderer: Send + Sync + fmt::Debug + 'static {
    /// The HTML body for `notification`.
    fn render_html(&self, notification: &Notification) -> Result<String, BoxError>;
}

/// The built-in HTML: [`Notification::render_html`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultHtml;

impl HtmlRenderer for DefaultHtml {
    fn render_html(&self, notification: &Notification) -> Result<String, BoxError> {
        Ok(notification.render_html())
    }
}

/// Subject and bodies of one e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmailContent {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body; `None` when rendering it failed.
    pub html: Option<String>,
}

impl EmailContent {
    /// Renders `notification`; an HTML failure is logged at WARN (naming `notifier`) and
    /// leaves the text body alone.
    ///
    /// ```
    /// use token_cleanup_core::notifiers::{DefaultHtml, EmailContent};
    /// use token_cleanup_core::Notification;
    /// # fn content(n: &Notification) {
    /// let email = EmailContent::render(n, &DefaultHtml, "smtp");
    /// assert!(email.html.is_some());
    /// # }
    /// ```
    pub fn render(
        notification: &Notification,
        renderer: &dyn HtmlRenderer,
        notifier: &str,
    ) -> Self {
        let html = match renderer.render_html(notification) {
            Ok(html) => Some(html),
            Err(e) => {
                tracing::warn!(
                    notifier,
                    kind = notification.kind(),
                    error = %e,
                    "rendering the HTML body failed; sending the text body only"
                );
                None
            }
        };
        Self {
            subject: notification.subject(),
            text: notification.render_text(),
            html,
        }
    }
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
#[allow(dead_code)] // Only some notifier features read it.
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[allow(dead_code)] // Only some notifier features use each helper.
pub(crate) fn invalid(setting: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidConfig {
        setting,
        message: message.into(),
        source: None,
    }
}

/// A variable that must be set and not blank.
#[cfg(any(feature = "smtp", feature = "sendgrid", feature = "webhook"))]
pub(crate) fn required(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String> {
    lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(name, "is not set"))
}

/// Comma-separated addresses.
#[cfg(any(feature = "smtp", feature = "sendgrid"))]
pub(crate) fn address_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|a| !a.is_empty())
}

/// A plain `local@domain` address (no display name), trimmed.
#[cfg(feature = "sendgrid")]
pub(crate) fn check_email(setting: &'static str, address: &str) -> Result<String> {
    let address = address.trim();
    let ok = match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !address.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if ok {
        Ok(address.to_owned())
    } else {
        Err(invalid(
            setting,
            format!("`{address}` is not an e-mail address"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Broken;

    impl HtmlRenderer for Broken {
        fn render_html(&self, _: &Notification) -> Result<String, BoxError> {
            Err("template missing".into())
        }
    }

    fn alert() -> Notification {
        serde_json::from_value(serde_json::json!({
            "kind": "health_alert",
            "status": "degraded",
            "checked_at": "2026-03-01T00:00:00Z",
            "database": {"reachable": true, "latency_ms": 1.0, "error": null},
            "last_scheduled_success": null,
            "expired_backlog": 200000,
            "backlog_threshold": 100000,
            "error_rate": 0.0,
            "reasons": ["expired backlog 200000 is above 100000"]
        }))
        .expect("a health alert")
    }

    #[test]
    fn html_failure_falls_back_to_text() {
        let n = alert();
        let ok = EmailContent::render(&n, &DefaultHtml, "test");
        assert!(ok.html.unwrap().contains("backlog"));
        let fallback = EmailContent::render(&n, &Broken, "test");
        assert_eq!(fallback.html, None);
        assert_eq!(fallback.text, ok.text);
        assert_eq!(fallback.subject, ok.subject);
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "\"<redacted>\"");
    }
}
