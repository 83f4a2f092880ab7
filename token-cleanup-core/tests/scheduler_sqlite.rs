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
