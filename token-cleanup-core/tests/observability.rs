//! Metrics, notifications and health alerts of a run; token values never in them.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::TimeDelta;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use token_cleanup_core::test_util::suite::{mixed_tokens, service, t0};
use token_cleanup_core::{
    CleanupRequest, Error, ManualClock, MemoryStore, Notification, Notifier, Thresholds, Token,
    TokenCleanupService, metrics as m,
};

#[test]
fn metrics_count_deleted_tokens_runs_and_batches() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let store = Arc::new(MemoryStore::new());
            store.insert(mixed_tokens(4));
            let svc = service(store);
            svc.cleanup_expired_tokens(CleanupRequest::all_types().batch_size(3))
                .await
                .unwrap();
            svc.statistics(1).await.unwrap();
        })
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, label: (&str, &str)| {
        snapshot
            .iter()
            .filter(|(k, ..)| {
                k.key().name() == name
                    && k.key()
                        .labels()
                        .any(|l| l.key() == label.0 && l.value() == label.1)
            })
            .map(|(.., v)| v)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        find(m::TOKENS_DELETED, ("token_type", "invite")),
        [&DebugValue::Counter(4)]
    );
    assert_eq!(
        find(m::RUNS, ("status", "succeeded")),
        [&DebugValue::Counter(1)]
    );
    match find(m::BATCH_DURATION, ("token_type", "invite"))[..] {
        [DebugValue::Histogram(values)] => assert_eq!(values.len(), 2, "batches of 3 and 1"),
        ref other => panic!("{other:?}"),
    }
    match find(m::EXPIRED_BACKLOG, ("token_type", "invite"))[..] {
        [DebugValue::Gauge(v)] => assert_eq!(v.0, 0.0),
        ref other => panic!("{other:?}"),
    }
}

#[derive(Debug, Default)]
struct Recording {
    seen: Mutex<Vec<Notification>>,
    fail: bool,
}

#[async_trait]
impl Notifier for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    async fn notify(&self, n: &Notification) -> token_cleanup_core::Result<()> {
        self.seen.lock().unwrap().push(n.clone());
        if self.fail {
            Err(Error::Notify {
                notifier: "recording".into(),
                source: "peer down".into(),
            })
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn notifications_follow_thresholds_and_never_fail_a_run() {
    let store = Arc::new(MemoryStore::new());
    store.insert(mixed_tokens(3));
    let notifier = Arc::new(Recording::default());
    let mut thresholds = Thresholds::default();
    thresholds.tokens_cleaned_above = 5;
    let svc = TokenCleanupService::builder(store.clone())
        .clock(Arc::new(ManualClock::new(t0())))
        .notifier(notifier.clone())
        .thresholds(thresholds)
        .build()
        .unwrap();
    // 3 tokens: below the threshold, not sent.
    svc.cleanup_expired_tokens(CleanupRequest::new(["invite"]))
        .await
        .unwrap();
    assert!(notifier.seen.lock().unwrap().is_empty());
    // 9 tokens: above, sent.
    svc.cleanup_expired_tokens(CleanupRequest::all_types())
        .await
        .unwrap();
    assert!(matches!(
        &notifier.seen.lock().unwrap()[..],
        [Notification::CleanupCompleted(r)] if r.total_cleaned == 9
    ));

    // A failing notifier does not fail the run; a failed run is always notified.
    let failing = Arc::new(Recording {
        fail: true,
        ..Recording::default()
    });
    store.insert([Token::new(500, "invite", t0() - TimeDelta::hours(1))]);
    store.fail_deleting(500);
    let svc = TokenCleanupService::builder(store.clone())
        .clock(Arc::new(ManualClock::new(t0())))
        .retry(token_cleanup_core::RetryPolicy::none())
        .notifier(failing.clone())
        .build()
        .unwrap();
    assert!(
        svc.cleanup_expired_tokens(CleanupRequest::new(["invite"]))
            .await
            .is_err()
    );
    store.clear_failures();
    let report = svc
        .cleanup_expired_tokens(CleanupRequest::new(["invite"]))
        .await
        .unwrap();
    assert_eq!(report.total_cleaned, 1);
    let seen = failing.seen.lock().unwrap();
    assert!(
        matches!(&seen[..], [Notification::CleanupFailed { .. }]),
        "{seen:?}"
    );
    let text = seen[0].render_text() + &seen[0].render_html();
    assert!(text.contains("injected failure") && !text.contains("hash-"));
}

#[tokio::test]
async fn health_alerts_go_out_once_per_change_not_per_poll() {
    let store = Arc::new(MemoryStore::new());
    store.insert(mixed_tokens(3)); // 12 expired
    let notifier = Arc::new(Recording::default());
    let svc = TokenCleanupService::builder(store.clone())
        .clock(Arc::new(ManualClock::new(t0())))
        .notifier(notifier.clone())
        .health(
            token_cleanup_core::HealthConfig::default()
                .backlog_threshold(5)
                .max_scheduled_run_age(None),
        )
        .build()
        .unwrap();
    let alerts = || {
        notifier
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|n| matches!(n, Notification::HealthAlert(_)))
            .count()
    };
    svc.health_check().await;
    svc.health_check().await;
    svc.health_check().await;
    assert_eq!(alerts(), 1, "three degraded polls, one alert");
    svc.cleanup_expired_tokens(CleanupRequest::all_types())
        .await
        .unwrap();
    svc.health_check().await; // healthy again: no alert
    store.insert([Token::new(900, "invite", t0() - TimeDelta::hours(1))]);
    store.insert((901..910).map(|id| Token::new(id, "invite", t0() - TimeDelta::hours(1))));
    svc.health_check().await; // degraded again: a new alert
    assert_eq!(alerts(), 2);
}
