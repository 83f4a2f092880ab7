//! Which batch shapes could bring a batched cleanup closer to one `DELETE` on PostgreSQL:
//! an experiment, not what the store runs (BENCHMARKS.md has its numbers, under "Where
//! the rest of the time goes", "What is left at batch 1000 on PostgreSQL" and "Several
//! batches to a `CALL`").
//!
//! ```sh
//! cargo run --release --example pg_batch_shapes --features postgres -- \
//!     [--url postgres://postgres@127.0.0.1:5432/test] [--tokens 1000000] [--rounds 5] \
//!     single two call do do-all
//! ```
//!
//! It seeds `tc_shapes.seed` once (four types round-robin, one token per second, 78 %
//! expired, random hashes) and, for every shape, starts from a fresh copy (`VACUUM
//! ANALYZE`, `CHECKPOINT`). Each round runs every shape named, in an order rotated by one
//! per round, and prints each time; the end prints medians and ratios to `single`.
//! Windows are fixed: 900 rows of one type (3600 s of keys) or of all types (900 s).
//!
//! Shapes:
//! - `single`: one `DELETE` of every expired token;
//! - `two`: per type, the window `DELETE` (with the advisory lock, as the store's), then
//!   `COMMIT; BEGIN` (two round trips per batch, as the store's statement path does);
//! - `two-rr`: the same, types taken in turn over the same key windows;
//! - `auto`: the window `DELETE` autocommitted, one round trip (no bound on a batch);
//! - `auto-guard`: the same, deleting only when a count of the window is within the batch;
//! - `call`: `CALL` of a procedure that deletes one type's window and commits, or rolls
//!   back when it held more than a batch (the store's default path since session 8);
//!   `call-rr`: the same, types taken in turn;
//! - `call-all`: `CALL`, every type in one window, one `DELETE` per type;
//! - `call-counted`: `CALL`, an index-only count per type, then one `DELETE` of all types;
//! - `call-returning`: `CALL`, one `DELETE` of all types counted per type by `RETURNING`;
//!   `call-filter`: the same, counted in one pass over the returned rows (`FILTER`);
//! - `do`, `do-rr`, `do-all`: a `DO` loop inside the server committing each batch, one
//!   type per window, types in turn, all types in one `DELETE`; `do-returning`: all types
//!   in one `DELETE` counted per type by `RETURNING` (what exact per-type counts cost a
//!   shared window inside the server);
//! - `call-8`: one `CALL` deletes 8 consecutive windows of a type, committing each;
//!   `call-4-progress`, `call-8-progress`, `call-16-progress`: 4, 8 or 16 windows, each
//!   also updating a progress row in its own transaction (what the store's `CALL` of
//!   several batches does to keep exact counts when its connection dies);
//! - `round-trip`: 868 prepared `SELECT`s (no data; the cost of a round trip).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use token_cleanup::sqlx::{self, AssertSqlSafe, Executor, PgConnection, PgPool, Row};
use token_cleanup::token_types;

const TYPE_WINDOW: i64 = 3600;
const ALL_WINDOW: i64 = 900;
const LIMIT: i64 = 1000;

/// The lock CTE that the store's delete statements open with (key `$1`).
const LOCKED: &str = "WITH lk AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(1, $1) AS ok)";

const PROCEDURES: &str = r#"
CREATE OR REPLACE PROCEDURE tc_shapes.batch(ty text, lo timestamptz, hi timestamptz,
    lim bigint, INOUT deleted bigint DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  IF NOT pg_try_advisory_xact_lock(1, 7) THEN deleted := 0; ROLLBACK; RETURN; END IF;
  DELETE FROM tc_shapes.t WHERE token_type = ty AND expires_at >= lo AND expires_at < hi;
  GET DIAGNOSTICS deleted = ROW_COUNT;
  IF deleted > lim THEN ROLLBACK; ELSE COMMIT; END IF;
END $$;
CREATE OR REPLACE PROCEDURE tc_shapes.sweep(types text[], lo timestamptz, hi timestamptz,
    lim bigint, INOUT counts bigint[] DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE i int; n bigint; total bigint := 0;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  FOR i IN 1 .. cardinality(types) LOOP
    IF NOT pg_try_advisory_xact_lock(1, i) THEN ROLLBACK; RETURN; END IF;
  END LOOP;
  counts := '{}';
  FOR i IN 1 .. cardinality(types) LOOP
    DELETE FROM tc_shapes.t WHERE token_type = types[i] AND expires_at >= lo AND expires_at < hi;
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || n;
    total := total + n;
    IF total > lim THEN ROLLBACK; RETURN; END IF;
  END LOOP;
  COMMIT;
END $$;
CREATE OR REPLACE PROCEDURE tc_shapes.sweep_counted(types text[], lo timestamptz,
    hi timestamptz, lim bigint, INOUT counts bigint[] DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE ok boolean; total bigint; deleted bigint;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT bool_and(pg_try_advisory_xact_lock(1, k)) INTO ok
    FROM generate_series(1, cardinality(types)) k;
  IF NOT ok THEN ROLLBACK; RETURN; END IF;
  SELECT array_agg(c.n ORDER BY u.ord), sum(c.n) INTO counts, total
    FROM unnest(types) WITH ORDINALITY u(ty, ord) CROSS JOIN LATERAL (
      SELECT count(*) n FROM tc_shapes.t
      WHERE token_type = u.ty AND expires_at >= lo AND expires_at < hi) c;
  IF total > lim THEN ROLLBACK; RETURN; END IF;
  DELETE FROM tc_shapes.t WHERE token_type = ANY(types) AND expires_at >= lo AND expires_at < hi;
  GET DIAGNOSTICS deleted = ROW_COUNT;
  IF deleted <> total THEN ROLLBACK; RETURN; END IF;
  COMMIT;
END $$;
CREATE OR REPLACE PROCEDURE tc_shapes.sweep_returning(types text[], lo timestamptz,
    hi timestamptz, lim bigint, INOUT counts bigint[] DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE i int; total bigint;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  FOR i IN 1 .. cardinality(types) LOOP
    IF NOT pg_try_advisory_xact_lock(1, i) THEN ROLLBACK; RETURN; END IF;
  END LOOP;
  WITH d AS (DELETE FROM tc_shapes.t WHERE token_type = ANY(types)
             AND expires_at >= lo AND expires_at < hi RETURNING token_type)
  SELECT array_agg((SELECT count(*) FROM d WHERE d.token_type = u.ty) ORDER BY u.ord)
    INTO counts FROM unnest(types) WITH ORDINALITY u(ty, ord);
  SELECT sum(x) INTO total FROM unnest(counts) x;
  IF total > lim THEN ROLLBACK; RETURN; END IF;
  COMMIT;
END $$;
CREATE OR REPLACE PROCEDURE tc_shapes.sweep_filter(types text[], lo timestamptz,
    hi timestamptz, lim bigint, INOUT counts bigint[] DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE total bigint;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  IF NOT pg_try_advisory_xact_lock(1, 7) THEN ROLLBACK; RETURN; END IF;
  WITH d AS (DELETE FROM tc_shapes.t WHERE token_type = ANY(types)
             AND expires_at >= lo AND expires_at < hi RETURNING token_type)
  SELECT ARRAY[count(*) FILTER (WHERE token_type = types[1]),
               count(*) FILTER (WHERE token_type = types[2]),
               count(*) FILTER (WHERE token_type = types[3]),
               count(*) FILTER (WHERE token_type = types[4])], count(*)
    INTO counts, total FROM d;
  IF total > lim THEN ROLLBACK; RETURN; END IF;
  COMMIT;
END $$;
CREATE TABLE IF NOT EXISTS tc_shapes.progress (id int PRIMARY KEY, done bigint NOT NULL,
    removed bigint NOT NULL);
INSERT INTO tc_shapes.progress VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING;
CREATE OR REPLACE PROCEDURE tc_shapes.multi(ty text, lo timestamptz, cutoff timestamptz,
    width interval, windows int, lim bigint, progress boolean, INOUT counts bigint[] DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE i int; n bigint; hi timestamptz;
BEGIN
  counts := '{}';
  FOR i IN 1 .. windows LOOP
    EXIT WHEN lo >= cutoff;
    hi := least(lo + width, cutoff);
    PERFORM set_config('synchronous_commit', 'off', true);
    IF NOT pg_try_advisory_xact_lock(1, 7) THEN ROLLBACK; RETURN; END IF;
    DELETE FROM tc_shapes.t WHERE token_type = ty AND expires_at >= lo AND expires_at < hi;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > lim THEN ROLLBACK; RETURN; END IF;
    IF progress THEN
      UPDATE tc_shapes.progress SET done = done + 1, removed = removed + n WHERE id = 1;
    END IF;
    COMMIT;
    counts := counts || n;
    lo := hi;
  END LOOP;
END $$;
"#;

struct Args {
    url: String,
    tokens: i64,
    rounds: usize,
    shapes: Vec<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: "postgres://postgres@127.0.0.1:5432/test".into(),
        tokens: 1_000_000,
        rounds: 5,
        shapes: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("a value after the option");
        match arg.as_str() {
            "--url" => args.url = value(),
            "--tokens" => args.tokens = value().parse().expect("--tokens N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            shape => args.shapes.push(shape.to_owned()),
        }
    }
    if args.shapes.is_empty() {
        args.shapes = ["single", "two", "call", "do", "do-all"]
            .map(String::from)
            .into();
    }
    args
}

/// The key range being cleaned: `[base, cutoff)`.
#[derive(Clone, Copy)]
struct Keys {
    base: DateTime<Utc>,
    cutoff: DateTime<Utc>,
}

impl Keys {
    /// Windows of `seconds` over the range.
    fn windows(self, seconds: i64) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> {
        let width = TimeDelta::seconds(seconds);
        std::iter::successors(Some(self.base), move |lo| Some(*lo + width))
            .take_while(move |lo| *lo < self.cutoff)
            .map(move |lo| (lo, (lo + width).min(self.cutoff)))
    }
}

async fn seed(pool: &PgPool, keys: Keys, tokens: i64) {
    let seeded: bool = sqlx::query_scalar("SELECT to_regclass('tc_shapes.seed') IS NOT NULL")
        .fetch_one(pool)
        .await
        .expect("look for the seed");
    if seeded {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tc_shapes.seed")
            .fetch_one(pool)
            .await
            .expect("count the seed");
        if n == tokens {
            return;
        }
    }
    let [t0, t1, t2, t3] = token_types::ALL;
    pool.execute(
        "DROP SCHEMA IF EXISTS tc_shapes CASCADE; CREATE SCHEMA tc_shapes; \
         CREATE TABLE tc_shapes.seed (id BIGINT PRIMARY KEY, token_type VARCHAR(64) NOT NULL, \
         token_hash VARCHAR(128) NOT NULL, expires_at timestamptz NOT NULL)",
    )
    .await
    .expect("create the seed");
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO tc_shapes.seed SELECT n, \
         CASE n % 4 WHEN 0 THEN '{t0}' WHEN 1 THEN '{t1}' WHEN 2 THEN '{t2}' ELSE '{t3}' END, \
         encode(sha256(('token-' || n)::bytea), 'hex'), $1 + n * interval '1 second' \
         FROM generate_series(1, $2) n"
    )))
    .bind(keys.base)
    .bind(tokens)
    .execute(pool)
    .await
    .expect("seed");
}

async fn fresh(pool: &PgPool) {
    pool.execute(
        "DROP TABLE IF EXISTS tc_shapes.t; \
         CREATE TABLE tc_shapes.t (id BIGINT PRIMARY KEY, token_type VARCHAR(64) NOT NULL, \
         token_hash VARCHAR(128) NOT NULL UNIQUE, expires_at timestamptz NOT NULL, \
         used_at timestamptz); \
         CREATE INDEX t_type_expires ON tc_shapes.t (token_type, expires_at); \
         INSERT INTO tc_shapes.t (id, token_type, token_hash, expires_at) \
         SELECT id, token_type, token_hash, expires_at FROM tc_shapes.seed ORDER BY id",
    )
    .await
    .expect("fresh table");
    pool.execute("VACUUM ANALYZE tc_shapes.t")
        .await
        .expect("vacuum");
    // Needs superuser or pg_checkpoint; without it the runs only start less alike.
    let _ = pool.execute("CHECKPOINT").await;
}

/// A `DO` loop inside the server over `windows` (seconds), deleting per type (`per_type`,
/// types in the inner loop when `types_inner`) or all types at once.
fn do_block(keys: Keys, seconds: i64, per_type: bool, types_inner: bool) -> String {
    let types = token_types::ALL.map(|t| format!("'{t}'")).join(", ");
    let delete = if per_type {
        "DELETE FROM tc_shapes.t WHERE token_type = ty AND expires_at >= lo AND expires_at < hi;"
            .to_owned()
    } else {
        format!(
            "DELETE FROM tc_shapes.t WHERE token_type = ANY(ARRAY[{types}]) \
             AND expires_at >= lo AND expires_at < hi;"
        )
    };
    let batch = format!(
        "hi := least(lo + interval '{seconds} seconds', cutoff); \
         PERFORM set_config('synchronous_commit', 'off', true); \
         PERFORM pg_try_advisory_xact_lock(1, 7); {delete} COMMIT;"
    );
    let walk =
        |body: &str| format!("lo := base; WHILE lo < cutoff LOOP {body} lo := hi; END LOOP;");
    let body = match (per_type, types_inner) {
        (false, _) => walk(&batch),
        (true, false) => format!(
            "FOREACH ty IN ARRAY ARRAY[{types}] LOOP {} END LOOP;",
            walk(&batch)
        ),
        (true, true) => walk(&format!(
            "FOREACH ty IN ARRAY ARRAY[{types}] LOOP {batch} END LOOP;"
        )),
    };
    format!(
        "DO $$ DECLARE base timestamptz := '{}'; cutoff timestamptz := '{}'; \
         lo timestamptz; hi timestamptz; ty text; BEGIN {body} END $$",
        keys.base.to_rfc3339(),
        keys.cutoff.to_rfc3339()
    )
}

/// Runs a window `DELETE` of one type: the lock CTE's key `$1`, the type `$2`, the window
/// `$3..$4`, and `$5` one more than a batch (the guard's bound; the plain statement only
/// binds it, so that both take the same parameters).
async fn delete_window(
    conn: &mut PgConnection,
    sql: &str,
    ty: &str,
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
) -> u64 {
    sqlx::query(AssertSqlSafe(sql))
        .bind(7i32)
        .bind(ty)
        .bind(lo)
        .bind(hi)
        .bind(LIMIT + 1)
        .execute(conn)
        .await
        .expect("window delete")
        .rows_affected()
}

/// `CALL`s a batch procedure (`$1` the type or types, `$2..$3` the window, `$4` the
/// batch limit, five times a window so that fixed windows never roll back) and returns
/// its first output.
async fn call<'q, A, T>(
    conn: &mut PgConnection,
    sql: &'q str,
    first: A,
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
) -> T
where
    A: sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + 'q,
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::query(AssertSqlSafe(sql))
        .bind(first)
        .bind(lo)
        .bind(hi)
        .bind(LIMIT * 5)
        .fetch_one(conn)
        .await
        .expect("call")
        .get(0)
}

/// One type's windows after another, or (`in_turn`) every type's window before the next
/// window.
fn type_batches(keys: Keys, in_turn: bool) -> Vec<(&'static str, DateTime<Utc>, DateTime<Utc>)> {
    let windows: Vec<_> = keys.windows(TYPE_WINDOW).collect();
    if in_turn {
        windows
            .iter()
            .flat_map(|&(lo, hi)| token_types::ALL.map(|ty| (ty, lo, hi)))
            .collect()
    } else {
        token_types::ALL
            .iter()
            .flat_map(|&ty| windows.iter().map(move |&(lo, hi)| (ty, lo, hi)))
            .collect()
    }
}

/// Runs `shape`; returns the rows it deleted (0 for the `DO` loops, which do not count).
async fn run(conn: &mut PgConnection, shape: &str, keys: Keys) -> u64 {
    let types: Vec<String> = token_types::ALL.map(String::from).into();
    let window = format!(
        "{LOCKED} DELETE FROM tc_shapes.t WHERE (SELECT ok FROM lk) AND token_type = $2 \
         AND expires_at >= $3 AND expires_at < $4 AND $5 > 0"
    );
    let guarded = format!(
        "{LOCKED}, g AS MATERIALIZED (SELECT count(*) AS n FROM (SELECT 1 FROM tc_shapes.t \
           WHERE token_type = $2 AND expires_at >= $3 AND expires_at < $4 LIMIT $5) w) \
         DELETE FROM tc_shapes.t WHERE (SELECT ok FROM lk) AND (SELECT n FROM g) < $5 \
         AND token_type = $2 AND expires_at >= $3 AND expires_at < $4"
    );
    let mut total = 0;
    match shape {
        "single" => {
            total = sqlx::query(
                "DELETE FROM tc_shapes.t WHERE token_type = ANY($1) AND expires_at < $2",
            )
            .bind(&types)
            .bind(keys.cutoff)
            .execute(&mut *conn)
            .await
            .expect("single delete")
            .rows_affected();
        }
        "two" | "two-rr" => {
            conn.execute("SET plan_cache_mode = force_generic_plan; BEGIN; SET LOCAL synchronous_commit = off")
                .await
                .expect("begin");
            let batches = type_batches(keys, shape == "two-rr");
            for (ty, lo, hi) in batches {
                total += delete_window(conn, &window, ty, lo, hi).await;
                conn.execute("COMMIT; BEGIN; SET LOCAL synchronous_commit = off")
                    .await
                    .expect("commit");
            }
            conn.execute("COMMIT").await.expect("commit");
        }
        "auto" | "auto-guard" => {
            conn.execute("SET plan_cache_mode = force_generic_plan; SET synchronous_commit = off")
                .await
                .expect("settings");
            let sql = if shape == "auto" { &window } else { &guarded };
            for (ty, lo, hi) in type_batches(keys, false) {
                total += delete_window(conn, sql, ty, lo, hi).await;
            }
        }
        "call" | "call-rr" => {
            conn.execute("SET plan_cache_mode = force_generic_plan")
                .await
                .expect("settings");
            for (ty, lo, hi) in type_batches(keys, shape == "call-rr") {
                let n: i64 = call(conn, "CALL tc_shapes.batch($1, $2, $3, $4)", ty, lo, hi).await;
                total += n as u64;
            }
        }
        "call-all" | "call-counted" | "call-returning" | "call-filter" => {
            conn.execute("SET plan_cache_mode = force_generic_plan")
                .await
                .expect("settings");
            let procedure = match shape {
                "call-all" => "sweep",
                "call-counted" => "sweep_counted",
                "call-filter" => "sweep_filter",
                _ => "sweep_returning",
            };
            let sql = format!("CALL tc_shapes.{procedure}($1, $2, $3, $4)");
            for (lo, hi) in keys.windows(ALL_WINDOW) {
                let counts: Vec<i64> = call(conn, &sql, &types, lo, hi).await;
                total += counts.iter().sum::<i64>() as u64;
            }
        }
        "call-8" | "call-8-progress" | "call-4-progress" | "call-16-progress" => {
            conn.execute("SET plan_cache_mode = force_generic_plan")
                .await
                .expect("settings");
            let per_call: i32 = shape[5..].split('-').next().unwrap().parse().unwrap();
            let progress = shape.ends_with("progress");
            let width = TimeDelta::seconds(TYPE_WINDOW);
            for ty in token_types::ALL {
                let mut lo = keys.base;
                while lo < keys.cutoff {
                    let counts: Vec<i64> = sqlx::query(
                        "CALL tc_shapes.multi($1, $2, $3, make_interval(secs => $4), $5, $6, $7)",
                    )
                    .bind(ty)
                    .bind(lo)
                    .bind(keys.cutoff)
                    .bind(TYPE_WINDOW as f64)
                    .bind(per_call)
                    .bind(LIMIT * 5)
                    .bind(progress)
                    .fetch_one(&mut *conn)
                    .await
                    .expect("call multi")
                    .get(0);
                    total += counts.iter().sum::<i64>() as u64;
                    lo = (lo + width * per_call).min(keys.cutoff);
                }
            }
        }
        "do-returning" => {
            let types = token_types::ALL.map(|t| format!("'{t}'")).join(", ");
            let block = format!(
                "DO $$ DECLARE base timestamptz := '{}'; cutoff timestamptz := '{}'; \
                 lo timestamptz; hi timestamptz; c bigint[]; types text[] := ARRAY[{types}]; BEGIN \
                 lo := base; WHILE lo < cutoff LOOP \
                 hi := least(lo + interval '{ALL_WINDOW} seconds', cutoff); \
                 PERFORM set_config('synchronous_commit', 'off', true); \
                 PERFORM pg_try_advisory_xact_lock(1, 7); \
                 WITH d AS (DELETE FROM tc_shapes.t WHERE token_type = ANY(types) \
                   AND expires_at >= lo AND expires_at < hi RETURNING token_type) \
                 SELECT ARRAY[count(*) FILTER (WHERE token_type = types[1]), \
                   count(*) FILTER (WHERE token_type = types[2]), \
                   count(*) FILTER (WHERE token_type = types[3]), \
                   count(*) FILTER (WHERE token_type = types[4])] INTO c FROM d; \
                 COMMIT; lo := hi; END LOOP; END $$",
                keys.base.to_rfc3339(),
                keys.cutoff.to_rfc3339()
            );
            conn.execute(AssertSqlSafe(block)).await.expect("do block");
        }
        "do" | "do-rr" | "do-all" => {
            let block = match shape {
                "do" => do_block(keys, TYPE_WINDOW, true, false),
                "do-rr" => do_block(keys, TYPE_WINDOW, true, true),
                _ => do_block(keys, ALL_WINDOW, false, false),
            };
            conn.execute(AssertSqlSafe(block)).await.expect("do block");
        }
        "round-trip" => {
            for _ in 0..868 {
                let _: i32 = sqlx::query_scalar("SELECT $1::int4")
                    .bind(1i32)
                    .fetch_one(&mut *conn)
                    .await
                    .expect("select");
            }
        }
        other => panic!("unknown shape {other:?} (see the example's documentation)"),
    }
    total
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&args.url)
        .await
        .expect("connect to PostgreSQL");
    let cutoff = Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap();
    let keys = Keys {
        base: cutoff - TimeDelta::seconds(args.tokens * 78 / 100),
        cutoff,
    };
    seed(&pool, keys, args.tokens).await;
    pool.execute(PROCEDURES)
        .await
        .expect("create the procedures");
    let mut times: Vec<(String, Vec<Duration>)> = args
        .shapes
        .iter()
        .map(|s| (s.clone(), Vec::new()))
        .collect();
    for round in 0..args.rounds {
        for i in 0..times.len() {
            let (shape, runs) = &mut times[(i + round) % args.shapes.len()];
            if shape != "round-trip" {
                fresh(&pool).await;
            }
            let mut conn = pool.acquire().await.expect("connection").detach();
            let started = Instant::now();
            let deleted = run(&mut conn, shape, keys).await;
            let took = started.elapsed();
            if shape != "round-trip" {
                let left: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM tc_shapes.t WHERE expires_at < $1")
                        .bind(keys.cutoff)
                        .fetch_one(&mut conn)
                        .await
                        .expect("count what is left");
                assert_eq!(left, 0, "{shape} deleted every expired token");
            }
            println!(
                "round {} {shape}: {:.0} ms, {deleted} rows",
                round + 1,
                took.as_secs_f64() * 1000.0
            );
            runs.push(took);
            let _ = sqlx::Connection::close(conn).await;
        }
    }
    let single = times
        .iter()
        .find(|(s, _)| s == "single")
        .map(|(_, runs)| median(runs.clone()));
    println!("\n| shape | median ms | ratio to single |\n| --- | --- | --- |");
    for (shape, runs) in &times {
        let m = median(runs.clone());
        let ratio = single.map_or("-".into(), |s| {
            format!("{:.2}x", m.as_secs_f64() / s.as_secs_f64())
        });
        println!("| {shape} | {:.0} | {ratio} |", m.as_secs_f64() * 1000.0);
    }
}
