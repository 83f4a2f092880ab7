//! Connections to the database servers the SQL store tests run against.
//!
//! A test that needs a server and cannot reach it **fails** with a message naming the
//! server (it never skips): under `CI` that is a broken CI setup, and on a developer
//! machine the message says how to start it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Environment variable overriding the PostgreSQL test URL.
pub const POSTGRES_URL_ENV: &str = "TOKEN_CLEANUP_POSTGRES_URL";
/// Default PostgreSQL test URL (trust auth, database `test`).
pub const POSTGRES_DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Environment variable overriding the MySQL / MariaDB test URL.
pub const MYSQL_URL_ENV: &str = "TOKEN_CLEANUP_MYSQL_URL";
/// Default MySQL / MariaDB test URL (root, empty password, database `test`).
pub const MYSQL_DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// Schemas / databases created by these helpers start with this prefix.
const PREFIX: &str = "tct_";
/// Test schemas older than this are dropped by later tests (left over by killed runs).
const STALE_SECS: u64 = 3600;

/// Panics with a message naming the unreachable server.
pub fn unreachable(server: &str, address: &str, error: &dyn std::fmt::Display, start: &str) -> ! {
    let ci = std::env::var_os("CI").is_some();
    panic!(
        "{server} at {address} is unreachable ({error}). {}Start it with: {start}",
        if ci {
            "CI requires it and never skips these tests. "
        } else {
            ""
        }
    );
}

/// A unique schema or database name: `tct_<unix seconds>_<random>`.
pub fn unique_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!("{PREFIX}{secs}_{}", &random[20..])
}

/// Whether `name` was made by [`unique_name`] more than an hour ago.
fn is_stale(name: &str) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.split('_').next())
        .and_then(|secs| secs.parse::<u64>().ok())
        .is_some_and(|secs| secs + STALE_SECS < now)
}

/// PostgreSQL helpers.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
    use sqlx::{AssertSqlSafe, Executor};

    /// The test server's URL.
    pub fn url() -> String {
        std::env::var(super::POSTGRES_URL_ENV)
            .unwrap_or_else(|_| super::POSTGRES_DEFAULT_URL.into())
    }

    /// A pool on the test server with `application_name` set (so that tests can find its
    /// connections in `pg_stat_activity`). Panics, naming the server, when it is down.
    pub async fn pool(application_name: &str, max_connections: u32) -> PgPool {
        let url = url();
        let options = PgConnectOptions::from_str(&url)
            .unwrap_or_else(|e| panic!("invalid {}: {e}", super::POSTGRES_URL_ENV))
            .application_name(application_name);
        match PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await
        {
            Ok(pool) => pool,
            Err(e) => super::unreachable(
                "PostgreSQL",
                "127.0.0.1:5432",
                &e,
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            ),
        }
    }

    /// Creates a fresh schema for one test and drops those left by runs over an hour old.
    pub async fn fresh_schema(pool: &PgPool) -> String {
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tct\\_%'",
        )
        .fetch_all(pool)
        .await
        .expect("list test schemas");
        for name in old.into_iter().filter(|n| super::is_stale(n)) {
            // Best effort: another test process may be dropping it too.
            let _ = pool
                .execute(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                )))
                .await;
        }
        let name = super::unique_name();
        pool.execute(AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
            .await
            .expect("create a test schema");
        name
    }
}

/// MySQL / MariaDB helpers.
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub mod mysql {
    use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
    use sqlx::{AssertSqlSafe, Executor};

    /// The test server's URL.
    pub fn url() -> String {
        std::env::var(super::MYSQL_URL_ENV).unwrap_or_else(|_| super::MYSQL_DEFAULT_URL.into())
    }

    /// A pool on the test server. Panics, naming the server, when it is down.
    pub async fn pool(max_connections: u32) -> MySqlPool {
        match MySqlPoolOptions::new()
            .max_connections(max_connections)
            .connect(&url())
            .await
        {
            Ok(pool) => pool,
            Err(e) => super::unreachable(
                "MariaDB",
                "127.0.0.1:3306",
                &e,
                "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
            ),
        }
    }

    /// Creates a fresh database for one test and drops those left by runs over an hour old.
    pub async fn fresh_database(pool: &MySqlPool) -> String {
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata WHERE schema_name LIKE 'tct\\_%'",
        )
        .fetch_all(pool)
        .await
        .expect("list test databases");
        for name in old.into_iter().filter(|n| super::is_stale(n)) {
            let _ = pool
                .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                .await;
        }
        let name = super::unique_name();
        pool.execute(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .await
            .expect("create a test database");
        name
    }
}
