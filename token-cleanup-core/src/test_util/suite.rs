//! The store conformance suite. Each function takes a fresh, migrated, empty store and
//! panics on a violation. [`store_conformance_tests!`](crate::store_conformance_tests)
//! turns them into `#[tokio::test]`s.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tokio_util::sync::CancellationToken;

use super::{ObservedStore, TestStore};
use crate::{
    BatchFilter, CleanupReport, CleanupRequest, Criterion, Error, GracePolicy, HealthConfig,
    HealthStatus, ManualClock, RetryPolicy, RunQuery, RunStatus, StopReason, Token,
    TokenCleanupService, TokenStore, TokenTable,
    token_types::{EMAIL_VERIFICATION, INVITE, MAGIC_LINK, PASSWORD_RESET},
};

/// The partial report of a run that failed on a batch timeout of `store` (its
/// [`TokenStore::kind`]).
pub fn timed_out<'a>(err: &'a Error, store: &str) -> &'a CleanupReport {
    let Error::RunFailed {
        source, partial, ..
    } = err
    else {
        panic!("expected RunFailed, got {err:?}");
    };
    assert!(
        matches!(**source, Error::Timeout { store: s, .. } if s == store),
        "{source:?}"
    );
    partial
}

/// The instant every suite test runs at: 2026-06-15 12:00:00.5 UTC (a sub-second cutoff).
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap() + TimeDelta::milliseconds(500)
}

/// A service on `store` at [`t0`], with fast retries and progress saved after every batch.
pub fn service(store: Arc<dyn TokenStore>) -> TokenCleanupService {
    TokenCleanupService::builder(store)
        .clock(Arc::new(ManualClock::new(t0())))
        .retry(RetryPolicy::new(3, Duration::from_millis(1)))
        .progress_interval(Duration::ZERO)
        .build()
        .expect("valid configuration")
}

/// `per_type` expired and `per_type` active tokens for each of the four well-known
/// types, ids from 1. Expired ones expire 1..=per_type minutes before [`t0`].
pub fn mixed_tokens(per_type: i64) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut id = 0;
    for ty in [EMAIL_VERIFICATION, PASSWORD_RESET, MAGIC_LINK, INVITE] {
        for k in 1..=per_type {
            id += 1;
            tokens.push(Token::new(id, ty, t0() - TimeDelta::minutes(k)));
            id += 1;
            tokens.push(Token::new(id, ty, t0() + TimeDelta::minutes(k)));
        }
    }
    tokens
}

async fn ids<S: TestStore>(store: &S) -> BTreeSet<i64> {
    store
        .token_ids()
        .await
        .expect("list ids")
        .into_iter()
        .collect()
}

fn expected_left(tokens: &[Token], gone: impl Fn(&Token) -> bool) -> BTreeSet<i64> {
    tokens.iter().filter(|t| !gone(t)).map(|t| t.id).collect()
}

/// Only expired tokens of the requested types are deleted; counts are per type.
pub async fn only_expired_of_requested_types_go<S: TestStore>(store: Arc<S>) {
    let tokens = mixed_tokens(10);
    store.insert_tokens(&tokens).await.unwrap();
    let types = [MAGIC_LINK, PASSWORD_RESET];
    let filters: Vec<BatchFilter> = types
        .iter()
        .map(|t| BatchFilter::new(*t, Criterion::Expired { before: t0() }))
        .collect();
    let sweeps = store.plan_sweep(&filters).await.unwrap().is_some();
    let observed = Arc::new(ObservedStore::new(store.clone()));
    let report = service(observed.clone())
        .cleanup_expired_tokens(CleanupRequest::new(types).batch_size(3))
        .await
        .unwrap();
    assert_eq!(report.total_cleaned, 20);
    assert_eq!(report.by_type[PASSWORD_RESET], 10);
    assert_eq!(report.by_type[MAGIC_LINK], 10);
    let batches = observed.batches();
    assert_eq!(report.batches as usize, batches.len());
    assert!(
        batches
            .iter()
            .all(|&(limit, deleted)| limit == 3 && deleted <= 3),
        "{batches:?}"
    );
    match (store.fills_batches(), sweeps) {
        (true, true) => assert_eq!(
            report.batches, 7,
            "both types together: 6 batches of 3, then 2"
        ),
        (true, false) => assert_eq!(report.batches, 8, "4 batches of 3,3,3,1 per type"),
        (false, true) => assert!(report.batches >= 7, "{batches:?}"),
        (false, false) => assert!(report.batches >= 8, "{batches:?}"),
    }
    let want = expected_left(&tokens, |t| {
        t.expires_at < t0() && (t.token_type == PASSWORD_RESET || t.token_type == MAGIC_LINK)
    });
    assert_eq!(ids(&*store).await, want);
}

/// The precision at which the store keeps instants: what a stored expiry becomes.
fn stored(store: &impl TestStore, at: DateTime<Utc>) -> DateTime<Utc> {
    let p = store.time_precision().num_nanoseconds().unwrap_or(1).max(1);
    let nanos = at.timestamp_nanos_opt().expect("in range");
    DateTime::from_timestamp_nanos(nanos - nanos.rem_euclid(p))
}

/// Nothing with expiry >= cutoff goes: second and sub-second boundaries, a token expiring
/// later the same day, and the grace period.
pub async fn cutoff_boundaries_are_exact<S: TestStore>(store: Arc<S>) {
    let cutoff = t0();
    let whole = Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap();
    let offsets_ms = [
        -86_400_000,
        -3_600_000,
        -1000,
        -1,
        0,
        1,
        499,
        500,
        501,
        999,
        1000,
        1500,
        3_600_000,
        11 * 3_600_000,  // 23:00 the same day
        -11 * 3_600_000, // 01:00 the same day
    ];
    let tokens: Vec<Token> = offsets_ms
        .iter()
        .enumerate()
        .map(|(i, ms)| Token::new(i as i64 + 1, INVITE, whole + TimeDelta::milliseconds(*ms)))
        .collect();
    store.insert_tokens(&tokens).await.unwrap();
    let report = service(store.clone())
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(2))
        .await
        .unwrap();
    let want = expected_left(&tokens, |t| stored(&*store, t.expires_at) < cutoff);
    assert_eq!(ids(&*store).await, want, "cutoff {cutoff}");
    assert_eq!(report.total_cleaned as usize, tokens.len() - want.len());
    assert!(
        tokens
            .iter()
            .filter(|t| stored(&*store, t.expires_at) >= cutoff)
            .all(|t| want.contains(&t.id)),
        "a token expiring at or after the cutoff was deleted"
    );
    assert!(
        want.contains(&14),
        "the token expiring later the same day was deleted"
    );

    // With one hour of grace, tokens expired less than an hour ago stay.
    let store2 = store.clone();
    let extra: Vec<Token> = [-7200, -3601, -3600, -3599, -10]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Token::new(
                100 + i as i64,
                EMAIL_VERIFICATION,
                cutoff + TimeDelta::seconds(*s),
            )
        })
        .collect();
    store2.insert_tokens(&extra).await.unwrap();
    let graced = TokenCleanupService::builder(store2.clone())
        .clock(Arc::new(ManualClock::new(cutoff)))
        .grace(GracePolicy::default().expired(EMAIL_VERIFICATION, TimeDelta::hours(1)))
        .build()
        .unwrap();
    let report = graced
        .cleanup_expired_tokens(CleanupRequest::new([EMAIL_VERIFICATION]))
        .await
        .unwrap();
    let grace_cutoff = cutoff - TimeDelta::hours(1);
    assert_eq!(report.cutoffs[EMAIL_VERIFICATION], grace_cutoff);
    let left = ids(&*store2).await;
    for t in &extra {
        assert_eq!(
            left.contains(&t.id),
            stored(&*store2, t.expires_at) >= grace_cutoff,
            "token expiring at {}",
            t.expires_at
        );
    }
}

/// A dry run deletes nothing and counts exactly what the real run then deletes.
pub async fn dry_run_counts_what_a_real_run_deletes<S: TestStore>(store: Arc<S>) {
    let tokens = mixed_tokens(7);
    store.insert_tokens(&tokens).await.unwrap();
    let before = ids(&*store).await;
    let svc = service(store.clone());
    let request = CleanupRequest::new([EMAIL_VERIFICATION, INVITE]).batch_size(5);
    let dry = svc
        .cleanup_expired_tokens(request.clone().dry_run(true))
        .await
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.batches, 0);
    assert_eq!(ids(&*store).await, before, "a dry run deleted rows");
    let real = svc.cleanup_expired_tokens(request).await.unwrap();
    assert_eq!(dry.total_cleaned, 14);
    assert_eq!(dry.by_type, real.by_type);
    assert_eq!(dry.total_cleaned, real.total_cleaned);
}

/// Inserts `tokens`, cleans all types in batches of 4 and checks that no batch asked for
/// or deleted more than 4 rows. Returns the report and each batch's (limit, deleted).
async fn clean_in_batches_of_4<S: TestStore>(
    store: &Arc<S>,
    tokens: &[Token],
) -> (CleanupReport, Vec<(u32, u64)>) {
    store.insert_tokens(tokens).await.unwrap();
    let observed = Arc::new(ObservedStore::new(store.clone()));
    let report = service(observed.clone())
        .cleanup_expired_tokens(CleanupRequest::all_types().batch_size(4))
        .await
        .unwrap();
    let batches = observed.batches();
    assert!(
        batches
            .iter()
            .all(|(limit, deleted)| *limit <= 4 && *deleted <= u64::from(*limit)),
        "{batches:?}"
    );
    (report, batches)
}

/// No batch deletes more than the batch size; the report's batch count is exact.
pub async fn batches_never_exceed_batch_size<S: TestStore>(store: Arc<S>) {
    let tokens = mixed_tokens(25);
    let (report, batches) = clean_in_batches_of_4(&store, &tokens).await;
    assert_eq!(report.batches as usize, batches.len());
    assert_eq!(batches.iter().map(|(_, d)| d).sum::<u64>(), 100);
    assert_eq!(report.total_cleaned, 100);
}

/// Many tokens sharing one expiry instant never push a batch over its size: a run of
/// equal keys that crosses a batch boundary, and one longer than a whole batch.
pub async fn equal_expiries_never_overflow_a_batch<S: TestStore>(store: Arc<S>) {
    let mut tokens = Vec::new();
    let mut id = 0;
    let mut push = |ty: &str, expires_at: DateTime<Utc>, n: usize| {
        for _ in 0..n {
            id += 1;
            tokens.push(Token::new(id, ty, expires_at));
        }
    };
    // Batch size 4: 3 then 2 equal keys cross the first boundary; 11 equal keys fill
    // more than two whole batches; 1 lone key after them; then active ones.
    push(INVITE, t0() - TimeDelta::hours(3), 3);
    push(INVITE, t0() - TimeDelta::hours(2), 2);
    push(INVITE, t0() - TimeDelta::hours(1), 11);
    push(INVITE, t0() - TimeDelta::minutes(1), 1);
    push(INVITE, t0() + TimeDelta::minutes(1), 3);
    push(INVITE, t0() + TimeDelta::hours(1), 2);
    push(MAGIC_LINK, t0() - TimeDelta::hours(1), 9);
    let (report, _) = clean_in_batches_of_4(&store, &tokens).await;
    assert_eq!(report.total_cleaned, 17 + 9);
    assert_eq!(report.by_type.get(INVITE).copied(), Some(17));
    assert_eq!(report.by_type.get(MAGIC_LINK).copied(), Some(9));
    assert_eq!(ids(&*store).await, (18..=22).collect::<BTreeSet<i64>>());
}

/// Reported counts equal the rows that left the table; a second run deletes nothing.
pub async fn counts_match_rows_removed_and_second_run_is_empty<S: TestStore>(store: Arc<S>) {
    let tokens = mixed_tokens(13);
    store.insert_tokens(&tokens).await.unwrap();
    let before = ids(&*store).await.len() as u64;
    let svc = service(store.clone());
    let report = svc
        .cleanup_expired_tokens(CleanupRequest::all_types().batch_size(6))
        .await
        .unwrap();
    let after = ids(&*store).await.len() as u64;
    assert_eq!(before - after, report.total_cleaned);
    assert_eq!(report.by_type.values().sum::<u64>(), report.total_cleaned);
    assert_eq!(report.by_type.len(), 4);
    let again = svc
        .cleanup_expired_tokens(CleanupRequest::all_types().batch_size(6))
        .await
        .unwrap();
    assert_eq!(again.total_cleaned, 0);
    assert_eq!(ids(&*store).await.len() as u64, after);
}

/// `max_rows` stops the run at a batch boundary; the next run continues.
pub async fn max_rows_stops_at_a_batch_boundary<S: TestStore>(store: Arc<S>) {
    let tokens = mixed_tokens(50);
    store.insert_tokens(&tokens).await.unwrap();
    let observed = Arc::new(ObservedStore::new(store.clone()));
    let svc = service(observed.clone());
    let report = svc
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(10).max_rows(25))
        .await
        .unwrap();
    assert_eq!(report.total_cleaned, 25);
    assert_eq!(report.stopped, Some(StopReason::MaxRows));
    let batches = observed.batches();
    if store.fills_batches() {
        assert_eq!(batches, [(10, 10), (10, 10), (5, 5)]);
    }
    // Each batch's limit is what is left of `max_rows` (at most the batch size), no
    // batch deletes more, and the run stops once nothing is left.
    let mut left = 25_u64;
    for &(limit, deleted) in &batches {
        assert_eq!(u64::from(limit), left.min(10), "{batches:?}");
        assert!(deleted <= u64::from(limit), "{batches:?}");
        left -= deleted;
    }
    assert_eq!(left, 0, "{batches:?}");
    let rest = svc
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(10))
        .await
        .unwrap();
    assert_eq!(rest.total_cleaned, 25);
    assert_eq!(rest.stopped, None);
}

/// Cancellation stops the run at a batch boundary and records it as cancelled.
pub async fn cancellation_stops_at_a_batch_boundary<S: TestStore>(store: Arc<S>) {
    let tokens = mixed_tokens(40);
    store.insert_tokens(&tokens).await.unwrap();
    let observed = Arc::new(ObservedStore::new(store.clone()));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    observed.after_batch(move |n| {
        if n == 3 {
            trigger.cancel();
        }
    });
    let svc = service(observed.clone());
    let report = svc
        .cleanup_with_cancel(CleanupRequest::new([MAGIC_LINK]).batch_size(7), cancel)
        .await
        .unwrap();
    assert_eq!(report.stopped, Some(StopReason::Cancelled));
    assert_eq!(report.batches, 3);
    let batches = observed.batches();
    assert_eq!(
        batches.len(),
        3,
        "no batch after the cancellation: {batches:?}"
    );
    let committed: u64 = batches.iter().map(|&(_, deleted)| deleted).sum();
    assert!(
        batches
            .iter()
            .all(|&(limit, deleted)| limit == 7 && deleted <= 7),
        "{batches:?}"
    );
    if store.fills_batches() {
        assert_eq!(committed, 21);
    }
    assert_eq!(report.total_cleaned, committed);
    let left = ids(&*store).await;
    assert_eq!(left.len() as u64, tokens.len() as u64 - committed);
    let record = svc.run(report.run_id).await.unwrap().expect("run recorded");
    assert_eq!(record.status, RunStatus::Cancelled);
    assert_eq!(record.progress.total_cleaned, committed);

    // A zero time budget stops before the first batch.
    let report = svc
        .cleanup_expired_tokens(CleanupRequest::new([MAGIC_LINK]).max_duration(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        (report.total_cleaned, report.stopped),
        (0, Some(StopReason::MaxDuration))
    );
}

/// A batch failing inside the database rolls back; the run fails with exact partial
/// counts in the error and the run record; the next run finishes the job.
pub async fn failing_batch_rolls_back_and_next_run_finishes<S: TestStore>(store: Arc<S>) {
    let tokens = mixed_tokens(30);
    store.insert_tokens(&tokens).await.unwrap();
    // Expired invites, oldest first: the 15th oldest falls in the second batch of 10.
    let mut expired: Vec<&Token> = tokens
        .iter()
        .filter(|t| t.token_type == INVITE && t.expires_at < t0())
        .collect();
    expired.sort_by_key(|t| t.expires_at);
    store.fail_deleting(expired[14].id).await.unwrap();

    let observed = Arc::new(ObservedStore::new(store.clone()));
    let svc = service(observed.clone());
    let err = svc
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(10))
        .await
        .unwrap_err();
    let Error::RunFailed {
        partial, attempts, ..
    } = &err
    else {
        panic!("expected RunFailed, got {err:?}");
    };
    assert_eq!(*attempts, 3);
    assert_eq!(partial.retries, 2);
    // Only committed batches count: the observed store records a batch once it commits.
    let batches = observed.batches();
    let committed: u64 = batches.iter().map(|&(_, deleted)| deleted).sum();
    if store.fills_batches() {
        assert_eq!((committed, batches.len()), (10, 1));
    }
    assert!(
        committed < 15,
        "the batch holding the 15th oldest never committed"
    );
    assert_eq!(partial.total_cleaned, committed);
    assert_eq!(partial.batches as usize, batches.len());
    let record = svc
        .run(partial.run_id)
        .await
        .unwrap()
        .expect("run recorded");
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.progress.total_cleaned, committed);
    assert!(record.error.is_some());
    // Only the committed batches' rows are gone, all of them expired invites; the
    // failed batch rolled back whole, its failing token with it.
    let left = ids(&*store).await;
    assert_eq!(
        left.len() as u64,
        tokens.len() as u64 - committed,
        "the failed batch rolled back"
    );
    assert!(left.contains(&expired[14].id));
    assert!(left.is_superset(&expected_left(&tokens, |t| {
        t.token_type == INVITE && t.expires_at < t0()
    })));

    store.clear_failures().await.unwrap();
    let report = svc
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(10))
        .await
        .unwrap();
    assert_eq!(report.total_cleaned, expired.len() as u64 - committed);
    let want = expected_left(&tokens, |t| t.token_type == INVITE && t.expires_at < t0());
    assert_eq!(ids(&*store).await, want);
}

/// A transient failure is retried with backoff and the run succeeds.
pub async fn transient_failures_are_retried<S: TestStore>(store: Arc<S>) {
    store.insert_tokens(&mixed_tokens(5)).await.unwrap();
    let observed = Arc::new(ObservedStore::new(store.clone()));
    observed.fail_next_batches(2);
    let report = service(observed.clone())
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(2))
        .await
        .unwrap();
    assert_eq!(report.retries, 2);
    assert_eq!(report.total_cleaned, 5);
}

/// Used tokens past their grace go only with `include_used`; dry run counts match.
pub async fn used_tokens_past_grace<S: TestStore>(store: Arc<S>) {
    if store.table().used_column().is_none() {
        return;
    }
    let now = t0();
    let tokens = vec![
        Token::new(1, PASSWORD_RESET, now + TimeDelta::hours(5)).used(now - TimeDelta::hours(2)),
        Token::new(2, PASSWORD_RESET, now + TimeDelta::hours(5)).used(now - TimeDelta::minutes(30)),
        Token::new(3, PASSWORD_RESET, now + TimeDelta::hours(5)),
        Token::new(4, PASSWORD_RESET, now - TimeDelta::hours(1)).used(now - TimeDelta::hours(3)),
        Token::new(5, PASSWORD_RESET, now - TimeDelta::hours(1)),
    ];
    store.insert_tokens(&tokens).await.unwrap();
    let svc = TokenCleanupService::builder(store.clone())
        .clock(Arc::new(ManualClock::new(now)))
        .grace(GracePolicy::default().used_default(TimeDelta::hours(1)))
        .build()
        .unwrap();
    let plain = svc
        .cleanup_expired_tokens(CleanupRequest::new([PASSWORD_RESET]).dry_run(true))
        .await
        .unwrap();
    assert_eq!(plain.total_cleaned, 2);
    let request = CleanupRequest::new([PASSWORD_RESET]).include_used(true);
    let dry = svc
        .cleanup_expired_tokens(request.clone().dry_run(true))
        .await
        .unwrap();
    let real = svc.cleanup_expired_tokens(request).await.unwrap();
    assert_eq!(dry.total_cleaned, 3);
    assert_eq!(real.total_cleaned, 3);
    assert_eq!(ids(&*store).await, BTreeSet::from([2, 3]));
}

/// Bad input is a distinct typed error and touches nothing.
pub async fn invalid_requests_touch_nothing<S: TestStore>(store: Arc<S>) {
    let tokens = mixed_tokens(3);
    store.insert_tokens(&tokens).await.unwrap();
    let before = ids(&*store).await;
    let svc = service(store.clone());
    let registered = TokenCleanupService::builder(store.clone())
        .token_types([INVITE, MAGIC_LINK])
        .build()
        .unwrap();
    let check = |r: crate::Result<crate::CleanupReport>| r.expect_err("must be refused");
    assert!(matches!(
        check(
            svc.cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(0))
                .await
        ),
        Error::InvalidBatchSize { batch_size: 0 }
    ));
    assert!(matches!(
        check(
            svc.cleanup_expired_tokens(CleanupRequest::new([INVITE]).batch_size(50_001))
                .await
        ),
        Error::InvalidBatchSize { batch_size: 50_001 }
    ));
    assert!(matches!(
        check(
            svc.cleanup_expired_tokens(CleanupRequest::new(Vec::<String>::new()))
                .await
        ),
        Error::NoTokenTypes
    ));
    assert!(matches!(
        check(registered.cleanup_expired_tokens(CleanupRequest::new([INVITE, "session"])).await),
        Error::UnknownTokenType { token_type } if token_type == "session"
    ));
    assert!(matches!(
        TokenCleanupService::builder(store.clone())
            .grace(GracePolicy::default().expired(INVITE, TimeDelta::seconds(-1)))
            .build(),
        Err(Error::NegativeGrace { token_type }) if token_type == INVITE
    ));
    assert!(matches!(
        TokenTable::builder()
            .table("tokens; DROP TABLE users")
            .build(),
        Err(Error::InvalidIdentifier { .. })
    ));
    assert_eq!(ids(&*store).await, before);
    assert!(
        svc.run_store()
            .runs(&RunQuery::default())
            .await
            .unwrap()
            .is_empty(),
        "refused requests must not be recorded as runs"
    );
}

/// Per-type counts, statistics history and the recommendation.
pub async fn statistics_are_exact<S: TestStore>(store: Arc<S>) {
    let now = t0();
    let mut tokens = mixed_tokens(4);
    if store.table().used_column().is_some() {
        tokens.push(
            Token::new(900, INVITE, now + TimeDelta::hours(1)).used(now - TimeDelta::hours(1)),
        );
    }
    store.insert_tokens(&tokens).await.unwrap();
    let svc = service(store.clone());
    let stats = svc.statistics(30).await.unwrap();
    assert_eq!(stats.token_types.len(), 4);
    let invite = stats
        .token_types
        .iter()
        .find(|t| t.counts.token_type == INVITE)
        .unwrap();
    let used = u64::from(store.table().used_column().is_some());
    assert_eq!(invite.counts.total, 8 + used);
    assert_eq!(invite.counts.expired, 4);
    assert_eq!(invite.counts.active, 4);
    assert_eq!(invite.counts.used, used);
    assert_eq!(
        invite.counts.oldest_expired.map(|o| stored(&*store, o)),
        Some(stored(&*store, now - TimeDelta::minutes(4)))
    );
    assert_eq!(stats.totals.expired, 16);
    assert_eq!(stats.history.runs, 0);

    svc.cleanup_expired_tokens(CleanupRequest::all_types())
        .await
        .unwrap();
    let stats = svc.statistics(1).await.unwrap();
    assert_eq!(stats.totals.expired, 0);
    assert_eq!(stats.history.runs, 1);
    assert_eq!(stats.history.succeeded, 1);
    assert_eq!(stats.history.tokens_cleaned, 16);
    assert!(stats.recommendation.suggested_batch_size >= 100);
    assert!(matches!(
        svc.statistics(0).await,
        Err(Error::InvalidArgument { name: "days", .. })
    ));
    assert!(matches!(
        svc.statistics(366).await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// Run records round-trip and list newest first with filters.
pub async fn run_records_round_trip<S: TestStore>(store: Arc<S>) {
    store.insert_tokens(&mixed_tokens(2)).await.unwrap();
    let svc = service(store.clone());
    let first = svc
        .cleanup_expired_tokens(CleanupRequest::new([INVITE]).requested_by("alice"))
        .await
        .unwrap();
    let second = svc
        .cleanup_expired_tokens(CleanupRequest::new([MAGIC_LINK]).dry_run(true))
        .await
        .unwrap();
    let record = svc.run(first.run_id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Succeeded);
    assert_eq!(record.requested_by.as_deref(), Some("alice"));
    assert_eq!(record.progress, first);
    assert_eq!(record.token_types, [INVITE]);
    let runs = svc.recent_runs(10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [second.run_id, first.run_id]
    );
    let latest = svc.recent_runs(1).await.unwrap();
    assert_eq!(latest[0].id, second.run_id);
    let later = store
        .runs(&RunQuery::between(
            t0() + TimeDelta::seconds(1),
            t0() + TimeDelta::days(1),
        ))
        .await
        .unwrap();
    assert!(later.is_empty());
    assert!(svc.run(uuid::Uuid::now_v7()).await.unwrap().is_none());
    let report = svc
        .generate_report(crate::ReportPeriod::Daily)
        .await
        .unwrap();
    assert_eq!(report.runs.runs, 2);
    assert_eq!(report.manual.runs, 2);
    assert_eq!(
        report.runs.tokens_cleaned, 2,
        "dry runs do not count as cleaned"
    );
}

/// A lease has one holder at a time, can be renewed by its holder, released, and expires.
pub async fn leases_are_exclusive<S: TestStore>(store: Arc<S>) {
    let ttl = Duration::from_secs(60);
    assert!(store.try_acquire_lease("hourly@1", "a", ttl).await.unwrap());
    assert!(!store.try_acquire_lease("hourly@1", "b", ttl).await.unwrap());
    assert!(
        store.try_acquire_lease("hourly@1", "a", ttl).await.unwrap(),
        "renewal"
    );
    assert!(
        store.try_acquire_lease("hourly@2", "b", ttl).await.unwrap(),
        "other name"
    );
    store.release_lease("hourly@1", "b").await.unwrap();
    assert!(
        !store.try_acquire_lease("hourly@1", "b", ttl).await.unwrap(),
        "not b's to release"
    );
    store.release_lease("hourly@1", "a").await.unwrap();
    assert!(store.try_acquire_lease("hourly@1", "b", ttl).await.unwrap());
    assert!(
        store
            .try_acquire_lease("short", "a", Duration::from_millis(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        store.try_acquire_lease("short", "b", ttl).await.unwrap(),
        "expired lease"
    );
}

/// Health: reachable database, backlog against the threshold, no scheduled run yet.
pub async fn health_reports_backlog<S: TestStore>(store: Arc<S>) {
    store.insert_tokens(&mixed_tokens(3)).await.unwrap();
    let svc = TokenCleanupService::builder(store.clone())
        .clock(Arc::new(ManualClock::new(t0())))
        .health(
            HealthConfig::default()
                .backlog_threshold(5)
                .max_scheduled_run_age(None),
        )
        .build()
        .unwrap();
    let health = svc.health_check().await;
    assert!(health.database.reachable);
    assert_eq!(health.expired_backlog, Some(12));
    assert_eq!(health.status, HealthStatus::Degraded);
    assert_eq!(health.reasons.len(), 1, "{:?}", health.reasons);
    svc.cleanup_expired_tokens(CleanupRequest::all_types())
        .await
        .unwrap();
    let health = svc.health_check().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{:?}", health.reasons);
}

/// Checks one random case: after a run over `types` at `cutoff` with `batch_size`,
/// exactly the expired tokens of those types are gone (used by the proptests).
pub async fn exactly_expired_of_chosen_types_go<S: TestStore>(
    store: Arc<S>,
    tokens: Vec<Token>,
    types: Vec<String>,
    cutoff: DateTime<Utc>,
    batch_size: u32,
) {
    store.insert_tokens(&tokens).await.unwrap();
    let svc = TokenCleanupService::builder(store.clone())
        .clock(Arc::new(ManualClock::new(cutoff)))
        .build()
        .unwrap();
    let report = svc
        .cleanup_expired_tokens(CleanupRequest::new(types.clone()).batch_size(batch_size))
        .await
        .unwrap();
    let want = expected_left(&tokens, |t| {
        types.contains(&t.token_type) && stored(&*store, t.expires_at) < cutoff
    });
    assert_eq!(ids(&*store).await, want);
    assert_eq!(report.total_cleaned as usize, tokens.len() - want.len());
}

/// Generates one `#[tokio::test]` per suite function for a store factory.
///
/// `$factory` is an expression evaluated once per test that yields a future of
/// `Arc<impl TestStore>`: a fresh, migrated store on its own table or database.
#[macro_export]
macro_rules! store_conformance_tests {
    ($module:ident, $factory:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_tests!($factory;
                only_expired_of_requested_types_go,
                cutoff_boundaries_are_exact,
                dry_run_counts_what_a_real_run_deletes,
                batches_never_exceed_batch_size,
                equal_expiries_never_overflow_a_batch,
                counts_match_rows_removed_and_second_run_is_empty,
                max_rows_stops_at_a_batch_boundary,
                cancellation_stops_at_a_batch_boundary,
                failing_batch_rolls_back_and_next_run_finishes,
                transient_failures_are_retried,
                used_tokens_past_grace,
                invalid_requests_touch_nothing,
                statistics_are_exact,
                run_records_round_trip,
                leases_are_exclusive,
                health_reports_backlog
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let store = $factory.await;
                $crate::test_util::suite::$test(store).await;
            }
        )*
    };
}

/// Sweep planning, for stores that can sweep: `auto`, `always` and `never` are fresh
/// stores built with [`SweepMode::Auto`](crate::SweepMode::Auto), [`Always`](crate::SweepMode::Always)
/// and [`Never`](crate::SweepMode::Never).
///
/// `Auto` sweeps once a fifth of the table is expired and not before; `Always` and `Never`
/// do as they say; a run on a sweeping store deletes the types together (two batches of
/// at most 25 for 40 expired tokens of four types, or, for a store whose sweep batches
/// may be short, at least one batch across types), one that does not goes type by type
/// (four batches), and both leave exactly the active tokens.
pub async fn sweep_modes_are_obeyed<S: TestStore>(auto: Arc<S>, always: Arc<S>, never: Arc<S>) {
    let expired = |id: i64, ty: &str| Token::new(id, ty, t0() - TimeDelta::minutes(id));
    let active = |id: i64, ty: &str| Token::new(id, ty, t0() + TimeDelta::minutes(id));
    let filters = |types: &[&str]| -> Vec<BatchFilter> {
        types
            .iter()
            .map(|t| BatchFilter::new(*t, Criterion::Expired { before: t0() }))
            .collect()
    };
    let all = [EMAIL_VERIFICATION, PASSWORD_RESET, MAGIC_LINK, INVITE];

    // 19 of 100 expired: below a fifth.
    let mut tokens: Vec<Token> = (1..=19).map(|id| expired(id, INVITE)).collect();
    tokens.extend((20..=100).map(|id| active(id, INVITE)));
    auto.insert_tokens(&tokens).await.expect("insert");
    let plan = auto.plan_sweep(&filters(&all)).await.expect("plan");
    assert_eq!(plan, None, "19 % expired is swept type by type");
    // 21 of 101: a fifth.
    auto.insert_tokens(&[expired(101, MAGIC_LINK), expired(102, INVITE)])
        .await
        .expect("insert");
    let plan = auto.plan_sweep(&filters(&all)).await.expect("plan");
    assert!(plan.is_some(), "21 of 102 expired is swept");
    // Only the types asked for count.
    let plan = auto
        .plan_sweep(&filters(&[MAGIC_LINK]))
        .await
        .expect("plan");
    assert_eq!(plan, None, "1 expired magic link of 102 rows");

    let mut tokens = Vec::new();
    for (k, ty) in all.iter().enumerate() {
        let base = k as i64 * 100;
        tokens.extend((1..=10).map(|i| expired(base + i, ty)));
        tokens.extend((11..=15).map(|i| active(base + i, ty)));
    }
    for (store, sweeps) in [(&always, true), (&never, false)] {
        store.insert_tokens(&tokens).await.expect("insert");
        assert_eq!(
            store
                .plan_sweep(&filters(&all))
                .await
                .expect("plan")
                .is_some(),
            sweeps
        );
        let observed = Arc::new(ObservedStore::new(store.clone()));
        let report = service(observed.clone())
            .cleanup_expired_tokens(CleanupRequest::all_types().batch_size(25))
            .await
            .expect("cleanup");
        assert_eq!(report.total_cleaned, 40);
        for ty in all {
            assert_eq!(report.by_type.get(ty).copied(), Some(10), "{ty}");
        }
        let batches = observed.batches();
        match (store.fills_batches(), sweeps) {
            (true, true) => assert_eq!(batches, [(25, 25), (25, 15)]),
            (_, false) => assert_eq!(batches, [(25, 10); 4]),
            // Each type has 10 expired tokens: a batch of more went across types.
            (false, true) => assert!(
                batches.iter().all(|&(limit, n)| limit == 25 && n <= 25)
                    && batches.iter().any(|&(_, n)| n > 10),
                "{batches:?}"
            ),
        }
        assert_eq!(
            ids(&**store).await,
            expected_left(&tokens, |t| t.expires_at < t0())
        );
    }
}

/// The `password_reset` tokens of the time zone tests, as `(id, expires_at, used_at)`
/// around [`t0`]: 1 and 2 expired; 3 expiring at the cutoff, 4 to 6 in a minute, two
/// hours and 13 hours; 7 used two hours ago and 8 (oddly) ten hours from now, both
/// expiring tomorrow. Read through a session time zone hours away from UTC, some of the
/// later ones pass for expired or the expired ones for active.
pub fn zone_tokens() -> [(i64, DateTime<Utc>, Option<DateTime<Utc>>); 8] {
    let at = |seconds: i64| t0() + TimeDelta::seconds(seconds);
    [
        (1, at(-7200), None),
        (2, at(-60), None),
        (3, t0(), None),
        (4, at(60), None),
        (5, at(7200), None),
        (6, at(13 * 3600), None),
        (7, at(86_400), Some(at(-7200))),
        (8, at(86_400), Some(at(10 * 3600))),
    ]
}

/// On a store whose table holds exactly [`zone_tokens`] (seeded by the test, in the
/// column types it checks): statistics, a dry run and a run with used tokens at [`t0`]
/// see exactly the tokens expired or used in UTC, and leave 3 to 6 and 8. `case` names
/// the setup in failures.
pub async fn check_zone_tokens<S: TestStore + 'static>(store: Arc<S>, case: &str) {
    let service = service(store.clone());
    let stats = service.statistics(1).await.expect("statistics");
    let counts = &stats.token_types[0].counts;
    assert_eq!(
        (counts.total, counts.expired, counts.used, counts.active),
        (8, 2, 2, 4),
        "{case}: total, expired, used, active"
    );
    assert_eq!(
        counts.oldest_expired,
        Some(t0() - TimeDelta::hours(2)),
        "{case}: oldest expired"
    );
    let request = CleanupRequest::all_types().include_used(true);
    let dry = service
        .cleanup_expired_tokens(request.clone().dry_run(true))
        .await
        .expect("dry run");
    let real = service
        .cleanup_expired_tokens(request)
        .await
        .expect("cleanup");
    assert_eq!(
        (dry.total_cleaned, real.total_cleaned),
        (3, 3),
        "{case}: dry run, run"
    );
    assert_eq!(
        ids(&*store).await,
        BTreeSet::from([3, 4, 5, 6, 8]),
        "{case}: tokens left"
    );
}
