//! SQLite store (sqlx + sea-query).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_query::{ColumnDef, SqliteQueryBuilder};
use sea_query_sqlx::SqlxBinder;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row, SqlitePool};

use super::sql::{Statements, TimeEncoding, decode_type_counts, parse_sqlite_time};
use super::{BatchFilter, BatchOutcome, TokenStore, TypeCounts};
use crate::error::{Error, Result};
use crate::table::TokenTable;

const STORE: &str = "sqlite";

/// [`TokenStore`] and [`RunStore`](super::RunStore) on SQLite.
///
/// Instants are compared in the table's [`TimeFormat`](crate::TimeFormat), so the expiry
/// index is used and the comparison is exact. Each batch is one `DELETE .. WHERE id IN
/// (SELECT id .. ORDER BY expires_at LIMIT n)` statement, which SQLite runs as its own
/// transaction; WAL mode lets readers continue meanwhile, and writers wait at most one
/// batch.
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
        Self {
            pool,
            sql: Statements::new(table, time),
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

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
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
