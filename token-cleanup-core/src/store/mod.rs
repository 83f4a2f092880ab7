//! Storage traits and the stores that implement them.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::Result;
use crate::run::{RunQuery, RunRecord};
use crate::table::TokenTable;

mod memory;
pub use memory::MemoryStore;

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod kept;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod window;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStore;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresStore;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use mysql::MySqlStore;

/// A token row, as far as cleanup cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Primary key.
    pub id: i64,
    /// Token type.
    pub token_type: String,
    /// Expiry instant.
    pub expires_at: DateTime<Utc>,
    /// When it was used, if it was.
    pub used_at: Option<DateTime<Utc>>,
}

impl Token {
    /// A token that was never used.
    pub fn new(id: i64, token_type: impl Into<String>, expires_at: DateTime<Utc>) -> Self {
        Self {
            id,
            token_type: token_type.into(),
            expires_at,
            used_at: None,
        }
    }

    /// Marks the token used at `used_at`.
    pub fn used(mut self, used_at: DateTime<Utc>) -> Self {
        self.used_at = Some(used_at);
        self
    }

    /// Whether `filter` selects this token.
    pub fn matches(&self, filter: &BatchFilter) -> bool {
        if self.token_type != filter.token_type {
            return false;
        }
        let key = match filter.criterion {
            Criterion::Expired { before } => Some(self.expires_at).filter(|e| *e < before),
            Criterion::Used {
                before,
                not_expired_before,
            } => self
                .used_at
                .filter(|u| *u < before && self.expires_at >= not_expired_before),
        };
        key.is_some_and(|k| filter.resume_from.is_none_or(|r| k >= r))
    }
}

/// Which rows of one type a batch may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Criterion {
    /// `expires_at < before`: expired tokens.
    Expired {
        /// The run's cutoff for the type.
        before: DateTime<Utc>,
    },
    /// `used_at < before AND expires_at >= not_expired_before`: used tokens past their
    /// grace that the expired pass does not already cover (so counts never overlap).
    /// Needs a used-at column.
    Used {
        /// Used-token cutoff.
        before: DateTime<Utc>,
        /// The expiry cutoff of the same run.
        not_expired_before: DateTime<Utc>,
    },
}

impl Criterion {
    /// `true` for [`Criterion::Used`].
    pub fn is_used(&self) -> bool {
        matches!(self, Criterion::Used { .. })
    }
}

/// Selection for one batch or count: one token type and one criterion.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchFilter {
    /// The token type.
    pub token_type: String,
    /// Expired or used before a cutoff.
    pub criterion: Criterion,
    /// Lower bound (inclusive) on the criterion's column, from the previous batch's
    /// [`BatchOutcome::resume_from`]. Lets a store skip what earlier batches already
    /// removed (dead index entries on MVCC databases). Stores may ignore it.
    pub resume_from: Option<DateTime<Utc>>,
}

impl BatchFilter {
    /// A filter for `token_type` and `criterion`, from the start.
    pub fn new(token_type: impl Into<String>, criterion: Criterion) -> Self {
        Self {
            token_type: token_type.into(),
            criterion,
            resume_from: None,
        }
    }
}

/// What one committed batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BatchOutcome {
    /// Rows deleted by the batch.
    pub deleted: u64,
    /// Where the next batch may start (largest key deleted), if the store tracks it.
    pub resume_from: Option<DateTime<Utc>>,
    /// Matching rows may remain even though the batch deleted fewer than its limit: a
    /// concurrent transaction (another instance, or the host itself) deleted rows of the
    /// range the batch had read, or the batch stopped short of a run of tokens sharing
    /// one key so as not to exceed its limit. A short batch normally means the criterion
    /// has no rows left; with `more` set, the engine asks for another batch.
    pub more: bool,
}

impl BatchOutcome {
    /// The outcome of a batch that found another instance deleting the same rows (its
    /// lock taken) and left them to it: nothing deleted, the resume point unchanged.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub(crate) fn left_to_other_instance(filter: &BatchFilter) -> Self {
        tracing::debug!(
            token_type = %filter.token_type,
            "another instance is deleting this token type; leaving it to that instance"
        );
        Self {
            deleted: 0,
            resume_from: filter.resume_from,
            more: false,
        }
    }

    /// An outcome of `deleted` rows without a resume point.
    pub fn deleted(deleted: u64) -> Self {
        Self {
            deleted,
            resume_from: None,
            more: false,
        }
    }
}

/// What one [`delete_batches`](TokenStore::delete_batches) call did: the batches it
/// committed, in order, and what stopped it when a batch failed.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Batches {
    /// Each committed batch, with how long it took: in the database, from its lock to
    /// its delete, when the store measures it there (`None`: the engine times the call).
    pub committed: Vec<(BatchOutcome, Option<Duration>)>,
    /// The error of the batch after the committed ones, which was rolled back. Set only
    /// when some batch committed before it: a call that commits nothing fails instead.
    pub failed: Option<crate::Error>,
}

impl Batches {
    /// One committed batch, timed by the engine.
    pub fn one(outcome: BatchOutcome) -> Self {
        Self {
            committed: vec![(outcome, None)],
            failed: None,
        }
    }
}

/// When a store deletes expired tokens with a [sweep](TokenStore::plan_sweep) rather than
/// type by type (`SqliteStore::sweep`, `MySqlStore::sweep`; `PostgresStore` never
/// sweeps, see its documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SweepMode {
    /// When at least a fifth of the table is expired ([`SWEEP_SHARE`]): about the share
    /// above which reading the whole table in storage order costs less than finding each
    /// expired row through the `(type, expires_at)` index (measured on SQLite: a row read
    /// in a sweep costs about a sixth of a row found through the index).
    #[default]
    Auto,
    /// For every run that deletes expired tokens.
    Always,
    /// Never: batches go type by type through the `(type, expires_at)` index.
    Never,
}

/// The expired share of a table from which [`SweepMode::Auto`] sweeps (one in
/// `SWEEP_SHARE`).
pub const SWEEP_SHARE: u64 = 5;

impl SweepMode {
    /// Whether to sweep a table of about `rows` rows of which at least `expired` are
    /// expired (an [`Auto`](Self::Auto) store counts expired rows only up to
    /// [`sweep_threshold(rows)`](Self::sweep_threshold)).
    pub fn sweeps(self, expired: u64, rows: u64) -> bool {
        match self {
            SweepMode::Always => true,
            SweepMode::Never => false,
            SweepMode::Auto => expired > 0 && expired >= Self::sweep_threshold(rows),
        }
    }

    /// The number of expired rows from which [`Auto`](Self::Auto) sweeps a table of
    /// `rows` rows.
    pub fn sweep_threshold(rows: u64) -> u64 {
        rows.div_ceil(SWEEP_SHARE).max(1)
    }
}

/// A walk through the whole token table in storage order (rowid, or InnoDB's primary
/// key) that deletes the expired tokens of several types together, each table page
/// written by one batch, as a single `DELETE` would visit them. Made by
/// [`TokenStore::plan_sweep`], advanced by [`TokenStore::sweep_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sweep {
    /// One [`Criterion::Expired`] filter per token type.
    pub filters: Vec<BatchFilter>,
    /// Where the next batch starts (exclusive), in the store's terms (a rowid or a
    /// primary key). Only the store that made the sweep reads it.
    pub position: i64,
    /// Where the walk ends (inclusive), in the same terms: the table's extent when the
    /// sweep was planned. Rows added past it later are new, not expired ones.
    pub end: i64,
}

impl Sweep {
    /// A sweep over `filters` from before `start` to `end` (both in the store's terms).
    pub fn new(filters: Vec<BatchFilter>, start: i64, end: i64) -> Self {
        Self {
            filters,
            position: start,
            end,
        }
    }
}

/// What one committed sweep batch did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SweepOutcome {
    /// Rows deleted, per token type (types without deletions may be left out).
    pub deleted: Vec<(String, u64)>,
    /// Where the next batch starts ([`Sweep::position`]).
    pub position: i64,
    /// The walk reached [`Sweep::end`], or another instance is sweeping the same table
    /// and this one leaves the expired tokens to it.
    pub done: bool,
}

impl SweepOutcome {
    /// Rows deleted, all types together.
    pub fn total(&self) -> u64 {
        self.deleted.iter().map(|(_, n)| n).sum()
    }
}

/// Counts for one token type at an instant.
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TypeCounts {
    /// Token type.
    pub token_type: String,
    /// All rows.
    pub total: u64,
    /// `expires_at < now`.
    pub expired: u64,
    /// Neither expired nor used.
    pub active: u64,
    /// `used_at` set (expired or not).
    pub used: u64,
    /// Earliest expiry among expired rows.
    pub oldest_expired: Option<DateTime<Utc>>,
}

/// Where the host's tokens live. Object safe: the engine holds an `Arc<dyn TokenStore>`.
///
/// Every method that deletes returns what it deleted. A batch is atomic: either all of its
/// rows are gone or none is.
#[async_trait]
pub trait TokenStore: RunStore {
    /// Short name for logs and errors (`memory`, `sqlite`, `postgres`, `mysql`).
    fn kind(&self) -> &'static str;

    /// The table this store cleans.
    fn table(&self) -> &TokenTable;

    /// Creates the default token table (if missing), the library's own tables and the
    /// indexes cleanup needs. Idempotent.
    async fn migrate(&self) -> Result<()>;

    /// Distinct token types present in the table.
    async fn token_types(&self) -> Result<Vec<String>>;

    /// Rows `filter` selects.
    async fn count(&self, filter: &BatchFilter) -> Result<u64>;

    /// Deletes at most `limit` rows that `filter` selects, in one transaction.
    async fn delete_batch(&self, filter: &BatchFilter, limit: u32) -> Result<BatchOutcome>;

    /// Most batches one [`delete_batches`](Self::delete_batches) call may run (default 1).
    fn batches_per_call(&self) -> u32 {
        1
    }

    /// Up to `max` consecutive batches of `filter`, each of at most `limit` rows and
    /// committed on its own, as [`delete_batch`](Self::delete_batch) would run them one
    /// after another, from `filter.resume_from` on. The default runs one batch.
    ///
    /// A store that can run several batches in one round trip (`PostgresStore`) does so,
    /// for a short while (the engine sees its limits between calls). Once `stop` is
    /// cancelled (the run was cancelled, or the service is shutting down) it begins no
    /// further batch and withdraws the one in flight where it can, which rolls back: the
    /// run stops at the batch boundary it had reached. An error with nothing committed is
    /// returned as `Err`; after a committed batch, it is returned in [`Batches::failed`]
    /// with exactly the batches that committed before it.
    async fn delete_batches(
        &self,
        filter: &BatchFilter,
        limit: u32,
        max: u32,
        stop: &CancellationToken,
    ) -> Result<Batches> {
        let _ = (max, stop);
        Ok(Batches::one(self.delete_batch(filter, limit).await?))
    }

    /// Whether to delete the tokens `filters` select (one [`Criterion::Expired`] filter
    /// per type) with a [`Sweep`] through the whole table rather than type by type, and
    /// the sweep if so. `None` (the default) keeps the type-by-type batches.
    ///
    /// A sweep deletes the rows that are expired when it reaches them: a token that only
    /// becomes eligible behind it (its expiry moved earlier by an update) waits for the
    /// next run.
    async fn plan_sweep(&self, filters: &[BatchFilter]) -> Result<Option<Sweep>> {
        let _ = filters;
        Ok(None)
    }

    /// Deletes at most `limit` rows that one of `sweep.filters` selects, the first ones
    /// after `sweep.position` in storage order, in one transaction. Called only with a
    /// sweep this store planned; the engine moves `sweep.position` on after each commit.
    async fn sweep_batch(&self, sweep: &Sweep, limit: u32) -> Result<SweepOutcome> {
        let _ = (sweep, limit);
        Err(crate::Error::store(
            self.kind(),
            "sweep",
            "this store plans no sweeps, so it has none to advance",
        ))
    }

    /// Per-type counts at `now`.
    async fn type_counts(&self, now: DateTime<Utc>) -> Result<Vec<TypeCounts>>;

    /// Round trip to the database.
    async fn ping(&self) -> Result<()>;
}

/// Where run records and job leases live (usually the same database as the tokens).
#[async_trait]
pub trait RunStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a new run.
    async fn insert_run(&self, run: &RunRecord) -> Result<()>;

    /// Overwrites a run's status, progress and outcome.
    async fn update_run(&self, run: &RunRecord) -> Result<()>;

    /// One run by id.
    async fn run(&self, id: Uuid) -> Result<Option<RunRecord>>;

    /// Runs matching `query`, newest first.
    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>>;

    /// Takes the lease `name` for `holder` until `now + ttl`, unless another holder has
    /// an unexpired lease. Returns whether `holder` now holds it.
    async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Releases `name` if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
}
