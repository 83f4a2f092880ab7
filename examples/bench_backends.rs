//! Our batched cleanup against one plain `DELETE`, on PostgreSQL, MySQL/MariaDB or SQLite.
//!
//! ```text
//! cargo run --release --example bench_backends --features postgres,mysql,sqlite -- \
//!     --backend postgres --tokens 1000000 --batch-sizes 1000,5000 [--runs 3] [--json] \
//!     [--naive] [--synchronous-commit] [--statements | --both-paths] \
//!     [--batches-per-call N | --vs-one-per-call] [--sweep auto|always|never] \
//!     [--sequential-hashes] [--current-thread] [--url URL]
//! ```
//!
//! It seeds one time-ordered table (ids in expiry order, four token types interleaved,
//! about 78 % expired), indexed as `migrate()` indexes it. Token hashes are 64 hex digits
//! in random order, as SHA-256 hashes of random tokens are (`--sequential-hashes`:
//! `hash-<id>`, which sorts in insertion order, what this bench seeded before session 6).
//! Then, for each batch size and `--runs` times on fresh data each, it times a
//! single-statement `DELETE .. WHERE token_type IN (..) AND expires_at < cutoff` and a
//! full cleanup run of the four types, and prints the medians, their ratio, the number of
//! batches, the slowest batch, and the median and 99th percentile of every batch's time
//! (from the engine's `token_cleanup_batch_duration_seconds` histogram) with how many
//! took over 50 ms. It also prints the plan of a batch (`EXPLAIN`). `--naive` also
//! times, once per batch size, the shape most projects use: per type, `DELETE .. WHERE id IN
//! (SELECT id .. WHERE expires_at < cutoff LIMIT n)` until a batch comes back short
//! (MySQL: `DELETE .. WHERE .. LIMIT n`, as `IN (.. LIMIT)` is an error there).
//!
//! On MySQL/MariaDB, InnoDB removes deleted rows from the table and its indexes (purge)
//! in the background after a delete commits: after each timed operation the bench waits
//! until purge has caught up (so that the next one does not share the machine with it)
//! and also reports the time until then, for the single statement and for the cleanup.
//!
//! `--sweep` sets the MySQL and SQLite stores' [`SweepMode`] (default `auto`: at about
//! 78 % expired, the expired tokens go in one sweep in storage order; `never` measures
//! the type-by-type batches through the `(type, expires_at)` index). PostgreSQL always
//! cleans type by type.
//!
//! `--synchronous-commit` makes PostgreSQL batches commit with the server's
//! `synchronous_commit` (`PostgresStore::synchronous_commit(true)`) instead of
//! asynchronously. `--statements` makes them run as plain statements, two round trips
//! a batch (`PostgresStore::batch_procedure(false)`), instead of one `CALL` of the
//! store's batch procedure; `--both-paths` times both in every run, in turn with the
//! single statement, and prints the statement path's medians after the table.
//! `--batches-per-call N` sets how many batches one `CALL` may run
//! (`PostgresStore::batches_per_call`, default 8); `--vs-one-per-call` times, the same
//! way, the default against one batch per `CALL`.
//!
//! The bench runs on a multi-threaded Tokio runtime with two workers, as a web service
//! would; `--current-thread` runs it on a single-threaded one instead, to see what the
//! runtime adds to each round trip to the database.
//!
//! Default URLs: `postgres://postgres@127.0.0.1:5432/test` (schema `tc_bench`),
//! `mysql://root@127.0.0.1:3306/test` (database `tc_bench`), and a SQLite file in the
//! temporary directory (time stored as Unix seconds).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use token_cleanup::sqlx::{self, AssertSqlSafe, Executor};
use token_cleanup::{
    BatchFilter, CleanupRequest, Criterion, ManualClock, MySqlStore, PostgresStore, SqliteStore,
    SweepMode, TimeFormat, TokenCleanupService, TokenStore, TokenTable, token_types,
};

const TABLE: &str = "bench_tokens";
const SEED: &str = "bench_seed";
const SCHEMA: &str = "tc_bench";

/// `--synchronous-commit`, set once from the arguments.
static SYNCHRONOUS_COMMIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
/// Whether PostgreSQL batches run as plain statements: `--statements`, or the arm of
/// `--both-paths` that times them.
static STATEMENTS: AtomicBool = AtomicBool::new(false);
/// `--batches-per-call` (0: the store's default), or 1 in the arm of
/// `--vs-one-per-call` that times one batch per `CALL`.
static BATCHES_PER_CALL: AtomicU32 = AtomicU32::new(0);
/// `--sweep`, set once from the arguments.
static SWEEP: std::sync::OnceLock<SweepMode> = std::sync::OnceLock::new();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    MySql,
    Sqlite,
}

#[derive(Debug)]
struct Args {
    backend: Backend,
    tokens: u64,
    batch_sizes: Vec<u32>,
    runs: usize,
    json: bool,
    naive: bool,
    synchronous_commit: bool,
    statements: bool,
    both_paths: bool,
    batches_per_call: u32,
    vs_one_per_call: bool,
    sweep: SweepMode,
    url: Option<String>,
    sequential_hashes: bool,
    current_thread: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_backends --backend postgres|mysql|sqlite [--tokens N] \
         [--batch-sizes 1000,5000] [--runs 3] [--json] [--naive] [--synchronous-commit] \
         [--statements | --both-paths] [--batches-per-call N | --vs-one-per-call] \
         [--sweep auto|always|never] [--sequential-hashes] [--current-thread] [--url URL]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        backend: Backend::Postgres,
        tokens: 1_000_000,
        batch_sizes: vec![1000, 5000],
        runs: 3,
        json: false,
        naive: false,
        synchronous_commit: false,
        statements: false,
        both_paths: false,
        batches_per_call: 0,
        vs_one_per_call: false,
        sweep: SweepMode::Auto,
        url: None,
        sequential_hashes: false,
        current_thread: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--backend" => {
                args.backend = match value().as_str() {
                    "postgres" => Backend::Postgres,
                    "mysql" | "mariadb" => Backend::MySql,
                    "sqlite" => Backend::Sqlite,
                    _ => usage(),
                }
            }
            "--tokens" => args.tokens = value().parse().unwrap_or_else(|_| usage()),
            "--batch-sizes" => {
                args.batch_sizes = value()
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--runs" => args.runs = value().parse().unwrap_or_else(|_| usage()),
            "--json" => args.json = true,
            "--naive" => args.naive = true,
            "--synchronous-commit" => args.synchronous_commit = true,
            "--statements" => args.statements = true,
            "--both-paths" => args.both_paths = true,
            "--batches-per-call" => {
                args.batches_per_call = value().parse().unwrap_or_else(|_| usage())
            }
            "--vs-one-per-call" => args.vs_one_per_call = true,
            "--sequential-hashes" => args.sequential_hashes = true,
            "--current-thread" => args.current_thread = true,
            "--sweep" => {
                args.sweep = match value().as_str() {
                    "auto" => SweepMode::Auto,
                    "always" => SweepMode::Always,
                    "never" => SweepMode::Never,
                    _ => usage(),
                }
            }
            "--url" => args.url = Some(value()),
            _ => usage(),
        }
    }
    if args.tokens < 100
        || args.runs == 0
        || args.batch_sizes.is_empty()
        || (args.both_paths && args.vs_one_per_call)
    {
        usage()
    }
    args
}

/// One connection to the backend under test, with the statements the bench needs.
enum Db {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

impl Db {
    async fn exec(&self, sql: String) -> Result<u64, sqlx::Error> {
        let sql = AssertSqlSafe(sql);
        Ok(match self {
            Db::Postgres(p) => p.execute(sql).await?.rows_affected(),
            Db::MySql(p) => p.execute(sql).await?.rows_affected(),
            Db::Sqlite(p) => p.execute(sql).await?.rows_affected(),
        })
    }

    fn table(&self) -> TokenTable {
        let builder = TokenTable::builder().table(TABLE);
        match self {
            Db::Postgres(_) | Db::MySql(_) => builder.schema(SCHEMA),
            Db::Sqlite(_) => builder.time_format(TimeFormat::UnixSeconds),
        }
        .build()
        .expect("valid names")
    }

    fn qualified(&self, table: &str) -> String {
        match self {
            Db::Postgres(_) => format!("\"{SCHEMA}\".\"{table}\""),
            Db::MySql(_) => format!("`{SCHEMA}`.`{table}`"),
            Db::Sqlite(_) => format!("\"{table}\""),
        }
    }

    fn store(&self) -> Arc<dyn TokenStore> {
        match self {
            Db::Postgres(_) => Arc::new(self.postgres()),
            Db::MySql(_) => Arc::new(self.mysql()),
            Db::Sqlite(p) => Arc::new(SqliteStore::new(p.clone(), self.table()).sweep(sweep())),
        }
    }

    fn postgres(&self) -> PostgresStore {
        let Db::Postgres(p) = self else {
            unreachable!("a PostgreSQL bench")
        };
        let store = PostgresStore::new(p.clone(), self.table())
            .synchronous_commit(SYNCHRONOUS_COMMIT.get().copied().unwrap_or(false))
            .batch_procedure(!STATEMENTS.load(Ordering::Relaxed));
        match BATCHES_PER_CALL.load(Ordering::Relaxed) {
            0 => store,
            n => store.batches_per_call(n),
        }
    }

    fn mysql(&self) -> MySqlStore {
        let Db::MySql(p) = self else {
            unreachable!("a MySQL bench")
        };
        MySqlStore::new(p.clone(), self.table()).sweep(sweep())
    }

    /// `base + n seconds` in the backend's time representation.
    fn expiry_expr(&self, base: DateTime<Utc>) -> String {
        let ts = base.format("%Y-%m-%d %H:%M:%S");
        match self {
            Db::Postgres(_) => format!("timestamptz '{ts}+00' + n * interval '1 second'"),
            Db::MySql(_) => format!("TIMESTAMP '{ts}' + INTERVAL n SECOND"),
            Db::Sqlite(_) => format!("{} + n", base.timestamp()),
        }
    }

    fn cutoff_literal(&self, cutoff: DateTime<Utc>) -> String {
        let ts = cutoff.format("%Y-%m-%d %H:%M:%S");
        match self {
            Db::Postgres(_) => format!("timestamptz '{ts}+00'"),
            Db::MySql(_) => format!("TIMESTAMP '{ts}'"),
            Db::Sqlite(_) => cutoff.timestamp().to_string(),
        }
    }
}

async fn connect(args: &Args) -> Db {
    let fail = |e: &dyn std::fmt::Display| -> ! {
        eprintln!("cannot connect to {:?}: {e}", args.backend);
        std::process::exit(1)
    };
    match args.backend {
        Backend::Postgres => {
            let url = args
                .url
                .clone()
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .connect(&url)
                .await
                .unwrap_or_else(|e| fail(&e));
            Db::Postgres(pool)
        }
        Backend::MySql => {
            let url = args
                .url
                .clone()
                .unwrap_or_else(|| "mysql://root@127.0.0.1:3306/test".into());
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(4)
                .connect(&url)
                .await
                .unwrap_or_else(|e| fail(&e));
            Db::MySql(pool)
        }
        Backend::Sqlite => {
            let url = args.url.clone().unwrap_or_else(|| {
                let path = std::env::temp_dir().join("token_cleanup_bench.db");
                let _ = std::fs::remove_file(&path);
                format!("sqlite://{}", path.display())
            });
            let store = SqliteStore::connect(&url, TokenTable::default())
                .await
                .unwrap_or_else(|e| fail(&e));
            Db::Sqlite(store.pool().clone())
        }
    }
}

/// `WITH digits .. SELECT n` for 1..=tokens, portable across the three backends.
fn numbers(tokens: u64) -> String {
    let width = tokens.to_string().len();
    let digits = "SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                  UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                  UNION ALL SELECT 8 UNION ALL SELECT 9";
    let mut from = Vec::new();
    let mut sum = Vec::new();
    for i in 0..width {
        from.push(format!("digits d{i}"));
        sum.push(format!("d{i}.d * {}", 10u64.pow(i as u32)));
    }
    format!(
        "WITH digits AS ({digits}) SELECT n FROM (SELECT 1 + {} AS n FROM {}) nums WHERE n <= {tokens}",
        sum.join(" + "),
        from.join(" CROSS JOIN ")
    )
}

/// Creates the seed table once: `tokens` rows, ids in expiry order.
async fn seed(db: &Db, tokens: u64, cutoff: DateTime<Utc>, sequential_hashes: bool) {
    match db {
        Db::Postgres(_) => {
            db.exec(format!("DROP SCHEMA IF EXISTS \"{SCHEMA}\" CASCADE"))
                .await
                .unwrap();
            db.exec(format!("CREATE SCHEMA \"{SCHEMA}\""))
                .await
                .unwrap();
        }
        Db::MySql(_) => {
            db.exec(format!("DROP DATABASE IF EXISTS `{SCHEMA}`"))
                .await
                .unwrap();
            db.exec(format!("CREATE DATABASE `{SCHEMA}`"))
                .await
                .unwrap();
        }
        Db::Sqlite(_) => {
            db.exec(format!("DROP TABLE IF EXISTS \"{SEED}\""))
                .await
                .unwrap();
        }
    }
    let base = cutoff - TimeDelta::seconds((tokens * 78 / 100) as i64);
    let time_type = match db {
        Db::Postgres(_) => "timestamptz",
        Db::MySql(_) => "DATETIME(6)",
        Db::Sqlite(_) => "INTEGER",
    };
    let seed = db.qualified(SEED);
    db.exec(format!(
        "CREATE TABLE {seed} (id BIGINT PRIMARY KEY, token_type VARCHAR(64) NOT NULL, \
         token_hash VARCHAR(128) NOT NULL, expires_at {time_type} NOT NULL)"
    ))
    .await
    .unwrap();
    let [t0, t1, t2, t3] = token_types::ALL;
    let type_expr = match db {
        Db::MySql(_) => format!("ELT(1 + n % 4, '{t0}', '{t1}', '{t2}', '{t3}')"),
        _ => format!(
            "CASE n % 4 WHEN 0 THEN '{t0}' WHEN 1 THEN '{t1}' WHEN 2 THEN '{t2}' ELSE '{t3}' END"
        ),
    };
    let hash_expr = match (db, sequential_hashes) {
        (Db::MySql(_), true) => "CONCAT('hash-', n)",
        (_, true) => "'hash-' || n",
        (Db::Postgres(_), false) => "encode(sha256(('token-' || n)::bytea), 'hex')",
        (Db::MySql(_), false) => "SHA2(CONCAT('token-', n), 256)",
        (Db::Sqlite(_), false) => "lower(hex(randomblob(32)))",
    };
    db.exec(format!(
        "INSERT INTO {seed} (id, token_type, token_hash, expires_at) \
         SELECT n, {type_expr}, {hash_expr}, {} FROM ({}) numbered",
        db.expiry_expr(base),
        numbers(tokens)
    ))
    .await
    .unwrap();
}

/// Drops and recreates the token table through `migrate()`, then copies the seed into it.
async fn fresh(db: &Db) {
    let table = db.qualified(TABLE);
    db.exec(format!("DROP TABLE IF EXISTS {table}"))
        .await
        .unwrap();
    db.store().migrate().await.expect("migrate");
    db.exec(format!(
        "INSERT INTO {table} (id, token_type, token_hash, expires_at) \
         SELECT id, token_type, token_hash, expires_at FROM {} ORDER BY id",
        db.qualified(SEED)
    ))
    .await
    .unwrap();
    match db {
        Db::Postgres(_) => {
            db.exec(format!("VACUUM ANALYZE {table}")).await.unwrap();
            // Same starting point for every run (needs superuser or pg_checkpoint).
            let _ = db.exec("CHECKPOINT".into()).await;
        }
        Db::MySql(_) => {
            db.exec(format!("ANALYZE TABLE {table}")).await.unwrap();
        }
        Db::Sqlite(_) => {
            db.exec("ANALYZE".into()).await.unwrap();
        }
    }
}

async fn single_statement(db: &Db, cutoff: DateTime<Utc>) -> (Duration, u64) {
    let types = token_types::ALL.map(|t| format!("'{t}'")).join(", ");
    let sql = format!(
        "DELETE FROM {} WHERE token_type IN ({types}) AND expires_at < {}",
        db.qualified(TABLE),
        db.cutoff_literal(cutoff)
    );
    let started = Instant::now();
    let deleted = db.exec(sql).await.unwrap();
    (started.elapsed(), deleted)
}

/// The common batched shape, driven per type until a batch comes back short.
async fn naive(db: &Db, cutoff: DateTime<Utc>, batch_size: u32) -> (Duration, u64, u64) {
    let table = db.qualified(TABLE);
    let cutoff = db.cutoff_literal(cutoff);
    let started = Instant::now();
    let (mut deleted, mut batches) = (0, 0);
    for ty in token_types::ALL {
        loop {
            let sql = match db {
                Db::MySql(_) => format!(
                    "DELETE FROM {table} WHERE token_type = '{ty}' AND expires_at < {cutoff} \
                     LIMIT {batch_size}"
                ),
                _ => format!(
                    "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} \
                     WHERE token_type = '{ty}' AND expires_at < {cutoff} LIMIT {batch_size})"
                ),
            };
            let n = db.exec(sql).await.unwrap();
            deleted += n;
            batches += 1;
            if n < u64::from(batch_size) {
                break;
            }
        }
    }
    (started.elapsed(), deleted, batches)
}

struct CleanupRun {
    took: Duration,
    deleted: u64,
    batches: u64,
    slowest: Duration,
    /// Every batch's time in ms, from the engine's batch duration histogram.
    batch_ms: Vec<f64>,
}

/// The engine's metrics, recorded for the batch durations (installed once, in `main`).
static METRICS: std::sync::OnceLock<Snapshotter> = std::sync::OnceLock::new();

/// The batch durations (ms) recorded since the last call, across types.
fn batch_times() -> Vec<f64> {
    let Some(snapshotter) = METRICS.get() else {
        return Vec::new();
    };
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == token_cleanup::metrics::BATCH_DURATION)
        .flat_map(|(.., value)| match value {
            DebugValue::Histogram(values) => values.into_iter().map(|v| v.0 * 1000.0).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// The `q` quantile (0..=1) of `values`, nearest rank; 0 when there are none.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

async fn cleanup(db: &Db, cutoff: DateTime<Utc>, batch_size: u32) -> CleanupRun {
    let service = TokenCleanupService::builder(db.store())
        .clock(Arc::new(ManualClock::new(cutoff)))
        .build()
        .unwrap();
    batch_times();
    let started = Instant::now();
    let report = service
        .cleanup_expired_tokens(CleanupRequest::new(token_types::ALL).batch_size(batch_size))
        .await
        .expect("cleanup");
    CleanupRun {
        took: started.elapsed(),
        deleted: report.total_cleaned,
        batches: report.batches,
        slowest: report.slowest_batch,
        batch_ms: batch_times(),
    }
}

/// MySQL/MariaDB: InnoDB removes deleted rows (purge) in the background after a delete
/// commits. Waits until purge has caught up with every transaction so far, so that the
/// next measurement does not share the machine with this one's purge, and returns how
/// long that took (zero on the other backends).
async fn wait_for_purge(db: &Db) -> Duration {
    let Db::MySql(pool) = db else {
        return Duration::ZERO;
    };
    let started = Instant::now();
    let status = || async {
        let (_, _, text): (String, String, String) = sqlx::query_as("SHOW ENGINE INNODB STATUS")
            .fetch_one(pool)
            .await
            .expect("InnoDB status");
        text
    };
    let number_after = |text: &str, label: &str| -> Option<u64> {
        let rest = &text[text.find(label)? + label.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let Some(target) = number_after(&status().await, "Trx id counter ") else {
        eprintln!("no transaction counter in SHOW ENGINE INNODB STATUS; not waiting for purge");
        return Duration::ZERO;
    };
    while number_after(&status().await, "Purge done for trx's n:o < ")
        .is_some_and(|done| done < target)
        && started.elapsed() < Duration::from_secs(300)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

fn sweep() -> SweepMode {
    SWEEP.get().copied().unwrap_or_default()
}

/// The plan of the first batch the cleanup runs: a sweep batch when the store sweeps the
/// four types, else a type-by-type batch (from the start and from a resume point).
async fn explain(db: &Db, cutoff: DateTime<Utc>, batch_size: u32) -> String {
    let filters: Vec<BatchFilter> = token_types::ALL
        .iter()
        .map(|t| BatchFilter::new(*t, Criterion::Expired { before: cutoff }))
        .collect();
    if let Some(sweep) = db.store().plan_sweep(&filters).await.unwrap() {
        let plan = match db {
            Db::MySql(_) => db.mysql().explain_sweep_batch(&sweep, batch_size).await,
            _ => return "(a sweep; no EXPLAIN for SQLite)".into(),
        };
        return format!(
            "-- sweep batch of {batch_size}, all four types\n{}\n",
            plan.unwrap()
        );
    }
    let mut filter = BatchFilter::new(token_types::INVITE, Criterion::Expired { before: cutoff });
    let mut out = String::new();
    for resume in [None, Some(cutoff - TimeDelta::hours(24))] {
        filter.resume_from = resume;
        let plan = match db {
            Db::Postgres(_) => db
                .postgres()
                .explain_batch(&filter, batch_size)
                .await
                .unwrap(),
            Db::MySql(_) => db.mysql().explain_batch(&filter, batch_size).await.unwrap(),
            Db::Sqlite(_) => return "(no EXPLAIN for SQLite)".into(),
        };
        out.push_str(&format!(
            "-- batch of {batch_size}, resume_from = {}\n{plan}\n",
            resume.map_or("none".into(), |r| r.to_rfc3339())
        ));
    }
    out
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args = parse_args();
    let runtime = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    }
    .enable_all()
    .build()
    .expect("a Tokio runtime");
    runtime.block_on(bench(args));
}

async fn bench(args: Args) {
    let recorder = DebuggingRecorder::new();
    METRICS
        .set(recorder.snapshotter())
        .unwrap_or_else(|_| unreachable!("set once"));
    recorder.install().expect("the only metrics recorder");
    SYNCHRONOUS_COMMIT
        .set(args.synchronous_commit)
        .expect("set once");
    STATEMENTS.store(args.statements, Ordering::Relaxed);
    BATCHES_PER_CALL.store(args.batches_per_call, Ordering::Relaxed);
    let both_paths =
        (args.both_paths || args.vs_one_per_call) && matches!(args.backend, Backend::Postgres);
    // What the third arm times.
    let alt_path = if args.vs_one_per_call {
        "one batch per CALL"
    } else {
        "statement path (two round trips a batch)"
    };
    SWEEP.set(args.sweep).expect("set once");
    let db = connect(&args).await;
    // A whole second, so that the literal in the single statement equals the cutoff.
    let cutoff = Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap();
    let seed_started = Instant::now();
    seed(&db, args.tokens, cutoff, args.sequential_hashes).await;
    if !args.json {
        println!(
            "{:?}: seeded {} tokens in {:.1} s",
            args.backend,
            args.tokens,
            seed_started.elapsed().as_secs_f64()
        );
    }
    fresh(&db).await;
    let plan = explain(&db, cutoff, args.batch_sizes[0]).await;
    if !args.json {
        println!("{plan}");
    }

    let mut results = Vec::new();
    for &batch_size in &args.batch_sizes {
        let (mut single, mut ours, mut slowest) = (Vec::new(), Vec::new(), Vec::new());
        let (mut single_purged, mut ours_purged) = (Vec::new(), Vec::new());
        let (mut expired, mut batches) = (0, 0);
        let mut statements = Vec::new();
        // Every batch of our cleanup's runs, in ms.
        let mut batch_ms = Vec::new();
        let arms = if both_paths { 3 } else { 2 };
        for run in 0..args.runs {
            // Rotate which goes first, so that none always meets a colder cache.
            for which in (0..arms).map(|k| (run + k) % arms) {
                fresh(&db).await;
                if which == 2 {
                    if args.vs_one_per_call {
                        BATCHES_PER_CALL.store(1, Ordering::Relaxed);
                    } else {
                        STATEMENTS.store(true, Ordering::Relaxed);
                    }
                    let r = cleanup(&db, cutoff, batch_size).await;
                    STATEMENTS.store(args.statements, Ordering::Relaxed);
                    BATCHES_PER_CALL.store(args.batches_per_call, Ordering::Relaxed);
                    assert!(
                        expired == 0 || r.deleted == expired,
                        "both paths delete the same rows"
                    );
                    statements.push(r.took);
                } else if which == 0 {
                    let (took, deleted) = single_statement(&db, cutoff).await;
                    single.push(took);
                    single_purged.push(took + wait_for_purge(&db).await);
                    expired = deleted;
                } else {
                    let r = cleanup(&db, cutoff, batch_size).await;
                    assert!(
                        expired == 0 || r.deleted == expired,
                        "both delete the same rows"
                    );
                    ours.push(r.took);
                    ours_purged.push(r.took + wait_for_purge(&db).await);
                    slowest.push(r.slowest);
                    batch_ms.extend(r.batch_ms);
                    batches = r.batches;
                    expired = r.deleted;
                }
            }
            if !args.json {
                println!(
                    "batch {batch_size} run {}: single {:.0} ms ({:.0} ms until purged), cleanup {:.0} ms ({:.0} ms until purged){}",
                    run + 1,
                    ms(*single.last().unwrap()),
                    ms(*single_purged.last().unwrap()),
                    ms(*ours.last().unwrap()),
                    ms(*ours_purged.last().unwrap()),
                    statements
                        .last()
                        .map(|t| format!(", {alt_path} {:.0} ms", ms(*t)))
                        .unwrap_or_default()
                );
            }
        }
        let statements_ms = (!statements.is_empty()).then(|| ms(median(statements)).round());
        let (s, o) = (median(single), median(ours));
        let (sp, op) = (median(single_purged), median(ours_purged));
        let worst = slowest.iter().max().copied().unwrap_or_default();
        let naive_ms = if args.naive {
            fresh(&db).await;
            let (took, deleted, _) = naive(&db, cutoff, batch_size).await;
            assert_eq!(deleted, expired, "the naive shape deletes the same rows");
            if !args.json {
                println!("batch {batch_size} naive: {:.0} ms", ms(took));
            }
            Some(ms(took).round())
        } else {
            None
        };
        results.push(serde_json::json!({
            "naive_ms": naive_ms,
            "naive_ratio": naive_ms.map(|n| (n / ms(s) * 100.0).round() / 100.0),
            "batch_size": batch_size,
            "expired": expired,
            "single_ms": ms(s).round(),
            "cleanup_ms": ms(o).round(),
            "ratio": (o.as_secs_f64() / s.as_secs_f64() * 100.0).round() / 100.0,
            "batches": batches,
            "worst_batch_ms": (ms(worst) * 10.0).round() / 10.0,
            "batch_p50_ms": (quantile(&batch_ms, 0.5) * 10.0).round() / 10.0,
            "batch_p99_ms": (quantile(&batch_ms, 0.99) * 10.0).round() / 10.0,
            "batches_over_50ms": batch_ms.iter().filter(|&&t| t > 50.0).count(),
            "batches_timed": batch_ms.len(),
            "single_until_purged_ms": ms(sp).round(),
            "cleanup_until_purged_ms": ms(op).round(),
            "ratio_until_purged": (op.as_secs_f64() / sp.as_secs_f64().max(1e-9) * 100.0).round() / 100.0,
            "alt_path": statements_ms.map(|_| alt_path),
            "alt_ms": statements_ms,
            "alt_ratio": statements_ms.map(|t| (t / ms(s) * 100.0).round() / 100.0),
        }));
    }

    let backend = format!("{:?}", args.backend).to_lowercase();
    if args.json {
        let out = serde_json::json!({
            "backend": backend,
            "tokens": args.tokens,
            "runs": args.runs,
            "sweep": format!("{:?}", args.sweep).to_lowercase(),
            "token_hashes": if args.sequential_hashes { "sequential" } else { "random" },
            "results": results,
            "plan": plan,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
    } else {
        println!(
            "\ntoken hashes: {}",
            if args.sequential_hashes {
                "sequential (hash-<id>)"
            } else {
                "random (64 hex digits)"
            }
        );
        println!(
            "\n| backend | tokens | batch | expired | single DELETE (median ms) | cleanup (median ms) | ratio | batches | worst batch ms | batch p50 / p99 ms (over 50 ms, of all runs' batches) | naive shape ms (ratio) | until purged: single / cleanup ms (ratio) |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for r in &results {
            let naive = match r["naive_ms"].as_f64() {
                Some(n) => format!(
                    "{n} ({:.2}x)",
                    r["naive_ratio"].as_f64().unwrap_or_default()
                ),
                None => "-".into(),
            };
            let purged = if matches!(args.backend, Backend::MySql) {
                format!(
                    "{} / {} ({:.2}x)",
                    r["single_until_purged_ms"],
                    r["cleanup_until_purged_ms"],
                    r["ratio_until_purged"].as_f64().unwrap_or_default()
                )
            } else {
                "-".into()
            };
            let spread = format!(
                "{} / {} ({} of {})",
                r["batch_p50_ms"], r["batch_p99_ms"], r["batches_over_50ms"], r["batches_timed"]
            );
            println!(
                "| {backend} | {} | {} | {} | {} | {} | {:.2}x | {} | {} | {spread} | {naive} | {purged} |",
                args.tokens,
                r["batch_size"],
                r["expired"],
                r["single_ms"],
                r["cleanup_ms"],
                r["ratio"].as_f64().unwrap_or_default(),
                r["batches"],
                r["worst_batch_ms"]
            );
        }
        for r in results.iter().filter(|r| r["alt_ms"].is_number()) {
            println!(
                "\n{alt_path}, batch {}: {} ms, {:.2}x",
                r["batch_size"],
                r["alt_ms"],
                r["alt_ratio"].as_f64().unwrap_or_default()
            );
        }
    }
}
