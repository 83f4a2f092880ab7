//! Two schedulers (two "instances", each with its own pool) on one SQLite file: the tick
//! at Sunday 03:00, where the hourly cleanup and the weekly report both fire, runs once.
//! Real time, with the clock set a moment before the tick; nothing is timed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use common::{Recorder, march};
use token_cleanup_core::{
    CancellationToken, Clock, CronScheduler, HOURLY_CLEANUP, RunQuery, RunStore, Scheduler,
    SqliteStore, TokenCleanupService, TokenStore, TokenTable, TokioClock, Trigger,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_sqlite_file_run_the_tick_once() {
    let dir = std::env::temp_dir().join(format!("token-cleanup-sched-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("app.db").display());
    let first = Arc::new(
        SqliteStore::connect(&url, TokenTable::default())
            .await
            .unwrap(),
    );
    first.migrate().await.unwrap();
    let second = Arc::new(
        SqliteStore::connect(&url, TokenTable::default())
            .await
            .unwrap(),
    );

    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(
        march(1, 3, 0) - TimeDelta::milliseconds(300),
    ));
    let recorder = Recorder::new(clock.clone());
    let scheduler = |store: Arc<SqliteStore>, id: &str| {
        let service = TokenCleanupService::builder(store)
            .clock(clock.clone())
            .notifier(Arc::new(recorder.clone()))
            .build()
            .unwrap();
        CronScheduler::builder(service)
            .instance_id(id)
            .build()
            .unwrap()
    };
    let (a, b) = (scheduler(first.clone(), "a"), scheduler(second, "b"));

    let shutdown = CancellationToken::new();
    let tasks = [a, b].map(|s| {
        let c = shutdown.clone();
        tokio::spawn(async move { s.run(c).await })
    });
    // Wait for the tick's work, then a little longer for the slower instance to try.
    let done = async {
        loop {
            let runs = first.runs(&RunQuery::default()).await.unwrap();
            let finished = runs.iter().any(|r| r.status.is_finished());
            if finished && recorder.kinds().contains(&"report_ready") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("the 03:00 tick ran");
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let runs = first.runs(&RunQuery::default()).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].job.as_deref(), Some(HOURLY_CLEANUP));
    assert_eq!(runs[0].trigger, Trigger::Scheduled);
    assert_eq!(
        recorder
            .kinds()
            .iter()
            .filter(|k| **k == "report_ready")
            .count(),
        1
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn without_a_used_column_the_default_daily_job_removes_expired_tokens_only() {
    use token_cleanup_core::{CleanupRequest, DAILY_CLEANUP, Error, JobAction, JobSpec};
    let table = TokenTable::builder()
        .used_column(None::<String>)
        .build()
        .unwrap();
    let store = Arc::new(
        SqliteStore::connect("sqlite::memory:", table)
            .await
            .unwrap(),
    );
    let service = TokenCleanupService::builder(store).build().unwrap();

    let scheduler = CronScheduler::builder(service.clone()).build().unwrap();
    let daily = scheduler
        .job_specs()
        .find(|j| j.name == DAILY_CLEANUP)
        .unwrap();
    match &daily.action {
        JobAction::Cleanup(request) => assert!(!request.include_used),
        other => panic!("{other:?}"),
    }

    // A job the host wrote itself that asks for used tokens is a configuration error.
    let explicit = JobSpec::new(
        DAILY_CLEANUP,
        "0 2 * * *",
        JobAction::Cleanup(CleanupRequest::all_types().include_used(true)),
    );
    assert!(matches!(
        CronScheduler::builder(service).job(explicit).build(),
        Err(Error::InvalidArgument {
            name: "include_used",
            ..
        })
    ));
}
