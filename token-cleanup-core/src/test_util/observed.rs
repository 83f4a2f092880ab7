//! A store wrapper that records batches and count scans, and injects transient failures.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::run::{RunQuery, RunRecord};
use crate::store::{
    BatchFilter, BatchOutcome, Batches, RunStore, Sweep, SweepOutcome, TokenStore, TypeCounts,
};
use crate::table::TokenTable;

type BatchHook = Box<dyn Fn(usize) + Send + Sync>;

/// Wraps a store: records every delete or sweep batch (`limit`, rows deleted) and counts the
/// grouped count scans (`type_counts`), can fail the next `n` batches (calls of
/// `delete_batch`, `delete_batches` or `sweep_batch`) before they reach the database, can
/// slow every count scan down, and can call a hook after each batch.
pub struct ObservedStore<S> {
    inner: Arc<S>,
    batches: Mutex<Vec<(u32, u64)>>,
    fail_next: AtomicU32,
    after_batch: Mutex<Option<BatchHook>>,
    count_scans: AtomicUsize,
    count_delay: Mutex<Duration>,
}

impl<S> fmt::Debug for ObservedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedStore").finish_non_exhaustive()
    }
}

impl<S: TokenStore> ObservedStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<S>) -> Self {
        Self {
            inner,
            batches: Mutex::new(Vec::new()),
            fail_next: AtomicU32::new(0),
            after_batch: Mutex::new(None),
            count_scans: AtomicUsize::new(0),
            count_delay: Mutex::new(Duration::ZERO),
        }
    }

    /// How many times `type_counts` reached the wrapped store.
    pub fn count_scans(&self) -> usize {
        self.count_scans.load(Ordering::SeqCst)
    }

    /// Every `type_counts` call sleeps `delay` before it reaches the wrapped store (as a
    /// grouped scan of a large table would take time).
    pub fn slow_count_scans(&self, delay: Duration) {
        *self.count_delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// `(limit, deleted)` of every committed batch, in order.
    pub fn batches(&self) -> Vec<(u32, u64)> {
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next `n` delete batches fail with a store error (nothing deleted).
    pub fn fail_next_batches(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Fails the batch (before it reaches the database) if failures are pending.
    fn fail_injected(&self) -> Result<()> {
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(Error::store(
                self.inner.kind(),
                "delete a batch",
                "injected transient failure",
            ));
        }
        Ok(())
    }

    /// Records a committed batch and calls the hook.
    fn committed(&self, limit: u32, deleted: u64) {
        let n = {
            let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
            batches.push((limit, deleted));
            batches.len()
        };
        if let Some(hook) = &*self.after_batch.lock().unwrap_or_else(|p| p.into_inner()) {
            hook(n);
        }
    }

    /// Whether an [`after_batch`](Self::after_batch) hook is set.
    fn hooked(&self) -> bool {
        self.after_batch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Calls `hook(number_of_committed_batches)` after each committed batch (with a hook
    /// set, batches go one per `delete_batches` call).
    pub fn after_batch(&self, hook: impl Fn(usize) + Send + Sync + 'static) {
        *self.after_batch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(hook));
    }
}

#[async_trait]
impl<S: TokenStore> TokenStore for ObservedStore<S> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn table(&self) -> &TokenTable {
        self.inner.table()
    }
    async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }
    async fn token_types(&self) -> Result<Vec<String>> {
        self.inner.token_types().await
    }
    async fn count(&self, filter: &BatchFilter) -> Result<u64> {
        self.inner.count(filter).await
    }
    async fn delete_batch(&self, filter: &BatchFilter, limit: u32) -> Result<BatchOutcome> {
        self.fail_injected()?;
        let outcome = self.inner.delete_batch(filter, limit).await?;
        self.committed(limit, outcome.deleted);
        Ok(outcome)
    }
    /// One with an [`after_batch`](ObservedStore::after_batch) hook set, so that the
    /// hook runs after each batch and before the next one begins; else the wrapped
    /// store's.
    fn batches_per_call(&self) -> u32 {
        if self.hooked() {
            1
        } else {
            self.inner.batches_per_call()
        }
    }
    /// Records each batch the wrapped store committed (one per call with a hook set).
    async fn delete_batches(
        &self,
        filter: &BatchFilter,
        limit: u32,
        max: u32,
        stop: &CancellationToken,
    ) -> Result<Batches> {
        self.fail_injected()?;
        let max = if self.hooked() { 1 } else { max };
        let batches = self.inner.delete_batches(filter, limit, max, stop).await?;
        for (outcome, _) in &batches.committed {
            self.committed(limit, outcome.deleted);
        }
        Ok(batches)
    }
    async fn plan_sweep(&self, filters: &[BatchFilter]) -> Result<Option<Sweep>> {
        self.inner.plan_sweep(filters).await
    }
    async fn sweep_batch(&self, sweep: &Sweep, limit: u32) -> Result<SweepOutcome> {
        self.fail_injected()?;
        let outcome = self.inner.sweep_batch(sweep, limit).await?;
        self.committed(limit, outcome.total());
        Ok(outcome)
    }
    async fn type_counts(&self, now: DateTime<Utc>) -> Result<Vec<TypeCounts>> {
        self.count_scans.fetch_add(1, Ordering::SeqCst);
        let delay = *self.count_delay.lock().unwrap_or_else(|p| p.into_inner());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.inner.type_counts(now).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

#[async_trait]
impl<S: TokenStore> RunStore for ObservedStore<S> {
    async fn insert_run(&self, run: &RunRecord) -> Result<()> {
        self.inner.insert_run(run).await
    }
    async fn update_run(&self, run: &RunRecord) -> Result<()> {
        self.inner.update_run(run).await
    }
    async fn run(&self, id: Uuid) -> Result<Option<RunRecord>> {
        self.inner.run(id).await
    }
    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        self.inner.runs(query).await
    }
    async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        self.inner.try_acquire_lease(name, holder, ttl).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.inner.release_lease(name, holder).await
    }
}
