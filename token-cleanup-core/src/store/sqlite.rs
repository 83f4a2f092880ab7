//! SQLite store (sqlx + sea-query).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_query::{ColumnDef, SqliteQueryBuilder, Value};
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row, SqliteConnection, SqlitePool};

use super::sql::{
    QuotedNames, Statements, TimeEncoding, decode_type_counts, parse_sqlite_time, sweep_pays,
};
use super::window::{Window, Windows};
use super::{
    BatchFilter, BatchOutcome, Criterion, Sweep, SweepMode, SweepOutcome, TokenStore, TypeCounts,
};
use crate::error::{Error, Result};
use crate::table::TokenTable;

const STORE: &str = "sqlite";

/// A sweep batch's window spans at most this many batches' worth of rowids, which bounds
/// how long a batch holds the write lock while it walks a long run of live tokens.
const SWEEP_WINDOW: i64 = 8;

/// How long one sweep batch walks on through windows that hold no expired token before
/// it returns to the engine (a batch boundary to stop at).
const EMPTY_BUDGET: Duration = Duration::from_millis(100);

/// [`TokenStore`] and [`RunStore`](super::RunStore) on SQLite.
///
/// Instants are compared in the table's [`TimeFormat`](crate::TimeFormat), so the expiry
/// index is used and the comparison is exact.
///
/// # How a run deletes
///
/// When at least a fifth of the table is expired ([`SweepMode::Auto`]), the expired
/// tokens of every requested type go in one [sweep](crate::TokenStore::plan_sweep) in
/// rowid order: the order a single `DELETE` visits them, each page written by one batch.
/// Each batch is a window of rowids after the previous one, deleted in a `BEGIN
/// IMMEDIATE` transaction by one `DELETE` per type on the table's own b-tree (`NOT
/// INDEXED`), whose counts are the batch's counts per type. Nothing reads ahead: the
/// window is sized from the density of expired rows in the previous one, aiming a little
/// below the batch size, never narrower than `batch_size` rowids (which cannot hold more
/// than `batch_size` rows) and never wider than eight batches' worth (which bounds how
/// long a batch holds the write lock in a run of live tokens). A window that holds more
/// than a batch is rolled back and tried at half its width. (A read that first found
/// where the batch ends and counted its rows per type cost a third of the run; the
/// README has the measurements.)
///
/// Otherwise (and for used tokens) each batch is one `DELETE .. WHERE id IN (SELECT id ..
/// ORDER BY expires_at LIMIT n)` per type, through the `(type, expires_at)` index. Either
/// way a batch is its own transaction, and WAL mode lets readers continue meanwhile.
///
/// # Writers
///
/// A host write that shares the cleanup's pool (one connection for writes) is queued by
/// the pool and waits for at most one batch: a sweep takes the connection anew for each
/// window. A write on a connection of its own waits for the lock by polling: SQLite's
/// busy handler sleeps 1, 2, 5, 10 .. up to 100 ms between tries, and gets in only when a
/// try lands between two batches, which back-to-back batches leave little room for (the
/// README measured waits of 0.8 to 1.6 s where batches took under 50 ms, against 31 ms
/// with a shared pool). Share the write pool with the store, or leave room between
/// batches with
/// [`pause_between_batches`](crate::TokenCleanupServiceBuilder::pause_between_batches).
///
/// A sweep walks by rowid, so a table declared `WITHOUT ROWID` is always cleaned type by
/// type.
///
/// # Checkpoints
///
/// In WAL mode every committed batch appends its pages to the write-ahead log, and by
/// default the connection whose commit takes the log past 1,000 pages
/// (`wal_autocheckpoint`) copies them back into the database file and syncs it, inside
/// that commit: a batch of the cleanup or, as often, the host's next write, which then
/// waits 50 to 175 ms on the machine we measured. While a run deletes, this store runs
/// `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own after batches commit (at
/// most every 10 ms), concurrently with the next batch and with the host's writes; a
/// passive checkpoint takes no lock that a writer waits for. SQLite starts the log over
/// only when a write begins on a log that is copied back entirely, which back-to-back
/// batches never leave time for: so once the log is half as long as the
/// `wal_autocheckpoint` limit and copied back, the next batch first copies the few pages
/// written since (on the checkpoint connection, not holding the host's) and its write
/// then starts the log over. The log rarely reaches the limit, so neither a batch nor the
/// host's writes checkpoint inside a commit, unless one batch writes more pages than the
/// limit by itself: 1,000 deletions from a table with an index in random order (a unique
/// index of token hashes) can, and the commit after each batch then copies the log back
/// inline. On such a table, a `wal_autocheckpoint` of 10,000 on the host's pool
/// ([`SqliteConnectOptions::pragma`]) measured 2.4x the single statement's time instead
/// of 3.7 to 4.0x. The connection is opened with the pool's options when batches start
/// and closed when they stop; databases that are not in WAL mode (in-memory ones, for
/// instance) are left alone.
/// [`background_checkpoints(false)`](Self::background_checkpoints) turns this off.
///
/// ```no_run
/// # async fn example() -> Result<(), token_cleanup_core::Error> {
/// use token_cleanup_core::{SqliteStore, TokenStore, TokenTable};
///
/// let store = SqliteStore::connect("sqlite://tokens.db", TokenTable::default()).await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    sql: Statements,
    names: QuotedNames,
    sweep: SweepMode,
    /// The next window of each sweep in progress, by where it starts and where it ends.
    windows: Windows<(i64, i64), i64>,
    checkpointer: Option<Arc<Checkpointer>>,
    #[cfg(feature = "test-util")]
    faults: std::sync::Mutex<Vec<String>>,
}

fn err(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::store(STORE, operation, e)
}

impl SqliteStore {
    /// A store on the host's pool.
    pub fn new(pool: SqlitePool, table: TokenTable) -> Self {
        let time = TimeEncoding::Sqlite(table.time_format());
        let sql = Statements::new(table, time);
        let names = sql.quoted('"');
        let checkpointer = Some(Arc::new(Checkpointer::new(&pool)));
        Self {
            pool,
            sql,
            names,
            sweep: SweepMode::default(),
            windows: Windows::default(),
            checkpointer,
            #[cfg(feature = "test-util")]
            faults: Default::default(),
        }
    }

    /// Opens (creating if missing) a database file in WAL mode with a 5 s busy timeout,
    /// the settings under which cleanup and live writes share the file well.
    pub async fn connect(url: &str, table: TokenTable) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(err("parse the connection URL"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(err("connect"))?;
        Ok(Self::new(pool, table))
    }

    /// When expired tokens go in one sweep in rowid order rather than type by type
    /// (default [`SweepMode::Auto`]).
    pub fn sweep(mut self, mode: SweepMode) -> Self {
        self.sweep = mode;
        self
    }

    /// `false` leaves checkpoints to SQLite's automatic ones, inside the commit that
    /// takes the log past its limit (default `true`: see [Checkpoints](#checkpoints)).
    pub fn background_checkpoints(mut self, enabled: bool) -> Self {
        self.checkpointer = enabled.then(|| Arc::new(Checkpointer::new(&self.pool)));
        self
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Lets the checkpointer prepare the log for a batch's write.
    async fn before_write(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.before_write().await;
        }
    }

    /// Tells the checkpointer that a batch committed.
    fn committed(&self, rows: u64) {
        if let (Some(checkpointer), true) = (&self.checkpointer, rows > 0) {
            checkpointer.committed();
        }
    }

    /// The sweep's deletes, one per token type: its expired rows after rowid `?1` up to
    /// `?2`, on the table b-tree, with the type and cutoff to bind as `?3` and `?4`.
    fn sweep_deletes(&self, sweep: &Sweep) -> (String, Vec<(String, Value)>) {
        let QuotedNames { table, ty, exp, .. } = &self.names;
        let delete = format!(
            "DELETE FROM {table} NOT INDEXED \
             WHERE _rowid_ > ?1 AND _rowid_ <= ?2 AND {ty} = ?3 AND {exp} < ?4"
        );
        let types = sweep
            .filters
            .iter()
            .filter_map(|f| match f.criterion {
                Criterion::Expired { before } => {
                    Some((f.token_type.clone(), self.sql.time.bound(before)))
                }
                Criterion::Used { .. } => None,
            })
            .collect();
        (delete, types)
    }

    async fn execute<S: SqlxBinder>(&self, stmt: &S, operation: &'static str) -> Result<u64> {
        let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
        sqlx::query_with(AssertSqlSafe(sql), values)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(err(operation))
    }

    async fn exec_schema(&self, sql: String) -> Result<()> {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(err("migrate"))
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    fn table(&self) -> &TokenTable {
        &self.sql.table
    }

    async fn migrate(&self) -> Result<()> {
        let time = self.sql.time;
        let time_col = |name: &str| {
            let mut c = ColumnDef::new(name.to_owned());
            if time.is_integer() {
                c.big_integer();
            } else {
                c.text();
            }
            c
        };
        let id = ColumnDef::new(self.sql.table.id_column().as_str().to_owned())
            .integer()
            .not_null()
            .primary_key()
            .to_owned();
        let mut statements = vec![
            self.sql
                .create_token_table(id, time_col)
                .to_string(SqliteQueryBuilder),
            self.sql.expiry_index().to_string(SqliteQueryBuilder),
        ];
        if let Some(used) = self.sql.used_index() {
            statements.push(used.to_string(SqliteQueryBuilder));
        }
        statements.push(self.sql.create_runs_table().to_string(SqliteQueryBuilder));
        statements.push(self.sql.runs_index().to_string(SqliteQueryBuilder));
        statements.push(self.sql.create_leases_table().to_string(SqliteQueryBuilder));
        for sql in statements {
            self.exec_schema(sql).await?;
        }
        Ok(())
    }

    async fn token_types(&self) -> Result<Vec<String>> {
        let (sql, values) = self.sql.distinct_types().build_sqlx(SqliteQueryBuilder);
        sqlx::query_scalar_with(AssertSqlSafe(sql), values)
            .fetch_all(&self.pool)
            .await
            .map_err(err("list token types"))
    }

    async fn count(&self, filter: &BatchFilter) -> Result<u64> {
        let (sql, values) = self.sql.count(filter).build_sqlx(SqliteQueryBuilder);
        let n: i64 = sqlx::query_scalar_with(AssertSqlSafe(sql), values)
            .fetch_one(&self.pool)
            .await
            .map_err(err("count tokens"))?;
        Ok(n as u64)
    }

    async fn delete_batch(&self, filter: &BatchFilter, limit: u32) -> Result<BatchOutcome> {
        let stmt = self.sql.delete_in(filter, limit);
        self.before_write().await;
        let deleted = self.execute(&stmt, "delete a batch").await?;
        self.committed(deleted);
        Ok(BatchOutcome::deleted(deleted))
    }

    async fn plan_sweep(&self, filters: &[BatchFilter]) -> Result<Option<Sweep>> {
        if self.sweep == SweepMode::Never
            || filters.is_empty()
            || filters.iter().any(|f| f.criterion.is_used())
        {
            return Ok(None);
        }
        // Two subqueries: SQLite answers a lone `min` or `max` of the rowid from the ends
        // of the b-tree, but `min(..), max(..)` together from a scan of the whole table.
        let table = &self.names.table;
        let sql = format!(
            "SELECT (SELECT min(_rowid_) FROM {table}), (SELECT max(_rowid_) FROM {table})"
        );
        let (first, last): (Option<i64>, Option<i64>) = match sqlx::query_as(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
        {
            Ok(extent) => extent,
            Err(e) if e.as_database_error().is_some() => {
                // `WITHOUT ROWID`: no rowid order to walk.
                tracing::debug!(error = %e, "no rowid to sweep by; cleaning type by type");
                return Ok(None);
            }
            Err(e) => return Err(err("measure the table")(e)),
        };
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(None);
        };
        let rows = last.abs_diff(first).saturating_add(1);
        let pays = sweep_pays(self.sweep, filters, rows, |filter, cap| {
            let stmt = self.sql.count_capped(filter, cap);
            async move {
                let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
                sqlx::query_scalar_with(AssertSqlSafe(sql), values)
                    .fetch_one(&self.pool)
                    .await
                    .map(|n: i64| n as u64)
                    .map_err(err("count expired tokens"))
            }
        })
        .await?;
        Ok(pays.then(|| Sweep::new(filters.to_vec(), first.saturating_sub(1), last)))
    }

    async fn sweep_batch(&self, sweep: &Sweep, limit: u32) -> Result<SweepOutcome> {
        let (delete, types) = self.sweep_deletes(sweep);
        self.before_write().await;
        // No read ahead: the window of rowids is sized from the density of expired rows
        // in the previous one. It is never narrower than `limit` rowids, which cannot
        // hold more than `limit` rows, and never wider than `SWEEP_WINDOW` batches.
        let narrowest = i64::from(limit);
        let widest = SWEEP_WINDOW.saturating_mul(narrowest);
        let mut window = self
            .windows
            .take(&(sweep.position, sweep.end))
            .unwrap_or_else(|| Window::probed(sweep.position, narrowest, limit, None));
        let started = std::time::Instant::now();
        loop {
            window.width = window.width.clamp(narrowest, widest);
            // The connection is taken anew for each window: a host sharing a
            // one-connection pool with the cleanup gets in between them.
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(err("begin a sweep batch"))?;
            let hi = sweep.end.min(window.start.saturating_add(window.width));
            let mut tx = conn
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(err("begin a sweep batch"))?;
            let mut deleted = Vec::with_capacity(types.len());
            let mut total = 0u64;
            for (token_type, cutoff) in &types {
                let n = sqlx::query_with(
                    AssertSqlSafe(delete.as_str()),
                    SqlxValues(sea_query::Values(vec![
                        Value::from(window.start),
                        Value::from(hi),
                        Value::from(token_type.as_str()),
                        cutoff.clone(),
                    ])),
                )
                .execute(&mut *tx)
                .await
                .map_err(err("delete a sweep batch"))?
                .rows_affected();
                total += n;
                if total > u64::from(limit) {
                    break;
                }
                if n > 0 {
                    deleted.push((token_type.clone(), n));
                }
            }
            if total > u64::from(limit) {
                // Denser than the previous window: roll back and try half of it, aiming
                // lower (down to `limit` rowids, which cannot overflow).
                tx.rollback()
                    .await
                    .map_err(err("roll back a sweep batch"))?;
                window.width /= 2;
                window.spread = Window::<i64>::MAX_SPREAD;
                continue;
            }
            tx.commit().await.map_err(err("commit a sweep batch"))?;
            self.committed(total);
            let done = hi >= sweep.end;
            window = window.next(hi, total, limit);
            if total == 0 && !done && started.elapsed() < EMPTY_BUDGET {
                // A run of live tokens: walk on in wider windows.
                continue;
            }
            if !done {
                self.windows.set((window.start, sweep.end), window);
            }
            return Ok(SweepOutcome {
                deleted,
                position: hi,
                done,
            });
        }
    }

    async fn type_counts(&self, now: DateTime<Utc>) -> Result<Vec<TypeCounts>> {
        let (sql, values) = self.sql.type_counts(now).build_sqlx(SqliteQueryBuilder);
        let rows = sqlx::query_with(AssertSqlSafe(sql), values)
            .fetch_all(&self.pool)
            .await
            .map_err(err("count tokens by type"))?;
        let format = self.sql.table.time_format();
        rows.iter()
            .map(|row| {
                let oldest = if self.sql.time.is_integer() {
                    parse_sqlite_time(
                        format,
                        None,
                        row.try_get(5).map_err(err("decode token counts"))?,
                    )
                } else {
                    parse_sqlite_time(
                        format,
                        row.try_get(5).map_err(err("decode token counts"))?,
                        None,
                    )
                };
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

/// Passive checkpoints on a connection of its own while batches commit (see
/// [Checkpoints](SqliteStore#checkpoints)).
#[derive(Debug)]
struct Checkpointer {
    options: Arc<SqliteConnectOptions>,
    /// A batch committed since the running checkpoint started.
    pending: AtomicBool,
    /// A task is checkpointing.
    running: AtomicBool,
    /// The database is not in WAL mode (or cannot be opened a second time): nothing to do.
    off: AtomicBool,
    /// Log length (frames) from which the store has the log restarted: half the
    /// connection's `wal_autocheckpoint`, so that the host's commits never reach it.
    restart_at: AtomicI64,
    /// A background checkpoint copied back a log of at least `restart_at` frames: the
    /// next batch copies what was added since and starts its write on an empty log.
    restart_due: AtomicBool,
    /// The task's connection, while it runs.
    conn: tokio::sync::Mutex<Option<SqliteConnection>>,
}

impl Checkpointer {
    /// The least time between two checkpoints of one task.
    const PACE: Duration = Duration::from_millis(10);

    fn new(pool: &SqlitePool) -> Self {
        Self {
            options: pool.connect_options(),
            pending: AtomicBool::new(false),
            running: AtomicBool::new(false),
            off: AtomicBool::new(false),
            restart_at: AtomicI64::new(500),
            restart_due: AtomicBool::new(false),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// A batch committed: start a checkpointing task unless one is running.
    fn committed(self: &Arc<Self>) {
        if self.off.load(Ordering::Relaxed) {
            return;
        }
        self.pending.store(true, Ordering::SeqCst);
        if !self.running.swap(true, Ordering::SeqCst) {
            tokio::spawn(Arc::clone(self).run());
        }
    }

    /// Before a batch takes a connection: when the log is long and the background copied
    /// it back, copies the few frames added since (on the task's connection, so that the
    /// host's writes need not wait for it), so that the batch's write starts on a fully
    /// copied log, which SQLite then restarts from the beginning.
    async fn before_write(&self) {
        if !self.restart_due.swap(false, Ordering::SeqCst) {
            return;
        }
        if let Some(conn) = self.conn.lock().await.as_mut()
            && let Err(e) = checkpoint(conn).await
        {
            tracing::debug!(error = %e, "checkpoint before a batch failed");
        }
    }

    /// Checkpoints until no batch has committed since the last checkpoint started.
    async fn run(self: Arc<Self>) {
        match self.open().await {
            Ok(Some(conn)) => *self.conn.lock().await = Some(conn),
            outcome => {
                if let Err(e) = outcome {
                    tracing::debug!(error = %e, "no connection for background checkpoints");
                }
                self.off.store(true, Ordering::Relaxed);
                self.running.store(false, Ordering::SeqCst);
                return;
            }
        }
        loop {
            self.pending.store(false, Ordering::SeqCst);
            if let Some(conn) = self.conn.lock().await.as_mut() {
                match checkpoint(conn).await {
                    Ok((false, log, copied)) => {
                        if log >= self.restart_at.load(Ordering::Relaxed) && copied == log {
                            self.restart_due.store(true, Ordering::SeqCst);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "background checkpoint failed"),
                }
            }
            tokio::time::sleep(Self::PACE).await;
            if self.pending.load(Ordering::SeqCst) {
                continue;
            }
            self.running.store(false, Ordering::SeqCst);
            // A batch that committed between the check and the store above saw a running
            // task and started none: take the work back unless a new task already has.
            if !self.pending.load(Ordering::SeqCst) || self.running.swap(true, Ordering::SeqCst) {
                break;
            }
        }
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.close().await;
        }
    }

    /// A connection to the database, or `None` when it is not in WAL mode.
    async fn open(&self) -> std::result::Result<Option<SqliteConnection>, sqlx::Error> {
        let mut conn = self.options.connect().await?;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await?;
        if !mode.eq_ignore_ascii_case("wal") {
            let _ = conn.close().await;
            return Ok(None);
        }
        let limit: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut conn)
            .await?;
        if limit > 1 {
            self.restart_at.store(limit / 2, Ordering::Relaxed);
        }
        Ok(Some(conn))
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: whether it was blocked, the frames in the log and
/// the frames copied back into the database file.
async fn checkpoint(
    conn: &mut SqliteConnection,
) -> std::result::Result<(bool, i64, i64), sqlx::Error> {
    let (busy, log, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok((busy != 0, log, copied))
}

super::sql::sql_run_store! {
    SqliteStore,
    SqliteQueryBuilder,
    async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = Utc::now().timestamp_millis();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let stmt = self.sql.upsert_lease(name, holder, now, until);
        Ok(self.execute(&stmt, "acquire a lease").await? == 1)
    }
}

#[cfg(feature = "test-util")]
#[async_trait]
impl crate::test_util::TestStore for SqliteStore {
    /// A sweep's windows may hold fewer rows than a batch; type-by-type batches are full.
    fn fills_batches(&self) -> bool {
        self.sweep == SweepMode::Never
    }

    async fn insert_tokens(&self, tokens: &[crate::Token]) -> Result<()> {
        for chunk in tokens.chunks(1000) {
            let stmt = self.sql.insert_tokens(chunk);
            self.execute(&stmt, "insert tokens").await?;
        }
        Ok(())
    }

    async fn token_ids(&self) -> Result<Vec<i64>> {
        let (sql, values) = self.sql.select_ids().build_sqlx(SqliteQueryBuilder);
        sqlx::query_scalar_with(AssertSqlSafe(sql), values)
            .fetch_all(&self.pool)
            .await
            .map_err(err("list token ids"))
    }

    async fn fail_deleting(&self, id: i64) -> Result<()> {
        // A trigger makes the whole DELETE statement fail and roll back, exactly like a
        // failure inside the database would.
        let name = format!("token_cleanup_fault_{}", id.unsigned_abs());
        let table = self.sql.table.table().as_str();
        let id_col = self.sql.table.id_column().as_str();
        self.exec_schema(format!(
            "CREATE TRIGGER IF NOT EXISTS \"{name}\" BEFORE DELETE ON \"{table}\" \
             WHEN OLD.\"{id_col}\" = {id} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        ))
        .await?;
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name);
        Ok(())
    }

    fn time_precision(&self) -> chrono::TimeDelta {
        match self.sql.table.time_format() {
            crate::TimeFormat::UnixSeconds => chrono::TimeDelta::seconds(1),
            crate::TimeFormat::UnixMillis => chrono::TimeDelta::milliseconds(1),
            _ => chrono::TimeDelta::nanoseconds(1),
        }
    }

    async fn clear_failures(&self) -> Result<()> {
        let names = std::mem::take(&mut *self.faults.lock().unwrap_or_else(|p| p.into_inner()));
        for name in names {
            self.exec_schema(format!("DROP TRIGGER IF EXISTS \"{name}\""))
                .await?;
        }
        Ok(())
    }
}
