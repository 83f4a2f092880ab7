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

/// The write-ahead log's size after a cleanup of 40,000 expired tokens in batches of 500
/// on a WAL file whose connections never checkpoint on their own
/// (`wal_autocheckpoint=0`), with the store's background checkpoints on or off.
async fn wal_bytes_after_cleanup(background: bool) -> u64 {
    use chrono::{TimeDelta, Utc};
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use token_cleanup_core::test_util::TestStore;
    use token_cleanup_core::{CleanupRequest, Token, TokenCleanupService};

    let dir = std::env::temp_dir().join(format!("token-cleanup-wal-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens.db");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .pragma("wal_autocheckpoint", "0");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let store = Arc::new(
        SqliteStore::new(pool.clone(), TokenTable::default())
            .sweep(SweepMode::Always)
            .background_checkpoints(background),
    );
    store.migrate().await.unwrap();
    let expired = Utc::now() - TimeDelta::days(1);
    let tokens: Vec<Token> = (0..40_000)
        .map(|i| Token::new(i + 1, "invite", expired))
        .collect();
    store.insert_tokens(&tokens).await.unwrap();
    // Start from an empty log: everything so far is in the database file.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    let service = TokenCleanupService::builder(store.clone()).build().unwrap();
    let report = service
        .cleanup_expired_tokens(CleanupRequest::new(["invite"]).batch_size(500))
        .await
        .unwrap();
    assert_eq!(report.total_cleaned, 40_000);
    // Let a checkpoint still in flight finish.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let wal = std::fs::metadata(format!("{}-wal", path.display()))
        .map(|m| m.len())
        .unwrap_or(0);
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    wal
}

/// With background checkpoints the log is copied back while batches commit, so SQLite
/// restarts it from the beginning again and again; without them it holds every batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_checkpoints_keep_the_log_short() {
    let with = wal_bytes_after_cleanup(true).await;
    let without = wal_bytes_after_cleanup(false).await;
    assert!(without > 0, "the batches wrote to the log");
    assert!(
        with * 2 < without,
        "log after the cleanup: {with} bytes with background checkpoints, {without} without"
    );
}

/// Sweep windows follow the density of expired rows: full batches where every row is
/// expired, wider windows where few are, walks through live rows, and a rolled-back
/// window where the density jumps; never a batch over its limit, never a live token.
#[tokio::test]
async fn sweep_windows_follow_density() {
    use chrono::TimeDelta;
    use token_cleanup_core::test_util::{ObservedStore, TestStore, suite};
    use token_cleanup_core::{CleanupRequest, Token};

    let store = fresh_with(TimeFormat::Rfc3339Text, SweepMode::Always).await;
    let expired = |i: i64| match i {
        1..=2000 => true,
        2001..=4000 => i % 10 == 0,
        5001..=5400 => true,
        _ => false,
    };
    let tokens: Vec<Token> = (1..=6000)
        .map(|i| {
            let expires = if expired(i) {
                suite::t0() - TimeDelta::minutes(i)
            } else {
                suite::t0() + TimeDelta::minutes(i)
            };
            Token::new(i, "invite", expires)
        })
        .collect();
    store.insert_tokens(&tokens).await.unwrap();
    let observed = Arc::new(ObservedStore::new(store.clone()));
    let report = suite::service(observed.clone())
        .cleanup_expired_tokens(CleanupRequest::new(["invite"]).batch_size(40))
        .await
        .unwrap();
    assert_eq!(report.total_cleaned, 2600);
    let batches = observed.batches();
    assert!(
        batches.iter().all(|&(limit, n)| limit == 40 && n <= 40),
        "{batches:?}"
    );
    // Where every row is expired, a window of 40 rowids is a full batch.
    assert_eq!(batches[..50], [(40, 40); 50], "{batches:?}");
    // 65 batches' worth of rows; the sparse stretch takes windows of 8 batches' worth
    // of rowids (32 rows), and the dense one after the live stretch starts with one.
    assert!(
        (65..=75).contains(&batches.len()),
        "{} batches: {batches:?}",
        batches.len()
    );
    let left: Vec<i64> = (1..=6000).filter(|&i| !expired(i)).collect();
    assert_eq!(store.token_ids().await.unwrap(), left);
}
