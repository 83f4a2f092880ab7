//! Concurrent statistics requests share the store's count scans, and never get counts
//! read before they asked.

use std::sync::Arc;
use std::time::Duration;

use token_cleanup_core::test_util::ObservedStore;
use token_cleanup_core::test_util::suite::{mixed_tokens, service};
use token_cleanup_core::{CleanupRequest, MemoryStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_statistics_share_count_scans_and_stay_fresh() {
    let memory = Arc::new(MemoryStore::new());
    memory.insert(mixed_tokens(10));
    let store = Arc::new(ObservedStore::new(memory));
    store.slow_count_scans(Duration::from_millis(100));
    let svc = service(store.clone());

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let svc = svc.clone();
        requests.spawn(async move { svc.statistics(7).await.unwrap() });
    }
    let answers = requests.join_all().await;
    assert_eq!(answers.len(), 50);
    assert!(
        answers
            .iter()
            .all(|s| s.totals.expired == 40 && s.totals.total == 80)
    );
    // The first request scans; those that arrived during it share the one after it.
    assert!(
        store.count_scans() <= 2,
        "{} scans for 50 concurrent requests",
        store.count_scans()
    );

    // A request after a change sees the change: nothing is served from before it asked.
    let scans = store.count_scans();
    svc.cleanup_expired_tokens(CleanupRequest::all_types())
        .await
        .unwrap();
    let after = svc.statistics(7).await.unwrap();
    assert_eq!(after.totals.expired, 0);
    assert_eq!(after.totals.total, 40);
    assert_eq!(store.count_scans(), scans + 1);
}
