//! Shared by `benches/batch_sizes.rs` and `examples/bench_batch_sizes.rs`: a seeded
//! SQLite template database, copied fresh for every measured run.

#![allow(dead_code)] // each user needs a different subset

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use token_cleanup::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use token_cleanup::sqlx::{self, AssertSqlSafe, SqlitePool};
use token_cleanup::{
    CleanupReport, CleanupRequest, SqliteStore, SweepMode, TokenCleanupService, TokenStore,
    TokenTable, token_types,
};

/// Fraction of seeded tokens that are expired.
pub(crate) const EXPIRED_FRACTION: f64 = 0.8;

/// Opens `path` the way a host should: WAL, synchronous NORMAL, 5 s busy timeout.
pub(crate) async fn open_pool(path: &Path, max_connections: u32) -> SqlitePool {
    open_pool_with(path, max_connections, &[]).await
}

/// [`open_pool`] with extra pragmas (name, value) for its connections.
pub(crate) async fn open_pool_with(
    path: &Path,
    max_connections: u32,
    pragmas: &[(String, String)],
) -> SqlitePool {
    let mut options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .expect("path")
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    for (name, value) in pragmas {
        options = options.pragma(name.clone(), value.clone());
    }
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await
        .expect("open SQLite")
}

/// How the seeded token hashes are ordered relative to the rowid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hashes {
    /// 64 random hex digits, as the SHA-256 of a random token is: the unique
    /// `token_hash` index is in random order, as in a real token table.
    Random,
    /// Hex digits that grow with the id: the index is in insertion order (what this
    /// bench seeded before session 6; kept to compare).
    Sequential,
}

/// Creates a migrated database with `tokens` rows: four types round-robin, expiry growing
/// with the id (as in a live table), `EXPIRED_FRACTION` of them expired, every tenth used.
/// Rows are generated inside SQLite, in the representation sqlx writes (`Rfc3339Text`).
pub(crate) async fn seed_template(dir: &Path, tokens: u64, hashes: Hashes) -> PathBuf {
    std::fs::create_dir_all(dir).expect("bench dir");
    let path = dir.join(format!("template-{tokens}-{hashes:?}.db"));
    let tmp = dir.join(format!("template-{tokens}-{hashes:?}.tmp.db"));
    remove_db(&tmp);
    let pool = open_pool(&tmp, 1).await;
    let store = SqliteStore::new(pool.clone(), TokenTable::default());
    store.migrate().await.expect("migrate");
    // One token per `step` seconds; the first EXPIRED_FRACTION of them lie in the past.
    let step = 10i64;
    let start = Utc::now().timestamp() - (tokens as f64 * EXPIRED_FRACTION) as i64 * step;
    let hash = match hashes {
        Hashes::Random => "'sha256:' || lower(hex(randomblob(32)))",
        Hashes::Sequential => "printf('sha256:%016x', i * 2654435761)",
    };
    sqlx::query(AssertSqlSafe(format!(
        "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?1)
         INSERT INTO verification_tokens (id, token_type, token_hash, expires_at, used_at)
         SELECT i + 1,
                CASE i % 4 WHEN 0 THEN ?2 WHEN 1 THEN ?3 WHEN 2 THEN ?4 ELSE ?5 END,
                {hash},
                strftime('%Y-%m-%dT%H:%M:%S+00:00', ?6 + i * ?7, 'unixepoch'),
                CASE WHEN (i / 4) % 10 = 0
                     THEN strftime('%Y-%m-%dT%H:%M:%S+00:00', ?6 + i * ?7 - 1800, 'unixepoch') END
         FROM seq"
    )))
    .bind(tokens as i64)
    .bind(token_types::EMAIL_VERIFICATION)
    .bind(token_types::PASSWORD_RESET)
    .bind(token_types::MAGIC_LINK)
    .bind(token_types::INVITE)
    .bind(start)
    .bind(step)
    .execute(&pool)
    .await
    .expect("seed");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .expect("checkpoint");
    pool.close().await;
    std::fs::rename(&tmp, &path).expect("publish template");
    remove_db(&tmp);
    path
}

/// Removes a database file and its WAL companions.
pub(crate) fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// A fresh copy of `template` at `dest`.
pub(crate) fn fresh_copy(template: &Path, dest: &Path) {
    remove_db(dest);
    std::fs::copy(template, dest).expect("copy template");
}

/// The single-statement baseline: one `DELETE` of every expired token.
pub(crate) async fn single_delete(pool: &SqlitePool) -> (u64, Duration) {
    let cutoff = Utc::now();
    let started = Instant::now();
    let n = sqlx::query("DELETE FROM verification_tokens WHERE expires_at < ?")
        .bind(format!("{}+00:00", cutoff.format("%Y-%m-%dT%H:%M:%S%.f")))
        .execute(pool)
        .await
        .expect("delete")
        .rows_affected();
    (n, started.elapsed())
}

/// Our cleanup over every type at `batch_size`.
pub(crate) async fn batched_cleanup(pool: &SqlitePool, batch_size: u32) -> CleanupReport {
    batched_cleanup_with(pool, batch_size, Duration::ZERO, SweepMode::Auto, true).await
}

/// Our cleanup over every type at `batch_size`, pausing `pause` after each batch, with
/// the store's sweep mode `sweep` and its background checkpoints on or off.
pub(crate) async fn batched_cleanup_with(
    pool: &SqlitePool,
    batch_size: u32,
    pause: Duration,
    sweep: SweepMode,
    background_checkpoints: bool,
) -> CleanupReport {
    let store = Arc::new(
        SqliteStore::new(pool.clone(), TokenTable::default())
            .sweep(sweep)
            .background_checkpoints(background_checkpoints),
    );
    let service = TokenCleanupService::builder(store)
        .token_types(token_types::ALL)
        .pause_between_batches(pause)
        .build()
        .expect("service");
    service
        .cleanup_expired_tokens(CleanupRequest::all_types().batch_size(batch_size))
        .await
        .expect("cleanup")
}

/// Expired tokens in a fresh copy of the template right after seeding (more expire as
/// time passes: one every 10 s).
pub(crate) fn expected_expired(tokens: u64) -> u64 {
    (tokens as f64 * EXPIRED_FRACTION) as u64
}

/// A fresh token id range for writers that insert during a cleanup.
pub(crate) fn writer_hash(i: u64) -> String {
    format!("writer:{i:016x}")
}

/// Inserts one active token every 2 ms on its own connection until `stop`; returns the
/// worst time one insert waited (for the database lock) and how many it made.
pub(crate) async fn concurrent_writer(
    pool: SqlitePool,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Duration, u64) {
    let mut worst = Duration::ZERO;
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let expires = Utc::now() + TimeDelta::days(1);
    while !*stop.borrow() {
        tick.tick().await;
        let started = Instant::now();
        // A host gives up after its busy timeout (5 s); this writer tries again, so that
        // a longer lock (the single statement's, on a slow day) is measured, not fatal.
        while let Err(e) = sqlx::query(
            "INSERT INTO verification_tokens (token_type, token_hash, expires_at) VALUES (?, ?, ?)",
        )
        .bind(token_types::MAGIC_LINK)
        .bind(writer_hash(n))
        .bind(expires)
        .execute(&pool)
        .await
        {
            let busy = e
                .as_database_error()
                .and_then(|d| d.code()?.parse::<i32>().ok())
                // SQLITE_BUSY or SQLITE_LOCKED, with any extended code.
                .is_some_and(|code| matches!(code & 0xff, 5 | 6));
            assert!(busy, "concurrent insert: {e}");
        }
        worst = worst.max(started.elapsed());
        n += 1;
    }
    (worst, n)
}
