//! E-mail through the SendGrid v3 HTTP API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::http::Delivery;
use super::{
    DefaultHtml, EmailContent, FROM_EMAIL, HtmlRenderer, NOTIFY_EMAIL_TO, SENDGRID_API_KEY,
    SENDGRID_BASE_URL, Secret, address_list, check_email, invalid, required,
};
use crate::error::{Error, Result};
use crate::notify::{Notification, Notifier};

/// SendGrid's API.
const DEFAULT_BASE_URL: &str = "https://api.sendgrid.com";

/// Sends each notification as an e-mail (text and HTML) through SendGrid's
/// `POST /v3/mail/send`, authenticated with the API key as a bearer token.
///
/// ```
/// use token_cleanup_core::notifiers::SendGridNotifier;
///
/// let sendgrid = SendGridNotifier::builder("SG.xxxx", "cleanup@example.com")
///     .to("ops@example.com")
///     .build()?;
/// // Or from SENDGRID_API_KEY, FROM_EMAIL and NOTIFY_EMAIL_TO (and SENDGRID_BASE_URL):
/// let from_env = SendGridNotifier::from_env();
/// # Ok::<(), token_cleanup_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SendGridNotifier {
    api_key: Arc<Secret>,
    from: String,
    to: Vec<String>,
    endpoint: reqwest::Url,
    delivery: Delivery,
    renderer: Arc<dyn HtmlRenderer>,
}

/// Configures a [`SendGridNotifier`].
#[derive(Debug)]
pub struct SendGridNotifierBuilder {
    api_key: Secret,
    from: String,
    to: Vec<String>,
    base_url: String,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    client: Option<reqwest::Client>,
    renderer: Arc<dyn HtmlRenderer>,
}

impl SendGridNotifier {
    /// Sends as `from` with `api_key`; add recipients with
    /// [`to`](SendGridNotifierBuilder::to).
    pub fn builder(api_key: impl Into<String>, from: impl Into<String>) -> SendGridNotifierBuilder {
        SendGridNotifierBuilder {
            api_key: Secret(api_key.into()),
            from: from.into(),
            to: Vec::new(),
            base_url: DEFAULT_BASE_URL.into(),
            timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Duration::from_millis(500),
            client: None,
            renderer: Arc::new(DefaultHtml),
        }
    }

    /// From `SENDGRID_API_KEY`, `FROM_EMAIL`, `NOTIFY_EMAIL_TO` (comma-separated) and,
    /// if set, `SENDGRID_BASE_URL`.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let key = required(&lookup, SENDGRID_API_KEY)?;
        let from = required(&lookup, FROM_EMAIL)?;
        let to = required(&lookup, NOTIFY_EMAIL_TO)?;
        let mut builder = Self::builder(key, from);
        for address in address_list(&to) {
            builder = builder.to(address);
        }
        if let Some(base) = lookup(SENDGRID_BASE_URL).filter(|b| !b.trim().is_empty()) {
            builder = builder.base_url(base);
        }
        builder.build()
    }
}

impl SendGridNotifierBuilder {
    /// Adds a recipient.
    pub fn to(mut self, address: impl Into<String>) -> Self {
        self.to.push(address.into());
        self
    }
    /// Another API base URL (a regional endpoint, a proxy, a test server). Default
    /// `https://api.sendgrid.com`.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }
    /// Timeout of each attempt (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Attempts after the first on transport errors, 429 and 5xx (default 2).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
    /// Wait before the first retry, doubled for each further one (default 500 ms).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }
    /// Uses the host's HTTP client.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }
    /// Renders the HTML body with the host's templates.
    pub fn html_renderer(mut self, renderer: Arc<dyn HtmlRenderer>) -> Self {
        self.renderer = renderer;
        self
    }

    /// Checks the key, the addresses and the base URL.
    pub fn build(self) -> Result<SendGridNotifier> {
        if self.api_key.0.trim().is_empty() {
            return Err(invalid(SENDGRID_API_KEY, "must not be empty"));
        }
        let from = check_email(FROM_EMAIL, &self.from)?;
        let to = self
            .to
            .iter()
            .map(|a| check_email(NOTIFY_EMAIL_TO, a))
            .collect::<Result<Vec<_>>>()?;
        if to.is_empty() {
            return Err(invalid(
                NOTIFY_EMAIL_TO,
                "at least one recipient is required",
            ));
        }
        let mut base =
            reqwest::Url::parse(self.base_url.trim()).map_err(|e| Error::InvalidConfig {
                setting: SENDGRID_BASE_URL,
                message: "does not parse as a URL".into(),
                source: Some(Box::new(e)),
            })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(invalid(
                SENDGRID_BASE_URL,
                "needs an http or https URL with a host",
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let endpoint = base
            .join("v3/mail/send")
            .map_err(|e| Error::InvalidConfig {
                setting: SENDGRID_BASE_URL,
                message: "cannot hold the mail/send path".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(SendGridNotifier {
            api_key: Arc::new(self.api_key),
            from,
            to,
            endpoint,
            delivery: Delivery::new(self.client, self.timeout, self.retries, self.backoff)?,
            renderer: self.renderer,
        })
    }
}

#[async_trait]
impl Notifier for SendGridNotifier {
    fn name(&self) -> &str {
        "sendgrid"
    }

    async fn notify(&self, notification: &Notification) -> Result<()> {
        let email = EmailContent::render(notification, self.renderer.as_ref(), "sendgrid");
        let mut content = vec![json!({"type": "text/plain", "value": email.text})];
        if let Some(html) = &email.html {
            content.push(json!({"type": "text/html", "value": html}));
        }
        let body = json!({
            "personalizations": [{
                "to": self.to.iter().map(|a| json!({"email": a})).collect::<Vec<_>>(),
            }],
            "from": {"email": self.from},
            "subject": email.subject,
            "content": content,
        });
        self.delivery
            .send("sendgrid", |client| {
                client
                    .post(self.endpoint.clone())
                    .bearer_auth(&self.api_key.0)
                    .json(&body)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_checked_when_built() {
        let ok = SendGridNotifier::builder("SG.key", "from@example.com")
            .to("ops@example.com")
            .base_url("http://127.0.0.1:9/sg")
            .build()
            .unwrap();
        assert_eq!(ok.endpoint.as_str(), "http://127.0.0.1:9/sg/v3/mail/send");
        assert!(!format!("{ok:?}").contains("SG.key"));

        let refused = |b: SendGridNotifierBuilder| match b.build() {
            Err(Error::InvalidConfig { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        let base = || SendGridNotifier::builder("SG.key", "from@example.com").to("ops@example.com");
        assert_eq!(refused(base().base_url("not a url")), SENDGRID_BASE_URL);
        assert_eq!(refused(base().base_url("file:///tmp/x")), SENDGRID_BASE_URL);
        assert_eq!(refused(base().to("nobody")), NOTIFY_EMAIL_TO);
        assert_eq!(
            refused(SendGridNotifier::builder("SG.key", "from@").to("ops@example.com")),
            FROM_EMAIL
        );
        assert_eq!(
            refused(SendGridNotifier::builder("", "from@example.com").to("a@b.c")),
            SENDGRID_API_KEY
        );
        assert_eq!(
            refused(SendGridNotifier::builder("k", "from@example.com")),
            NOTIFY_EMAIL_TO
        );
    }

    #[test]
    fn environment_names_the_missing_variable() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let err = SendGridNotifier::from_lookup(env(&[(SENDGRID_API_KEY, "SG.x")])).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                setting: FROM_EMAIL,
                ..
            }
        ));
        let ok = SendGridNotifier::from_lookup(env(&[
            (SENDGRID_API_KEY, "SG.x"),
            (FROM_EMAIL, "cleanup@example.com"),
            (NOTIFY_EMAIL_TO, "a@example.com, b@example.com"),
        ]))
        .unwrap();
        assert_eq!(ok.to, ["a@example.com", "b@example.com"]);
        assert_eq!(
            ok.endpoint.as_str(),
            "https://api.sendgrid.com/v3/mail/send"
        );
    }
}
