//! [`MySqlStore`] against the MariaDB / MySQL server of the development machine / CI
//! (`TOKEN_CLEANUP_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`).
//! Every test works in a database of its own. An unreachable server fails the test.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use sqlx::{AssertSqlSafe, Executor, MySqlPool};
use token_cleanup_core::test_util::servers::mysql as server;
use token_cleanup_core::test_util::{TestStore, suite};
use token_cleanup_core::{
    BatchFilter, CleanupRequest, Criterion, Error, ManualClock, MemoryStore, MySqlStore,
    RetryPolicy, RunStatus, RunStore, SweepMode, Token, TokenCleanupService, TokenStore,
    TokenTable,
    token_types::{EMAIL_VERIFICATION, INVITE, MAGIC_LINK, PASSWORD_RESET},
};

/// A migrated store in a fresh schema, under a non-default table and column layout,
/// cleaning type by type.
async fn store_in(pool: MySqlPool, schema: &str) -> Arc<MySqlStore> {
    store_with(pool, schema, SweepMode::Never).await
}

/// [`store_in`], cleaning expired tokens the way `sweep` says.
async fn store_with(pool: MySqlPool, schema: &str, sweep: SweepMode) -> Arc<MySqlStore> {
    let table = TokenTable::builder()
        .schema(schema)
        .table("auth_tokens")
        .expires_column("valid_until")
        .build()
        .unwrap();
    let store = Arc::new(MySqlStore::new(pool, table).sweep(sweep));
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate is idempotent");
    store
}

async fn fresh() -> Arc<MySqlStore> {
    fresh_with(SweepMode::Never).await
}

async fn fresh_with(sweep: SweepMode) -> Arc<MySqlStore> {
    let pool = server::pool(4).await;
    let schema = server::fresh_database(&pool).await;
    store_with(pool, &schema, sweep).await
}

token_cleanup_core::store_conformance_tests!(mysql, fresh());
token_cleanup_core::store_conformance_tests!(mysql_sweep, fresh_with(SweepMode::Always));

/// Same suite with a batch timeout.
async fn fresh_timed(sweep: SweepMode) -> Arc<MySqlStore> {
    let store = fresh_with(sweep).await;
    let store = Arc::try_unwrap(store).expect("sole owner");
    Arc::new(store.batch_timeout(Some(Duration::from_secs(30))))
}

token_cleanup_core::store_conformance_tests!(mysql_timed, fresh_timed(SweepMode::Never));
token_cleanup_core::store_conformance_tests!(mysql_sweep_timed, fresh_timed(SweepMode::Always));

#[tokio::test]
async fn sweep_modes_are_obeyed() {
    suite::sweep_modes_are_obeyed(
        fresh_with(SweepMode::Auto).await,
        fresh_with(SweepMode::Always).await,
        fresh_with(SweepMode::Never).await,
    )
    .await;
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

fn service(store: Arc<MySqlStore>) -> TokenCleanupService {
    TokenCleanupService::builder(store)
        .clock(Arc::new(ManualClock::new(suite::t0())))
        .retry(RetryPolicy::new(3, Duration::from_millis(5)))
        .build()
        .unwrap()
}

async fn ids(store: &MySqlStore) -> BTreeSet<i64> {
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
/// run with `innodb_lock_wait_timeout = 1`, so a wait on a row lock would fail a batch, and no
/// retries are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_delete_each_expired_token_once() {
    let admin = server::pool(2).await;
    let schema = server::fresh_database(&admin).await;
    let seeder = store_in(admin, &schema).await;
    let tokens = time_ordered(5_000);
    let expired: Vec<Token> = tokens
        .iter()
        .filter(|t| t.expires_at < suite::t0())
        .cloned()
        .collect();
    seeder.insert_tokens(&tokens).await.unwrap();
    let pairs = [(100, 100), (50, 700), (1000, 130)];
    for (sweep, (size_a, size_b)) in [SweepMode::Never, SweepMode::Always]
        .into_iter()
        .flat_map(|sweep| pairs.map(|pair| (sweep, pair)))
    {
        // Each instance keeps its run records apart, so that the engine's check for an
        // overlapping run elsewhere (a convenience, racy by nature) cannot serialize
        // them: the store alone must keep them apart.
        let a = service_without_retries(store_with(strict_pool().await, &schema, sweep).await)
            .with_private_runs();
        let b = service_without_retries(store_with(strict_pool().await, &schema, sweep).await)
            .with_private_runs();
        let (ra, rb) = tokio::join!(
            a.cleanup_expired_tokens(CleanupRequest::all_types().batch_size(size_a)),
            b.cleanup_expired_tokens(CleanupRequest::all_types().batch_size(size_b))
        );
        let (ra, rb) = (ra.expect("instance a"), rb.expect("instance b"));
        println!(
            "{sweep:?}: a deleted {}, b deleted {}",
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

/// A pool whose sessions give up on any row-lock wait after 1 s (InnoDB's minimum).
async fn strict_pool() -> MySqlPool {
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET SESSION innodb_lock_wait_timeout = 1")
                    .await?;
                Ok(())
            })
        })
        .connect(&server::url())
        .await
        .expect("MariaDB reachable")
}

fn service_without_retries(store: Arc<MySqlStore>) -> Builder {
    Builder(store)
}

/// Builds a service without retries, with or without run records of its own.
struct Builder(Arc<MySqlStore>);

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
    let admin = server::pool(2).await;
    let schema = server::fresh_database(&admin).await;
    let a = store_in(server::pool(2).await, &schema).await;
    let b = store_in(server::pool(2).await, &schema).await;
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
    let b = store_in(server::pool(2).await, &schema).await;
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

/// Installs a trigger that sleeps for a minute the first time a batch deletes `id`
/// (the flag lives in a MyISAM table, which a rollback does not undo).
async fn sleep_once_when_deleting(pool: &MySqlPool, db: &str, id: i64) {
    pool.execute(AssertSqlSafe(format!(
        "CREATE TABLE `{db}`.fault_once (n INT) ENGINE = MyISAM"
    )))
    .await
    .unwrap();
    pool.execute(AssertSqlSafe(format!(
        "CREATE TRIGGER `{db}`.sleep_once BEFORE DELETE ON `{db}`.auth_tokens FOR EACH ROW \
         BEGIN IF OLD.id = {id} AND (SELECT COUNT(*) FROM `{db}`.fault_once) = 0 THEN \
         INSERT INTO `{db}`.fault_once VALUES (1); SET @slept_{db} = SLEEP(60); END IF; END"
    )))
    .await
    .unwrap();
}

/// Kills (from another connection) the connection that sleeps in `db`'s trigger.
async fn kill_sleeping_backend(admin: &MySqlPool, db: &str) {
    for _ in 0..600 {
        let ids: Vec<u64> = sqlx::query_scalar(
            "SELECT CAST(id AS UNSIGNED) FROM information_schema.processlist \
             WHERE state = 'User sleep' AND info LIKE CONCAT('%slept\\_', ?, '%')",
        )
        .bind(db)
        .fetch_all(admin)
        .await
        .unwrap();
        if let Some(id) = ids.first() {
            admin
                .execute(AssertSqlSafe(format!("KILL {id}")))
                .await
                .unwrap();
            return;
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
    for (sweep, retries) in [
        (SweepMode::Never, true),
        (SweepMode::Never, false),
        (SweepMode::Always, true),
        (SweepMode::Always, false),
    ] {
        let admin = server::pool(2).await;
        let schema = server::fresh_database(&admin).await;
        let store = store_with(server::pool(2).await, &schema, sweep).await;
        let tokens = time_ordered(1000);
        store.insert_tokens(&tokens).await.unwrap();
        // The 7th batch of 100 (ids grow with expiry, every 4th id is an invite).
        let mut invites: Vec<&Token> = tokens
            .iter()
            .filter(|t| t.token_type == INVITE && t.expires_at < suite::t0())
            .collect();
        invites.sort_by_key(|t| t.expires_at);
        sleep_once_when_deleting(&admin, &schema, invites[650].id).await;
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
        kill_sleeping_backend(&admin, &schema).await;
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
            assert_eq!(partial.total_cleaned, 600, "six whole batches committed");
            assert_eq!(left.len(), tokens.len() - 600);
            let record = svc.run(partial.run_id).await.unwrap().unwrap();
            assert_eq!(record.status, RunStatus::Failed);
            assert_eq!(record.progress.total_cleaned, 600);
            let next = svc
                .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(100))
                .await
                .expect("the next run completes");
            assert_eq!(next.total_cleaned, expired_invites - 600);
        }
        let expired_invite_ids: BTreeSet<i64> = invites.iter().map(|t| t.id).collect();
        assert!(ids(&store).await.is_disjoint(&expired_invite_ids));
    }
}

/// A batch that runs longer than the configured timeout is cancelled by the server,
/// rolls back, and fails the run with a timeout error.
#[tokio::test]
async fn batch_timeout_cancels_a_slow_batch() {
    for sweep in [SweepMode::Never, SweepMode::Always] {
        batch_timeout_cancels_a_slow_batch_with(sweep).await;
    }
}

async fn batch_timeout_cancels_a_slow_batch_with(sweep: SweepMode) {
    let admin = server::pool(2).await;
    let schema = server::fresh_database(&admin).await;
    let store = store_with(server::pool(2).await, &schema, sweep).await;
    let store = Arc::new(
        Arc::try_unwrap(store)
            .unwrap()
            .batch_timeout(Some(Duration::from_millis(200))),
    );
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    if !version.contains("MariaDB") {
        println!("MySQL bounds only the locking read of a batch; the delete is not timed");
        return;
    }
    let tokens = time_ordered(50);
    store.insert_tokens(&tokens).await.unwrap();
    let first_invite = tokens.iter().find(|t| t.token_type == INVITE).unwrap().id;
    sleep_once_when_deleting(&admin, &schema, first_invite).await;
    let err = service_without_retries(store.clone())
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]))
        .await
        .unwrap_err();
    suite::timed_out(&err, "mysql");
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

/// The locking read of a batch is a range scan of the `(type, expiry)` index, with and
/// without a resume point.
#[tokio::test]
async fn batch_plan_is_an_index_range_scan() {
    let store = fresh().await;
    store.insert_tokens(&time_ordered(5_000)).await.unwrap();
    let table = format!("`{}`.auth_tokens", store.table().schema().unwrap());
    store
        .pool()
        .execute(AssertSqlSafe(format!("ANALYZE TABLE {table}")))
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
        assert!(plan.contains("auth_tokens_type_expires_idx"), "{plan}");
        assert!(plan.contains("\trange\t"), "{plan}");
    }
}

/// Token types are bound, never spliced: a hostile type is just a string.
#[tokio::test]
async fn hostile_token_types_are_bound_parameters() {
    for sweep in [SweepMode::Never, SweepMode::Always] {
        hostile_token_type_is_just_a_string(sweep).await;
    }
}

async fn hostile_token_type_is_just_a_string(sweep: SweepMode) {
    let store = fresh_with(sweep).await;
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
    let err = MySqlStore::connect("mysql://root@127.0.0.1:1/test", TokenTable::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Store {
                store: "mysql",
                operation: "connect",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("mysql"));
    // Bad names never reach the server.
    assert!(matches!(
        TokenTable::builder()
            .schema("auth`; DROP DATABASE x")
            .build(),
        Err(Error::InvalidIdentifier { kind: "schema", .. })
    ));
    let _ = Utc::now();
}

/// A pool whose sessions run at `offset` from UTC (as a host's `after_connect` may set
/// them).
async fn pool_at_offset(offset: &'static str) -> MySqlPool {
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute(AssertSqlSafe(format!("SET time_zone = '{offset}'")))
                    .await
                    .map(drop)
            })
        })
        .connect(&server::url())
        .await
        .expect("MariaDB reachable")
}

/// Expiry and used-at columns of type `DATETIME(6)` (holding UTC) or `TIMESTAMP(6)`, in
/// sessions 13 hours ahead of UTC (the most MariaDB allows) or 11 behind: statistics, dry
/// runs and runs (type by type and sweeping, used tokens too) see exactly the tokens that
/// are expired or used in UTC ([`suite::check_zone_tokens`]).
#[tokio::test]
async fn time_columns_ignore_the_session_time_zone() {
    let admin = server::pool(2).await;
    let layouts = [
        ("DATETIME(6)", "DATETIME(6)"),
        ("TIMESTAMP(6)", "TIMESTAMP(6) NULL"),
    ];
    for offset in ["+13:00", "-11:00"] {
        for (expires, used) in layouts {
            for sweep in [SweepMode::Never, SweepMode::Always] {
                let schema = server::fresh_database(&admin).await;
                admin
                    .execute(AssertSqlSafe(format!(
                        "CREATE TABLE `{schema}`.verification_tokens (id BIGINT PRIMARY KEY, \
                         token_type VARCHAR(64) NOT NULL, expires_at {expires} NOT NULL, \
                         used_at {used})"
                    )))
                    .await
                    .unwrap();
                for (id, expires_at, used_at) in suite::zone_tokens() {
                    // The admin pool's sessions are in UTC (sqlx's default).
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO `{schema}`.verification_tokens VALUES (?, ?, ?, ?)"
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
                let store = MySqlStore::new(pool_at_offset(offset).await, table).sweep(sweep);
                store.migrate().await.unwrap();
                let case = format!("{offset}, {expires}/{used}, {sweep:?}");
                suite::check_zone_tokens(Arc::new(store), &case).await;
            }
        }
    }
}
