//! E-mail over SMTP (lettre).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{
    DefaultHtml, EmailContent, FROM_EMAIL, HtmlRenderer, NOTIFY_EMAIL_TO, SMTP_URL, address_list,
    invalid, required,
};
use crate::error::{Error, Result};
use crate::notify::{Notification, Notifier};

/// Sends each notification as an e-mail with a text and an HTML part over SMTP.
///
/// The server is given as a URL: `smtps://user:password@smtp.example.com:465` (TLS),
/// `smtp://user:password@smtp.example.com:587?tls=required` (STARTTLS), or
/// `smtp://localhost:25` (a local relay, no TLS). TLS is rustls with the platform's
/// certificate store.
///
/// ```
/// use token_cleanup_core::notifiers::SmtpNotifier;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), token_cleanup_core::Error> {
/// let smtp = SmtpNotifier::builder("smtp://mailer:secret@smtp.example.com:587?tls=required")
///     .from("Token cleanup <cleanup@example.com>")
///     .to("ops@example.com")
///     .build()?;
/// assert!(SmtpNotifier::builder("http://smtp.example.com").from("a@b.c").to("d@e.f").build().is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    renderer: Arc<dyn HtmlRenderer>,
}

impl fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: show the server only.
        f.debug_struct("SmtpNotifier")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Configures an [`SmtpNotifier`].
pub struct SmtpNotifierBuilder {
    url: String,
    from: Option<String>,
    to: Vec<String>,
    timeout: Duration,
    renderer: Arc<dyn HtmlRenderer>,
}

impl fmt::Debug for SmtpNotifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpNotifierBuilder")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl SmtpNotifier {
    /// Sends through the server at `url`; set the sender with
    /// [`from`](SmtpNotifierBuilder::from) and recipients with
    /// [`to`](SmtpNotifierBuilder::to).
    pub fn builder(url: impl Into<String>) -> SmtpNotifierBuilder {
        SmtpNotifierBuilder {
            url: url.into(),
            from: None,
            to: Vec::new(),
            timeout: Duration::from_secs(30),
            renderer: Arc::new(DefaultHtml),
        }
    }

    /// From `SMTP_URL`, `FROM_EMAIL` and `NOTIFY_EMAIL_TO` (comma-separated).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let url = required(&lookup, SMTP_URL)?;
        let from = required(&lookup, FROM_EMAIL)?;
        let to = required(&lookup, NOTIFY_EMAIL_TO)?;
        let mut builder = Self::builder(url).from(from);
        for address in address_list(&to) {
            builder = builder.to(address);
        }
        builder.build()
    }
}

fn mailbox(setting: &'static str, address: &str) -> Result<Mailbox> {
    address
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| Error::InvalidConfig {
            setting,
            message: format!("`{}` is not an e-mail address", address.trim()),
            source: Some(Box::new(e)),
        })
}

impl SmtpNotifierBuilder {
    /// The sender (`cleanup@example.com` or `Name <cleanup@example.com>`).
    pub fn from(mut self, address: impl Into<String>) -> Self {
        self.from = Some(address.into());
        self
    }
    /// Adds a recipient.
    pub fn to(mut self, address: impl Into<String>) -> Self {
        self.to.push(address.into());
        self
    }
    /// Timeout of each SMTP command (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Renders the HTML body with the host's templates.
    pub fn html_renderer(mut self, renderer: Arc<dyn HtmlRenderer>) -> Self {
        self.renderer = renderer;
        self
    }

    /// Checks the URL and the addresses. Opens no connection.
    pub fn build(self) -> Result<SmtpNotifier> {
        let from = match &self.from {
            Some(from) => mailbox(FROM_EMAIL, from)?,
            None => return Err(invalid(FROM_EMAIL, "a sender is required")),
        };
        let to = self
            .to
            .iter()
            .map(|a| mailbox(NOTIFY_EMAIL_TO, a))
            .collect::<Result<Vec<_>>>()?;
        if to.is_empty() {
            return Err(invalid(
                NOTIFY_EMAIL_TO,
                "at least one recipient is required",
            ));
        }
        let url = self.url.trim();
        let parsed = server_of(url)?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| Error::InvalidConfig {
                setting: "smtp_url",
                message: "needs smtp://, smtps:// or smtp://...?tls=required|opportunistic".into(),
                source: Some(Box::new(e)),
            })?
            .timeout(Some(self.timeout))
            .build();
        Ok(SmtpNotifier {
            transport,
            server: parsed,
            from,
            to,
            renderer: self.renderer,
        })
    }
}

/// `host:port` of an SMTP URL, for logs (never the credentials). Refuses anything that
/// is not a URL with a host.
fn server_of(url: &str) -> Result<String> {
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| invalid("smtp_url", "does not parse as a URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() {
        return Err(invalid("smtp_url", "has no host"));
    }
    Ok(host.to_owned())
}

#[async_trait]
impl Notifier for SmtpNotifier {
    fn name(&self) -> &str {
        "smtp"
    }

    async fn notify(&self, notification: &Notification) -> Result<()> {
        let email = EmailContent::render(notification, self.renderer.as_ref(), "smtp");
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(email.subject);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = match email.html {
            Some(html) => message.multipart(MultiPart::alternative_plain_html(email.text, html)),
            None => message.singlepart(SinglePart::plain(email.text)),
        };
        let message = message.map_err(|e| Error::Notify {
            notifier: "smtp".into(),
            source: Box::new(e),
        })?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| Error::Notify {
                notifier: format!("smtp ({})", self.server),
                source: Box::new(e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_addresses_are_checked_when_built() {
        let base = |url: &str| {
            SmtpNotifier::builder(url)
                .from("cleanup@example.com")
                .to("ops@example.com")
        };
        let ok = base("smtp://user:hunter2@mail.example.com:587?tls=required")
            .build()
            .unwrap();
        assert_eq!(ok.server, "mail.example.com:587");
        assert!(!format!("{ok:?}").contains("hunter2"));
        assert!(base("smtps://mail.example.com").build().is_ok());
        assert!(base("smtp://127.0.0.1:2525").build().is_ok());

        for bad in [
            "",
            "mail.example.com",
            "http://mail.example.com",
            "smtp://",
            "smtp://host?tls=maybe",
        ] {
            match base(bad).build() {
                Err(Error::InvalidConfig {
                    setting: "smtp_url",
                    ..
                }) => {}
                other => panic!("`{bad}`: {other:?}"),
            }
        }
        assert!(matches!(
            SmtpNotifier::builder("smtp://h")
                .from("nope")
                .to("a@b.c")
                .build(),
            Err(Error::InvalidConfig {
                setting: FROM_EMAIL,
                ..
            })
        ));
        assert!(matches!(
            SmtpNotifier::builder("smtp://h").from("a@b.c").build(),
            Err(Error::InvalidConfig {
                setting: NOTIFY_EMAIL_TO,
                ..
            })
        ));
        assert!(matches!(
            SmtpNotifier::from_lookup(|_| None),
            Err(Error::InvalidConfig {
                setting: SMTP_URL,
                ..
            })
        ));
    }
}
