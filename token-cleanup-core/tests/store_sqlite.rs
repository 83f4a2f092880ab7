//! The store conformance suite on [`SqliteStore`], once per time representation.

use std::sync::Arc;

use sqlx::sqlite::SqlitePoolOptions;
use token_cleanup_core::{SqliteStore, TimeFormat, TokenStore, TokenTable};

/// A fresh in-memory database (one connection, so it is one database) and a migrated
/// token table stored in `format`, under a non-default table and column layout.
async fn fresh(format: TimeFormat) -> Arc<SqliteStore> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("in-memory SQLite");
    let table = TokenTable::builder()
        .table("auth_tokens")
        .expires_column("valid_until")
        .time_format(format)
        .build()
        .unwrap();
    let store = Arc::new(SqliteStore::new(pool, table));
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate is idempotent");
    store
}

token_cleanup_core::store_conformance_tests!(sqlite_rfc3339, fresh(TimeFormat::Rfc3339Text));
token_cleanup_core::store_conformance_tests!(
    sqlite_datetime_text,
    fresh(TimeFormat::SqliteDatetimeText)
);
token_cleanup_core::store_conformance_tests!(sqlite_unix_seconds, fresh(TimeFormat::UnixSeconds));
token_cleanup_core::store_conformance_tests!(sqlite_unix_millis, fresh(TimeFormat::UnixMillis));
