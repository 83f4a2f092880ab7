//! What a caller asks the engine to do.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default batch size.
pub const DEFAULT_BATCH_SIZE: u32 = 1000;
/// Largest accepted batch size.
pub const MAX_BATCH_SIZE: u32 = 50_000;

/// Which token types a run covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenTypes {
    /// Every type: the host's registered list, or every type present in the table.
    All,
    /// Exactly these types (at least one).
    Only(Vec<String>),
}

/// What started a run.
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Called by code or an admin.
    Manual,
    /// Started by the scheduler.
    Scheduled,
}

/// Parameters of one cleanup run.
///
/// ```
/// use token_cleanup_core::{token_types, CleanupRequest};
///
/// let request = CleanupRequest::new([token_types::PASSWORD_RESET, token_types::MAGIC_LINK])
///     .batch_size(2000)
///     .dry_run(true)
///     .requested_by("alice@example.com");
/// assert_eq!(request.batch_size, 2000);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CleanupRequest {
    /// Types to clean.
    pub token_types: TokenTypes,
    /// Rows per batch, `1..=50_000` (default 1000). Each batch is one transaction.
    pub batch_size: u32,
    /// Count what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Also delete tokens that were used longer ago than the type's used-token grace.
    /// Needs a used-at column. Off by default: plain runs only ever delete expired tokens.
    pub include_used: bool,
    /// Stop (at a batch boundary) after this many rows.
    pub max_rows: Option<u64>,
    /// Stop (at a batch boundary) after this much wall time.
    #[serde(with = "crate::serde_util::opt_millis", default)]
    pub max_duration: Option<Duration>,
    /// What started the run.
    pub trigger: Trigger,
    /// Who asked (an admin's identity); recorded, never interpreted.
    pub requested_by: Option<String>,
    /// Scheduler job name, for scheduled runs.
    pub job: Option<String>,
}

impl CleanupRequest {
    /// A manual run over the given types with the defaults.
    pub fn new<I, S>(token_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_types(TokenTypes::Only(
            token_types.into_iter().map(Into::into).collect(),
        ))
    }

    /// A manual run over every type.
    ///
    /// ```
    /// let request = token_cleanup_core::CleanupRequest::all_types().max_rows(100_000);
    /// assert_eq!(request.max_rows, Some(100_000));
    /// ```
    pub fn all_types() -> Self {
        Self::with_types(TokenTypes::All)
    }

    fn with_types(token_types: TokenTypes) -> Self {
        Self {
            token_types,
            batch_size: DEFAULT_BATCH_SIZE,
            dry_run: false,
            include_used: false,
            max_rows: None,
            max_duration: None,
            trigger: Trigger::Manual,
            requested_by: None,
            job: None,
        }
    }

    /// Sets the batch size.
    pub fn batch_size(mut self, batch_size: u32) -> Self {
        self.batch_size = batch_size;
        self
    }
    /// Sets dry run.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
    /// Also removes used tokens past their grace.
    pub fn include_used(mut self, include_used: bool) -> Self {
        self.include_used = include_used;
        self
    }
    /// Caps the rows deleted by this run.
    pub fn max_rows(mut self, max_rows: u64) -> Self {
        self.max_rows = Some(max_rows);
        self
    }
    /// Caps the wall time of this run.
    pub fn max_duration(mut self, max_duration: Duration) -> Self {
        self.max_duration = Some(max_duration);
        self
    }
    /// Records who asked.
    pub fn requested_by(mut self, who: impl Into<String>) -> Self {
        self.requested_by = Some(who.into());
        self
    }
    /// Marks the run as started by the scheduler job `job`.
    pub fn scheduled(mut self, job: impl Into<String>) -> Self {
        self.trigger = Trigger::Scheduled;
        self.job = Some(job.into());
        self
    }
}
