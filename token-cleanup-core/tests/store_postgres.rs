//! [`PostgresStore`] against the PostgreSQL server of the development machine / CI
//! (`TOKEN_CLEANUP_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! Every test works in a schema of its own. An unreachable server fails the test.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use sqlx::{AssertSqlSafe, Executor, PgPool};
use token_cleanup_core::test_util::servers::postgres as server;
use token_cleanup_core::test_util::{TestStore, suite};
use token_cleanup_core::{
    BatchFilter, CleanupRequest, Criterion, Error, ManualClock, MemoryStore, PostgresStore,
    RetryPolicy, RunStatus, RunStore, Token, TokenCleanupService, TokenStore, TokenTable,
    token_types::{EMAIL_VERIFICATION, INVITE, MAGIC_LINK, PASSWORD_RESET},
};

/// A migrated store in a fresh schema, under a non-default table and column layout.
async fn store_in(pool: PgPool, schema: &str) -> Arc<PostgresStore> {
    let table = TokenTable::builder()
        .schema(schema)
        .table("auth_tokens")
        .expires_column("valid_until")
        .build()
        .unwrap();
    let store = Arc::new(PostgresStore::new(pool, table));
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate is idempotent");
    store
}

async fn fresh() -> Arc<PostgresStore> {
    let pool = server::pool("token-cleanup-test", 4).await;
    let schema = server::fresh_schema(&pool).await;
    store_in(pool, &schema).await
}

token_cleanup_core::store_conformance_tests!(postgres, fresh());

/// Same suite with synchronous commits and a batch timeout (the transactional path).
async fn fresh_synchronous() -> Arc<PostgresStore> {
    let store = fresh().await;
    let store = Arc::try_unwrap(store).expect("sole owner");
    Arc::new(
        store
            .synchronous_commit(true)
            .batch_timeout(Some(Duration::from_secs(30))),
    )
}

token_cleanup_core::store_conformance_tests!(postgres_synchronous, fresh_synchronous());

/// Same suite with batches as plain statements (two round trips, a transaction of the
/// store's own), the path of servers that refuse the batch procedure.
async fn fresh_statements() -> Arc<PostgresStore> {
    let store = Arc::try_unwrap(fresh().await).expect("sole owner");
    Arc::new(store.batch_procedure(false))
}

token_cleanup_core::store_conformance_tests!(postgres_statements, fresh_statements());

/// The same store with batches as `CALL`s of the batch procedure (the default) or as
/// plain statements.
fn on_path(store: Arc<PostgresStore>, procedure: bool) -> Arc<PostgresStore> {
    let store = Arc::try_unwrap(store).expect("sole owner");
    Arc::new(store.batch_procedure(procedure))
}

/// `n` tokens per type, ids from 1, expiring one second apart across the four types; about
/// 78 % of them expired at [`suite::t0`].
fn time_ordered(n: i64) -> Vec<Token> {
    let types = [EMAIL_VERIFICATION, PASSWORD_RESET, MAGIC_LINK, INVITE];
    let total = n * 4;
    let start = suite::t0() - TimeDelta::seconds(total * 78 / 100);
    (1..=total)
        .map(|id| {
            Token::new(
                id,
                types[(id % 4) as usize],
                start + TimeDelta::seconds(id) - TimeDelta::milliseconds(500),
            )
        })
        .collect()
}

/// The expired invites among `tokens`, oldest first.
fn expired_invites(tokens: &[Token]) -> Vec<&Token> {
    let mut invites: Vec<&Token> = tokens
        .iter()
        .filter(|t| t.token_type == INVITE && t.expires_at < suite::t0())
        .collect();
    invites.sort_by_key(|t| t.expires_at);
    invites
}

/// The ids of `tokens` but the `n` oldest of `invites`.
fn all_but_oldest(tokens: &[Token], invites: &[&Token], n: u64) -> BTreeSet<i64> {
    let gone: BTreeSet<i64> = invites[..n as usize].iter().map(|t| t.id).collect();
    tokens
        .iter()
        .map(|t| t.id)
        .filter(|id| !gone.contains(id))
        .collect()
}

fn service(store: Arc<PostgresStore>) -> TokenCleanupService {
    TokenCleanupService::builder(store)
        .clock(Arc::new(ManualClock::new(suite::t0())))
        .retry(RetryPolicy::new(3, Duration::from_millis(5)))
        .build()
        .unwrap()
}

async fn ids(store: &PostgresStore) -> BTreeSet<i64> {
    store.token_ids().await.unwrap().into_iter().collect()
}

fn unexpired(tokens: &[Token]) -> BTreeSet<i64> {
    tokens
        .iter()
        .filter(|t| t.expires_at >= suite::t0())
        .map(|t| t.id)
        .collect()
}

/// Two instances (separate pools, runs started together) delete each expired token
/// exactly once between them, without errors, deadlocks or row-lock waits: their pools
/// run with `lock_timeout = 1ms`, so any wait on a row lock would fail a batch, and no
/// retries are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_delete_each_expired_token_once() {
    let admin = server::pool("token-cleanup-test", 2).await;
    let schema = server::fresh_schema(&admin).await;
    let seeder = store_in(admin, &schema).await;
    let tokens = time_ordered(5_000);
    let expired: Vec<Token> = tokens
        .iter()
        .filter(|t| t.expires_at < suite::t0())
        .cloned()
        .collect();
    seeder.insert_tokens(&tokens).await.unwrap();
    // Both on the procedure path, both on the statement path, and one on each (they
    // share the advisory locks).
    let pairs = [
        (100, 100, true, true),
        (50, 700, true, true),
        (1000, 130, false, false),
        (10, 10, false, false),
        (7, 13, true, false),
        (100, 100, false, true),
    ];
    for (size_a, size_b, procedure_a, procedure_b) in pairs {
        // Each instance keeps its run records apart, so that the engine's check for an
        // overlapping run elsewhere (a convenience, racy by nature) cannot serialize
        // them: the store alone must keep them apart.
        let a = store_in(strict_pool().await, &schema).await;
        let a = service_without_retries(on_path(a, procedure_a)).with_private_runs();
        let b = store_in(strict_pool().await, &schema).await;
        let b = service_without_retries(on_path(b, procedure_b)).with_private_runs();
        let (ra, rb) = tokio::join!(
            a.cleanup_expired_tokens(CleanupRequest::all_types().batch_size(size_a)),
            b.cleanup_expired_tokens(CleanupRequest::all_types().batch_size(size_b))
        );
        let (ra, rb) = (ra.expect("instance a"), rb.expect("instance b"));
        println!(
            "a deleted {}, b deleted {}",
            ra.total_cleaned, rb.total_cleaned
        );
        assert_eq!(
            (ra.total_cleaned + rb.total_cleaned) as usize,
            expired.len()
        );
        assert_eq!(ids(&seeder).await, unexpired(&tokens));
        // Expired tokens again for the next pair of runs.
        seeder.insert_tokens(&expired).await.unwrap();
    }
}

/// A pool whose sessions give up on any lock wait after 1 ms.
async fn strict_pool() -> PgPool {
    let options = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&server::url())
        .unwrap()
        .options([("lock_timeout", "1ms")]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("PostgreSQL reachable")
}

fn service_without_retries(store: Arc<PostgresStore>) -> Builder {
    Builder(store)
}

/// Builds a service without retries, with or without run records of its own.
struct Builder(Arc<PostgresStore>);

impl Builder {
    fn configure(&self) -> token_cleanup_core::TokenCleanupServiceBuilder {
        TokenCleanupService::builder(self.0.clone())
            .clock(Arc::new(ManualClock::new(suite::t0())))
            .retry(RetryPolicy::new(1, Duration::from_millis(1)))
    }

    fn with_private_runs(self) -> TokenCleanupService {
        self.configure()
            .run_store(Arc::new(MemoryStore::new()))
            .build()
            .unwrap()
    }

    async fn cleanup_expired_tokens(
        self,
        request: CleanupRequest,
    ) -> token_cleanup_core::Result<token_cleanup_core::CleanupReport> {
        self.configure()
            .build()
            .unwrap()
            .cleanup_expired_tokens(request)
            .await
    }
}

/// Two contenders for each tick of a job: exactly one wins; the lease is released on
/// completion and taken over after its TTL when its holder crashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_lease_has_one_holder_per_tick() {
    let admin = server::pool("token-cleanup-test", 2).await;
    let schema = server::fresh_schema(&admin).await;
    let a = store_in(server::pool("token-cleanup-a", 2).await, &schema).await;
    let b = store_in(server::pool("token-cleanup-b", 2).await, &schema).await;
    let ttl = Duration::from_secs(60);
    for hour in 0..20 {
        let tick = format!("hourly_cleanup@2026-11-27T{hour:02}:00Z");
        let (wa, wb) = tokio::join!(
            a.try_acquire_lease(&tick, "instance-a", ttl),
            b.try_acquire_lease(&tick, "instance-b", ttl)
        );
        let (wa, wb) = (wa.unwrap(), wb.unwrap());
        assert!(wa ^ wb, "tick {tick}: a {wa}, b {wb}");
        let (winner, loser, holder) = if wa {
            (&a, &b, "instance-a")
        } else {
            (&b, &a, "instance-b")
        };
        assert!(!loser.try_acquire_lease(&tick, "other", ttl).await.unwrap());
        winner.release_lease(&tick, holder).await.unwrap();
        assert!(
            loser.try_acquire_lease(&tick, "other", ttl).await.unwrap(),
            "released"
        );
    }
    // A crashed holder never releases; its lease expires.
    let tick = "daily_cleanup@2026-11-27T02:00Z";
    assert!(
        a.try_acquire_lease(tick, "crashed", Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert!(!b.try_acquire_lease(tick, "instance-b", ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        b.try_acquire_lease(tick, "instance-b", ttl).await.unwrap(),
        "expired"
    );
}

/// Run records written by one instance are read by another.
#[tokio::test]
async fn run_records_are_shared_between_instances() {
    let a = fresh().await;
    let schema = a.table().schema().unwrap().to_string();
    let b = store_in(server::pool("token-cleanup-b", 2).await, &schema).await;
    a.insert_tokens(&suite::mixed_tokens(3)).await.unwrap();
    let report = service(a.clone())
        .cleanup_expired_tokens(CleanupRequest::all_types().requested_by("alice"))
        .await
        .unwrap();
    let seen = service(b)
        .run(report.run_id)
        .await
        .unwrap()
        .expect("visible from b");
    assert_eq!(seen.status, RunStatus::Succeeded);
    assert_eq!(seen.progress.total_cleaned, 12);
    assert_eq!(seen.requested_by.as_deref(), Some("alice"));
}

/// Installs a trigger that sleeps for `seconds` the first time (sequences are not
/// transactional, so a rolled-back attempt still counts) a batch deletes `id`.
async fn sleep_once_when_deleting(pool: &PgPool, schema: &str, id: i64, seconds: u32) {
    let sql = format!(
        "CREATE SEQUENCE \"{schema}\".fault_seq; \
         CREATE FUNCTION \"{schema}\".sleep_once() RETURNS trigger LANGUAGE plpgsql AS $f$ \
         BEGIN IF nextval('\"{schema}\".fault_seq') = 1 THEN PERFORM pg_sleep({seconds}); END IF; \
         RETURN OLD; END $f$; \
         CREATE TRIGGER sleep_once BEFORE DELETE ON \"{schema}\".auth_tokens FOR EACH ROW \
         WHEN (OLD.id = {id}) EXECUTE FUNCTION \"{schema}\".sleep_once()"
    );
    pool.execute(AssertSqlSafe(sql)).await.unwrap();
}

/// Terminates (from another connection) the backend of `application_name` that sleeps
/// in the trigger; returns once it did, with the statement that backend was running.
async fn kill_sleeping_backend(admin: &PgPool, application_name: &str) -> String {
    for _ in 0..600 {
        let killed: Vec<(bool, String)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid), query FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event = 'PgSleep'",
        )
        .bind(application_name)
        .fetch_all(admin)
        .await
        .unwrap();
        if let Some((_, query)) = killed.into_iter().find(|(killed, _)| *killed) {
            return query;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cleanup never reached the sleeping trigger");
}

/// The cleanup's connection is killed in the middle of a batch. With retries the run
/// completes; without, it is recorded as failed with exact partial counts. No unexpired
/// token is deleted, and the next run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connection_is_retried_or_recorded_as_failed() {
    for (procedure, retries) in [(true, true), (true, false), (false, true), (false, false)] {
        let admin = server::pool("token-cleanup-test", 2).await;
        let schema = server::fresh_schema(&admin).await;
        let app = format!("token-cleanup-kill-{schema}");
        let store = on_path(
            store_in(server::pool(&app, 2).await, &schema).await,
            procedure,
        );
        let tokens = time_ordered(1000);
        store.insert_tokens(&tokens).await.unwrap();
        // In the 7th batch of 100 or later (ids grow with expiry, every 4th id is an
        // invite; windows may hold fewer than 100).
        let invites = expired_invites(&tokens);
        sleep_once_when_deleting(&admin, &schema, invites[650].id, 60).await;
        let expired_invites = invites.len() as u64;

        let policy = if retries {
            RetryPolicy::new(3, Duration::from_millis(10))
        } else {
            RetryPolicy::new(1, Duration::from_millis(10))
        };
        let svc = TokenCleanupService::builder(store.clone())
            .clock(Arc::new(ManualClock::new(suite::t0())))
            .retry(policy)
            .build()
            .unwrap();
        let run = svc
            .spawn_cleanup(CleanupRequest::new([INVITE]).batch_size(100))
            .await
            .unwrap();
        let killed = kill_sleeping_backend(&admin, &app).await;
        // The batch ran on the path asked for: on the procedure path, in a `CALL` of
        // several batches (the batches before it in that call committed, and their counts
        // are read back from `token_cleanup_batches`).
        assert_eq!(
            killed.starts_with("CALL pg_temp.token_cleanup_expired_"),
            procedure,
            "{killed}"
        );
        assert_eq!(killed.contains("_windows("), procedure, "{killed}");
        let outcome = run.wait().await;
        let left = ids(&store).await;
        assert!(
            left.is_superset(&unexpired(&tokens)),
            "an unexpired token was deleted"
        );
        if retries {
            let report = outcome.expect("retried after the kill");
            assert_eq!(report.total_cleaned, expired_invites);
            assert!(report.retries >= 1);
        } else {
            let Err(Error::RunFailed { partial, .. }) = outcome else {
                panic!("expected a failed run, got {outcome:?}");
            };
            // The batches before the killed one committed: exactly the oldest expired
            // invites up to it, which held the 651st.
            let committed = partial.total_cleaned;
            assert!(committed <= 650, "the killed batch rolled back");
            assert_eq!(left, all_but_oldest(&tokens, &invites, committed));
            let record = svc.run(partial.run_id).await.unwrap().unwrap();
            assert_eq!(record.status, RunStatus::Failed);
            assert_eq!(record.progress.total_cleaned, committed);
            let next = svc
                .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(100))
                .await
                .expect("the next run completes");
            assert_eq!(next.total_cleaned, expired_invites - committed);
        }
        let expired_invite_ids: BTreeSet<i64> = invites.iter().map(|t| t.id).collect();
        assert!(ids(&store).await.is_disjoint(&expired_invite_ids));
    }
}

/// A run cancelled while a `CALL` of several batches is in flight stops at the batch
/// boundary it had reached: the batch in flight is withdrawn in the server and rolls
/// back (its sleeping trigger would otherwise hold it for a minute and then let it
/// commit), the batches the call committed before it are counted exactly, and the next
/// run deletes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_run_withdraws_the_batch_in_flight() {
    let admin = server::pool("token-cleanup-test", 2).await;
    let schema = server::fresh_schema(&admin).await;
    let app = format!("token-cleanup-cancel-{schema}");
    let store = store_in(server::pool(&app, 2).await, &schema).await;
    let tokens = time_ordered(1000);
    store.insert_tokens(&tokens).await.unwrap();
    let invites = expired_invites(&tokens);
    sleep_once_when_deleting(&admin, &schema, invites[650].id, 60).await;
    let svc = service(store.clone());
    let run = svc
        .spawn_cleanup(CleanupRequest::new([INVITE]).batch_size(100))
        .await
        .unwrap();
    // Wait for the sleeping batch without killing it.
    let mut sleeping = String::new();
    for _ in 0..600 {
        let query: Option<String> = sqlx::query_scalar(
            "SELECT query FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event = 'PgSleep'",
        )
        .bind(&app)
        .fetch_optional(&admin)
        .await
        .unwrap();
        if let Some(query) = query {
            sleeping = query;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sleeping.contains("_windows("), "{sleeping:?}");
    run.cancel();
    let report = run.wait().await.expect("a cancelled run is not a failure");
    assert_eq!(
        report.stopped,
        Some(token_cleanup_core::StopReason::Cancelled)
    );
    let committed = report.total_cleaned;
    assert!(committed <= 650, "the batch in flight rolled back");
    // Exactly the oldest expired invites up to the withdrawn batch are gone, counted.
    assert_eq!(
        ids(&store).await,
        all_but_oldest(&tokens, &invites, committed)
    );
    let record = svc.run(report.run_id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Cancelled);
    assert_eq!(record.progress.total_cleaned, committed);
    let next = svc
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(100))
        .await
        .expect("the next run completes");
    assert_eq!(next.total_cleaned, invites.len() as u64 - committed);
}

/// Batches go several to a `CALL`, each recorded in `token_cleanup_batches`; without that
/// table (a host that has not run this version's `migrate()`) they go one to a `CALL`,
/// with the same outcome.
#[tokio::test]
async fn several_batches_to_a_call_only_where_they_can_be_recorded() {
    for table in [true, false] {
        let admin = server::pool("token-cleanup-test", 2).await;
        let schema = server::fresh_schema(&admin).await;
        let store = store_in(server::pool("token-cleanup-test", 2).await, &schema).await;
        if !table {
            admin
                .execute(AssertSqlSafe(format!(
                    "DROP TABLE \"{schema}\".token_cleanup_batches"
                )))
                .await
                .unwrap();
        }
        let tokens = time_ordered(500);
        store.insert_tokens(&tokens).await.unwrap();
        let report = service(store.clone())
            .cleanup_expired_tokens(CleanupRequest::all_types().batch_size(50))
            .await
            .unwrap();
        let expired = tokens.len() - unexpired(&tokens).len();
        assert_eq!(report.total_cleaned, expired as u64);
        assert_eq!(ids(&store).await, unexpired(&tokens));
        if table {
            // Each `CALL` deleted the record of the one before it on its connection:
            // what is left is the last one's, its batches.
            let recorded: Vec<Vec<i64>> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT deleted FROM \"{schema}\".token_cleanup_batches"
            )))
            .fetch_all(&admin)
            .await
            .unwrap();
            assert_eq!(recorded.len(), 1, "{recorded:?}");
            assert!(
                recorded.iter().flatten().all(|&n| (0..=50).contains(&n)),
                "{recorded:?}"
            );
        }
    }
}

/// The batch procedure disappears from the batch connection between two batches of a
/// run, as when a pooler in transaction mode hands a `CALL` to another server connection
/// than the one that created it: that batch runs again as plain statements, and the run
/// completes with exact counts, without a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_procedure_falls_back_to_statements() {
    let admin = server::pool("token-cleanup-test", 2).await;
    let schema = server::fresh_schema(&admin).await;
    let app = format!("token-cleanup-gone-{schema}");
    let store = store_in(server::pool(&app, 2).await, &schema).await;
    let tokens = time_ordered(1000);
    store.insert_tokens(&tokens).await.unwrap();
    let invites: BTreeSet<i64> = tokens
        .iter()
        .filter(|t| t.token_type == INVITE && t.expires_at < suite::t0())
        .map(|t| t.id)
        .collect();
    // Pauses between batches, shorter than the 250 ms a kept connection waits.
    let svc = service_without_retries(store.clone())
        .configure()
        .pause_between_batches(Duration::from_millis(150))
        .build()
        .unwrap();
    let run = tokio::spawn(async move {
        svc.cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(100))
            .await
    });
    // The batch connection, idle after its first `CALL`.
    let mut idle = false;
    for _ in 0..500 {
        idle = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND state = 'idle' AND query LIKE 'CALL pg\\_temp.%'",
        )
        .bind(&app)
        .fetch_one(&admin)
        .await
        .unwrap()
            > 0;
        if idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(idle, "the batches never ran as a CALL");
    // Dropped from another session (the test runs as a superuser), found by the table
    // their bodies name: the batch procedure and the windows procedure.
    admin
        .execute(AssertSqlSafe(format!(
            "DO $$ DECLARE p regprocedure; n int := 0; BEGIN \
             FOR p IN SELECT oid::regprocedure FROM pg_proc \
               WHERE proname LIKE 'token\\_cleanup\\_expired\\_%' \
               AND prosrc LIKE '%\"{schema}\"%' LOOP \
               EXECUTE 'DROP PROCEDURE ' || p; n := n + 1; \
             END LOOP; \
             IF n <> 2 THEN RAISE 'dropped % procedures', n; END IF; END $$"
        )))
        .await
        .unwrap();
    let report = run
        .await
        .unwrap()
        .expect("the run completes without a retry");
    assert_eq!(report.total_cleaned, invites.len() as u64);
    assert_eq!(report.retries, 0);
    let all: BTreeSet<i64> = tokens.iter().map(|t| t.id).collect();
    assert_eq!(ids(&store).await, &all - &invites);
}

/// A batch that runs longer than the configured timeout is cancelled by the server,
/// rolls back, and fails the run with a timeout error, on both paths.
#[tokio::test]
async fn batch_timeout_cancels_a_slow_batch() {
    // On both paths: a `SET LOCAL` in the batch's transaction, or the session setting of
    // the procedure path's connection.
    for procedure in [true, false] {
        let admin = server::pool("token-cleanup-test", 2).await;
        let schema = server::fresh_schema(&admin).await;
        let store = store_in(server::pool("token-cleanup-test", 2).await, &schema).await;
        let store = Arc::new(
            Arc::try_unwrap(store)
                .unwrap()
                .batch_timeout(Some(Duration::from_millis(200)))
                .batch_procedure(procedure),
        );
        let tokens = time_ordered(50);
        store.insert_tokens(&tokens).await.unwrap();
        let first_invite = tokens.iter().find(|t| t.token_type == INVITE).unwrap().id;
        sleep_once_when_deleting(&admin, &schema, first_invite, 60).await;
        let err = service_without_retries(store.clone())
            .cleanup_expired_tokens(CleanupRequest::new([INVITE]))
            .await
            .unwrap_err();
        suite::timed_out(&err, "postgres");
        assert_eq!(
            ids(&store).await.len(),
            tokens.len(),
            "the batch rolled back"
        );
        // The trigger only sleeps once: the next run deletes every expired invite.
        let report = service(store.clone())
            .cleanup_expired_tokens(CleanupRequest::new([INVITE]))
            .await
            .unwrap();
        assert!(report.total_cleaned > 0);
    }
}

/// The batch timeout bounds a `CALL` of several batches: one that runs past it rolls back
/// its batch in flight and fails with a timeout, and the batches it committed before
/// are counted exactly.
#[tokio::test]
async fn batch_timeout_in_a_call_of_several_batches() {
    let admin = server::pool("token-cleanup-test", 2).await;
    let schema = server::fresh_schema(&admin).await;
    let store = store_in(server::pool("token-cleanup-test", 2).await, &schema).await;
    let store = Arc::new(
        Arc::try_unwrap(store)
            .unwrap()
            .batch_timeout(Some(Duration::from_millis(500))),
    );
    let tokens = time_ordered(200);
    store.insert_tokens(&tokens).await.unwrap();
    let invites = expired_invites(&tokens);
    // In the 7th batch of 10 or later: past the first batch, which goes alone.
    sleep_once_when_deleting(&admin, &schema, invites[60].id, 60).await;
    let err = service_without_retries(store.clone())
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(10))
        .await
        .unwrap_err();
    let partial = suite::timed_out(&err, "postgres");
    // Exactly the oldest expired invites up to the slow batch are gone, and counted
    // (those its `CALL` committed before it were read back from their record).
    let committed = partial.total_cleaned;
    assert!(committed <= 60, "the batch in flight rolled back");
    assert_eq!(
        ids(&store).await,
        all_but_oldest(&tokens, &invites, committed)
    );
    let report = service(store.clone())
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(10))
        .await
        .unwrap();
    assert_eq!(report.total_cleaned, invites.len() as u64 - committed);
}

/// The batch statement's plan: an index-only scan for the batch bounds and an index
/// range scan for the delete, never a sequential scan, with and without a resume point.
#[tokio::test]
async fn batch_plan_is_an_index_range_scan() {
    let store = fresh().await;
    store.insert_tokens(&time_ordered(5_000)).await.unwrap();
    assert_index_plans(&store).await;
    // A table holding a single token type: the delete's range still looks small to the
    // planner (both of its ends are bounds), so it never turns into a sequential scan.
    let store = fresh().await;
    let one_type: Vec<Token> = time_ordered(5_000)
        .into_iter()
        .map(|t| Token::new(t.id, INVITE, t.expires_at))
        .collect();
    store.insert_tokens(&one_type).await.unwrap();
    assert_index_plans(&store).await;
}

async fn assert_index_plans(store: &PostgresStore) {
    let table = format!("\"{}\".auth_tokens", store.table().schema().unwrap());
    store
        .pool()
        .execute(AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
        .await
        .unwrap();
    let mut filter = BatchFilter::new(
        INVITE,
        Criterion::Expired {
            before: suite::t0(),
        },
    );
    for resume in [None, Some(suite::t0() - TimeDelta::hours(1))] {
        filter.resume_from = resume;
        let plan = store.explain_batch(&filter, 1000).await.unwrap();
        println!("{plan}");
        let (probe, delete) = plan
            .split_once("-- window delete")
            .expect("the probe's plan, then the delete's");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(probe.contains("Index Only Scan"), "{plan}");
        assert!(
            delete.contains("Bitmap Heap Scan") || delete.contains("Index Scan"),
            "{plan}"
        );
        // The plan batches run: generic, planned once for any window.
        assert!(delete.contains("$4"), "{plan}");
    }
}

/// Key windows follow the density of expiries: a steady stretch, a gap of days, a stretch
/// a hundred times denser, then a sparse one. No batch exceeds its limit, every expired
/// token goes (and nothing else), and the windows adapt within a few batches of each
/// change instead of degrading to tiny batches.
#[tokio::test]
async fn windows_follow_uneven_density() {
    let store = fresh().await;
    let t0 = suite::t0();
    let mut expiries = Vec::new();
    let mut at = t0 - TimeDelta::days(10);
    for _ in 0..2000 {
        at += TimeDelta::seconds(1);
        expiries.push(at);
    }
    at += TimeDelta::days(3);
    for _ in 0..3000 {
        at += TimeDelta::milliseconds(10);
        expiries.push(at);
    }
    for _ in 0..1000 {
        at += TimeDelta::minutes(1);
        expiries.push(at);
    }
    assert!(at < t0);
    let expired = expiries.len();
    expiries.extend((1..=500).map(|i| t0 + TimeDelta::seconds(i)));
    let tokens: Vec<Token> = expiries
        .iter()
        .enumerate()
        .map(|(i, at)| Token::new(i as i64 + 1, INVITE, *at))
        .collect();
    store.insert_tokens(&tokens).await.unwrap();

    let observed = Arc::new(token_cleanup_core::test_util::ObservedStore::new(
        store.clone(),
    ));
    let report = suite::service(observed.clone())
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(100))
        .await
        .unwrap();
    assert_eq!(report.total_cleaned, expired as u64);
    assert_eq!(ids(&store).await, unexpired(&tokens));
    let batches = observed.batches();
    assert!(
        batches.iter().all(|&(_, deleted)| deleted <= 100),
        "{batches:?}"
    );
    println!("{} batches: {batches:?}", batches.len());
    // 60 full batches' worth. Windows of a batch of 100 aim at 60-97 % of it, a gap
    // costs one empty batch (the next one probes past it), and a change of density a few
    // short ones (72 when this was written; 128 before gaps were probed).
    assert!(
        batches.len() <= 80,
        "{} batches: {batches:?}",
        batches.len()
    );
}

/// On the statement path batches chain their transactions (one round trip commits a
/// batch and begins the next one's), so a run that stops between batches leaves its
/// connection in a transaction; on the procedure path the connection holds a temporary
/// procedure and a session statement timeout. Either way that connection is closed,
/// never handed back to the host's pool: afterwards no backend of the pool is idle in a
/// transaction, and every connection the host gets is outside one, with the server's
/// statement timeout and no procedure of the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_connections_never_reach_the_pool() {
    for procedure in [false, true] {
        let admin = server::pool("token-cleanup-test", 2).await;
        let schema = server::fresh_schema(&admin).await;
        let app = format!("token-cleanup-chain-{schema}");
        let pool = server::pool(&app, 3).await;
        let store = store_in(pool.clone(), &schema).await;
        let store = Arc::new(
            Arc::try_unwrap(store)
                .unwrap()
                .batch_timeout(Some(Duration::from_secs(7)))
                .batch_procedure(procedure),
        );
        store.insert_tokens(&time_ordered(2000)).await.unwrap();
        let svc = service(store.clone());
        for max_rows in [350, 700] {
            let report = svc
                .cleanup_expired_tokens(
                    CleanupRequest::new([INVITE])
                        .batch_size(10)
                        .max_rows(max_rows),
                )
                .await
                .unwrap();
            assert_eq!(report.total_cleaned, max_rows);
            // The kept connection goes after 250 ms without a batch.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let idle_in_transaction: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
            )
            .bind(&app)
            .fetch_one(&admin)
            .await
            .unwrap();
            assert_eq!(idle_in_transaction, 0);
            let mut conns = Vec::new();
            for _ in 0..3 {
                let mut conn = pool.acquire().await.unwrap();
                // SAVEPOINT is refused outside a transaction block.
                let err = sqlx::raw_sql("SAVEPOINT token_cleanup_test")
                    .execute(&mut *conn)
                    .await
                    .expect_err("the pool handed out a connection inside a transaction");
                assert_eq!(
                    err.as_database_error().and_then(|e| e.code()).as_deref(),
                    Some("25P01"),
                    "{err}"
                );
                let (timeout, procedures): (String, i64) = sqlx::query_as(
                    "SELECT current_setting('statement_timeout'), \
                     (SELECT count(*) FROM pg_proc \
                      WHERE pronamespace = pg_my_temp_schema() AND proname LIKE 'token_cleanup%')",
                )
                .fetch_one(&mut *conn)
                .await
                .unwrap();
                assert_eq!((timeout.as_str(), procedures), ("0", 0));
                conns.push(conn);
            }
        }
    }
}

/// A server that refuses the batch procedure (a role without the `TEMPORARY` privilege)
/// gets batches as plain statements: the run completes, exactly the expired tokens go.
#[tokio::test]
async fn refused_procedure_falls_back_to_statements() {
    let pool = pool_without_temp().await;
    let refused: bool =
        sqlx::query_scalar("SELECT NOT has_database_privilege(current_database(), 'TEMPORARY')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(refused, "the test role may create temporary objects");
    let schema = server::fresh_schema(&pool).await;
    let store = store_in(pool, &schema).await;
    let tokens = time_ordered(500);
    store.insert_tokens(&tokens).await.unwrap();
    let report = service(store.clone())
        .cleanup_expired_tokens(CleanupRequest::all_types().batch_size(100))
        .await
        .unwrap();
    assert_eq!(
        report.total_cleaned as usize,
        tokens.len() - unexpired(&tokens).len()
    );
    assert_eq!(ids(&store).await, unexpired(&tokens));
}

/// A pool on a database of its own (`token_cleanup_no_temp`), as a role of the same name
/// that is no superuser and lacks the `TEMPORARY` privilege there. Both outlive the test
/// (created once per server).
async fn pool_without_temp() -> PgPool {
    const NAME: &str = "token_cleanup_no_temp";
    let admin = server::pool("token-cleanup-test", 1).await;
    admin
        .execute(AssertSqlSafe(format!(
            "DO $$ BEGIN CREATE ROLE {NAME} LOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )))
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(NAME)
            .fetch_one(&admin)
            .await
            .unwrap();
    if !exists {
        // `CREATE DATABASE` runs outside a transaction, one statement at a time.
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {NAME}")))
            .await
            .unwrap();
    }
    for sql in [
        format!("REVOKE TEMPORARY ON DATABASE {NAME} FROM PUBLIC"),
        format!("GRANT CONNECT, CREATE ON DATABASE {NAME} TO {NAME}"),
    ] {
        admin.execute(AssertSqlSafe(sql)).await.unwrap();
    }
    let options = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&server::url())
        .unwrap()
        .username(NAME)
        .password("")
        .database(NAME);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("PostgreSQL reachable as the role without TEMPORARY")
}

/// Token types are bound, never spliced: a hostile type is just a string.
#[tokio::test]
async fn hostile_token_types_are_bound_parameters() {
    let store = fresh().await;
    let hostile = "x'); DROP TABLE auth_tokens; --";
    let tokens = vec![
        Token::new(1, hostile, suite::t0() - TimeDelta::hours(1)),
        Token::new(2, hostile, suite::t0() + TimeDelta::hours(1)),
        Token::new(3, INVITE, suite::t0() - TimeDelta::hours(1)),
    ];
    store.insert_tokens(&tokens).await.unwrap();
    let report = service(store.clone())
        .cleanup_expired_tokens(CleanupRequest::new([hostile]))
        .await
        .unwrap();
    assert_eq!(report.total_cleaned, 1);
    assert_eq!(ids(&store).await, BTreeSet::from([2, 3]));
}

/// A server that refuses the connection is a typed error naming the store.
#[tokio::test]
async fn refused_connection_is_a_typed_error() {
    let err = PostgresStore::connect(
        "postgres://postgres@127.0.0.1:1/test",
        TokenTable::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Store {
                store: "postgres",
                operation: "connect",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("postgres"));
    // Bad names never reach the server.
    assert!(matches!(
        TokenTable::builder()
            .schema("auth\"; DROP SCHEMA x")
            .build(),
        Err(Error::InvalidIdentifier { kind: "schema", .. })
    ));
    let _ = Utc::now();
}

/// The expiry and used-at column types of the time column tests: `timestamp` holding UTC
/// or `timestamptz`.
const TIME_LAYOUTS: [(&str, &str); 3] = [
    ("timestamp", "timestamp"),
    ("timestamptz", "timestamp"),
    ("timestamptz", "timestamptz"),
];

/// `verification_tokens` in `schema`, with time columns of the types given.
async fn create_layout_table(admin: &PgPool, schema: &str, expires: &str, used: &str) {
    admin
        .execute(AssertSqlSafe(format!(
            "CREATE TABLE \"{schema}\".verification_tokens (id BIGINT PRIMARY KEY, \
             token_type VARCHAR(64) NOT NULL, expires_at {expires} NOT NULL, used_at {used})"
        )))
        .await
        .unwrap();
}

/// A pool whose sessions run in `zone` (as a host's `after_connect` may set them).
async fn pool_in_zone(zone: &'static str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute(AssertSqlSafe(format!("SET TIME ZONE '{zone}'")))
                    .await
                    .map(drop)
            })
        })
        .connect_with(
            <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&server::url())
                .unwrap(),
        )
        .await
        .expect("PostgreSQL reachable")
}

/// Expiry and used-at columns of type `timestamp` (holding UTC) or `timestamptz`, in
/// sessions whose time zone is 14 hours ahead of UTC or 11 behind: statistics, dry runs
/// and runs (both paths, used tokens too) see exactly the tokens that are expired or used
/// in UTC ([`suite::check_zone_tokens`]).
#[tokio::test]
async fn time_columns_ignore_the_session_time_zone() {
    let admin = server::pool("token-cleanup-test", 2).await;
    for zone in ["Pacific/Kiritimati", "Pacific/Pago_Pago"] {
        for (expires, used) in TIME_LAYOUTS {
            for procedure in [true, false] {
                let schema = server::fresh_schema(&admin).await;
                create_layout_table(&admin, &schema, expires, used).await;
                for (id, expires_at, used_at) in suite::zone_tokens() {
                    // The admin pool's sessions are in UTC (sqlx's default).
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO \"{schema}\".verification_tokens VALUES ($1, $2, $3, $4)"
                    )))
                    .bind(id)
                    .bind(PASSWORD_RESET)
                    .bind(expires_at)
                    .bind(used_at)
                    .execute(&admin)
                    .await
                    .unwrap();
                }
                let table = TokenTable::builder().schema(&schema).build().unwrap();
                let store =
                    PostgresStore::new(pool_in_zone(zone).await, table).batch_procedure(procedure);
                store.migrate().await.unwrap();
                let case = format!("{zone}, {expires}/{used}, procedure {procedure}");
                suite::check_zone_tokens(Arc::new(store), &case).await;
            }
        }
    }
}

/// `CALL`s of several batches, of expired and of used tokens, in every layout of time
/// columns and in a session 14 hours ahead of UTC: exactly the tokens expired or used
/// past their grace go, none at or after the cutoff, and each is counted once.
#[tokio::test]
async fn several_batches_to_a_call_in_every_layout() {
    let admin = server::pool("token-cleanup-test", 2).await;
    for (expires, used) in TIME_LAYOUTS {
        let schema = server::fresh_schema(&admin).await;
        create_layout_table(&admin, &schema, expires, used).await;
        // 1..=300 expired, 301..=500 expiring after the cutoff, 501..=700 used three
        // hours ago or earlier, 701..=750 used (oddly) in ten hours, 751..=760 expiring
        // exactly at the cutoff. The admin pool's sessions are in UTC.
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO \"{schema}\".verification_tokens \
             SELECT n, $2, CASE WHEN n <= 300 THEN $1 - n * interval '1 second' \
                               WHEN n <= 500 THEN $1 + n * interval '1 second' \
                               WHEN n <= 750 THEN $1 + interval '1 day' \
                               ELSE $1 END, \
                    CASE WHEN n BETWEEN 501 AND 700 \
                           THEN $1 - interval '3 hours' - n * interval '1 second' \
                         WHEN n BETWEEN 701 AND 750 THEN $1 + interval '10 hours' END \
             FROM generate_series(1, 760) n"
        )))
        .bind(suite::t0())
        .bind(PASSWORD_RESET)
        .execute(&admin)
        .await
        .unwrap();
        let table = TokenTable::builder().schema(&schema).build().unwrap();
        let store = Arc::new(PostgresStore::new(
            pool_in_zone("Pacific/Kiritimati").await,
            table,
        ));
        store.migrate().await.unwrap();
        let report = service(store.clone())
            .cleanup_expired_tokens(CleanupRequest::all_types().include_used(true).batch_size(7))
            .await
            .unwrap();
        let case = format!("{expires}/{used}");
        assert_eq!(report.total_cleaned, 500, "{case}");
        let left: BTreeSet<i64> = (301..=500).chain(701..=760).collect();
        assert_eq!(ids(&store).await, left, "{case}");
        // Batches went several to a `CALL`: the last one's record is there.
        let recorded: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{schema}\".token_cleanup_batches"
        )))
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(recorded, 1, "{case}");
    }
}

/// An expiry column that holds no instant (here Unix seconds in a `bigint`) is a typed
/// error naming the column, before any row is touched.
#[tokio::test]
async fn non_time_expiry_column_is_a_typed_error() {
    let admin = server::pool("token-cleanup-test", 2).await;
    let schema = server::fresh_schema(&admin).await;
    admin
        .execute(AssertSqlSafe(format!(
            "CREATE TABLE \"{schema}\".verification_tokens (id BIGINT PRIMARY KEY, \
             token_type VARCHAR(64) NOT NULL, expires_at BIGINT NOT NULL, used_at timestamptz); \
             INSERT INTO \"{schema}\".verification_tokens VALUES (1, '{PASSWORD_RESET}', 0, NULL)"
        )))
        .await
        .unwrap();
    let table = TokenTable::builder().schema(&schema).build().unwrap();
    let store = Arc::new(PostgresStore::new(admin.clone(), table));
    let filter = BatchFilter::new(
        PASSWORD_RESET,
        Criterion::Expired {
            before: suite::t0(),
        },
    );
    let err = store.delete_batch(&filter, 100).await.unwrap_err();
    let message = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        matches!(
            err,
            Error::Store {
                store: "postgres",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(message.contains("`expires_at` is `bigint`"), "{message}");
    let err = store.count(&filter).await.unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    assert_eq!(ids(&store).await, BTreeSet::from([1]));
}
