//! SQLite store (sqlx + sea-query).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_query::{ColumnDef, SqliteQueryBuilder, Value};
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection, Row, SqlitePool};

use super::sql::{
    QuotedNames, Statements, SweepProbe, TimeEncoding, decode_type_counts, parse_sqlite_time,
    sweep_args, sweep_pays,
};
use super::{BatchFilter, BatchOutcome, Sweep, SweepMode, SweepOutcome, TokenStore, TypeCounts};
use crate::error::{Error, Result};
use crate::table::TokenTable;

const STORE: &str = "sqlite";

/// [`TokenStore`] and [`RunStore`](super::RunStore) on SQLite.
///
/// Instants are compared in the table's [`TimeFormat`](crate::TimeFormat), so the expiry
/// index is used and the comparison is exact.
///
/// # How a run deletes
///
/// When at least a fifth of the table is expired ([`SweepMode::Auto`]), the expired
/// tokens of every requested type go in one [sweep](crate::TokenStore::plan_sweep) in
/// rowid order. Each batch is two statements on the table's own b-tree (`NOT INDEXED`): a
/// read that finds the rowid of the `n`-th expired row after the previous batch and counts
/// the rows per type, then, in a `BEGIN IMMEDIATE` transaction, a `DELETE` of the expired
/// rows up to it, committed only if it deleted exactly the rows the read counted (else it
/// rolls back and the batch is retried). The rows go in the order a single `DELETE`
/// would visit them, each page is written by one batch, no row is looked up through an
/// index, and the write lock is free while the next batch's read runs.
///
/// Otherwise (and for used tokens) each batch is one `DELETE .. WHERE id IN (SELECT id ..
/// ORDER BY expires_at LIMIT n)` per type, through the `(type, expires_at)` index. Either
/// way a batch is its own transaction; WAL mode lets readers continue meanwhile, and
/// writers wait at most one batch.
///
/// A sweep walks by rowid, so a table declared `WITHOUT ROWID` is always cleaned type by
/// type.
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
        Self {
            pool,
            sql,
            names,
            sweep: SweepMode::default(),
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

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The sweep's probe and delete statements: rows of `sweep` after `?1` (up to `?2`),
    /// on the table b-tree. The probe's `LIMIT` is the last parameter.
    fn sweep_sql(&self, sweep: &Sweep) -> (String, String, Vec<Value>) {
        let QuotedNames { table, ty, .. } = &self.names;
        let mut values = Vec::new();
        let cond = self
            .sql
            .sweep_condition(&self.names, &sweep.filters, |value| {
                values.push(value);
                format!("?{}", values.len() + 2)
            });
        let limit = values.len() + 3;
        let probe = format!(
            "SELECT {ty}, count(*), max(r) FROM (\
               SELECT _rowid_ AS r, {ty} FROM {table} NOT INDEXED \
               WHERE _rowid_ > ?1 AND _rowid_ <= ?2 AND ({cond}) ORDER BY _rowid_ LIMIT ?{limit}) \
             GROUP BY {ty}"
        );
        let delete = format!(
            "DELETE FROM {table} NOT INDEXED WHERE _rowid_ > ?1 AND _rowid_ <= ?2 AND ({cond})"
        );
        (probe, delete, values)
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
        let deleted = self.execute(&stmt, "delete a batch").await?;
        Ok(BatchOutcome::deleted(deleted))
    }

    async fn plan_sweep(&self, filters: &[BatchFilter]) -> Result<Option<Sweep>> {
        if self.sweep == SweepMode::Never
            || filters.is_empty()
            || filters.iter().any(|f| f.criterion.is_used())
        {
            return Ok(None);
        }
        let sql = format!(
            "SELECT min(_rowid_), max(_rowid_) FROM {}",
            self.names.table
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
        let (probe, delete, values) = self.sweep_sql(sweep);
        // The probe reads outside the write transaction: a writer waiting for the lock
        // gets in while it runs, as it does while a type-by-type batch finds its rows.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(err("find a sweep batch"))?;
        let rows = sqlx::query_as_with(
            AssertSqlSafe(probe),
            SqlxValues(sweep_args(sweep, sweep.end, &values, Some(limit))),
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(err("find a sweep batch"))?;
        let found = SweepProbe::new(rows);
        let Some(hi) = found.hi else {
            return Ok(SweepProbe::finished(sweep));
        };
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("begin a sweep batch"))?;
        let removed = sqlx::query_with(
            AssertSqlSafe(delete),
            SqlxValues(sweep_args(sweep, hi, &values, None)),
        )
        .execute(&mut *tx)
        .await
        .map_err(err("delete a sweep batch"))?
        .rows_affected();
        // A mismatch means the host changed rows of the range after the probe (an expiry
        // moved, a token deleted); dropping `tx` rolls back and the engine retries.
        let outcome = found.outcome(STORE, sweep, hi, removed, limit)?;
        tx.commit().await.map_err(err("commit a sweep batch"))?;
        Ok(outcome)
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
