//! MySQL 8 / MariaDB 10.6+ store (sqlx + sea-query).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_query::{ColumnDef, MysqlQueryBuilder, Value};
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use sqlx::mysql::{MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::OnceCell;

use super::kept::KeptConnection;
use super::sql::{
    QuotedNames, Statements, SweepProbe, TimeEncoding, decode_type_counts, fnv1a32, index_name,
    sweep_args, sweep_pays,
};
use super::{
    BatchFilter, BatchOutcome, Criterion, Sweep, SweepMode, SweepOutcome, TokenStore, TypeCounts,
};
use crate::error::{Error, Result};
use crate::table::TokenTable;

const STORE: &str = "mysql";

/// Milliseconds since the epoch on the database clock, from `UTC_TIMESTAMP` (not
/// `UNIX_TIMESTAMP(NOW())`, which reads the local time back through the session's time
/// zone and is an hour off during the hour a daylight-saving zone repeats).
const NOW_MS: &str =
    "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000)";

/// MariaDB `max_statement_time` exceeded.
const ER_STATEMENT_TIMEOUT: u16 = 1969;
/// MySQL `MAX_EXECUTION_TIME` exceeded.
const ER_QUERY_TIMEOUT: u16 = 3024;
/// Duplicate index name (two instances migrating at once).
const ER_DUP_KEYNAME: u16 = 1061;

/// [`TokenStore`] and [`RunStore`](super::RunStore) on MySQL 8.0.1+ or MariaDB 10.6+ (InnoDB).
///
/// The expiry and used-at columns are `DATETIME(6)` holding UTC (what [`migrate`] creates)
/// or `TIMESTAMP`. Every statement that compares or reads them runs with `time_zone =
/// '+00:00'` (MariaDB's `SET STATEMENT .. FOR`, MySQL's `SET_VAR` optimizer hint), so
/// both stay exact when the host's sessions use another time zone (a test runs them 13
/// hours ahead of UTC and 11 behind, on MariaDB; the MySQL hint is not tested here). A
/// schema in [`TokenTable`] names the database that holds the table. Run records and job
/// leases live in `token_cleanup_runs` and `token_cleanup_leases` next to it.
///
/// # Sweeps: most of the table expired
///
/// When at least a fifth of the table is expired ([`SweepMode::Auto`]; the table's
/// primary key must be an integer), a run deletes the expired tokens of every requested
/// type in one [sweep](crate::TokenStore::plan_sweep) in primary key order: InnoDB's
/// clustered order, the order a single `DELETE` would visit them. Each sweep batch takes
/// the `GET_LOCK` of every swept type, in one fixed order and stopping at the first that
/// another session holds (an instance that cannot take them all leaves the expired
/// tokens to the one that holds them; the order means that two instances cannot each
/// take some and both leave), then, in one `READ COMMITTED`
/// transaction, a probe of the first `n` expired rows after the previous batch
/// (`FORCE INDEX (PRIMARY)`, per-type counts and the last key) and a `DELETE` of the
/// expired rows in that key range. It commits when the `DELETE`'s count equals the
/// probe's, and otherwise rolls back with a retryable error, so reported counts are
/// always what left the table and a batch never exceeds `n`.
///
/// # How a type-by-type batch deletes
///
/// Below a fifth (or with [`SweepMode::Never`], and for used tokens), each batch runs on
/// one connection:
///
/// 1. `GET_LOCK('token_cleanup:<hash of table, type, criterion>', 0)`. If another
///    instance is deleting a batch of the same type right now, this instance leaves the
///    type to it (the batch reports 0 rows and the engine moves on, so that instance's
///    report counts them): two instances never wait on each other's row locks, never
///    deadlock and never delete the same row.
/// 2. An index-only probe for the key of the `n`-th row at or after the previous
///    batch's last key (`BatchFilter::resume_from`), which becomes the next batch's
///    starting point, so later batches skip the delete-marked index entries that purge
///    has not removed yet.
/// 3. `DELETE .. WHERE type = ? AND expires_at < ? AND expires_at >= ? ORDER BY
///    expires_at LIMIT n`: InnoDB's native ordered, limited delete, a range scan of the
///    `(type, expires_at)` index, autocommitted under `READ COMMITTED` so that it takes no
///    gap locks (live inserts next to the range never wait for it).
/// 4. `RELEASE_LOCK`. A connection whose release fails is closed, which releases it.
///
/// (`DELETE .. WHERE id IN (SELECT .. LIMIT n)` is error 1235 on both servers; a locking
/// read with `SKIP LOCKED` followed by a delete by primary key measured about 25 % slower
/// than the native delete.)
///
/// [`batch_timeout`](Self::batch_timeout) bounds the probe and the delete on MariaDB
/// (`SET STATEMENT max_statement_time`); MySQL 8 can only bound the probe
/// (`MAX_EXECUTION_TIME`), the delete's lock waits stay bounded by
/// `innodb_lock_wait_timeout`. InnoDB has no per-transaction asynchronous commit, so
/// batches commit durably.
///
/// [`migrate`]: TokenStore::migrate
///
/// ```no_run
/// # async fn example() -> Result<(), token_cleanup_core::Error> {
/// use token_cleanup_core::{MySqlStore, TokenStore, TokenTable};
///
/// let store = MySqlStore::connect("mysql://app@localhost/app", TokenTable::default()).await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MySqlStore {
    pool: MySqlPool,
    sql: Statements,
    names: QuotedNames,
    batch_timeout: Option<Duration>,
    sweep: SweepMode,
    mariadb: OnceCell<bool>,
    batch_conn: KeptConnection<sqlx::MySql>,
    #[cfg(feature = "test-util")]
    faults: std::sync::Mutex<Vec<String>>,
}

fn err(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::store(STORE, operation, e)
}

impl MySqlStore {
    /// A store on the host's pool.
    ///
    /// ```no_run
    /// # async fn example(pool: sqlx::MySqlPool) {
    /// use token_cleanup_core::{MySqlStore, TokenTable};
    /// let store = MySqlStore::new(pool, TokenTable::default());
    /// # }
    /// ```
    pub fn new(pool: MySqlPool, table: TokenTable) -> Self {
        let sql = Statements::new(table, TimeEncoding::Native);
        let names = sql.quoted('`');
        Self {
            pool,
            sql,
            names,
            batch_timeout: None,
            sweep: SweepMode::default(),
            mariadb: OnceCell::new(),
            batch_conn: KeptConnection::new(),
            #[cfg(feature = "test-util")]
            faults: Default::default(),
        }
    }

    /// Connects a small pool (4 connections) of its own.
    ///
    /// A server that refuses the connection is an [`Error::Store`] naming `mysql`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), token_cleanup_core::Error> {
    /// use token_cleanup_core::{MySqlStore, TokenTable};
    /// let store = MySqlStore::connect("mysql://app@localhost/app", TokenTable::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str, table: TokenTable) -> Result<Self> {
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .connect(url)
            .await
            .map_err(err("connect"))?;
        Ok(Self::new(pool, table))
    }

    /// Bounds every delete batch with a server-side statement time limit (default: none).
    pub fn batch_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.batch_timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// When expired tokens go in one sweep in primary key order rather than type by type
    /// (default [`SweepMode::Auto`]). See the type's documentation.
    pub fn sweep(mut self, mode: SweepMode) -> Self {
        self.sweep = mode;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The sweep's probe and delete statements for rows of `sweep` with keys in
    /// `(?, ?]`, and the condition's values. The probe's `LIMIT` is its last parameter.
    fn sweep_sql(&self, sweep: &Sweep, mariadb: bool) -> (String, String, Vec<Value>) {
        let QuotedNames { table, id, ty, .. } = &self.names;
        let mut values = Vec::new();
        let cond = self
            .sql
            .sweep_condition(&self.names, &sweep.filters, |value| {
                values.push(value);
                "?".to_owned()
            });
        let (prefix, hint) = self.statement_clauses(mariadb, true);
        let probe = format!(
            "{prefix}SELECT {hint}ty, COUNT(*), MAX(k) FROM (\
               SELECT {id} AS k, {ty} AS ty FROM {table} FORCE INDEX (PRIMARY) \
               WHERE {id} > ? AND {id} <= ? AND ({cond}) ORDER BY {id} LIMIT ?) s \
             GROUP BY ty"
        );
        let (prefix, hint) = self.statement_clauses(mariadb, mariadb);
        let delete =
            format!("{prefix}DELETE {hint}FROM {table} WHERE {id} > ? AND {id} <= ? AND ({cond})");
        (probe, delete, values)
    }

    /// Takes `locks` (`GET_LOCK`, without waiting) on `conn`, in order, stopping at the
    /// first one that another session holds; returns the ones it got. Callers pass the
    /// locks sorted, so that two instances after the same locks cannot each take some of
    /// them and both leave the work to the other: the first lock decides.
    async fn take_locks<'a>(
        &self,
        conn: &mut sqlx::MySqlConnection,
        locks: &'a [String],
    ) -> Result<&'a [String]> {
        // `CASE WHEN GET_LOCK(l1) THEN CASE WHEN GET_LOCK(l2) THEN 2 ELSE 1 END ELSE 0
        // END`: a lock is only tried once every lock before it is held.
        let mut sql = locks.len().to_string();
        for taken in (0..locks.len()).rev() {
            sql = format!("CASE WHEN GET_LOCK(?, 0) = 1 THEN {sql} ELSE {taken} END");
        }
        let mut query = sqlx::query_scalar(AssertSqlSafe(format!("SELECT {sql}")));
        for lock in locks {
            query = query.bind(lock);
        }
        let taken: i64 = query
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.batch_error(e))?;
        Ok(&locks[..usize::try_from(taken).unwrap_or(0).min(locks.len())])
    }

    /// Probe and delete of one sweep batch in a `READ COMMITTED` transaction, on the
    /// connection that holds every swept type's lock.
    async fn locked_sweep(
        &self,
        conn: &mut sqlx::MySqlConnection,
        sweep: &Sweep,
        limit: u32,
        mariadb: bool,
    ) -> Result<SweepOutcome> {
        let (probe, delete, values) = self.sweep_sql(sweep, mariadb);
        sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.batch_error(e))?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(|e| self.batch_error(e))?;
        let rows = sqlx::query_as_with(
            AssertSqlSafe(probe),
            SqlxValues(sweep_args(sweep, sweep.end, &values, Some(limit))),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.batch_error(e))?;
        let found = SweepProbe::new(rows);
        let Some(hi) = found.hi else {
            tx.commit().await.map_err(|e| self.batch_error(e))?;
            return Ok(SweepProbe::nothing_found(sweep, sweep.end));
        };
        let removed = sqlx::query_with(
            AssertSqlSafe(delete),
            SqlxValues(sweep_args(sweep, hi, &values, None)),
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| self.batch_error(e))?
        .rows_affected();
        // A mismatch means the host changed rows of the range between the probe and the
        // delete; dropping `tx` rolls back and the engine retries.
        let outcome = found.outcome(STORE, sweep, (hi, sweep.end), removed, limit)?;
        tx.commit().await.map_err(|e| self.batch_error(e))?;
        Ok(outcome)
    }

    /// Releases the batch's locks and keeps its connection for the next batch, when the
    /// batch succeeded and the locks are released.
    async fn finish_batch(
        &self,
        conn: sqlx::pool::PoolConnection<sqlx::MySql>,
        held: &[String],
        succeeded: bool,
    ) {
        if let (Some(conn), true) = (release_locks(conn, held).await, succeeded) {
            self.batch_conn.keep(conn, ());
        }
    }

    async fn is_mariadb(&self) -> Result<bool> {
        self.mariadb
            .get_or_try_init(|| async {
                let version: String = sqlx::query_scalar("SELECT VERSION()")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(err("read the server version"))?;
                Ok(version.to_ascii_lowercase().contains("mariadb"))
            })
            .await
            .copied()
    }

    /// `type = ? AND <criterion> [AND key >= ?]` and the key column.
    fn condition(&self, filter: &BatchFilter) -> (&str, String) {
        let QuotedNames { ty, exp, used, .. } = &self.names;
        let (key, mut crit) = match filter.criterion {
            Criterion::Expired { .. } => (exp.as_str(), format!("{ty} = ? AND {exp} < ?")),
            Criterion::Used { .. } => {
                // The engine refuses `include_used` without a used-at column.
                let used = used.as_deref().unwrap_or(exp);
                (used, format!("{ty} = ? AND {used} < ? AND {exp} >= ?"))
            }
        };
        if filter.resume_from.is_some() {
            crit.push_str(&format!(" AND {key} >= ?"));
        }
        (key, crit)
    }

    /// The key of the `limit`-th row of the batch (where the next batch resumes).
    fn probe_sql(&self, filter: &BatchFilter, mariadb: bool) -> String {
        let (key, crit) = self.condition(filter);
        let (prefix, hint) = self.statement_clauses(mariadb, true);
        let table = &self.names.table;
        format!(
            "{prefix}SELECT {hint}{key} FROM {table} WHERE {crit} ORDER BY {key} LIMIT 1 OFFSET ?"
        )
    }

    /// The batch itself: InnoDB's native ordered, limited delete.
    fn delete_sql(&self, filter: &BatchFilter, mariadb: bool) -> String {
        let (key, crit) = self.condition(filter);
        let (prefix, hint) = self.statement_clauses(mariadb, mariadb);
        let table = &self.names.table;
        format!("{prefix}DELETE {hint}FROM {table} WHERE {crit} ORDER BY {key} LIMIT ?")
    }

    /// The named lock that lets one instance at a time delete a type (at most 64 chars).
    fn lock_name(&self, filter: &BatchFilter) -> String {
        let criterion = if filter.criterion.is_used() {
            "used"
        } else {
            "expired"
        };
        let hash = fnv1a32(&[
            &self.sql.table.qualified_name(),
            &filter.token_type,
            criterion,
        ]);
        format!("token_cleanup:{:08x}", hash as u32)
    }

    /// What runs one statement in UTC, and under the batch timeout when `timed`:
    /// MariaDB's `SET STATEMENT .. FOR ` prefix, or optimizer hints for MySQL to put after
    /// the statement's first keyword (MySQL honours `MAX_EXECUTION_TIME` in a `SELECT`
    /// only). In UTC, a `TIMESTAMP` column compares with and reads back the UTC instants
    /// that sqlx binds and decodes, whatever `time_zone` the host's sessions are in.
    fn statement_clauses(&self, mariadb: bool, timed: bool) -> (String, String) {
        let timeout = self.batch_timeout.filter(|_| timed);
        if mariadb {
            let timeout = timeout.map_or(String::new(), |t| {
                format!(", max_statement_time = {:.3}", t.as_secs_f64())
            });
            (
                format!("SET STATEMENT time_zone = '+00:00'{timeout} FOR "),
                String::new(),
            )
        } else {
            let timeout = timeout.map_or(String::new(), |t| {
                format!(" MAX_EXECUTION_TIME({})", t.as_millis().max(1))
            });
            (
                String::new(),
                format!("/*+ SET_VAR(time_zone = '+00:00'){timeout} */ "),
            )
        }
    }

    /// A `SELECT` built by sea-query, run in UTC ([`statement_clauses`](Self::statement_clauses)).
    async fn select_in_utc(&self, sql: String) -> Result<String> {
        let (prefix, hint) = self.statement_clauses(self.is_mariadb().await?, false);
        let rest = sql.strip_prefix("SELECT ").unwrap_or_else(|| {
            unreachable!("sea-query starts a select statement with SELECT: {sql}")
        });
        Ok(format!("{prefix}SELECT {hint}{rest}"))
    }

    /// Binds the condition's values (type, criterion, resume point).
    fn bind_condition<'q>(
        sql: &'q str,
        filter: &BatchFilter,
    ) -> sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments> {
        let mut q = super::sql::bind_criterion(sqlx::query(AssertSqlSafe(sql)), filter);
        if let Some(resume) = filter.resume_from {
            q = q.bind(resume);
        }
        q
    }

    /// Probe and delete, on the connection that holds the type's lock.
    async fn locked_batch(
        &self,
        conn: &mut sqlx::MySqlConnection,
        filter: &BatchFilter,
        limit: u32,
        mariadb: bool,
    ) -> Result<BatchOutcome> {
        let probe = self.probe_sql(filter, mariadb);
        let nth: Option<DateTime<Utc>> = Self::bind_condition(&probe, filter)
            .bind(i64::from(limit) - 1)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.batch_error(e))?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(err("decode a batch"))?;
        // For the next transaction only (the autocommitted DELETE): no gap locks, so live
        // inserts next to the deleted range never wait for it.
        sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.batch_error(e))?;
        let delete = self.delete_sql(filter, mariadb);
        let deleted = Self::bind_condition(&delete, filter)
            .bind(i64::from(limit))
            .execute(&mut *conn)
            .await
            .map_err(|e| self.batch_error(e))?
            .rows_affected();
        Ok(BatchOutcome {
            deleted,
            resume_from: nth.or(filter.resume_from),
            // `DELETE .. ORDER BY .. LIMIT n` reads the rows as they are when it runs, so
            // a short batch means no rows are left.
            more: false,
        })
    }

    fn batch_error(&self, e: sqlx::Error) -> Error {
        let number = e
            .as_database_error()
            .and_then(|d| d.try_downcast_ref::<MySqlDatabaseError>())
            .map(|d| d.number());
        match (number, self.batch_timeout) {
            (Some(ER_STATEMENT_TIMEOUT | ER_QUERY_TIMEOUT), Some(timeout)) => Error::Timeout {
                store: STORE,
                operation: "delete a batch",
                timeout,
            },
            _ => Error::store(STORE, "delete a batch", e),
        }
    }

    /// The plan MySQL / MariaDB would use for the next batch's `DELETE` (`EXPLAIN`, one
    /// line per row, columns separated by tabs). Nothing is executed.
    ///
    /// ```no_run
    /// # async fn example(store: token_cleanup_core::MySqlStore) -> Result<(), token_cleanup_core::Error> {
    /// use chrono::Utc;
    /// use token_cleanup_core::{BatchFilter, Criterion};
    /// let filter = BatchFilter::new("password_reset", Criterion::Expired { before: Utc::now() });
    /// println!("{}", store.explain_batch(&filter, 1000).await?);
    /// # Ok(()) }
    /// ```
    pub async fn explain_batch(&self, filter: &BatchFilter, limit: u32) -> Result<String> {
        let sql = format!("EXPLAIN {}", self.delete_sql(filter, false));
        let rows = Self::bind_condition(&sql, filter)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(err("explain a batch"))?;
        Ok(Self::render_plan(&rows))
    }

    /// The plans MySQL / MariaDB would use for the next batch of `sweep`: the probe's,
    /// then the `DELETE`'s of the key range after the sweep's position (`EXPLAIN`, as
    /// [`explain_batch`](Self::explain_batch) prints them). Nothing is executed.
    pub async fn explain_sweep_batch(&self, sweep: &Sweep, limit: u32) -> Result<String> {
        let (probe, delete, values) = self.sweep_sql(sweep, false);
        let mut out = Vec::new();
        for (sql, limit) in [(probe, Some(limit)), (delete, None)] {
            let rows = sqlx::query_with(
                AssertSqlSafe(format!("EXPLAIN {sql}")),
                SqlxValues(sweep_args(sweep, sweep.end, &values, limit)),
            )
            .fetch_all(&self.pool)
            .await
            .map_err(err("explain a sweep batch"))?;
            out.push(Self::render_plan(&rows));
        }
        Ok(out.join("\n"))
    }

    /// `EXPLAIN` rows as tab-separated lines under a header.
    fn render_plan(rows: &[MySqlRow]) -> String {
        let mut out = Vec::new();
        if let Some(first) = rows.first() {
            use sqlx::Column;
            out.push(
                first
                    .columns()
                    .iter()
                    .map(|c| c.name().to_owned())
                    .collect::<Vec<_>>()
                    .join("\t"),
            );
        }
        for row in rows {
            let cells: Vec<String> = (0..row.len()).map(|i| render_cell(row, i)).collect();
            out.push(cells.join("\t"));
        }
        out.join("\n")
    }

    async fn execute<S: SqlxBinder>(&self, stmt: &S, operation: &'static str) -> Result<u64> {
        let (sql, values) = stmt.build_sqlx(MysqlQueryBuilder);
        sqlx::query_with(AssertSqlSafe(sql), values)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(err(operation))
    }

    async fn raw(&self, sql: String, operation: &'static str) -> Result<()> {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(err(operation))
    }

    /// Creates an index unless one of that name exists (MySQL 8 has no
    /// `CREATE INDEX IF NOT EXISTS`).
    async fn ensure_index(&self, table: &str, index: &str, sql: String) -> Result<()> {
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.statistics \
             WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? AND index_name = ?",
        )
        .bind(self.sql.table.schema().map(|s| s.as_str().to_owned()))
        .bind(table)
        .bind(index)
        .fetch_one(&self.pool)
        .await
        .map_err(err("migrate"))?;
        if exists > 0 {
            return Ok(());
        }
        match sqlx::raw_sql(AssertSqlSafe(sql)).execute(&self.pool).await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_database_error()
                    .and_then(|d| d.try_downcast_ref::<MySqlDatabaseError>())
                    .is_some_and(|d| d.number() == ER_DUP_KEYNAME) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::store(STORE, "migrate", e)),
        }
    }
}

/// One `EXPLAIN` cell as text, whatever its type.
fn render_cell(row: &MySqlRow, i: usize) -> String {
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return v.unwrap_or_else(|| "NULL".into());
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map_or_else(|| "NULL".into(), |v| v.to_string());
    }
    if let Ok(v) = row.try_get::<Option<u64>, _>(i) {
        return v.map_or_else(|| "NULL".into(), |v| v.to_string());
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
        return v.map_or_else(|| "NULL".into(), |v| v.to_string());
    }
    if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(i) {
        return v.map_or_else(
            || "NULL".into(),
            |v| String::from_utf8_lossy(&v).into_owned(),
        );
    }
    "?".into()
}

/// Releases `held` on `conn` and gives the connection back. A connection whose release
/// fails is closed instead (closing releases its locks): it never goes back holding one.
async fn release_locks(
    mut conn: sqlx::pool::PoolConnection<sqlx::MySql>,
    held: &[String],
) -> Option<sqlx::pool::PoolConnection<sqlx::MySql>> {
    if held.is_empty() {
        return Some(conn);
    }
    let sql = format!("SELECT {}", vec!["RELEASE_LOCK(?)"; held.len()].join(", "));
    let mut release = sqlx::query(AssertSqlSafe(sql));
    for lock in held {
        release = release.bind(lock);
    }
    if release.execute(&mut *conn).await.is_err() {
        let _ = conn.close().await;
        return None;
    }
    Some(conn)
}

#[async_trait]
impl TokenStore for MySqlStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    fn table(&self) -> &TokenTable {
        &self.sql.table
    }

    async fn migrate(&self) -> Result<()> {
        let time_col = |name: &str| {
            ColumnDef::new(name.to_owned())
                .custom("DATETIME(6)")
                .to_owned()
        };
        let id = ColumnDef::new(self.sql.table.id_column().as_str().to_owned())
            .big_integer()
            .not_null()
            .auto_increment()
            .primary_key()
            .to_owned();
        self.raw(
            self.sql
                .create_token_table(id, time_col)
                .to_string(MysqlQueryBuilder),
            "migrate",
        )
        .await?;
        self.raw(
            self.sql.create_runs_table().to_string(MysqlQueryBuilder),
            "migrate",
        )
        .await?;
        self.raw(
            self.sql.create_leases_table().to_string(MysqlQueryBuilder),
            "migrate",
        )
        .await?;
        let table = self.sql.table.table().as_str();
        // Written by hand: sea-query cannot put a database-qualified table in MySQL's
        // CREATE INDEX, and MySQL 8 has no CREATE INDEX IF NOT EXISTS.
        let QuotedNames {
            table: quoted_table,
            ty,
            exp,
            used,
            ..
        } = &self.names;
        let mut indexes = vec![(
            table.to_owned(),
            index_name(table, "type_expires"),
            format!("{quoted_table} ({ty}, {exp})"),
        )];
        if let Some(used) = used {
            indexes.push((
                table.to_owned(),
                index_name(table, "type_used"),
                format!("{quoted_table} ({ty}, {used})"),
            ));
        }
        let runs = super::sql::RUNS_TABLE;
        let quoted_runs = match self.sql.table.schema() {
            Some(schema) => format!("{}.`{runs}`", super::sql::quote(schema.as_str(), '`')),
            None => format!("`{runs}`"),
        };
        indexes.push((
            runs.to_owned(),
            index_name(runs, "created"),
            format!("{quoted_runs} (created_at)"),
        ));
        for (table, index, target) in indexes {
            let sql = format!(
                "CREATE INDEX {} ON {target}",
                super::sql::quote(&index, '`')
            );
            self.ensure_index(&table, &index, sql).await?;
        }
        Ok(())
    }

    async fn token_types(&self) -> Result<Vec<String>> {
        let (sql, values) = self.sql.distinct_types().build_sqlx(MysqlQueryBuilder);
        sqlx::query_scalar_with(AssertSqlSafe(sql), values)
            .fetch_all(&self.pool)
            .await
            .map_err(err("list token types"))
    }

    async fn count(&self, filter: &BatchFilter) -> Result<u64> {
        let (sql, values) = self.sql.count(filter).build_sqlx(MysqlQueryBuilder);
        let sql = self.select_in_utc(sql).await?;
        let n: i64 = sqlx::query_scalar_with(AssertSqlSafe(sql), values)
            .fetch_one(&self.pool)
            .await
            .map_err(err("count tokens"))?;
        Ok(n.max(0) as u64)
    }

    async fn delete_batch(&self, filter: &BatchFilter, limit: u32) -> Result<BatchOutcome> {
        let mariadb = self.is_mariadb().await?;
        let locks = [self.lock_name(filter)];
        let (mut conn, _) = self
            .batch_conn
            .take(&self.pool)
            .await
            .map_err(|e| self.batch_error(e))?;
        let held = self.take_locks(&mut conn, &locks).await?;
        let outcome = if held.len() == locks.len() {
            self.locked_batch(&mut conn, filter, limit, mariadb).await
        } else {
            Ok(BatchOutcome::left_to_other_instance(filter))
        };
        self.finish_batch(conn, held, outcome.is_ok()).await;
        outcome
    }

    async fn plan_sweep(&self, filters: &[BatchFilter]) -> Result<Option<Sweep>> {
        if self.sweep == SweepMode::Never
            || filters.is_empty()
            || filters.iter().any(|f| f.criterion.is_used())
        {
            return Ok(None);
        }
        let QuotedNames { table, id, .. } = &self.names;
        let sql = format!("SELECT MIN({id}), MAX({id}) FROM {table}");
        let row = sqlx::query(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(err("measure the table"))?;
        let extent: std::result::Result<(Option<i64>, Option<i64>), _> = row
            .try_get(0)
            .and_then(|first| Ok((first, row.try_get(1)?)));
        let (first, last) = match extent {
            Ok((Some(first), Some(last))) => (first, last),
            Ok(_) => return Ok(None),
            Err(e) => {
                // A primary key that is not an integer has no range to sweep by.
                tracing::debug!(error = %e, "no integer key to sweep by; cleaning type by type");
                return Ok(None);
            }
        };
        let rows = last.abs_diff(first).saturating_add(1);
        let pays = sweep_pays(self.sweep, filters, rows, |filter, cap| {
            let stmt = self.sql.count_capped(filter, cap);
            async move {
                let (sql, values) = stmt.build_sqlx(MysqlQueryBuilder);
                let sql = self.select_in_utc(sql).await?;
                sqlx::query_scalar_with(AssertSqlSafe(sql), values)
                    .fetch_one(&self.pool)
                    .await
                    .map(|n: i64| n.max(0) as u64)
                    .map_err(err("count expired tokens"))
            }
        })
        .await?;
        Ok(pays.then(|| Sweep::new(filters.to_vec(), first.saturating_sub(1), last)))
    }

    async fn sweep_batch(&self, sweep: &Sweep, limit: u32) -> Result<SweepOutcome> {
        let mariadb = self.is_mariadb().await?;
        let mut locks: Vec<String> = sweep.filters.iter().map(|f| self.lock_name(f)).collect();
        locks.sort();
        let (mut conn, _) = self
            .batch_conn
            .take(&self.pool)
            .await
            .map_err(|e| self.batch_error(e))?;
        let held = self.take_locks(&mut conn, &locks).await?;
        let outcome = if held.len() == locks.len() {
            self.locked_sweep(&mut conn, sweep, limit, mariadb).await
        } else {
            tracing::debug!("another instance is sweeping this table; leaving it to that instance");
            Ok(SweepOutcome {
                deleted: Vec::new(),
                position: sweep.position,
                done: true,
            })
        };
        self.finish_batch(conn, held, outcome.is_ok()).await;
        outcome
    }

    async fn type_counts(&self, now: DateTime<Utc>) -> Result<Vec<TypeCounts>> {
        let (sql, values) = self.sql.type_counts(now).build_sqlx(MysqlQueryBuilder);
        let sql = self.select_in_utc(sql).await?;
        let rows = sqlx::query_with(AssertSqlSafe(sql), values)
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
    MySqlStore,
    MysqlQueryBuilder,
    /// A lease row timed by the database clock. The upsert takes the row when it is free,
    /// expired or already ours (assignments run left to right: `expires_at` only moves
    /// when `holder` became ours); a read of the row then says who holds it.
    async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let leases = &self.names.leases;
        let upsert = format!(
            "INSERT INTO {leases} (name, holder, expires_at) VALUES (?, ?, {NOW_MS} + ?) \
             ON DUPLICATE KEY UPDATE \
             holder = IF(expires_at < {NOW_MS} OR holder = VALUES(holder), VALUES(holder), holder), \
             expires_at = IF(holder = VALUES(holder), VALUES(expires_at), expires_at)"
        );
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        sqlx::query(AssertSqlSafe(upsert))
            .bind(name)
            .bind(holder)
            .bind(ttl_ms)
            .execute(&self.pool)
            .await
            .map_err(err("acquire a lease"))?;
        let current: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT holder FROM {leases} WHERE name = ?"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("acquire a lease"))?;
        Ok(current.as_deref() == Some(holder))
    }
}

#[cfg(feature = "test-util")]
#[async_trait]
impl crate::test_util::TestStore for MySqlStore {
    async fn insert_tokens(&self, tokens: &[crate::Token]) -> Result<()> {
        for chunk in tokens.chunks(1000) {
            let stmt = self.sql.insert_tokens(chunk);
            self.execute(&stmt, "insert tokens").await?;
        }
        Ok(())
    }

    async fn token_ids(&self) -> Result<Vec<i64>> {
        let (sql, values) = self.sql.select_ids().build_sqlx(MysqlQueryBuilder);
        sqlx::query_scalar_with(AssertSqlSafe(sql), values)
            .fetch_all(&self.pool)
            .await
            .map_err(err("list token ids"))
    }

    async fn fail_deleting(&self, id: i64) -> Result<()> {
        // SIGNAL inside a row trigger fails the DELETE; the batch transaction rolls back.
        let schema = self
            .sql
            .table
            .schema()
            .map(|s| format!("{}.", super::sql::quote(s.as_str(), '`')))
            .unwrap_or_default();
        let name = format!(
            "{schema}`token_cleanup_fault_{}_{}`",
            self.sql.table.table(),
            id.unsigned_abs()
        );
        let QuotedNames {
            table, id: id_col, ..
        } = &self.names;
        self.raw(format!("DROP TRIGGER IF EXISTS {name}"), "inject a failure")
            .await?;
        self.raw(
            format!(
                "CREATE TRIGGER {name} BEFORE DELETE ON {table} FOR EACH ROW \
                 BEGIN IF OLD.{id_col} = {id} THEN \
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure'; END IF; END"
            ),
            "inject a failure",
        )
        .await?;
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name);
        Ok(())
    }

    async fn clear_failures(&self) -> Result<()> {
        let names = std::mem::take(&mut *self.faults.lock().unwrap_or_else(|p| p.into_inner()));
        for name in names {
            self.raw(
                format!("DROP TRIGGER IF EXISTS {name}"),
                "clear injected failures",
            )
            .await?;
        }
        Ok(())
    }

    fn time_precision(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::microseconds(1)
    }
}
