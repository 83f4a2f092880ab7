//! The store conformance suite on [`SqliteStore`], once per time representation.

use std::sync::Arc;

use sqlx::sqlite::SqlitePoolOptions;
use token_cleanup_core::{SqliteStore, SweepMode, TimeFormat, TokenStore, TokenTable};

/// A fresh in-memory database (one connection, so it is one database) and a migrated
/// token table stored in `format`, under a non-default table and column layout, cleaned
/// type by type.
async fn fresh(format: TimeFormat) -> Arc<SqliteStore> {
    fresh_with(format, SweepMode::Never).await
}

/// [`fresh`], cleaning expired tokens the way `sweep` says.
async fn fresh_with(format: TimeFormat, sweep: SweepMode) -> Arc<SqliteStore> {
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
    let store = Arc::new(SqliteStore::new(pool, table).sweep(sweep));
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
token_cleanup_core::store_conformance_tests!(
    sqlite_rfc3339_sweep,
    fresh_with(TimeFormat::Rfc3339Text, SweepMode::Always)
);
token_cleanup_core::store_conformance_tests!(
    sqlite_datetime_text_sweep,
    fresh_with(TimeFormat::SqliteDatetimeText, SweepMode::Always)
);
token_cleanup_core::store_conformance_tests!(
    sqlite_unix_seconds_sweep,
    fresh_with(TimeFormat::UnixSeconds, SweepMode::Always)
);
token_cleanup_core::store_conformance_tests!(
    sqlite_unix_millis_sweep,
    fresh_with(TimeFormat::UnixMillis, SweepMode::Always)
);

#[tokio::test]
async fn sweep_modes_are_obeyed() {
    let format = TimeFormat::Rfc3339Text;
    token_cleanup_core::test_util::suite::sweep_modes_are_obeyed(
        fresh_with(format, SweepMode::Auto).await,
        fresh_with(format, SweepMode::Always).await,
        fresh_with(format, SweepMode::Never).await,
    )
    .await;
}

/// A `WITHOUT ROWID` table has no rowid order to sweep by: it is cleaned type by type.
#[tokio::test]
async fn without_rowid_tables_are_cleaned_type_by_type() {
    use token_cleanup_core::{BatchFilter, Criterion};
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("in-memory SQLite");
    sqlx::raw_sql(
        "CREATE TABLE verification_tokens (id INTEGER PRIMARY KEY, token_type TEXT NOT NULL, \
         token_hash TEXT NOT NULL, expires_at TEXT NOT NULL, used_at TEXT) WITHOUT ROWID; \
         INSERT INTO verification_tokens VALUES (1, 'invite', 'h1', '2020-01-01T00:00:00+00:00', NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = SqliteStore::new(pool, TokenTable::default()).sweep(SweepMode::Always);
    let filter = BatchFilter::new(
        "invite",
        Criterion::Expired {
            before: chrono::Utc::now(),
        },
    );
    assert_eq!(store.plan_sweep(&[filter]).await.unwrap(), None);
}

/// Values written by SQLite itself (`strftime('%Y-%m-%d %H:%M:%f')`, three fraction
/// digits; `datetime()`, none) compare exactly against a cutoff with a sub-second part.
#[tokio::test]
async fn sqlite_written_datetime_text_compares_exactly() {
    use chrono::{TimeDelta, TimeZone, Utc};
    use token_cleanup_core::{CleanupRequest, ManualClock, TokenCleanupService};

    let store = fresh(TimeFormat::SqliteDatetimeText).await;
    let rows = [
        (
            1,
            "strftime('%Y-%m-%d %H:%M:%f', '2026-06-15 12:00:00.499')",
        ),
        (
            2,
            "strftime('%Y-%m-%d %H:%M:%f', '2026-06-15 12:00:00.500')",
        ), // == cutoff: stays
        (
            3,
            "strftime('%Y-%m-%d %H:%M:%f', '2026-06-15 12:00:00.501')",
        ),
        (4, "datetime('2026-06-15 12:00:00')"),
        (5, "datetime('2026-06-15 12:00:01')"),
        (6, "datetime('2026-06-15 23:00:00')"), // later the same day
        (7, "datetime('2026-06-15 01:00:00')"),
    ];
    for (id, expr) in rows {
        let sql = format!(
            "INSERT INTO auth_tokens (id, token_type, token_hash, valid_until) VALUES ({id}, 'invite', 'h{id}', {expr})"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .unwrap();
    }
    let cutoff =
        Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap() + TimeDelta::milliseconds(500);
    let service = TokenCleanupService::builder(store.clone())
        .clock(Arc::new(ManualClock::new(cutoff)))
        .build()
        .unwrap();
    let report = service
        .cleanup_expired_tokens(CleanupRequest::new(["invite"]))
        .await
        .unwrap();
    assert_eq!(report.total_cleaned, 3);
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM auth_tokens ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(left, [2, 3, 5, 6]);
}

/// RFC 3339 text written with a `Z` suffix (not sqlx's `+00:00`) is never deleted early:
/// at worst it is kept until the next second.
#[tokio::test]
async fn rfc3339_with_z_suffix_is_never_deleted_early() {
    use chrono::{TimeZone, Utc};
    use token_cleanup_core::{CleanupRequest, ManualClock, TokenCleanupService};

    let store = fresh(TimeFormat::Rfc3339Text).await;
    for (id, text) in [
        (1, "2026-06-15T11:59:59Z"),
        (2, "2026-06-15T12:00:00Z"),
        (3, "2026-06-15T12:00:01Z"),
    ] {
        sqlx::query("INSERT INTO auth_tokens (id, token_type, token_hash, valid_until) VALUES (?, 'invite', ?, ?)")
            .bind(id)
            .bind(format!("h{id}"))
            .bind(text)
            .execute(store.pool())
            .await
            .unwrap();
    }
    let service = TokenCleanupService::builder(store.clone())
        .clock(Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap(),
        )))
        .build()
        .unwrap();
    service
        .cleanup_expired_tokens(CleanupRequest::new(["invite"]))
        .await
        .unwrap();
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM auth_tokens ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    // 11:59:59Z expired before the cutoff; 12:00:00Z is at it and stays (`Z` sorts after
    // `+`, so such values err towards keeping).
    assert_eq!(left, [2, 3]);
}
