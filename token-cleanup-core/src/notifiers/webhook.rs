//! Signed JSON webhooks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use hmac::{KeyInit, Mac};
use serde::Serialize;
use uuid::Uuid;

use super::http::Delivery;
use super::{Secret, WEBHOOK_SECRET, WEBHOOK_URL, invalid, required};
use crate::error::{Error, Result};
use crate::notify::{Notification, Notifier};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Header with `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-token-cleanup-signature";
/// Header with the Unix time (seconds) the delivery was signed at.
pub const TIMESTAMP_HEADER: &str = "x-token-cleanup-timestamp";
/// Header with the notification kind (`cleanup_completed`, `cleanup_failed`,
/// `report_ready`, `health_alert`).
pub const EVENT_HEADER: &str = "x-token-cleanup-event";
/// Header with the delivery id; the same on every retry of one delivery.
pub const DELIVERY_HEADER: &str = "x-token-cleanup-delivery";

/// The signature header value for `body` sent at `timestamp` (Unix seconds):
/// `sha256=` and the lowercase hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
///
/// ```
/// let sig = token_cleanup_core::notifiers::sign(b"secret", 1_700_000_000, br#"{"a":1}"#);
/// assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
/// ```
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Checks a received webhook: `signature` is the [`SIGNATURE_HEADER`] value and
/// `timestamp` the [`TIMESTAMP_HEADER`] value. Compares in constant time. Receivers
/// should also refuse timestamps far from their own clock (replays).
///
/// ```
/// use token_cleanup_core::notifiers::{sign, verify_signature};
/// let body = br#"{"event":"report_ready"}"#;
/// let sig = sign(b"s3cret", 1_700_000_000, body);
/// assert!(verify_signature(b"s3cret", "1700000000", body, &sig));
/// assert!(!verify_signature(b"other", "1700000000", body, &sig));
/// ```
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let (Ok(timestamp), Some(hex_sig)) =
        (timestamp.parse::<i64>(), signature.strip_prefix("sha256="))
    else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&expected).is_ok()
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The JSON body of a webhook.
#[derive(Serialize)]
struct Payload<'a> {
    /// Delivery id (also in [`DELIVERY_HEADER`]).
    id: Uuid,
    /// Notification kind.
    event: &'static str,
    /// When it was sent.
    sent_at: chrono::DateTime<Utc>,
    /// One-line summary.
    subject: String,
    /// Plain-text rendering.
    text: String,
    /// The notification itself (tagged with `kind`).
    data: &'a Notification,
}

/// Posts each notification as signed JSON to a URL.
///
/// The body is `{"id", "event", "sent_at", "subject", "text", "data"}` where `data` is
/// the [`Notification`] as JSON. Headers: [`SIGNATURE_HEADER`], [`TIMESTAMP_HEADER`],
/// [`EVENT_HEADER`], [`DELIVERY_HEADER`]; receivers check them with
/// [`verify_signature`]. Each attempt has a timeout; transport errors, 429 and 5xx are
/// retried with a doubling backoff.
///
/// ```
/// use std::time::Duration;
/// use token_cleanup_core::notifiers::WebhookNotifier;
///
/// let webhook = WebhookNotifier::builder("https://hooks.example.com/token-cleanup", "s3cret")
///     .timeout(Duration::from_secs(5))
///     .retries(3)
///     .build()?;
/// assert!(WebhookNotifier::builder("not a url", "s3cret").build().is_err());
/// # Ok::<(), token_cleanup_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    url: reqwest::Url,
    secret: Arc<Secret>,
    delivery: Delivery,
}

/// Configures a [`WebhookNotifier`].
#[derive(Debug)]
pub struct WebhookNotifierBuilder {
    url: String,
    secret: Secret,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    client: Option<reqwest::Client>,
}

impl WebhookNotifier {
    /// Posts to `url`, signing with `secret`.
    pub fn builder(url: impl Into<String>, secret: impl Into<String>) -> WebhookNotifierBuilder {
        WebhookNotifierBuilder {
            url: url.into(),
            secret: Secret(secret.into()),
            timeout: Duration::from_secs(10),
            retries: 3,
            backoff: Duration::from_millis(500),
            client: None,
        }
    }

    /// From `WEBHOOK_URL` and `WEBHOOK_SECRET`.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let url = required(&lookup, WEBHOOK_URL)?;
        let secret = required(&lookup, WEBHOOK_SECRET)?;
        Self::builder(url, secret).build()
    }

    /// Where it posts.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }
}

impl WebhookNotifierBuilder {
    /// Timeout of each attempt (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Attempts after the first (default 3).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
    /// Wait before the first retry, doubled for each further one (default 500 ms).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }
    /// Uses the host's HTTP client (its proxy, TLS and pool settings).
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Checks the URL (http or https, with a host) and the secret (not empty).
    pub fn build(self) -> Result<WebhookNotifier> {
        let url = reqwest::Url::parse(self.url.trim()).map_err(|e| Error::InvalidConfig {
            setting: "webhook_url",
            message: "does not parse as a URL".into(),
            source: Some(Box::new(e)),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(
                "webhook_url",
                format!(
                    "needs an http or https URL with a host, not a `{}:` URL",
                    url.scheme()
                ),
            ));
        }
        if self.secret.0.is_empty() {
            return Err(invalid("webhook_secret", "must not be empty"));
        }
        Ok(WebhookNotifier {
            url,
            secret: Arc::new(self.secret),
            delivery: Delivery::new(self.client, self.timeout, self.retries, self.backoff)?,
        })
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn notify(&self, notification: &Notification) -> Result<()> {
        let payload = Payload {
            id: Uuid::now_v7(),
            event: notification.kind(),
            sent_at: Utc::now(),
            subject: notification.subject(),
            text: notification.render_text(),
            data: notification,
        };
        let body = serde_json::to_vec(&payload).map_err(|e| Error::Notify {
            notifier: "webhook".into(),
            source: Box::new(e),
        })?;
        let delivery_id = payload.id.to_string();
        self.delivery
            .send("webhook", |client| {
                // Signed per attempt: a retry carries a fresh timestamp.
                let timestamp = Utc::now().timestamp();
                client
                    .post(self.url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(EVENT_HEADER, payload.event)
                    .header(DELIVERY_HEADER, &delivery_id)
                    .header(TIMESTAMP_HEADER, timestamp.to_string())
                    .header(
                        SIGNATURE_HEADER,
                        sign(self.secret.0.as_bytes(), timestamp, &body),
                    )
                    .body(body.clone())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // echo -n '1700000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign(b"key", 1_700_000_000, b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
        let sig = sign(b"key", 1_700_000_000, b"{}");
        assert!(verify_signature(b"key", "1700000000", b"{}", &sig));
        assert!(!verify_signature(b"key", "1700000001", b"{}", &sig));
        assert!(!verify_signature(b"key", "1700000000", b"{ }", &sig));
        assert!(!verify_signature(b"key", "1700000000", b"{}", "sha256=zz"));
        assert!(!verify_signature(b"key", "soon", b"{}", &sig));
    }

    #[test]
    fn bad_urls_and_secrets_are_refused_at_configuration() {
        for (url, secret, setting) in [
            ("::nope", "s", "webhook_url"),
            ("ftp://example.com/hook", "s", "webhook_url"),
            ("mailto:ops@example.com", "s", "webhook_url"),
            ("https://example.com/hook", "", "webhook_secret"),
        ] {
            match WebhookNotifier::builder(url, secret).build() {
                Err(Error::InvalidConfig { setting: s, .. }) => assert_eq!(s, setting, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        let missing = WebhookNotifier::from_lookup(|_| None).unwrap_err();
        assert!(matches!(
            missing,
            Error::InvalidConfig {
                setting: WEBHOOK_URL,
                ..
            }
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        let w = WebhookNotifier::builder("https://example.com/h", "hunter2")
            .build()
            .unwrap();
        assert!(!format!("{w:?}").contains("hunter2"));
    }
}
