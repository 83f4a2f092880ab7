//! HTTP delivery shared by the SendGrid and webhook notifiers: timeout, retries with
//! backoff on transport errors, 429 and 5xx.

use std::fmt;
use std::time::Duration;

use crate::error::{BoxError, Error, Result};

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Response bodies are quoted in errors up to this many bytes.
const MAX_QUOTED_BODY: usize = 300;

/// A non-success answer.
#[derive(Debug)]
pub(crate) struct HttpStatus {
    status: u16,
    body: String,
}

impl fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.body.is_empty() {
            write!(f, "the server answered HTTP {}", self.status)
        } else {
            write!(f, "the server answered HTTP {}: {}", self.status, self.body)
        }
    }
}

impl std::error::Error for HttpStatus {}

/// How requests are sent.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) client: reqwest::Client,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
}

impl Delivery {
    pub(crate) fn new(
        client: Option<reqwest::Client>,
        timeout: Duration,
        retries: u32,
        backoff: Duration,
    ) -> Result<Self> {
        let client = match client {
            Some(client) => client,
            None => reqwest::Client::builder()
                .build()
                .map_err(|e| Error::InvalidConfig {
                    setting: "http_client",
                    message: "the HTTP client could not be built".into(),
                    source: Some(Box::new(e)),
                })?,
        };
        Ok(Self {
            client,
            timeout,
            retries,
            backoff,
        })
    }

    /// Sends the request `build` makes, again after a backoff while it fails with a
    /// transport error, 429 or 5xx, at most `1 + retries` times. Other answers below 200
    /// or from 300 up fail at once.
    pub(crate) async fn send(
        &self,
        notifier: &'static str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<()> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let error: BoxError = match build(&self.client).timeout(self.timeout).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let mut body = response.text().await.unwrap_or_default();
                    if body.len() > MAX_QUOTED_BODY {
                        let mut cut = MAX_QUOTED_BODY;
                        while !body.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        body.truncate(cut);
                        body.push_str("...");
                    }
                    let error = HttpStatus {
                        status: status.as_u16(),
                        body,
                    };
                    let retryable = status.is_server_error() || status.as_u16() == 429;
                    if !retryable {
                        return Err(notify_error(notifier, Box::new(error)));
                    }
                    Box::new(error)
                }
                // The URL may carry credentials in its query; keep it out of errors.
                Err(e) => Box::new(e.without_url()),
            };
            if attempt > self.retries {
                return Err(notify_error(notifier, error));
            }
            let wait = self
                .backoff
                .saturating_mul(2u32.saturating_pow(attempt - 1))
                .min(MAX_BACKOFF);
            tracing::debug!(
                notifier,
                attempt,
                error = %error,
                retry_in_ms = wait.as_millis() as u64,
                "delivery failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

fn notify_error(notifier: &'static str, source: BoxError) -> Error {
    Error::Notify {
        notifier: notifier.to_owned(),
        source,
    }
}
