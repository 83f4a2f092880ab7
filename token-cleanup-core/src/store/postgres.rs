//! PostgreSQL store (sqlx + sea-query).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_query::{ColumnDef, PostgresQueryBuilder};
use sea_query_sqlx::SqlxBinder;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use tracing::warn;
use uuid::Uuid;

use super::kept::KeptConnection;
use super::sql::{QuotedNames, Statements, TimeEncoding, decode_type_counts, fnv1a32};
use super::{BatchFilter, BatchOutcome, Criterion, TokenStore, TypeCounts};
use crate::error::{Error, Result};
use crate::table::TokenTable;

const STORE: &str = "postgres";

/// First key of every advisory lock this store takes (`'TkCl'`), so that the second key,
/// a hash of the table and token type, cannot collide with the host's one-key locks.
const LOCK_NAMESPACE: i32 = 0x546b_436c;

/// The session setting in which a batch statement records what it read (the rows in its
/// range, where the next batch starts, whether it got the lock), read back right after.
const BATCH_SETTING: &str = "token_cleanup.batch";

/// Milliseconds since the epoch on the database clock (leases use one clock for every
/// instance).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// What a batch statement read, as it recorded it in [`BATCH_SETTING`].
struct ReadBack {
    /// It got the advisory lock.
    locked: bool,
    /// Rows in the range it deleted, as its snapshot saw them.
    seen: u64,
    /// The `n`-th key: where the next batch starts.
    resume: Option<DateTime<Utc>>,
    /// Keys `n` and `n + 1` were equal, so the range stopped below them.
    tie: bool,
}

/// [`TokenStore`] and [`RunStore`](super::RunStore) on PostgreSQL 12 or later.
///
/// The token table may live in any schema ([`TokenTable::schema`]); the expiry and
/// used-at columns are `timestamptz` (or `timestamp` holding UTC). Run records and job
/// leases live in `token_cleanup_runs` and `token_cleanup_leases` next to it, so every
/// instance of the host sees the same runs, statistics and reports.
///
/// # How a batch deletes
///
/// Each batch is **one `DELETE` statement in its own transaction**, shaped so that its
/// plan stays an index range scan at every batch size and through the whole run. (This
/// store plans no [sweeps](crate::TokenStore::plan_sweep): a sweep in physical order,
/// a TID range probe for the first `n` expired rows and then a `DELETE` of their `ctid`
/// range, measured 3.2x the single statement at batch 1000 and 2.3x at 5000, against
/// 1.7x and 1.45x for these batches in the same runs. It examines every tuple of the
/// range twice, where these batches visit only the type's own tuples.)
///
/// 1. `pg_try_advisory_xact_lock(namespace, hash(table, type, criterion))`. If another
///    instance is deleting a batch of the same type right now, this instance leaves the
///    type to it (the batch reports 0 rows and the engine moves on): two instances never
///    wait on each other's row locks and never delete the same row. The statement's
///    snapshot predates the lock, so rows the previous holder deleted in the meantime can
///    make a batch short; such a batch is reported with
///    [`more`](crate::BatchOutcome::more) set, never as the end of the type.
/// 2. Index-only scans of `(type, expires_at)` from the previous batch's last key
///    (`BatchFilter::resume_from`) for the first key and for the `n`-th and `n + 1`-th
///    keys (`LIMIT 2 OFFSET n - 1`, nothing materialized): they start past the dead index
///    entries that earlier batches left behind, which is what makes the common
///    `DELETE .. WHERE id IN (SELECT id .. LIMIT n)` shape slower with every batch.
/// 3. `DELETE` of the key range from the first to the `n`-th key (a bitmap heap scan, in
///    page order; both ends are bounds, so the planner estimates a small range whatever
///    share of the table the type has). When the `n + 1`-th key equals the `n`-th, the
///    range stops below that key, so a batch never exceeds `n` even when many tokens
///    share one expiry instant; a run of more than `n` equal keys goes `n` rows at a time
///    by `ctid`.
///
/// The `DELETE` has no `RETURNING` clause: returning rows makes PostgreSQL read every
/// deleted tuple once more, which measured about 60 % slower. It reports its count in its
/// command tag and records what it read (rows in range, last key, lock taken) in a
/// session setting, which the store reads back on the same connection: two round trips
/// per batch. A batch hands its connection on to the next one (it goes back to the pool
/// after 250 ms without a batch), so batches do not each pay the pool's liveness check on
/// acquire. [`explain_batch`](Self::explain_batch) shows the plan.
///
/// # Commit and timeouts
///
/// Batches commit with `synchronous_commit = off` by default: the server acknowledges the
/// commit before its WAL record reaches the disk. Deleting an expired token twice is
/// harmless, so the only effect of a server crash within the WAL writer's delay (about
/// 0.6 s) is that a few tokens reported as deleted come back and go in the next run.
/// [`synchronous_commit(true)`](Self::synchronous_commit) restores the server's setting.
/// [`batch_timeout`](Self::batch_timeout) bounds each batch with `SET LOCAL
/// statement_timeout` (three more round trips per batch: begin, set, commit); a batch that hits it rolls back
/// and fails with [`Error::Timeout`], which the engine retries per its policy.
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
    batch_conn: KeptConnection<sqlx::Postgres>,
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
        Self {
            pool,
            sql,
            names,
            batch_timeout: None,
            synchronous_commit: false,
            batch_conn: KeptConnection::new(),
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
        let sql = format!("EXPLAIN {}", self.batch_sql(filter));
        let rows = self
            .bind_batch(&sql, filter, limit)
            .bind(0_i64)
            .fetch_all(&self.pool)
            .await
            .map_err(err("explain a batch"))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(err("explain a batch")))
            .collect::<Result<Vec<_>>>()
            .map(|lines| lines.join("\n"))
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

    /// The criterion's key column and condition on the batch parameters.
    ///
    /// Parameters: `$1` lock key, `$2` type, `$3` limit, `$4` cutoff, then the used
    /// criterion's expiry bound, then the resume point, when present. Returns the key
    /// column, the condition and the number of the next free parameter.
    fn batch_condition(&self, filter: &BatchFilter) -> (&str, String, usize) {
        let QuotedNames { exp, used, .. } = &self.names;
        let (key, mut crit, mut next) = match filter.criterion {
            Criterion::Expired { .. } => (exp.as_str(), format!("{exp} < $4"), 5),
            Criterion::Used { .. } => {
                // The engine refuses `include_used` without a used-at column.
                let used = used.as_deref().unwrap_or(exp);
                (used, format!("{used} < $4 AND {exp} >= $5"), 6)
            }
        };
        if filter.resume_from.is_some() {
            crit.push_str(&format!(" AND {key} >= ${next}"));
            next += 1;
        }
        debug_assert!(next <= 7);
        (key, crit, next)
    }

    /// The lock CTE that opens every batch statement.
    fn lock_cte(&self) -> String {
        let async_commit = if self.synchronous_commit {
            ""
        } else {
            ", set_config('synchronous_commit', 'off', true)"
        };
        format!(
            "lk AS MATERIALIZED (SELECT pg_try_advisory_xact_lock({LOCK_NAMESPACE}, $1) AS ok{async_commit})"
        )
    }

    /// The batch statement for `filter`'s criterion (see the type's documentation). Its
    /// last parameter is the nonce under which it records what it read.
    fn batch_sql(&self, filter: &BatchFilter) -> String {
        let QuotedNames { table, ty, .. } = &self.names;
        let (key, crit, nonce) = self.batch_condition(filter);
        let lock = self.lock_cte();
        let head = format!("FROM {table} WHERE (SELECT ok FROM lk) AND {ty} = $2 AND {crit}");
        format!(
            "WITH {lock}, \
             pair AS MATERIALIZED (\
               SELECT {key} AS k {head} ORDER BY {key} LIMIT 2 OFFSET $3 - 1), \
             b AS MATERIALIZED (SELECT min(k) AS kn, max(k) AS kn1, count(*) AS m FROM pair), \
             r AS MATERIALIZED (SELECT \
               (SELECT {key} {head} ORDER BY {key} LIMIT 1) AS lower, \
               CASE WHEN m = 0 THEN 'infinity'::timestamptz ELSE kn END AS hi, \
               CASE WHEN m = 2 AND kn1 = kn THEN kn ELSE 'infinity'::timestamptz END AS below, \
               (m = 2 AND kn1 = kn) AS tie, \
               CASE WHEN m = 0 THEN (SELECT count(*) FROM (\
                   SELECT {key} {head} ORDER BY {key} LIMIT $3) x) \
                 WHEN m = 2 AND kn1 = kn THEN (SELECT count(*) FROM (\
                   SELECT {key} {head} AND {key} < b.kn ORDER BY {key} LIMIT $3) x) \
                 ELSE $3 END AS seen, \
               kn \
             FROM b), \
             info AS MATERIALIZED (\
               SELECT set_config('{BATCH_SETTING}', json_build_object(\
                 'nonce', ${nonce}::bigint, 'locked', (SELECT ok FROM lk), 'seen', seen, \
                 'resume', kn, 'tie', tie)::text, false) AS s FROM r) \
             DELETE FROM {table} \
             WHERE (SELECT s IS NOT NULL FROM info) AND {ty} = $2 AND {crit} \
               AND {key} >= (SELECT lower FROM r) AND {key} <= (SELECT hi FROM r) \
               AND {key} < (SELECT below FROM r)"
        )
    }

    /// The statement for a run of more than `limit` tokens sharing the key `$n` (the
    /// last parameter): `limit` of them, by `ctid`.
    fn tie_sql(&self, filter: &BatchFilter) -> String {
        let QuotedNames { table, ty, .. } = &self.names;
        let (key, crit, at) = self.batch_condition(filter);
        let lock = self.lock_cte();
        format!(
            "WITH {lock} \
             DELETE FROM {table} WHERE ctid = ANY(ARRAY(\
               SELECT ctid FROM {table} \
               WHERE (SELECT ok FROM lk) AND {ty} = $2 AND {crit} AND {key} = ${at} \
               LIMIT $3))"
        )
    }

    fn bind_batch<'q>(
        &self,
        sql: &'q str,
        filter: &BatchFilter,
        limit: u32,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(self.lock_key(filter))
            .bind(filter.token_type.clone())
            .bind(i64::from(limit));
        q = match filter.criterion {
            Criterion::Expired { before } => q.bind(before),
            Criterion::Used {
                before,
                not_expired_before,
            } => q.bind(before).bind(not_expired_before),
        };
        if let Some(resume) = filter.resume_from {
            q = q.bind(resume);
        }
        q
    }

    fn batch_error(&self, e: sqlx::Error) -> Error {
        let cancelled = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| code == "57014");
        match (cancelled, self.batch_timeout) {
            (true, Some(timeout)) => Error::Timeout {
                store: STORE,
                operation: "delete a batch",
                timeout,
            },
            _ => Error::store(STORE, "delete a batch", e),
        }
    }

    /// One batch on `conn`: the delete statement, then what it read (from the session
    /// setting it wrote), then, for a long run of equal keys, the tie statement.
    async fn batch_on(
        &self,
        conn: &mut sqlx::PgConnection,
        filter: &BatchFilter,
        limit: u32,
    ) -> Result<BatchOutcome> {
        let nonce = (Uuid::now_v7().as_u64_pair().1 >> 1) as i64;
        let sql = self.batch_sql(filter);
        let deleted = self
            .bind_batch(&sql, filter, limit)
            .bind(nonce)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.batch_error(e))?
            .rows_affected();
        let read = match self.read_back(conn, nonce).await {
            Ok(read) => read,
            // Without a transaction around it the DELETE has committed: its count is
            // exact, only where the next batch starts is unknown (it starts where this
            // one did). With one, the commit that follows fails and rolls it back.
            Err(e) if deleted > 0 => {
                warn!(
                    error = %e,
                    deleted,
                    "could not read back what a committed batch read; the next batch starts where it did"
                );
                return Ok(BatchOutcome {
                    deleted,
                    resume_from: filter.resume_from,
                    more: true,
                });
            }
            Err(e) => return Err(e),
        };
        if !read.locked {
            return Ok(BatchOutcome::left_to_other_instance(filter));
        }
        let ReadBack {
            seen, resume, tie, ..
        } = read;
        if let (true, 0, Some(key)) = (tie, seen, resume) {
            // More than `limit` tokens share the first key: delete `limit` of them.
            let sql = self.tie_sql(filter);
            let deleted = self
                .bind_batch(&sql, filter, limit)
                .bind(key)
                .execute(&mut *conn)
                .await
                .map_err(|e| self.batch_error(e))?
                .rows_affected();
            return Ok(BatchOutcome {
                deleted,
                resume_from: Some(key),
                more: true,
            });
        }
        Ok(BatchOutcome {
            deleted,
            resume_from: resume.or(filter.resume_from),
            // The statement's snapshot predates its lock: rows that the previous holder
            // deleted in between are in the range it read but no longer there to delete.
            // A batch that stopped before a run of equal keys is short on purpose.
            more: tie || deleted < seen,
        })
    }

    /// What the batch statement with `nonce` recorded in the session setting.
    async fn read_back(&self, conn: &mut sqlx::PgConnection, nonce: i64) -> Result<ReadBack> {
        let row = sqlx::query(
            "SELECT (j->>'nonce')::bigint, (j->>'locked')::boolean, (j->>'seen')::bigint, \
               (j->>'resume')::timestamptz, (j->>'tie')::boolean \
             FROM (SELECT current_setting($1, true)::json AS j) s",
        )
        .bind(BATCH_SETTING)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.batch_error(e))?;
        let decode = |e| Error::store(STORE, "decode a batch result", e);
        let read_nonce: Option<i64> = row.try_get(0).map_err(decode)?;
        if read_nonce != Some(nonce) {
            return Err(Error::store(
                STORE,
                "decode a batch result",
                "the batch statement did not record what it read",
            ));
        }
        Ok(ReadBack {
            locked: row.try_get::<Option<bool>, _>(1).map_err(decode)? == Some(true),
            seen: row
                .try_get::<Option<i64>, _>(2)
                .map_err(decode)?
                .unwrap_or(0)
                .max(0) as u64,
            resume: row.try_get(3).map_err(decode)?,
            tie: row.try_get::<Option<bool>, _>(4).map_err(decode)? == Some(true),
        })
    }

    async fn run_batch(&self, filter: &BatchFilter, limit: u32) -> Result<BatchOutcome> {
        let mut conn = self
            .batch_conn
            .take(&self.pool)
            .await
            .map_err(|e| self.batch_error(e))?;
        let outcome = match self.batch_timeout {
            None => self.batch_on(&mut conn, filter, limit).await?,
            Some(timeout) => {
                let mut tx = sqlx::Connection::begin(&mut *conn)
                    .await
                    .map_err(|e| self.batch_error(e))?;
                sqlx::query("SELECT set_config('statement_timeout', $1, true)")
                    .bind(format!("{}ms", timeout.as_millis().max(1)))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.batch_error(e))?;
                let outcome = self.batch_on(&mut tx, filter, limit).await?;
                tx.commit().await.map_err(|e| self.batch_error(e))?;
                outcome
            }
        };
        self.batch_conn.keep(conn);
        Ok(outcome)
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
        let (sql, values) = self.sql.count(filter).build_sqlx(PostgresQueryBuilder);
        let n: i64 = sqlx::query_scalar_with(AssertSqlSafe(sql), values)
            .fetch_one(&self.pool)
            .await
            .map_err(err("count tokens"))?;
        Ok(n as u64)
    }

    async fn delete_batch(&self, filter: &BatchFilter, limit: u32) -> Result<BatchOutcome> {
        self.run_batch(filter, limit).await
    }

    async fn type_counts(&self, now: DateTime<Utc>) -> Result<Vec<TypeCounts>> {
        let (sql, values) = self.sql.type_counts(now).build_sqlx(PostgresQueryBuilder);
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

    fn time_precision(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::microseconds(1)
    }
}
