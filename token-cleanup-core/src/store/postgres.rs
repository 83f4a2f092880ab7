//! PostgreSQL store (sqlx + sea-query).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sea_query::{ColumnDef, PostgresQueryBuilder};
use sea_query_sqlx::SqlxBinder;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use tokio_util::sync::CancellationToken;

use super::kept::KeptConnection;
use super::sql::{
    QuotedNames, Statements, TimeEncoding, bind_criterion, decode_type_counts, fnv1a32,
};
use super::window::MAX_WIDTH;
use super::{BatchFilter, BatchOutcome, Batches, Criterion, TokenStore, TypeCounts};
use crate::error::{Error, Result};
use crate::table::TokenTable;

const STORE: &str = "postgres";

/// First key of every advisory lock this store takes (`'TkCl'`), so that the second key,
/// a hash of the table and token type, cannot collide with the host's one-key locks.
const LOCK_NAMESPACE: i32 = 0x546b_436c;

/// The transaction setting in which a delete statement records whether it got the
/// advisory lock, read back when it deleted nothing.
const LOCKED_SETTING: &str = "token_cleanup.locked";

/// SQLSTATEs of a server that will keep refusing the batch procedure: insufficient
/// privilege, read-only transaction, syntax error (no `CREATE PROCEDURE` before
/// PostgreSQL 11), feature not supported.
const REFUSALS: [&str; 4] = ["42501", "25006", "42601", "0A000"];

/// SQLSTATE of an unknown function or procedure.
const UNDEFINED_FUNCTION: &str = "42883";

/// SQLSTATE of a statement cancelled (by a request, or by `statement_timeout`).
const QUERY_CANCELED: &str = "57014";

/// SQLSTATEs of a windows procedure that cannot record its progress: no such table, or
/// no privilege on it.
const NO_PROGRESS: [&str; 2] = ["42P01", "42501"];

/// The table in which a `CALL` of several batches records each one it commits, next to
/// the run records (created by `migrate()`).
const BATCHES_TABLE: &str = "token_cleanup_batches";

/// Most batches one `CALL` runs by default ([`PostgresStore::batches_per_call`]).
const MAX_WINDOWS: u32 = 8;

/// A `CALL` of several batches begins no batch after this long (nor after half the batch
/// timeout), so that the engine sees cancellation and its limits soon.
const CALL_BUDGET: Duration = Duration::from_millis(20);

/// Milliseconds since the epoch on the database clock (leases use one clock for every
/// instance).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Batches that follow each other within this long chain their transactions: one round
/// trip commits a batch and begins the next one's.
const CHAIN_WITHIN: Duration = Duration::from_millis(5);

/// What a batch left its connection in, for the next batch on it.
#[derive(Debug, Clone, Copy)]
struct ConnState {
    /// In the next batch's transaction (begun with the previous batch's commit).
    open: bool,
    /// The batch procedures exist on it: batches `CALL` them.
    procedure: bool,
    /// Its server process, when the windows procedures exist on it and can record
    /// their progress (one `CALL` may run several batches; the process id lets another
    /// connection cancel such a `CALL`).
    windows_pid: Option<i32>,
    /// The id of the last `CALL` of several batches on it (0: none), whose record the
    /// next one deletes.
    last_call: i64,
}

/// How a time column holds instants. Every comparison and every key read back goes
/// through it, so that they are exact whatever the session's `TimeZone` (sqlx starts
/// sessions in UTC, but a host's `after_connect` may set another).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ColumnTime {
    /// `timestamptz`: instants as they are.
    #[default]
    Tz,
    /// `timestamp` holding UTC: instants are converted `AT TIME ZONE 'UTC'`, never
    /// through the session's time zone.
    Utc,
}

impl ColumnTime {
    /// The instant parameter `$n` as a value of the column's type (so that the column
    /// side stays bare and its index usable).
    fn param(self, n: usize) -> String {
        match self {
            ColumnTime::Tz => format!("${n}"),
            ColumnTime::Utc => format!("(${n}::timestamptz AT TIME ZONE 'UTC')"),
        }
    }

    /// The column read back as an instant (`timestamptz`).
    fn read(self, column: &str) -> String {
        match self {
            ColumnTime::Tz => column.to_owned(),
            ColumnTime::Utc => format!("({column} AT TIME ZONE 'UTC')"),
        }
    }
}

/// The types of the token table's expiry and used-at columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TimeColumns {
    expires: ColumnTime,
    used: ColumnTime,
}

/// A pass's key window: from an expiry, in microseconds.
type Window = super::window::Window<DateTime<Utc>>;

/// The next window of each pass in progress, by type and criterion.
#[derive(Debug, Default)]
struct Windows(super::window::Windows<(String, bool), DateTime<Utc>>);

impl Windows {
    fn key(filter: &BatchFilter) -> (String, bool) {
        (filter.token_type.clone(), filter.criterion.is_used())
    }

    /// The window that continues the pass `filter` resumes, if this store ran its
    /// previous batch.
    fn next(&self, filter: &BatchFilter) -> Option<Window> {
        let resume = filter.resume_from?;
        self.0.get(&Self::key(filter)).filter(|w| w.start == resume)
    }

    fn set(&self, filter: &BatchFilter, window: Window) {
        self.0.set(Self::key(filter), window);
    }

    fn clear(&self, filter: &BatchFilter) {
        self.0.clear(&Self::key(filter));
    }
}

/// The lines of an `EXPLAIN`, joined.
fn plan_text(rows: &[sqlx::postgres::PgRow]) -> Result<String> {
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(err("explain a batch")))
        .collect::<Result<Vec<_>>>()
        .map(|lines| lines.join("\n"))
}

/// Whether `e` is a server error with one of these SQLSTATEs.
fn sqlstate_in(e: &sqlx::Error, codes: &[&str]) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| codes.contains(&code.as_ref()))
}

/// `$1, $2, .., $n`: the parameters of a statement that binds `n` values.
fn placeholders_upto(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A statement timeout in PostgreSQL's unit (milliseconds), at least 1.
fn timeout_ms(timeout: Duration) -> u128 {
    timeout.as_millis().clamp(1, i32::MAX as u128)
}

/// The cutoff of `filter`'s criterion: every key it deletes is below it.
fn cutoff(filter: &BatchFilter) -> DateTime<Utc> {
    match filter.criterion {
        Criterion::Expired { before } | Criterion::Used { before, .. } => before,
    }
}

/// Where a window of `width` from `start` ends, or `None` when it reaches the cutoff.
fn window_end(start: DateTime<Utc>, width: i64, filter: &BatchFilter) -> Option<DateTime<Utc>> {
    start
        .checked_add_signed(TimeDelta::microseconds(width))
        .filter(|end| *end < cutoff(filter))
}

/// The batches a windows `CALL` committed, in order: each one's count, time in the
/// server (microseconds) and window end (`None`: up to the cutoff).
#[derive(Debug)]
struct Recorded {
    deleted: Vec<i64>,
    micros: Vec<i64>,
    ends: Vec<Option<DateTime<Utc>>>,
}

impl Recorded {
    /// From three columns of `row` from `first` on: counts, times, ends.
    fn decode(row: &sqlx::postgres::PgRow, first: usize) -> sqlx::Result<Self> {
        Ok(Self {
            deleted: row.try_get(first)?,
            micros: row.try_get(first + 1)?,
            ends: row.try_get(first + 2)?,
        })
    }
}

/// The batches of `recorded` as outcomes of `filter`'s pass.
fn window_batches(filter: &BatchFilter, recorded: &Recorded) -> Batches {
    let mut batches = Batches::default();
    let rows = recorded.deleted.iter().zip(&recorded.micros);
    for ((&deleted, &micros), end) in rows.zip(&recorded.ends) {
        let outcome = BatchOutcome {
            deleted: deleted.unsigned_abs(),
            resume_from: Some(end.unwrap_or_else(|| cutoff(filter))),
            more: end.is_some(),
        };
        let took = Duration::from_micros(micros.unsigned_abs());
        batches.committed.push((outcome, Some(took)));
    }
    batches
}

/// [`TokenStore`] and [`RunStore`](super::RunStore) on PostgreSQL 12 or later.
///
/// The token table may live in any schema ([`TokenTable::schema`]); the expiry and
/// used-at columns are `timestamptz`, or `timestamp` holding UTC. The store reads their
/// types from the catalog once, and compares a `timestamp` column with instants converted
/// `AT TIME ZONE 'UTC'`, so comparisons are exact whatever `TimeZone` the host's sessions
/// run in (a test runs them 14 hours ahead of UTC and 11 behind); a column of another
/// type is an [`Error::Store`] naming it, before any row is touched. Run records and job
/// leases live in `token_cleanup_runs` and `token_cleanup_leases` next to it, so every
/// instance of the host sees the same runs, statistics and reports, and
/// `token_cleanup_batches` records what a `CALL` of several batches has committed.
///
/// # How a batch deletes
///
/// Each batch deletes one **window of keys** of one type (`type = $t AND expires_at >=
/// lo AND expires_at < hi`, or the used-at column for used tokens) in its own
/// transaction. The window is sized so that it holds somewhat fewer rows than the batch
/// size, and the statement is planned once per connection (a generic plan: an index
/// range scan of `(type, expires_at)` for any window). No batch reads the rows it is
/// about to delete a second time to find where to stop, which is what costs the usual
/// batched shapes their speed. (This store plans no [sweeps](crate::TokenStore::plan_sweep):
/// a sweep in physical order measured 3.2x the single statement at batch 1000.)
///
/// 1. **The first window of a pass** comes from a probe: index-only scans for the first
///    key and for the key `n` rows further. The window spans a share of those keys.
/// 2. **Every later window** starts where the previous one ended (the dead index entries
///    that earlier batches left behind are never read again, which is what makes the
///    common `DELETE .. WHERE id IN (SELECT id .. LIMIT n)` shape slower with every
///    batch). Its width comes from the rows per microsecond of key that the previous
///    window held.
/// 3. **How full a window aims to be** follows how much counts have varied from what was
///    expected: at first as much as a Poisson count would (about 87 % of a batch of
///    1000, 94 % of 5000), up to 97 % on steady data, down to 50 % on erratic data. A
///    window changes its width by at most 4x per batch; after an empty window (a gap in
///    the keys) the next batch probes, which skips the gap in one step.
/// 4. **A window that holds more than `n` rows is rolled back** and probed again from
///    its start, so a batch never commits more than its limit. When a window of one
///    microsecond still holds more than `n` tokens (many sharing one expiry instant),
///    they go `n` at a time by `ctid`.
/// 5. **Many instances.** A batch first takes `pg_try_advisory_xact_lock(namespace,
///    hash(table, type, criterion))`, held until the batch commits. If another instance
///    is deleting a batch of the same type right now, this instance leaves the type to it
///    (the batch reports 0 rows and the engine moves on): two instances never wait on
///    each other's row locks and never delete the same row. Rows that the other instance
///    deleted after this statement's snapshot are skipped by PostgreSQL, so counts stay
///    exact. On the statement path, whether the lock was taken is read back only when a
///    window deleted nothing.
///
/// Batches are therefore usually **shorter than the batch size** (about 810 batches of a
/// limit of 1000 for 780,000 rows); they are never longer.
///
/// # One round trip for several batches
///
/// Batches run in procedures that the store creates in its batch connection's temporary
/// schema (`pg_temp`) when it first takes that connection:
///
/// - the procedure takes the advisory lock, deletes the window, and commits, or rolls
///   back when the window held more than the batch size;
/// - it sets generic plans and asynchronous commit for its own transaction only.
///
/// **Several batches to a `CALL`.** Once a pass has its first window, one `CALL` runs up
/// to 8 batches ([`batches_per_call`](Self::batches_per_call)), each in its own
/// transaction, sizing each window from the one before as described above, and begins
/// no batch after 20 ms. Each batch writes the counts, times and window ends of the
/// call's batches so far to the call's row of `token_cleanup_batches` (created by
/// `migrate()`; the next `CALL` on the connection deletes it, and any row older than an
/// hour goes too) in the transaction that deletes it, so what a `CALL` committed is
/// known exactly even when it does not return: when its connection is killed or a
/// batch fails, the store reads that row from another connection and reports the
/// committed batches with the error (the engine counts them and retries the failed one
/// per its policy). When a run is
/// cancelled or the service shuts down, the store cancels the `CALL` in the server
/// (`pg_cancel_backend`): the batch in flight rolls back and the run stops at the batch
/// boundary it had reached. Without that table (a host that has not run this version's
/// `migrate()`, or a role that cannot write it) a `CALL` runs one batch.
///
/// Nothing else is installed in the host's schemas, and the procedures always match the
/// running version of this crate. A batch timeout is the batch connection's session
/// `statement_timeout`, which bounds a whole `CALL`: a `CALL` begins no batch after half
/// the timeout (or 20 ms, whichever is sooner), so a batch has at least half of it.
/// Measured on 1,000,000 tokens, in turn with the single statement (BENCHMARKS.md):
/// at batch 1000, several batches to a `CALL` took 1.10x to 1.20x the single `DELETE`
/// against 1.21x to 1.45x for one batch to a `CALL` in the same runs (at batch 5000,
/// 1.07x to 1.17x against 1.13x to 1.18x); in earlier runs one batch to a `CALL` took
/// 1.35x to 1.47x against 1.46x to 1.73x for the statement path below.
///
/// When the server refuses to create the procedure (a role without the `TEMPORARY`
/// privilege on the database, a server older than PostgreSQL 11), or a `CALL` finds it
/// gone (nothing ran; the same window then goes as statements), the store logs a warning
/// and batches run as **plain statements** from then on, as they do with
/// [`batch_procedure(false)`](Self::batch_procedure). Choose that behind a pooler in
/// transaction mode (PgBouncer's `pool_mode = transaction`): it may hand the `CALL` to
/// another server connection than the one holding the procedure, and with a
/// [`batch_timeout`](Self::batch_timeout) the session timeout that the store sets on its
/// batch connection could stay on a server connection that the pooler hands to others.
///
/// On the statement path a batch costs two round trips: the `DELETE`, and one that
/// commits it and begins the next batch's transaction (with its settings: generic plans,
/// asynchronous commit, the statement timeout). Between two batches the connection is
/// therefore idle in a transaction that has read nothing and locks nothing (no snapshot,
/// so it holds back no vacuum), for as long as the engine takes to ask for the next
/// batch. Batches are chained so only when they follow each other within 5 ms (not with
/// [`pause_between_batches`](crate::TokenCleanupServiceBuilder::pause_between_batches)).
///
/// On either path, the batches' connection is closed rather than returned to the pool
/// once the store is done with it, at a cost of one new connection per run: its
/// temporary procedure, its session timeout, or a transaction begun for a batch that
/// never came never reach the host's pool.
///
/// The `DELETE` has no `RETURNING` clause: returning rows makes PostgreSQL read every
/// deleted tuple once more, which measured about 50 % slower; its count comes from its
/// command tag (`GET DIAGNOSTICS` in the procedure). A batch hands its connection on to
/// the next one (it goes after 250 ms without a batch), so batches do not each pay the
/// pool's liveness check on acquire. [`explain_batch`](Self::explain_batch) shows the
/// probe's plan and the window delete's, which both paths run (the procedure without the
/// lock in a CTE).
///
/// # Commit and timeouts
///
/// Batches commit with `synchronous_commit = off` by default: the server acknowledges the
/// commit before its WAL record reaches the disk. Deleting an expired token twice is
/// harmless, so the only effect of a server crash within the WAL writer's delay (about
/// 0.6 s) is that a few tokens reported as deleted come back and go in the next run.
/// [`synchronous_commit(true)`](Self::synchronous_commit) restores the server's setting.
/// [`batch_timeout`](Self::batch_timeout) bounds each batch with a server-side statement
/// timeout (the batch connection's `statement_timeout`, which bounds a `CALL` of several
/// batches as described above, or on the statement path `SET LOCAL statement_timeout`
/// sent with the batch's `BEGIN`; no round trip of its own). A batch that hits it rolls
/// back and fails with [`Error::Timeout`], which the engine retries per its policy.
///
/// ```no_run
/// # async fn example() -> Result<(), token_cleanup_core::Error> {
/// use std::time::Duration;
/// use token_cleanup_core::{PostgresStore, TokenStore, TokenTable};
///
/// let table = TokenTable::builder().schema("auth").build()?;
/// let store = PostgresStore::connect("postgres://app@localhost/app", table)
///     .await?
///     .batch_timeout(Some(Duration::from_secs(5)));
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    sql: Statements,
    names: QuotedNames,
    batch_timeout: Option<Duration>,
    synchronous_commit: bool,
    /// Whether batches `CALL` a procedure (when the server lets the store create it).
    batch_procedure: bool,
    /// Most batches one `CALL` runs.
    batches_per_call: u32,
    /// The server refused the batch procedure for good, or a `CALL` found it gone:
    /// batches run as statements.
    procedure_refused: AtomicBool,
    /// The windows procedure could not record its progress (no `token_cleanup_batches`
    /// table, or no privilege on it): one batch per `CALL`.
    windows_refused: AtomicBool,
    /// `token_cleanup_batches`, quoted and qualified like the token table.
    batches_table: String,
    /// The connection batches hand on, and the state the last batch left it in.
    batch_conn: KeptConnection<sqlx::Postgres, ConnState>,
    windows: Windows,
    /// The time columns' types, read from the catalog once the table exists.
    time_columns: OnceLock<TimeColumns>,
    #[cfg(feature = "test-util")]
    faults: std::sync::Mutex<Vec<String>>,
}

fn err(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::store(STORE, operation, e)
}

impl PostgresStore {
    /// A store on the host's pool.
    ///
    /// ```no_run
    /// # async fn example(pool: sqlx::PgPool) {
    /// use token_cleanup_core::{PostgresStore, TokenTable};
    /// let store = PostgresStore::new(pool, TokenTable::default());
    /// # }
    /// ```
    pub fn new(pool: PgPool, table: TokenTable) -> Self {
        let sql = Statements::new(table, TimeEncoding::Native);
        let names = sql.quoted('"');
        let batches_table = match sql.table.schema() {
            Some(schema) => format!(
                "{}.{}",
                super::sql::quote(schema.as_str(), '"'),
                super::sql::quote(BATCHES_TABLE, '"')
            ),
            None => super::sql::quote(BATCHES_TABLE, '"'),
        };
        Self {
            pool,
            sql,
            names,
            batch_timeout: None,
            synchronous_commit: false,
            batch_procedure: true,
            batches_per_call: MAX_WINDOWS,
            procedure_refused: AtomicBool::new(false),
            windows_refused: AtomicBool::new(false),
            batches_table,
            batch_conn: KeptConnection::new(),
            windows: Windows::default(),
            time_columns: OnceLock::new(),
            #[cfg(feature = "test-util")]
            faults: Default::default(),
        }
    }

    /// Connects a small pool (4 connections) of its own.
    ///
    /// A server that refuses the connection is an [`Error::Store`] naming `postgres`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), token_cleanup_core::Error> {
    /// use token_cleanup_core::{PostgresStore, TokenTable};
    /// let store = PostgresStore::connect("postgres://app@localhost/app", TokenTable::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str, table: TokenTable) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(url)
            .await
            .map_err(err("connect"))?;
        Ok(Self::new(pool, table))
    }

    /// Bounds every delete batch with a server-side statement timeout (default: none).
    pub fn batch_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.batch_timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// `true` commits batches with the server's `synchronous_commit` setting; `false`
    /// (the default) commits them asynchronously. See the type's documentation.
    pub fn synchronous_commit(mut self, synchronous: bool) -> Self {
        self.synchronous_commit = synchronous;
        self
    }

    /// `true` (the default) runs each batch as one `CALL` of a procedure that the store
    /// creates in its batch connection's temporary schema; `false` runs each batch as
    /// plain statements, in two round trips. See the type's documentation.
    pub fn batch_procedure(mut self, procedure: bool) -> Self {
        self.batch_procedure = procedure;
        self
    }

    /// How many batches one `CALL` may run, each committed on its own (default 8, at
    /// most 64; `1` runs one batch per `CALL`). A `CALL` begins no batch after 20 ms, so
    /// a run overshoots its `max_duration` by at most that and a batch. With
    /// [`pause_between_batches`](crate::TokenCleanupServiceBuilder::pause_between_batches)
    /// every batch goes alone. See "One round trip for several batches" in the type's
    /// documentation.
    pub fn batches_per_call(mut self, batches: u32) -> Self {
        self.batches_per_call = batches.clamp(1, 64);
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The plan PostgreSQL would use for the next batch of `filter` (`EXPLAIN`, nothing
    /// is executed or locked).
    ///
    /// ```no_run
    /// # async fn example(store: token_cleanup_core::PostgresStore) -> Result<(), token_cleanup_core::Error> {
    /// use chrono::Utc;
    /// use token_cleanup_core::{BatchFilter, Criterion};
    /// let filter = BatchFilter::new("password_reset", Criterion::Expired { before: Utc::now() });
    /// println!("{}", store.explain_batch(&filter, 1000).await?);
    /// # Ok(()) }
    /// ```
    pub async fn explain_batch(&self, filter: &BatchFilter, limit: u32) -> Result<String> {
        self.time_columns().await?;
        let mut conn = self.pool.acquire().await.map_err(err("explain a batch"))?;
        let resume: Vec<DateTime<Utc>> = filter.resume_from.into_iter().collect();
        let probe = Self::bind_condition(
            sqlx::query(AssertSqlSafe(format!("EXPLAIN {}", self.probe_sql(filter)))),
            filter,
            &resume,
        )
        .bind(i64::from(limit) - 1)
        .fetch_all(&mut *conn)
        .await
        .map_err(err("explain a batch"))?;
        let window = self
            .probe(&mut conn, filter, filter.resume_from, limit, None)
            .await?;
        let (start, width) = window.map_or((filter.resume_from, MAX_WIDTH), |w| {
            (Some(w.start), w.width)
        });
        let start = start.unwrap_or(DateTime::<Utc>::MIN_UTC);
        let hi = window_end(start, width, filter);
        let delete = self
            .explain_generic(&mut conn, &self.window_sql(filter, hi.is_some()), filter, {
                std::iter::once(start).chain(hi).collect()
            })
            .await?;
        Ok(format!(
            "-- probe (the first batch of a pass)\n{}\n-- window delete (generic plan)\n{delete}",
            plan_text(&probe)?
        ))
    }

    /// The generic plan of a delete statement (lock key, then `filter`'s condition and
    /// `keys`), as batches run it: prepared under `plan_cache_mode = force_generic_plan`,
    /// explained, deallocated.
    async fn explain_generic(
        &self,
        conn: &mut sqlx::PgConnection,
        sql: &str,
        filter: &BatchFilter,
        keys: Vec<DateTime<Utc>>,
    ) -> Result<String> {
        let name = format!(
            "token_cleanup_explain_{:x}",
            uuid::Uuid::now_v7().as_u64_pair().1
        );
        let params = 3 + usize::from(filter.criterion.is_used()) + keys.len();
        let placeholders = vec!["%L"; params].join(", ");
        sqlx::raw_sql(AssertSqlSafe(format!("PREPARE {name} AS {sql}")))
            .execute(&mut *conn)
            .await
            .map_err(err("explain a batch"))?;
        let explained = async {
            // `EXECUTE` takes no bound parameters: the server quotes them into its text.
            let explain: String = Self::bind_condition(
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT format('EXPLAIN EXECUTE {name}({placeholders})', {})",
                    placeholders_upto(params)
                )))
                .bind(self.lock_key(filter)),
                filter,
                &keys,
            )
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
            let mut tx = sqlx::Connection::begin_with(
                &mut *conn,
                "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan",
            )
            .await?;
            let rows = sqlx::raw_sql(AssertSqlSafe(explain))
                .fetch_all(&mut *tx)
                .await?;
            tx.rollback().await?;
            Ok::<_, sqlx::Error>(rows)
        }
        .await;
        let deallocated = sqlx::raw_sql(AssertSqlSafe(format!("DEALLOCATE {name}")))
            .execute(&mut *conn)
            .await;
        let rows = explained.map_err(err("explain a batch"))?;
        deallocated.map_err(err("explain a batch"))?;
        plan_text(&rows)
    }

    /// The advisory lock key of one type and criterion on this table.
    fn lock_key(&self, filter: &BatchFilter) -> i32 {
        let criterion = if filter.criterion.is_used() {
            "used"
        } else {
            "expired"
        };
        fnv1a32(&[
            &self.sql.table.qualified_name(),
            &filter.token_type,
            criterion,
        ])
    }

    /// The key column and the condition of the expired (or, with `used_criterion`, the
    /// used) criterion, with `bounds` more comparisons of the key (`>=`, `<`, `=`),
    /// numbering parameters from `$first`: the type, the cutoff, the used criterion's
    /// expiry bound, then one per bound.
    ///
    /// Returns the key column, its type, and the condition.
    fn condition(
        &self,
        used_criterion: bool,
        first: usize,
        bounds: &[&str],
    ) -> (&str, ColumnTime, String) {
        let QuotedNames { exp, used, ty, .. } = &self.names;
        let times = self.times();
        let (type_at, before_at) = (first, first + 1);
        let (key, key_time, mut cond, mut next) = if used_criterion {
            // The engine refuses `include_used` without a used-at column.
            let used = used.as_deref().unwrap_or(exp);
            let bound_at = first + 2;
            (
                used,
                times.used,
                format!(
                    "{ty} = ${type_at} AND {used} < {} AND {exp} >= {}",
                    times.used.param(before_at),
                    times.expires.param(bound_at)
                ),
                first + 3,
            )
        } else {
            (
                exp.as_str(),
                times.expires,
                format!(
                    "{ty} = ${type_at} AND {exp} < {}",
                    times.expires.param(before_at)
                ),
                first + 2,
            )
        };
        for op in bounds {
            cond.push_str(&format!(" AND {key} {op} {}", key_time.param(next)));
            next += 1;
        }
        (key, key_time, cond)
    }

    /// The time columns' types as read by [`time_columns`](Self::time_columns), or what
    /// `migrate()` creates while they have not been read.
    fn times(&self) -> TimeColumns {
        self.time_columns.get().copied().unwrap_or_default()
    }

    /// Reads the time columns' types from the catalog, once: `timestamptz`, or
    /// `timestamp` holding UTC. Any other type is an error naming the column. Until the
    /// table exists (before `migrate()`), nothing is remembered, and batches, counts and
    /// statistics ask again. Every entry point that compares times calls this first.
    async fn time_columns(&self) -> Result<TimeColumns> {
        if let Some(times) = self.time_columns.get() {
            return Ok(*times);
        }
        let table = &self.sql.table;
        let expires = table.expires_column().as_str();
        let used = table.used_column().map(|u| u.as_str());
        let names: Vec<&str> = std::iter::once(expires).chain(used).collect();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.attname::text, CASE a.atttypid WHEN 'timestamptz'::regtype THEN '' \
               WHEN 'timestamp'::regtype THEN 'utc' \
               ELSE format_type(a.atttypid, a.atttypmod) END \
             FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attname = ANY($2) \
               AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(&self.names.table)
        .bind(&names)
        .fetch_all(&self.pool)
        .await
        .map_err(err("read the token table's column types"))?;
        let mut times = TimeColumns::default();
        for (column, kind) in &rows {
            let time = match kind.as_str() {
                "" => ColumnTime::Tz,
                "utc" => ColumnTime::Utc,
                other => {
                    return Err(Error::store(
                        STORE,
                        "read the token table's column types",
                        format!(
                            "column `{column}` is `{other}`; the store needs `timestamptz`, \
                             or `timestamp` holding UTC"
                        ),
                    ));
                }
            };
            if column == expires {
                times.expires = time;
            }
            if Some(column.as_str()) == used {
                times.used = time;
            }
        }
        // Remembered once the table exists (the expiry column found); a used-at column
        // that it lacks fails the statement that needs it, not every batch's lookup.
        if !rows.is_empty() {
            let _ = self.time_columns.set(times);
        }
        Ok(times)
    }

    /// Binds [`condition`](Self::condition)'s parameters: the type, the cutoffs, `keys`.
    fn bind_condition<'q>(
        mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        filter: &BatchFilter,
        keys: &[DateTime<Utc>],
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q = bind_criterion(q, filter);
        for key in keys {
            q = q.bind(*key);
        }
        q
    }

    /// The probe that sizes the first window of a pass: the first key from the resume
    /// point and the key `$n` rows further (index-only scans; nothing is locked).
    fn probe_sql(&self, filter: &BatchFilter) -> String {
        let table = &self.names.table;
        let bounds: &[&str] = if filter.resume_from.is_some() {
            &[">="]
        } else {
            &[]
        };
        let (key, key_time, cond) = self.condition(filter.criterion.is_used(), 1, bounds);
        let offset_at = 3 + usize::from(filter.criterion.is_used()) + bounds.len();
        let read = key_time.read(key);
        format!(
            "SELECT (SELECT {read} FROM {table} WHERE {cond} ORDER BY {key} LIMIT 1), \
             (SELECT {read} FROM {table} WHERE {cond} ORDER BY {key} OFFSET ${offset_at} LIMIT 1)"
        )
    }

    /// The lock CTE that opens every delete statement: the advisory lock (`$1`), recorded
    /// in the transaction's [`LOCKED_SETTING`]. Returns the CTE and the condition that
    /// reads it.
    fn lock_cte(&self) -> (String, &'static str) {
        (
            format!(
                "lk AS MATERIALIZED (SELECT ok, set_config('{LOCKED_SETTING}', ok::text, true) AS s \
                 FROM (SELECT pg_try_advisory_xact_lock({LOCK_NAMESPACE}, $1) AS ok) l)"
            ),
            "(SELECT ok AND s IS NOT NULL FROM lk)",
        )
    }

    /// The delete of one key window: from `$lo`, below `$hi` when the window is bounded
    /// (else up to the cutoff).
    fn window_sql(&self, filter: &BatchFilter, bounded: bool) -> String {
        let table = &self.names.table;
        let bounds: &[&str] = if bounded { &[">=", "<"] } else { &[">="] };
        let (_, _, cond) = self.condition(filter.criterion.is_used(), 2, bounds);
        let (lock, locked) = self.lock_cte();
        format!("WITH {lock} DELETE FROM {table} WHERE {locked} AND {cond}")
    }

    /// The delete of `$n` tokens sharing the key `$key`, by `ctid`: for a window of one
    /// microsecond that still holds more than a batch.
    fn tie_sql(&self, filter: &BatchFilter) -> String {
        let table = &self.names.table;
        let (_, _, cond) = self.condition(filter.criterion.is_used(), 2, &["="]);
        let limit_at = 5 + usize::from(filter.criterion.is_used());
        let (lock, locked) = self.lock_cte();
        format!(
            "WITH {lock} \
             DELETE FROM {table} WHERE ctid = ANY(ARRAY(\
               SELECT ctid FROM {table} WHERE {locked} AND {cond} LIMIT ${limit_at}))"
        )
    }

    /// The batch procedure of the expired (or, with `used`, the used) criterion, in the
    /// batch connection's temporary schema (named after the table, so that no other
    /// store's procedure could be taken for it).
    fn procedure_name(&self, used: bool) -> String {
        let criterion = if used { "used" } else { "expired" };
        let table = fnv1a32(&[&self.sql.table.qualified_name()]) as u32;
        format!("pg_temp.token_cleanup_{criterion}_{table:08x}")
    }

    /// Creates the batch procedure of one criterion: one `CALL` deletes a key window
    /// (`$1` the lock key, then the type, the cutoff, the used criterion's expiry bound,
    /// the window's start and end, `NULL` for up to the cutoff, and the limit), then
    /// commits, or rolls back when the window held more than the limit. It returns how
    /// many rows the window held and whether it got the advisory lock. The transaction
    /// settings of the statement path (generic plans, asynchronous commit) are set inside
    /// it, so none outlives its transaction. (`#variable_conflict use_column`: a host
    /// column named like an output is still the column.)
    fn procedure_sql(&self, used: bool) -> String {
        let name = self.procedure_name(used);
        let table = &self.names.table;
        let criterion = if used {
            "timestamptz, timestamptz"
        } else {
            "timestamptz"
        };
        let hi_at = 5 + usize::from(used);
        let limit_at = hi_at + 1;
        let (_, _, open) = self.condition(used, 2, &[">="]);
        let (_, _, bounded) = self.condition(used, 2, &[">=", "<"]);
        let synchronous = if self.synchronous_commit {
            ""
        } else {
            "PERFORM set_config('synchronous_commit', 'off', true);"
        };
        format!(
            "CREATE OR REPLACE PROCEDURE {name}(integer, text, {criterion}, timestamptz, \
               timestamptz, bigint, INOUT deleted bigint DEFAULT NULL, \
               INOUT locked boolean DEFAULT NULL) \
             LANGUAGE plpgsql AS $token_cleanup$ \
             #variable_conflict use_column\n\
             BEGIN \
               PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); \
               {synchronous} \
               locked := pg_try_advisory_xact_lock({LOCK_NAMESPACE}, $1); \
               IF NOT locked THEN deleted := 0; RETURN; END IF; \
               IF ${hi_at} IS NULL THEN DELETE FROM {table} WHERE {open}; \
               ELSE DELETE FROM {table} WHERE {bounded}; END IF; \
               GET DIAGNOSTICS deleted = ROW_COUNT; \
               IF deleted > ${limit_at} THEN ROLLBACK; ELSE COMMIT; END IF; \
             END $token_cleanup$"
        )
    }

    /// The windows procedure of one criterion: one `CALL` runs up to `$max` batches of
    /// consecutive key windows from `$lo`, each deleted and committed in its own
    /// transaction, as the batch procedure would one at a time (`$1` the lock key, then
    /// the type, the cutoff, the used criterion's expiry bound, the first window's start,
    /// a slot for each window's end, the limit, the first window's width and spread, the
    /// most batches, the time budget in milliseconds, the call's id and the id of the
    /// previous call on the connection). Each window after the first is sized from the
    /// one before it by the rule of [`Window::next`](super::window::Window::next). Each
    /// batch records the counts, times and ends of the call's batches so far in the
    /// call's row of `token_cleanup_batches`, in its own transaction, so that the batches
    /// a `CALL` committed are known exactly even when its connection dies before it
    /// returns; the first one deletes the previous call's row, and any row older than an
    /// hour (a run that ended, or a failed call's connection). It returns each batch's
    /// count, time in microseconds and window end (`NULL`: up to the cutoff), the next
    /// window's width and spread, and why it stopped: `end` (the last window reached the
    /// cutoff), `gap` (a window was empty: the next batch probes), `full` (a window held
    /// more than the limit and was rolled back), `locked` (another instance holds the
    /// type's lock), or `budget`.
    fn windows_procedure_sql(&self, used: bool) -> String {
        use super::window::{FILL_RANGE, WINDOW_MARGIN, WINDOW_STEP};
        let name = self.windows_procedure_name(used);
        let table = &self.names.table;
        let batches = &self.batches_table;
        let criterion = if used {
            "timestamptz, timestamptz"
        } else {
            "timestamptz"
        };
        let u = usize::from(used);
        let [lo, hi, limit, width, spread, max, budget, call, prev] =
            [4, 5, 6, 7, 8, 9, 10, 11, 12].map(|i| i + u);
        let (_, _, open) = self.condition(used, 2, &[">="]);
        let (_, _, bounded) = self.condition(used, 2, &[">=", "<"]);
        let synchronous = if self.synchronous_commit {
            ""
        } else {
            "PERFORM set_config('synchronous_commit', 'off', true);"
        };
        let (fill_lo, fill_hi) = FILL_RANGE;
        let max_spread = Window::MAX_SPREAD;
        let fill =
            format!("least(greatest(1 - {WINDOW_MARGIN:?} * tc_spread, {fill_lo:?}), {fill_hi:?})");
        format!(
            "CREATE OR REPLACE PROCEDURE {name}(integer, text, {criterion}, timestamptz, \
               timestamptz, bigint, bigint, double precision, integer, double precision, \
               bigint, bigint, INOUT deleted bigint[] DEFAULT NULL, \
               INOUT micros bigint[] DEFAULT NULL, INOUT ends timestamptz[] DEFAULT NULL, \
               INOUT width bigint DEFAULT NULL, \
               INOUT spread double precision DEFAULT NULL, INOUT stopped text DEFAULT NULL) \
             LANGUAGE plpgsql AS $token_cleanup$ \
             #variable_conflict use_column\n\
             DECLARE \
               tc_lo ALIAS FOR ${lo}; tc_hi ALIAS FOR ${hi}; \
               tc_width bigint := ${width}; tc_spread double precision := ${spread}; \
               tc_started timestamptz := clock_timestamp(); tc_t timestamptz; \
               tc_n bigint; tc_us bigint; tc_fill double precision; \
             BEGIN \
               deleted := '{{}}'; micros := '{{}}'; ends := '{{}}'; \
               width := tc_width; spread := tc_spread; \
               LOOP \
                 tc_t := clock_timestamp(); \
                 PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); \
                 {synchronous} \
                 IF NOT pg_try_advisory_xact_lock({LOCK_NAMESPACE}, $1) THEN \
                   stopped := 'locked'; RETURN; \
                 END IF; \
                 tc_hi := tc_lo + tc_width * interval '1 microsecond'; \
                 IF tc_hi >= $3 THEN tc_hi := NULL; DELETE FROM {table} WHERE {open}; \
                 ELSE DELETE FROM {table} WHERE {bounded}; END IF; \
                 GET DIAGNOSTICS tc_n = ROW_COUNT; \
                 IF tc_n > ${limit} THEN ROLLBACK; stopped := 'full'; RETURN; END IF; \
                 tc_us := (extract(epoch FROM clock_timestamp() - tc_t) * 1000000)::bigint; \
                 deleted := deleted || tc_n; micros := micros || tc_us; ends := ends || tc_hi; \
                 IF cardinality(deleted) = 1 THEN \
                   DELETE FROM {batches} WHERE call_id = ${prev} \
                     OR written_at < clock_timestamp() - interval '1 hour'; \
                 END IF; \
                 INSERT INTO {batches} AS b (call_id, written_at, deleted, micros, ends) \
                 VALUES (${call}, clock_timestamp(), deleted, micros, ends) \
                 ON CONFLICT (call_id) DO UPDATE SET written_at = EXCLUDED.written_at, \
                   deleted = EXCLUDED.deleted, micros = EXCLUDED.micros, ends = EXCLUDED.ends; \
                 COMMIT; \
                 IF tc_hi IS NULL THEN stopped := 'end'; RETURN; END IF; \
                 IF tc_n = 0 THEN stopped := 'gap'; RETURN; END IF; \
                 tc_fill := {fill}; \
                 tc_spread := least(0.75 * tc_spread \
                   + 0.25 * abs(tc_n / (tc_fill * ${limit}) - 1), {max_spread:?}); \
                 tc_fill := {fill}; \
                 tc_width := least(greatest(trunc(tc_width * least(greatest( \
                   tc_fill * ${limit} / tc_n, {inverse_step:?}), {WINDOW_STEP:?})), 1), \
                   {MAX_WIDTH}); \
                 tc_lo := tc_hi; width := tc_width; spread := tc_spread; \
                 IF cardinality(deleted) >= ${max} \
                   OR clock_timestamp() - tc_started >= ${budget} * interval '1 millisecond' \
                 THEN stopped := 'budget'; RETURN; END IF; \
               END LOOP; \
             END $token_cleanup$",
            inverse_step = 1.0 / WINDOW_STEP,
        )
    }

    /// The windows procedure of the expired (or, with `used`, the used) criterion.
    fn windows_procedure_name(&self, used: bool) -> String {
        format!("{}_windows", self.procedure_name(used))
    }

    /// Prepares a new batch connection for the procedure path: creates the batch
    /// procedures, and sets the connection's statement timeout when the store has one
    /// (the connection is closed once the store is done with it, so neither reaches the
    /// host's pool). Returns whether batches on it may `CALL` the procedures: not when
    /// the store runs plain statements, nor when the server refused to create them; a
    /// lasting refusal ([`REFUSALS`]: no `TEMPORARY` privilege, a read-only server) is
    /// remembered, so that later runs do not ask again. Also returns, when one `CALL` may
    /// run several batches (`token_cleanup_batches` exists to record them), the
    /// connection's server process id.
    async fn prepare_procedures(
        &self,
        conn: &mut sqlx::PgConnection,
    ) -> Result<(bool, Option<i32>)> {
        if !self.batch_procedure || self.procedure_refused.load(Ordering::Relaxed) {
            return Ok((false, None));
        }
        let mut sql = self.procedure_sql(false);
        if self.names.used.is_some() {
            sql.push_str("; ");
            sql.push_str(&self.procedure_sql(true));
        }
        // Only where one `CALL` may run several batches: the process id, if the table
        // to record them in exists.
        let windows_pid: Option<i32> =
            if self.batches_per_call > 1 && !self.windows_refused.load(Ordering::Relaxed) {
                sqlx::query_scalar(
                    "SELECT CASE WHEN to_regclass($1) IS NOT NULL THEN pg_backend_pid() END",
                )
                .bind(&self.batches_table)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| self.batch_error(e))?
            } else {
                None
            };
        if windows_pid.is_some() {
            sql.push_str("; ");
            sql.push_str(&self.windows_procedure_sql(false));
            if self.names.used.is_some() {
                sql.push_str("; ");
                sql.push_str(&self.windows_procedure_sql(true));
            }
        } else {
            tracing::debug!(
                table = %self.batches_table,
                "one batch per CALL (one asked for, or no table to record batches in)"
            );
        }
        if let Some(timeout) = self.batch_timeout {
            sql.push_str(&format!(
                "; SET statement_timeout = {}",
                timeout_ms(timeout)
            ));
        }
        match sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await {
            Ok(_) => Ok((true, windows_pid)),
            Err(e) if e.as_database_error().is_some() => {
                // A refusal that will not change (a privilege, a read-only server, a
                // server without procedures) is remembered; anything else is retried
                // on the next connection.
                let lasting = sqlstate_in(&e, &REFUSALS);
                tracing::warn!(
                    error = %e,
                    lasting,
                    "could not create the batch procedure; batches run as plain statements"
                );
                if lasting {
                    self.procedure_refused.store(true, Ordering::Relaxed);
                }
                Ok((false, None))
            }
            Err(e) => Err(self.batch_error(e)),
        }
    }

    /// One `CALL` of the batch procedure: the key window from `lo` (below `hi`, else up
    /// to the cutoff) deleted and committed, or rolled back when it held more than
    /// `limit` rows. Returns the rows it held and whether it got the advisory lock, or
    /// `None` when the server does not know the procedure (nothing ran): a pooler handed
    /// the `CALL` to another server connection than the one that created it.
    async fn call_window(
        &self,
        conn: &mut sqlx::PgConnection,
        filter: &BatchFilter,
        lo: DateTime<Utc>,
        hi: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Option<(u64, bool)>> {
        let used = filter.criterion.is_used();
        let sql = format!(
            "CALL {}({})",
            self.procedure_name(used),
            placeholders_upto(6 + usize::from(used))
        );
        let row = bind_criterion(
            sqlx::query(AssertSqlSafe(sql)).bind(self.lock_key(filter)),
            filter,
        )
        .bind(lo)
        .bind(hi)
        .bind(i64::from(limit))
        .fetch_one(&mut *conn)
        .await;
        let row = match row {
            Ok(row) => row,
            Err(e) if sqlstate_in(&e, &[UNDEFINED_FUNCTION]) => {
                tracing::warn!(
                    error = %e,
                    "the batch procedure is gone from the batch connection (a pooler in \
                     transaction mode?); batches run as plain statements"
                );
                self.procedure_refused.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => return Err(self.batch_error(e)),
        };
        let decode = |e| Error::store(STORE, "decode a batch", e);
        let deleted: i64 = row.try_get(0).map_err(decode)?;
        let locked: bool = row.try_get(1).map_err(decode)?;
        Ok(Some((deleted.unsigned_abs(), locked)))
    }

    fn batch_error(&self, e: sqlx::Error) -> Error {
        let cancelled = sqlstate_in(&e, &[QUERY_CANCELED]);
        match (cancelled, self.batch_timeout) {
            (true, Some(timeout)) => Error::Timeout {
                store: STORE,
                operation: "delete a batch",
                timeout,
            },
            _ => Error::store(STORE, "delete a batch", e),
        }
    }

    /// A window from a probe: a share of the keys that the first `limit` rows from
    /// `from` span ([`Window::probed`]); up to the cutoff when fewer rows are left; `None`
    /// when none are. Probes open a pass, and follow a window that was empty (a gap in
    /// the keys, skipped in one step) or held more than a batch.
    async fn probe(
        &self,
        conn: &mut sqlx::PgConnection,
        filter: &BatchFilter,
        from: Option<DateTime<Utc>>,
        limit: u32,
        spread: Option<f64>,
    ) -> Result<Option<Window>> {
        let filter = BatchFilter {
            resume_from: from,
            ..filter.clone()
        };
        let sql = self.probe_sql(&filter);
        let keys: Vec<DateTime<Utc>> = from.into_iter().collect();
        let row = Self::bind_condition(sqlx::query(AssertSqlSafe(sql)), &filter, &keys)
            .bind(i64::from(limit) - 1)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.batch_error(e))?;
        let decode = |e| Error::store(STORE, "decode a batch probe", e);
        let first: Option<DateTime<Utc>> = row.try_get(0).map_err(decode)?;
        let nth: Option<DateTime<Utc>> = row.try_get(1).map_err(decode)?;
        Ok(first.map(|start| {
            let span = nth.map_or(MAX_WIDTH, |nth| {
                (nth - start).num_microseconds().unwrap_or(MAX_WIDTH)
            });
            Window::probed(start, span, limit, spread)
        }))
    }

    /// The statement that opens a batch's transaction, with its settings: generic plans
    /// (the statements are planned once per connection, not at every batch),
    /// asynchronous commit unless the store commits synchronously, and the statement
    /// timeout when one is set.
    fn begin_sql(&self) -> String {
        let mut begin = String::from("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan");
        if !self.synchronous_commit {
            begin.push_str("; SET LOCAL synchronous_commit = off");
        }
        if let Some(timeout) = self.batch_timeout {
            begin.push_str(&format!(
                "; SET LOCAL statement_timeout = {}",
                timeout_ms(timeout)
            ));
        }
        begin
    }

    /// Runs transaction control statements (one round trip).
    async fn control(&self, conn: &mut sqlx::PgConnection, sql: String) -> Result<()> {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(conn)
            .await
            .map(drop)
            .map_err(|e| self.batch_error(e))
    }

    /// Ends a batch's transaction: commits it, or rolls it back, and when `chain` is set,
    /// begins the next batch's transaction in the same round trip.
    async fn end(&self, conn: &mut sqlx::PgConnection, commit: bool, chain: bool) -> Result<bool> {
        let end = if commit { "COMMIT" } else { "ROLLBACK" };
        let sql = if chain {
            format!("{end}; {}", self.begin_sql())
        } else {
            end.to_owned()
        };
        self.control(conn, sql).await?;
        Ok(chain)
    }

    /// Whether this transaction's delete statement got the advisory lock.
    async fn got_lock(&self, conn: &mut sqlx::PgConnection) -> Result<bool> {
        let locked: Option<String> = sqlx::query_scalar("SELECT current_setting($1, true)")
            .bind(LOCKED_SETTING)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.batch_error(e))?;
        Ok(locked.as_deref() == Some("true"))
    }

    /// Ends a batch's transaction on the statement path ([`end`](Self::end)); on the
    /// procedure path the `CALL` has ended it already.
    async fn finish(
        &self,
        conn: &mut sqlx::PgConnection,
        procedure: bool,
        commit: bool,
        chain: bool,
    ) -> Result<bool> {
        if procedure {
            Ok(false)
        } else {
            self.end(conn, commit, chain).await
        }
    }

    /// One batch on `conn` (see the type's documentation): the window's delete, rolled
    /// back and probed again while it finds more than `limit` rows. On the procedure path
    /// (`state.procedure`) one `CALL` deletes and commits or rolls back; on the statement
    /// path the delete runs in a transaction of the store's own. `state.open` says the
    /// connection is already in the batch's transaction (begun with the previous batch's
    /// commit); with `chain` set, a batch that leaves more of the pass begins the next
    /// one's transaction with its commit. Returns the outcome and whether the connection
    /// is left in the next batch's transaction; clears `state.procedure` when the
    /// connection turns out not to have the procedure.
    async fn batch_on(
        &self,
        conn: &mut sqlx::PgConnection,
        state: &mut ConnState,
        chain: bool,
        filter: &BatchFilter,
        limit: u32,
    ) -> Result<(BatchOutcome, bool)> {
        if !state.procedure && !state.open {
            self.control(conn, self.begin_sql()).await?;
        }
        let nothing_left = BatchOutcome {
            deleted: 0,
            resume_from: filter.resume_from,
            more: false,
        };
        let mut window = match self.windows.next(filter) {
            Some(window) => window,
            None => match self
                .probe(conn, filter, filter.resume_from, limit, None)
                .await?
            {
                Some(window) => window,
                None => {
                    let open = self.finish(conn, state.procedure, true, false).await?;
                    return Ok((nothing_left, open));
                }
            },
        };
        let mut probed = false;
        loop {
            let hi = window_end(window.start, window.width, filter);
            let (deleted, locked) = if state.procedure {
                let Some((deleted, locked)) = self
                    .call_window(conn, filter, window.start, hi, limit)
                    .await?
                else {
                    // The same window again, as plain statements in a transaction.
                    state.procedure = false;
                    self.control(conn, self.begin_sql()).await?;
                    continue;
                };
                (deleted, Some(locked))
            } else {
                let sql = self.window_sql(filter, hi.is_some());
                let keys: Vec<DateTime<Utc>> = std::iter::once(window.start).chain(hi).collect();
                let deleted = Self::bind_condition(
                    sqlx::query(AssertSqlSafe(sql)).bind(self.lock_key(filter)),
                    filter,
                    &keys,
                )
                .execute(&mut *conn)
                .await
                .map_err(|e| self.batch_error(e))?
                .rows_affected();
                (deleted, None)
            };
            if deleted > u64::from(limit) {
                self.finish(conn, state.procedure, false, true).await?;
                if window.width == 1 {
                    if state.procedure {
                        self.control(conn, self.begin_sql()).await?;
                    }
                    return self
                        .tie_batch(conn, chain && !state.procedure, filter, limit, window)
                        .await;
                }
                let spread = window.spread.max(window.deviation(deleted, limit));
                window = if probed {
                    // Only rows added since the probe can make its window overflow.
                    Window {
                        width: (window.width / 2).max(1),
                        ..window
                    }
                } else {
                    probed = true;
                    match self
                        .probe(conn, filter, Some(window.start), limit, Some(spread))
                        .await?
                    {
                        Some(window) => window,
                        None => {
                            let open = self.finish(conn, state.procedure, true, false).await?;
                            return Ok((nothing_left, open));
                        }
                    }
                };
                continue;
            }
            let locked = match locked {
                Some(locked) => locked,
                None => deleted > 0 || self.got_lock(conn).await?,
            };
            if !locked {
                let open = self.finish(conn, state.procedure, false, false).await?;
                return Ok((BatchOutcome::left_to_other_instance(filter), open));
            }
            let Some(hi) = hi else {
                self.windows.clear(filter);
                let outcome = BatchOutcome {
                    deleted,
                    resume_from: Some(cutoff(filter)),
                    more: false,
                };
                return Ok((
                    outcome,
                    self.finish(conn, state.procedure, true, false).await?,
                ));
            };
            if deleted == 0 {
                // A gap in the keys: the next batch probes past it.
                self.windows.clear(filter);
            } else {
                self.windows.set(filter, window.next(hi, deleted, limit));
            }
            let outcome = BatchOutcome {
                deleted,
                resume_from: Some(hi),
                more: true,
            };
            return Ok((
                outcome,
                self.finish(conn, state.procedure, true, chain).await?,
            ));
        }
    }

    /// `limit` of the tokens sharing the key `at`, when more than a batch share it, on a
    /// connection in the batch's transaction.
    async fn tie_batch(
        &self,
        conn: &mut sqlx::PgConnection,
        chain: bool,
        filter: &BatchFilter,
        limit: u32,
        window: Window,
    ) -> Result<(BatchOutcome, bool)> {
        let at = window.start;
        let sql = self.tie_sql(filter);
        let deleted = Self::bind_condition(
            sqlx::query(AssertSqlSafe(sql)).bind(self.lock_key(filter)),
            filter,
            &[at],
        )
        .bind(i64::from(limit))
        .execute(&mut *conn)
        .await
        .map_err(|e| self.batch_error(e))?
        .rows_affected();
        if deleted == 0 && !self.got_lock(conn).await? {
            let open = self.end(conn, false, false).await?;
            return Ok((BatchOutcome::left_to_other_instance(filter), open));
        }
        // The rest of the key, and what follows it, in a window of one microsecond.
        self.windows.set(filter, Window { width: 1, ..window });
        let outcome = BatchOutcome {
            deleted,
            resume_from: Some(at),
            more: true,
        };
        Ok((outcome, self.end(conn, true, chain).await?))
    }

    /// The batch connection (kept from the previous batch, or new and prepared), the
    /// state it is in, and whether this batch may chain its transaction.
    async fn batch_connection(
        &self,
    ) -> Result<(sqlx::pool::PoolConnection<sqlx::Postgres>, ConnState, bool)> {
        self.time_columns().await?;
        let (mut conn, kept) = self
            .batch_conn
            .take(&self.pool)
            .await
            .map_err(|e| self.batch_error(e))?;
        // The transactions are begun and ended by hand (to chain them), and the procedure
        // path gives the connection a temporary procedure and session settings: should the
        // connection leave this store (an error, a dropped future, a run that stopped with
        // the next batch's transaction begun, or simply the end of the run), it is closed,
        // never handed back to the host's pool.
        conn.close_on_drop();
        Ok(match kept {
            // Chain only batches that follow each other at once (no pause in between).
            Some((state, idle)) => (conn, state, idle < CHAIN_WITHIN),
            None => {
                let (procedure, windows_pid) = self.prepare_procedures(&mut conn).await?;
                let state = ConnState {
                    open: false,
                    procedure,
                    windows_pid,
                    last_call: 0,
                };
                (conn, state, false)
            }
        })
    }

    /// One batch on the batch connection, which it keeps for the next batch.
    async fn one_batch(
        &self,
        mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
        mut state: ConnState,
        chain: bool,
        filter: &BatchFilter,
        limit: u32,
    ) -> Result<BatchOutcome> {
        let (outcome, open) = self
            .batch_on(&mut conn, &mut state, chain, filter, limit)
            .await?;
        self.batch_conn.keep(conn, ConnState { open, ..state });
        Ok(outcome)
    }

    /// Up to `max` batches in one `CALL` of the windows procedure, continuing `window`;
    /// `None` when this batch should run alone instead ([`batch_on`](Self::batch_on)):
    /// nothing committed and the call could not go on (the connection has no windows
    /// procedure, it is gone, it cannot record its progress, or the first window held
    /// more than a batch). Once `stop` is
    /// cancelled, the batch in flight is withdrawn ([`unless_stopped`](Self::unless_stopped)).
    #[allow(clippy::too_many_arguments)]
    async fn call_windows(
        &self,
        conn: &mut sqlx::PgConnection,
        state: &mut ConnState,
        filter: &BatchFilter,
        window: Window,
        limit: u32,
        max: u32,
        stop: &CancellationToken,
    ) -> Result<Option<Batches>> {
        let Some(pid) = state.windows_pid else {
            return Ok(None);
        };
        let used = filter.criterion.is_used();
        let sql = format!(
            "CALL {}({})",
            self.windows_procedure_name(used),
            placeholders_upto(12 + usize::from(used))
        );
        let budget = self
            .batch_timeout
            .map_or(CALL_BUDGET, |timeout| CALL_BUDGET.min(timeout / 2));
        // 62 random bits: the call is told apart from any earlier one of the same type.
        let call_id = uuid::Uuid::now_v7().as_u64_pair().1 as i64;
        let call = bind_criterion(
            sqlx::query(AssertSqlSafe(sql)).bind(self.lock_key(filter)),
            filter,
        )
        .bind(window.start)
        .bind(None::<DateTime<Utc>>)
        .bind(i64::from(limit))
        .bind(window.width)
        .bind(window.spread)
        .bind(max as i32)
        .bind(budget.as_secs_f64() * 1000.0)
        .bind(call_id)
        .bind(state.last_call)
        .fetch_one(&mut *conn);
        let (row, withdrawn) = self.unless_stopped(call, pid, stop).await;
        let row = match row {
            Ok(row) => row,
            Err(e) if withdrawn && sqlstate_in(&e, &[QUERY_CANCELED]) => {
                // The batch in flight rolled back; the ones before it stand.
                tracing::debug!("run cancelled; the batch in flight was withdrawn");
                let recorded = self
                    .recorded_windows(call_id)
                    .await
                    .map_err(|read| self.unknown_windows(read, e))?;
                self.windows.clear(filter);
                return Ok(Some(
                    recorded.map_or_else(Batches::default, |r| window_batches(filter, &r)),
                ));
            }
            Err(e) => return self.windows_failed(e, filter, call_id).await,
        };
        let decode = |e| Error::store(STORE, "decode a batch", e);
        let recorded = Recorded::decode(&row, 0).map_err(decode)?;
        let width: i64 = row.try_get(3).map_err(decode)?;
        let spread: f64 = row.try_get(4).map_err(decode)?;
        let stopped: String = row.try_get(5).map_err(decode)?;
        let batches = window_batches(filter, &recorded);
        if !recorded.deleted.is_empty() {
            // The call wrote its row (the next call deletes it).
            state.last_call = call_id;
        }
        match (stopped.as_str(), recorded.ends.last()) {
            ("locked", None) => {
                return Ok(Some(Batches::one(BatchOutcome::left_to_other_instance(
                    filter,
                ))));
            }
            // Where the next call continues, in the procedure's window.
            ("budget" | "locked", Some(Some(end))) => self.windows.set(
                filter,
                Window {
                    start: *end,
                    width: width.clamp(1, MAX_WIDTH),
                    spread,
                },
            ),
            // The end, a gap in the keys, or a window of more than a batch: the next
            // batch probes.
            _ => self.windows.clear(filter),
        }
        // A first window of more than a batch: this batch probes, alone.
        Ok(Some(batches).filter(|b| !b.committed.is_empty()))
    }

    /// Awaits `call`, a `CALL` on the connection of server process `pid`; once `stop` is
    /// cancelled, cancels it in the server (`pg_cancel_backend`, from another connection,
    /// again every 10 ms until it ends: a request that arrives before the `CALL` starts is
    /// ignored). Returns its result and whether it was asked to stop.
    async fn unless_stopped<F, T>(&self, call: F, pid: i32, stop: &CancellationToken) -> (T, bool)
    where
        F: std::future::Future<Output = T>,
    {
        tokio::pin!(call);
        tokio::select! {
            biased;
            result = &mut call => return (result, false),
            _ = stop.cancelled() => {}
        }
        loop {
            if let Err(e) = sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .execute(&self.pool)
                .await
            {
                tracing::warn!(
                    error = %e,
                    "could not cancel the batches in flight; they run to their end"
                );
                return (call.await, true);
            }
            tokio::select! {
                result = &mut call => return (result, true),
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }

    /// After a windows `CALL` failed (`e`): the batches it committed before, read from
    /// `token_cleanup_batches` on another connection, with the error; `None` when
    /// nothing ran or committed and the batch should run alone. The next batch probes.
    async fn windows_failed(
        &self,
        e: sqlx::Error,
        filter: &BatchFilter,
        call_id: i64,
    ) -> Result<Option<Batches>> {
        if sqlstate_in(&e, &[UNDEFINED_FUNCTION]) {
            // Nothing ran; the batch on its own finds the batch procedure gone too.
            return Ok(None);
        }
        self.windows.clear(filter);
        match self.recorded_windows(call_id).await {
            Ok(Some(recorded)) => {
                let mut batches = window_batches(filter, &recorded);
                batches.failed = Some(self.batch_error(e));
                Ok(Some(batches))
            }
            _ if sqlstate_in(&e, &NO_PROGRESS) => {
                tracing::warn!(
                    error = %e,
                    table = %self.batches_table,
                    "batches cannot be recorded; one batch per CALL from now on"
                );
                self.windows_refused.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Ok(None) => Err(self.batch_error(e)),
            Err(read) => Err(self.unknown_windows(read, e)),
        }
    }

    /// The batches that the windows `CALL` `call_id` committed, from its row of
    /// `token_cleanup_batches`, which goes (read on another connection than the batch
    /// connection, which may be dead); `None` when it committed none.
    async fn recorded_windows(&self, call_id: i64) -> sqlx::Result<Option<Recorded>> {
        let sql = format!(
            "DELETE FROM {} WHERE call_id = $1 RETURNING deleted, micros, ends",
            self.batches_table
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(call_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Recorded::decode(&row, 0)).transpose()
    }

    /// The error of a windows `CALL` (`e`) whose committed batches could not be read
    /// (`read`): logged, since the run's counts may then miss them.
    fn unknown_windows(&self, read: sqlx::Error, e: sqlx::Error) -> Error {
        tracing::error!(
            error = %read,
            "could not read which batches of a stopped CALL committed; the run's counts \
             may miss up to {} batches",
            self.batches_per_call
        );
        self.batch_error(e)
    }

    async fn execute<S: SqlxBinder>(&self, stmt: &S, operation: &'static str) -> Result<u64> {
        let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
        sqlx::query_with(AssertSqlSafe(sql), values)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(err(operation))
    }
}

#[async_trait]
impl TokenStore for PostgresStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    fn table(&self) -> &TokenTable {
        &self.sql.table
    }

    async fn migrate(&self) -> Result<()> {
        let time_col = |name: &str| {
            ColumnDef::new(name.to_owned())
                .timestamp_with_time_zone()
                .to_owned()
        };
        let id = ColumnDef::new(self.sql.table.id_column().as_str().to_owned())
            .big_integer()
            .not_null()
            .auto_increment()
            .primary_key()
            .to_owned();
        let mut statements = Vec::new();
        if let Some(schema) = self.sql.table.schema() {
            statements.push(format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                super::sql::quote(schema.as_str(), '"')
            ));
        }
        statements.push(
            self.sql
                .create_token_table(id, time_col)
                .to_string(PostgresQueryBuilder),
        );
        statements.push(self.sql.expiry_index().to_string(PostgresQueryBuilder));
        if let Some(used) = self.sql.used_index() {
            statements.push(used.to_string(PostgresQueryBuilder));
        }
        statements.push(self.sql.create_runs_table().to_string(PostgresQueryBuilder));
        statements.push(self.sql.runs_index().to_string(PostgresQueryBuilder));
        statements.push(
            self.sql
                .create_leases_table()
                .to_string(PostgresQueryBuilder),
        );
        // What each `CALL` of several batches has committed so far.
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (call_id bigint PRIMARY KEY, \
             written_at timestamptz NOT NULL, deleted bigint[] NOT NULL, \
             micros bigint[] NOT NULL, ends timestamptz[] NOT NULL)",
            self.batches_table
        ));
        // Instances starting together would race on the catalog; one migrates at a time.
        let mut tx = self.pool.begin().await.map_err(err("migrate"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_NAMESPACE)
            .bind(fnv1a32(&[&self.sql.table.qualified_name(), "migrate"]))
            .execute(&mut *tx)
            .await
            .map_err(err("migrate"))?;
        for sql in statements {
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(err("migrate"))?;
        }
        tx.commit().await.map_err(err("migrate"))
    }

    async fn token_types(&self) -> Result<Vec<String>> {
        let (sql, values) = self.sql.distinct_types().build_sqlx(PostgresQueryBuilder);
        sqlx::query_scalar_with(AssertSqlSafe(sql), values)
            .fetch_all(&self.pool)
            .await
            .map_err(err("list token types"))
    }

    async fn count(&self, filter: &BatchFilter) -> Result<u64> {
        self.time_columns().await?;
        // The batches' own condition, so that a dry run counts what a run deletes.
        let bounds: &[&str] = if filter.resume_from.is_some() {
            &[">="]
        } else {
            &[]
        };
        let (_, _, cond) = self.condition(filter.criterion.is_used(), 1, bounds);
        let sql = format!("SELECT count(*) FROM {} WHERE {cond}", self.names.table);
        let keys: Vec<DateTime<Utc>> = filter.resume_from.into_iter().collect();
        let n: i64 = Self::bind_condition(sqlx::query(AssertSqlSafe(sql)), filter, &keys)
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(err("count tokens"))?;
        Ok(n.unsigned_abs())
    }

    async fn delete_batch(&self, filter: &BatchFilter, limit: u32) -> Result<BatchOutcome> {
        let (conn, state, chain) = self.batch_connection().await?;
        self.one_batch(conn, state, chain, filter, limit).await
    }

    fn batches_per_call(&self) -> u32 {
        if self.batch_procedure
            && !self.procedure_refused.load(Ordering::Relaxed)
            && !self.windows_refused.load(Ordering::Relaxed)
        {
            self.batches_per_call
        } else {
            1
        }
    }

    async fn delete_batches(
        &self,
        filter: &BatchFilter,
        limit: u32,
        max: u32,
        stop: &CancellationToken,
    ) -> Result<Batches> {
        if stop.is_cancelled() {
            return Ok(Batches::default());
        }
        let (mut conn, mut state, chain) = self.batch_connection().await?;
        let max = max.min(self.batches_per_call);
        let window = self.windows.next(filter).filter(|_| {
            max > 1
                && state.procedure
                && state.windows_pid.is_some()
                && !self.windows_refused.load(Ordering::Relaxed)
        });
        if let Some(window) = window
            && let Some(batches) = self
                .call_windows(&mut conn, &mut state, filter, window, limit, max, stop)
                .await?
        {
            // After a failure the connection is closed (it may be dead).
            if batches.failed.is_none() {
                self.batch_conn.keep(conn, state);
            }
            return Ok(batches);
        }
        Ok(Batches::one(
            self.one_batch(conn, state, chain, filter, limit).await?,
        ))
    }

    async fn type_counts(&self, now: DateTime<Utc>) -> Result<Vec<TypeCounts>> {
        let times = self.time_columns().await?;
        let QuotedNames {
            table,
            ty,
            exp,
            used,
            ..
        } = &self.names;
        let expired = format!("{exp} < {}", times.expires.param(1));
        let (used_count, active) = match used {
            Some(used) => (
                format!("count({used})"),
                format!("{exp} >= {} AND {used} IS NULL", times.expires.param(1)),
            ),
            None => (
                "0::bigint".to_owned(),
                format!("{exp} >= {}", times.expires.param(1)),
            ),
        };
        // One grouped scan: type, total, expired, used, active, oldest expired expiry.
        let sql = format!(
            "SELECT {ty}, count(*), count(CASE WHEN {expired} THEN 1 END), {used_count}, \
               count(CASE WHEN {active} THEN 1 END), \
               min(CASE WHEN {expired} THEN {} END) \
             FROM {table} GROUP BY {ty} ORDER BY {ty}",
            times.expires.read(exp)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(err("count tokens by type"))?;
        rows.iter()
            .map(|row| {
                let oldest = row.try_get(5).map_err(err("decode token counts"))?;
                decode_type_counts(STORE, row, oldest)
            })
            .collect()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(err("ping"))
    }
}

super::sql::sql_run_store! {
    PostgresStore,
    PostgresQueryBuilder,
    /// A lease row, timed by the database clock so that instances with skewed clocks
    /// agree on expiry. An expired lease (its holder crashed) is taken over.
    async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let leases = &self.names.leases;
        let sql = format!(
            "INSERT INTO {leases} AS l (name, holder, expires_at) VALUES ($1, $2, {NOW_MS} + $3) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE l.expires_at < {NOW_MS} OR l.holder = EXCLUDED.holder"
        );
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(name)
            .bind(holder)
            .bind(ttl_ms)
            .execute(&self.pool)
            .await
            .map_err(err("acquire a lease"))?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(feature = "test-util")]
#[async_trait]
impl crate::test_util::TestStore for PostgresStore {
    async fn insert_tokens(&self, tokens: &[crate::Token]) -> Result<()> {
        for chunk in tokens.chunks(1000) {
            let stmt = self.sql.insert_tokens(chunk);
            self.execute(&stmt, "insert tokens").await?;
        }
        Ok(())
    }

    async fn token_ids(&self) -> Result<Vec<i64>> {
        let (sql, values) = self.sql.select_ids().build_sqlx(PostgresQueryBuilder);
        sqlx::query_scalar_with(AssertSqlSafe(sql), values)
            .fetch_all(&self.pool)
            .await
            .map_err(err("list token ids"))
    }

    async fn fail_deleting(&self, id: i64) -> Result<()> {
        // A row trigger that raises makes the whole batch statement fail and roll back.
        let schema = self
            .sql
            .table
            .schema()
            .map(|s| format!("{}.", super::sql::quote(s.as_str(), '"')))
            .unwrap_or_default();
        let name = format!(
            "token_cleanup_fault_{}_{}",
            self.sql.table.table(),
            id.unsigned_abs()
        );
        let function = format!("{schema}\"{name}\"");
        let QuotedNames {
            table, id: id_col, ..
        } = &self.names;
        let sql = format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS \
             $f$ BEGIN RAISE EXCEPTION 'injected failure'; END $f$; \
             DROP TRIGGER IF EXISTS \"{name}\" ON {table}; \
             CREATE TRIGGER \"{name}\" BEFORE DELETE ON {table} FOR EACH ROW \
             WHEN (OLD.{id_col} = {id}) EXECUTE FUNCTION {function}()"
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map_err(err("inject a failure"))?;
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(function);
        Ok(())
    }

    async fn clear_failures(&self) -> Result<()> {
        let functions = std::mem::take(&mut *self.faults.lock().unwrap_or_else(|p| p.into_inner()));
        for function in functions {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP FUNCTION IF EXISTS {function}() CASCADE"
            )))
            .execute(&self.pool)
            .await
            .map_err(err("clear injected failures"))?;
        }
        Ok(())
    }

    /// Batches are key windows sized from the previous window's density: they hold
    /// somewhat fewer rows than their limit, never more.
    fn fills_batches(&self) -> bool {
        false
    }

    fn time_precision(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::microseconds(1)
    }
}
