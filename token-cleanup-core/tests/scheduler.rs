//! `CronScheduler` on paused tokio time: ticks at the right instants, failures, shutdown,
//! skipped ticks and several instances on one store. No test waits real hours.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeDelta, Utc, Weekday};
use common::{Logs, Recorder, feb, march};
use token_cleanup_core::test_util::ObservedStore;
use token_cleanup_core::{
    CancellationToken, CleanupRequest, Clock, CronScheduler, DAILY_CLEANUP, Error, HOURLY_CLEANUP,
    JobAction, JobSpec, MemoryStore, Notification, ReportPeriod, RetryPolicy, RunQuery, RunRecord,
    RunStatus, RunStore, Scheduler, Token, TokenCleanupService, TokioClock, Trigger, WEEKLY_REPORT,
    token_types,
};

fn expired_tokens(n: i64, now: DateTime<Utc>) -> Vec<Token> {
    (1..=n)
        .map(|id| Token::new(id, token_types::PASSWORD_RESET, now - TimeDelta::days(2)))
        .collect()
}

fn service(
    store: Arc<MemoryStore>,
    clock: Arc<dyn Clock>,
    notifier: Recorder,
) -> TokenCleanupService {
    TokenCleanupService::builder(store)
        .token_types(token_types::ALL)
        .clock(clock)
        .notifier(Arc::new(notifier))
        .build()
        .unwrap()
}

/// Runs `scheduler` until the clock has moved by `for_`, then shuts it down.
async fn run_for(scheduler: &CronScheduler, for_: Duration) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (s, c) = (scheduler.clone(), shutdown.clone());
        async move { s.run(c).await }
    });
    tokio::time::sleep(for_).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

async fn all_runs(store: &dyn RunStore) -> Vec<RunRecord> {
    let mut runs = store.runs(&RunQuery::default()).await.unwrap();
    runs.reverse(); // oldest first
    runs
}

/// The ticks runs of `job` were started for (created within a minute of the tick).
fn ticks_of(runs: &[RunRecord], job: &str) -> Vec<DateTime<Utc>> {
    runs.iter()
        .filter(|r| r.job.as_deref() == Some(job))
        .map(|r| {
            assert_eq!(r.trigger, Trigger::Scheduled);
            let tick = r
                .created_at
                .with_second(0)
                .and_then(|t| t.with_nanosecond(0))
                .unwrap();
            assert!(r.created_at - tick < TimeDelta::minutes(1));
            tick
        })
        .collect()
}

use chrono::Timelike;

#[tokio::test(start_paused = true)]
async fn default_jobs_tick_hourly_daily_at_two_and_weekly_on_sunday_at_three() {
    let start = feb(28, 23, 30); // Saturday
    assert_eq!(start.weekday(), Weekday::Sat);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let store = Arc::new(MemoryStore::new());
    store.insert(expired_tokens(5, start));
    let recorder = Recorder::new(clock.clone());
    let scheduler = CronScheduler::builder(service(store.clone(), clock.clone(), recorder.clone()))
        .build()
        .unwrap();

    // Saturday 23:30 .. Monday 03:30.
    run_for(&scheduler, Duration::from_secs(28 * 3600)).await;

    let runs = all_runs(store.as_ref()).await;
    let hourly = ticks_of(&runs, HOURLY_CLEANUP);
    let expected: Vec<_> = (0..28)
        .map(|h| march(1, 0, 0) + TimeDelta::hours(h))
        .collect();
    assert_eq!(hourly, expected);
    assert_eq!(
        ticks_of(&runs, DAILY_CLEANUP),
        [march(1, 2, 0), march(2, 2, 0)]
    );
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
    // The daily job is the comprehensive one.
    assert!(
        runs.iter()
            .filter(|r| r.job.as_deref() == Some(DAILY_CLEANUP))
            .all(|r| r.request.include_used)
    );
    assert!(store.tokens().is_empty());

    let seen = recorder.seen.lock().unwrap().clone();
    let reports: Vec<_> = seen
        .iter()
        .filter_map(|(at, n)| match n {
            Notification::ReportReady(r) => Some((*at, r.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "one weekly report: {:?}",
        recorder.kinds()
    );
    let (sent_at, report) = &reports[0];
    assert_eq!(*sent_at, march(1, 3, 0));
    assert_eq!(sent_at.weekday(), Weekday::Sun);
    assert_eq!(report.period, ReportPeriod::Weekly);
    assert_eq!(report.to - report.from, TimeDelta::days(7));
    // Runs up to Sunday 03:00 are in it: hourly 00:00-02:00 (03:00 fires at the same
    // instant, so it may or may not be in yet) and the daily one.
    assert!(
        (4..=5).contains(&report.scheduled.runs),
        "{:?}",
        report.scheduled
    );

    let jobs = scheduler.jobs().await.unwrap();
    let by_name: BTreeMap<_, _> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    assert_eq!(by_name[HOURLY_CLEANUP].next_run, Some(march(2, 4, 0)));
    assert_eq!(by_name[DAILY_CLEANUP].next_run, Some(march(3, 2, 0)));
    assert_eq!(by_name[WEEKLY_REPORT].next_run, Some(march(8, 3, 0)));
    assert_eq!(by_name[WEEKLY_REPORT].cron, "0 3 * * 0");
    assert_eq!(
        by_name[WEEKLY_REPORT].description,
        "At 03:00, on Sunday (UTC)"
    );
    let last = by_name[HOURLY_CLEANUP].last_run.as_ref().unwrap();
    assert_eq!(
        (last.fired_at, last.status),
        (march(2, 3, 0), RunStatus::Succeeded)
    );
    assert!(last.run_id.is_some());
    let last = by_name[WEEKLY_REPORT].last_run.as_ref().unwrap();
    assert_eq!(
        (last.fired_at, last.status),
        (march(1, 3, 0), RunStatus::Succeeded)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_run_does_not_stop_the_next_tick() {
    let start = march(2, 0, 59);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let memory = Arc::new(MemoryStore::new());
    memory.insert(expired_tokens(3, start));
    let store = Arc::new(ObservedStore::new(memory.clone()));
    store.fail_next_batches(1);
    let recorder = Recorder::new(clock.clone());
    let service = TokenCleanupService::builder(store.clone())
        .clock(clock)
        .retry(RetryPolicy::none())
        .notifier(Arc::new(recorder.clone()))
        .build()
        .unwrap();
    let scheduler = CronScheduler::builder(service)
        .without_defaults()
        .job(JobSpec::hourly_cleanup())
        .build()
        .unwrap();
    let (logs, _guard) = Logs::capture();

    run_for(&scheduler, Duration::from_secs(62 * 60)).await;

    let runs = all_runs(store.as_ref()).await;
    assert_eq!(
        ticks_of(&runs, HOURLY_CLEANUP),
        [march(2, 1, 0), march(2, 2, 0)]
    );
    assert_eq!(
        runs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [RunStatus::Failed, RunStatus::Succeeded]
    );
    assert!(memory.tokens().is_empty());
    assert!(recorder.kinds().contains(&"cleanup_failed"));
    assert!(
        logs.text()
            .contains("scheduled job failed; its next tick runs as usual")
    );
    let jobs = scheduler.jobs().await.unwrap();
    assert_eq!(
        jobs[0].last_run.as_ref().unwrap().status,
        RunStatus::Succeeded
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_running_job_at_a_batch_boundary() {
    let start = march(2, 0, 59);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let memory = Arc::new(MemoryStore::new());
    memory.insert(expired_tokens(10, start));
    let store = Arc::new(ObservedStore::new(memory.clone()));
    let shutdown = CancellationToken::new();
    let on_batch = shutdown.clone();
    store.after_batch(move |n| {
        if n == 2 {
            on_batch.cancel();
        }
    });
    let service = TokenCleanupService::builder(store.clone())
        .clock(clock)
        .build()
        .unwrap();
    let scheduler = CronScheduler::builder(service)
        .without_defaults()
        .job(JobSpec::new(
            "small_batches",
            "0 * * * *",
            JobAction::Cleanup(CleanupRequest::all_types().batch_size(2)),
        ))
        .build()
        .unwrap();

    // `run` returns only once the job has stopped.
    scheduler.run(shutdown).await.unwrap();

    let runs = all_runs(store.as_ref()).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Cancelled);
    assert_eq!(runs[0].progress.batches, 2);
    assert_eq!(runs[0].progress.total_cleaned, 4);
    assert_eq!(memory.tokens().len(), 6);
    let jobs = scheduler.jobs().await.unwrap();
    assert_eq!(
        jobs[0].last_run.as_ref().unwrap().status,
        RunStatus::Cancelled
    );
}

#[tokio::test(start_paused = true)]
async fn ticks_missed_during_a_long_run_are_skipped_and_logged() {
    let start = march(2, 0, 59);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let memory = Arc::new(MemoryStore::new());
    memory.insert(expired_tokens(3, start));
    let store = Arc::new(ObservedStore::new(memory.clone()));
    // The first batch fails and is retried 90 minutes later: the 01:00 run ends at 02:30.
    store.fail_next_batches(1);
    let mut retry = RetryPolicy::new(2, Duration::from_secs(90 * 60));
    retry.max_backoff = retry.initial_backoff;
    let service = TokenCleanupService::builder(store.clone())
        .clock(clock)
        .retry(retry)
        .build()
        .unwrap();
    let scheduler = CronScheduler::builder(service)
        .without_defaults()
        .job(JobSpec::hourly_cleanup())
        .build()
        .unwrap();
    let (logs, _guard) = Logs::capture();

    run_for(&scheduler, Duration::from_secs(3 * 3600)).await;

    let runs = all_runs(store.as_ref()).await;
    assert_eq!(
        ticks_of(&runs, HOURLY_CLEANUP),
        [march(2, 1, 0), march(2, 3, 0)]
    );
    assert_eq!(runs[0].progress.finished_at, march(2, 2, 30));
    let skipped = logs.warnings_with("the run outlasted later ticks; they are skipped");
    assert_eq!(skipped.len(), 1, "{}", logs.text());
    assert!(skipped[0].contains("skipped=1"), "{}", skipped[0]);
}

#[tokio::test(start_paused = true)]
async fn two_instances_on_one_store_run_each_tick_once() {
    let start = feb(28, 23, 30);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let store = Arc::new(MemoryStore::new());
    store.insert(expired_tokens(5, start));
    let recorder = Recorder::new(clock.clone());
    let a = CronScheduler::builder(service(store.clone(), clock.clone(), recorder.clone()))
        .instance_id("a")
        .build()
        .unwrap();
    let b = CronScheduler::builder(service(store.clone(), clock.clone(), recorder.clone()))
        .instance_id("b")
        .build()
        .unwrap();

    let shutdown = CancellationToken::new();
    let tasks = [a.clone(), b.clone()].map(|s| {
        let c = shutdown.clone();
        tokio::spawn(async move { s.run(c).await })
    });
    tokio::time::sleep(Duration::from_secs(28 * 3600)).await;
    shutdown.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let runs = all_runs(store.as_ref()).await;
    let hourly = ticks_of(&runs, HOURLY_CLEANUP);
    assert_eq!(hourly.len(), 28, "{hourly:?}");
    let mut unique = hourly.clone();
    unique.dedup();
    assert_eq!(unique, hourly, "a tick ran twice");
    assert_eq!(
        ticks_of(&runs, DAILY_CLEANUP),
        [march(1, 2, 0), march(2, 2, 0)]
    );
    assert_eq!(
        recorder
            .kinds()
            .iter()
            .filter(|k| **k == "report_ready")
            .count(),
        1
    );

    // Either instance lists the same last run, whoever ran it.
    let last = |jobs: Vec<token_cleanup_core::JobInfo>| {
        jobs.into_iter()
            .find(|j| j.name == HOURLY_CLEANUP)
            .and_then(|j| j.last_run)
            .unwrap()
    };
    let (from_a, from_b) = (last(a.jobs().await.unwrap()), last(b.jobs().await.unwrap()));
    assert_eq!(from_a.run_id, from_b.run_id);
    assert_eq!(from_a.fired_at, march(2, 3, 0));
}

#[tokio::test(start_paused = true)]
async fn a_tick_whose_lease_is_taken_does_not_run_here() {
    let start = march(2, 0, 59);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let store = Arc::new(MemoryStore::new());
    // Another instance already holds the 01:00 tick.
    assert!(
        store
            .try_acquire_lease(
                "hourly_cleanup@2026-03-02T01:00:00Z",
                "elsewhere",
                Duration::from_secs(7200)
            )
            .await
            .unwrap()
    );
    let scheduler =
        CronScheduler::builder(service(store.clone(), clock.clone(), Recorder::new(clock)))
            .without_defaults()
            .job(JobSpec::hourly_cleanup())
            .build()
            .unwrap();

    run_for(&scheduler, Duration::from_secs(62 * 60)).await;

    let runs = all_runs(store.as_ref()).await;
    assert_eq!(ticks_of(&runs, HOURLY_CLEANUP), [march(2, 2, 0)]);
}

#[tokio::test(start_paused = true)]
async fn per_type_schedules_and_disabled_jobs() {
    let start = march(2, 0, 59);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let store = Arc::new(MemoryStore::new());
    store.insert(expired_tokens(3, start));
    store.insert([Token::new(
        10,
        token_types::MAGIC_LINK,
        start - TimeDelta::hours(1),
    )]);
    let scheduler =
        CronScheduler::builder(service(store.clone(), clock.clone(), Recorder::new(clock)))
            .enable(HOURLY_CLEANUP, false)
            .enable(DAILY_CLEANUP, false)
            .enable(WEEKLY_REPORT, false)
            .cleanup_type(token_types::MAGIC_LINK, "*/15 * * * *")
            .build()
            .unwrap();

    run_for(&scheduler, Duration::from_secs(32 * 60)).await;

    let runs = all_runs(store.as_ref()).await;
    assert_eq!(
        ticks_of(&runs, "cleanup:magic_link"),
        [march(2, 1, 0), march(2, 1, 15), march(2, 1, 30)]
    );
    assert!(
        runs.iter()
            .all(|r| r.token_types == [token_types::MAGIC_LINK])
    );
    // Password-reset tokens are left: their jobs are disabled.
    assert_eq!(store.tokens().len(), 3);
    let jobs = scheduler.jobs().await.unwrap();
    for job in &jobs {
        if job.name == "cleanup:magic_link" {
            assert!(job.enabled);
            assert_eq!(job.next_run, Some(march(2, 1, 45)));
        } else {
            assert!(!job.enabled);
            assert_eq!(job.next_run, None);
            assert_eq!(job.last_run, None);
        }
    }
}

#[tokio::test]
async fn configuration_mistakes_are_errors_of_build() {
    let store = Arc::new(MemoryStore::new());
    let plain = TokenCleanupService::builder(store.clone()).build().unwrap();
    let registered = TokenCleanupService::builder(store.clone())
        .token_types(["session_link"])
        .build()
        .unwrap();

    let err = CronScheduler::builder(plain.clone())
        .schedule(DAILY_CLEANUP, "0 25 * * *")
        .build()
        .unwrap_err();
    match &err {
        Error::InvalidCron {
            job, expression, ..
        } => {
            assert_eq!(
                (job.as_str(), expression.as_str()),
                (DAILY_CLEANUP, "0 25 * * *")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(DAILY_CLEANUP));
    assert!(err.is_invalid_input());
    // Seconds are not part of a standard expression; a disabled job is checked too.
    assert!(matches!(
        CronScheduler::builder(plain.clone())
            .schedule(WEEKLY_REPORT, "0 0 3 * * 0")
            .enable(WEEKLY_REPORT, false)
            .build(),
        Err(Error::InvalidCron { job, .. }) if job == WEEKLY_REPORT
    ));

    // Unknown token types in a per-type schedule.
    assert!(matches!(
        CronScheduler::builder(plain.clone()).cleanup_type("sesion_link", "0 * * * *").build(),
        Err(Error::UnknownTokenType { token_type }) if token_type == "sesion_link"
    ));
    assert!(matches!(
        CronScheduler::builder(registered.clone())
            .cleanup_type(token_types::INVITE, "0 * * * *")
            .build(),
        Err(Error::UnknownTokenType { .. })
    ));
    assert!(
        CronScheduler::builder(registered)
            .cleanup_type("session_link", "0 * * * *")
            .build()
            .is_ok()
    );
    assert!(
        CronScheduler::builder(plain.clone())
            .cleanup_type(token_types::INVITE, "@hourly")
            .build()
            .is_ok()
    );

    // Unknown job names, bad cleanup parameters.
    assert!(matches!(
        CronScheduler::builder(plain.clone())
            .enable("hourly", false)
            .build(),
        Err(Error::InvalidArgument { name: "job", .. })
    ));
    assert!(matches!(
        CronScheduler::builder(plain.clone())
            .job(JobSpec::new(
                "big",
                "0 * * * *",
                JobAction::Cleanup(CleanupRequest::all_types().batch_size(0))
            ))
            .build(),
        Err(Error::InvalidBatchSize { .. })
    ));
}

#[tokio::test]
async fn one_scheduler_runs_once_at_a_time() {
    let service = TokenCleanupService::builder(Arc::new(MemoryStore::new()))
        .build()
        .unwrap();
    let scheduler = CronScheduler::builder(service).build().unwrap();
    let shutdown = CancellationToken::new();
    let first = tokio::spawn({
        let (s, c) = (scheduler.clone(), shutdown.clone());
        async move { s.run(c).await }
    });
    tokio::task::yield_now().await;
    let second = scheduler.run(shutdown.clone()).await;
    assert!(matches!(
        second,
        Err(Error::InvalidArgument {
            name: "scheduler",
            ..
        })
    ));
    shutdown.cancel();
    first.await.unwrap().unwrap();
    // Once stopped it can run again.
    let again = CancellationToken::new();
    again.cancel();
    scheduler.run(again).await.unwrap();
}
