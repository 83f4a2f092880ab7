//! The one error type of the crate.

use std::time::Duration;

use uuid::Uuid;

use crate::report::CleanupReport;

/// A boxed error from a storage driver or a notifier transport.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in token-cleanup.
///
/// Validation variants are returned before any row is touched. Store variants keep the
/// driver error as their [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The batch size is outside `1..=50_000`.
    #[error("batch size {batch_size} is out of range (1..={max})", max = crate::MAX_BATCH_SIZE)]
    InvalidBatchSize {
        /// The rejected value.
        batch_size: u32,
    },

    /// The request named no token type.
    #[error("at least one token type is required")]
    NoTokenTypes,

    /// The request named a token type the host did not register.
    #[error("unknown token type `{token_type}`")]
    UnknownTokenType {
        /// The rejected type.
        token_type: String,
    },

    /// A grace period would move the cutoff after "now".
    #[error("grace period for `{token_type}` is negative; the cutoff would be in the future")]
    NegativeGrace {
        /// The type whose policy is wrong.
        token_type: String,
    },

    /// A table, schema or column name is not a plain SQL identifier.
    #[error("invalid {kind} name `{value}`: {reason}")]
    InvalidIdentifier {
        /// What the identifier names: `table`, `schema`, `column`.
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// Any other argument outside its allowed range (days, limits, report type ...).
    #[error("invalid {name}: {message}")]
    InvalidArgument {
        /// The argument's name.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },

    /// A run over some of the same token types is already in progress.
    #[error("a cleanup of {token_types:?} is already running (run {run_id})")]
    AlreadyRunning {
        /// The run in progress.
        run_id: Uuid,
        /// The overlapping types.
        token_types: Vec<String>,
    },

    /// The store failed.
    #[error("{store} store failed to {operation}")]
    Store {
        /// Which store (`sqlite`, `postgres`, `memory` ...).
        store: &'static str,
        /// What it was doing.
        operation: &'static str,
        /// The driver error.
        #[source]
        source: BoxError,
    },

    /// A batch kept failing after every retry; the run stopped and was recorded as failed.
    ///
    /// Batches committed before the failure stay committed: `partial` says how far it got.
    #[error("cleanup run {} failed after {attempts} attempt(s) on `{token_type}`", partial.run_id)]
    RunFailed {
        /// Progress reached before the failure (also stored in the run record).
        partial: Box<CleanupReport>,
        /// The type being cleaned when the failure happened.
        token_type: String,
        /// How many times the failing batch was tried.
        attempts: u32,
        /// The last store error.
        #[source]
        source: Box<Error>,
    },

    /// A notifier could not deliver.
    #[error("notifier `{notifier}` failed")]
    Notify {
        /// Which notifier.
        notifier: String,
        /// The transport error.
        #[source]
        source: BoxError,
    },

    /// A scheduled job's cron expression does not parse or never fires.
    #[error("job `{job}` has an invalid cron expression `{expression}`")]
    InvalidCron {
        /// The job.
        job: String,
        /// The rejected expression.
        expression: String,
        /// Why it was rejected.
        #[source]
        source: BoxError,
    },

    /// A notifier or scheduler setting is unusable (a URL that does not parse, an e-mail
    /// address without `@`, a missing environment variable ...). Returned when the
    /// component is configured, never when it first sends.
    #[error("invalid configuration `{setting}`: {message}")]
    InvalidConfig {
        /// The setting (`smtp_url`, `webhook_url`, `SENDGRID_API_KEY` ...).
        setting: &'static str,
        /// What is wrong with it (never the value of a secret).
        message: String,
        /// The parser's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The caller presented no valid credentials (admin API: `401`).
    #[error("authentication required: {reason}")]
    Unauthenticated {
        /// What was wrong, in words safe to show the caller (never the credential).
        reason: &'static str,
        /// The verifier's error, for the log.
        #[source]
        source: Option<BoxError>,
    },

    /// The caller is authenticated but may not do this (admin API: `403`).
    #[error("an admin role is required")]
    Forbidden {
        /// Who asked.
        subject: String,
    },

    /// The caller sent too many requests (admin API: `429`).
    #[error("too many requests from this admin; retry after the time in `Retry-After`")]
    RateLimited {
        /// When the next request will be accepted.
        retry_after: Duration,
    },

    /// The request body is larger than allowed (admin API: `413`).
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },

    /// The request body is not JSON, or could not be read (admin API: `400`).
    #[error("request body is not valid JSON")]
    MalformedBody {
        /// The parser's or the transport's error.
        #[source]
        source: BoxError,
    },

    /// The request body is JSON of the wrong shape (admin API: `422`).
    #[error("request body does not match the expected shape")]
    InvalidBody {
        /// The decoder's error (field names and types, never values of credentials).
        #[source]
        source: serde_json::Error,
    },

    /// Nothing with that id or path (admin API: `404`).
    #[error("no such {what}")]
    NotFound {
        /// What was looked up (`task`, `endpoint`).
        what: &'static str,
    },

    /// A statement took longer than its configured timeout.
    #[error("{store} store timed out after {timeout:?} while trying to {operation}")]
    Timeout {
        /// Which store.
        store: &'static str,
        /// What it was doing.
        operation: &'static str,
        /// The limit that was hit.
        timeout: Duration,
    },
}

impl Error {
    /// Wraps a driver error as [`Error::Store`].
    pub fn store(
        store: &'static str,
        operation: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Store {
            store,
            operation,
            source: source.into(),
        }
    }

    /// `true` for errors caused by the caller's input (nothing was touched).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidBatchSize { .. }
                | Error::NoTokenTypes
                | Error::UnknownTokenType { .. }
                | Error::NegativeGrace { .. }
                | Error::InvalidIdentifier { .. }
                | Error::InvalidArgument { .. }
                | Error::InvalidCron { .. }
                | Error::InvalidConfig { .. }
                | Error::PayloadTooLarge { .. }
                | Error::MalformedBody { .. }
                | Error::InvalidBody { .. }
        )
    }

    /// `true` for errors worth retrying (store failures and timeouts).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Store { .. } | Error::Timeout { .. })
    }

    /// A stable machine-readable code, used by the admin API's error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidBatchSize { .. } => "invalid_batch_size",
            Error::NoTokenTypes => "no_token_types",
            Error::UnknownTokenType { .. } => "unknown_token_type",
            Error::NegativeGrace { .. } => "negative_grace",
            Error::InvalidIdentifier { .. } => "invalid_identifier",
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::AlreadyRunning { .. } => "already_running",
            Error::Store { .. } => "store_error",
            Error::RunFailed { .. } => "run_failed",
            Error::Notify { .. } => "notify_failed",
            Error::Timeout { .. } => "timeout",
            Error::InvalidCron { .. } => "invalid_cron",
            Error::InvalidConfig { .. } => "invalid_config",
            Error::Unauthenticated { .. } => "unauthenticated",
            Error::Forbidden { .. } => "forbidden",
            Error::RateLimited { .. } => "rate_limited",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::MalformedBody { .. } => "malformed_json",
            Error::InvalidBody { .. } => "invalid_body",
            Error::NotFound { .. } => "not_found",
        }
    }
}
