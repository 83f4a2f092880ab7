//! The store the suite runs on: the store under test, plus a gate that holds a cleanup
//! between two batches and switches that make the database look down.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::run::{RunQuery, RunRecord};
use crate::store::{BatchFilter, BatchOutcome, RunStore, TokenStore, TypeCounts};
use crate::table::TokenTable;
use crate::test_util::TestStore;

/// Wraps the store under test.
pub struct SuiteStore<S> {
    inner: Arc<S>,
    /// Batches committed so far.
    batches: AtomicUsize,
    /// Rows each committed batch deleted, in order.
    deleted: std::sync::Mutex<Vec<u64>>,
    /// Hold the batch after this many committed batches (`usize::MAX`: never).
    hold_after: AtomicUsize,
    /// Whether a batch is waiting at the gate.
    waiting: AtomicBool,
    gate: Semaphore,
    down: AtomicBool,
}

impl<S> fmt::Debug for SuiteStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SuiteStore").finish_non_exhaustive()
    }
}

impl<S: TestStore> SuiteStore<S> {
    pub(crate) fn new(inner: Arc<S>) -> Self {
        Self {
            inner,
            batches: AtomicUsize::new(0),
            deleted: Default::default(),
            hold_after: AtomicUsize::new(usize::MAX),
            waiting: AtomicBool::new(false),
            gate: Semaphore::new(0),
            down: AtomicBool::new(false),
        }
    }

    /// The store under test.
    pub(crate) fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// Rows each committed batch deleted, in order.
    pub(crate) fn deleted(&self) -> Vec<u64> {
        self.deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Holds the next delete batch once `n` batches have been committed.
    pub(crate) fn hold_after(&self, n: usize) {
        self.hold_after.store(n, Ordering::SeqCst);
    }

    /// Waits (bounded) until a batch is held at the gate.
    pub(crate) async fn wait_until_held(&self) {
        for _ in 0..2000 {
            if self.waiting.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no cleanup batch reached the gate within 10 s");
    }

    /// Lets every held and later batch through.
    pub(crate) fn release(&self) {
        self.hold_after.store(usize::MAX, Ordering::SeqCst);
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Makes pings and reads fail as if the database were unreachable.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check_up(&self, operation: &'static str) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            // The source text stands in for a driver message that must never reach a
            // response.
            return Err(Error::store(
                self.inner.kind(),
                operation,
                "connection refused (db.internal:5432, password=hunter2)",
            ));
        }
        Ok(())
    }
}

/// Text of the injected driver error; the suite checks it never appears in a response.
pub(crate) const INTERNAL_DETAIL: &str = "hunter2";

#[async_trait]
impl<S: TestStore> TokenStore for SuiteStore<S> {
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
        self.check_up("list token types")?;
        self.inner.token_types().await
    }
    async fn count(&self, filter: &BatchFilter) -> Result<u64> {
        self.check_up("count tokens")?;
        self.inner.count(filter).await
    }
    async fn delete_batch(&self, filter: &BatchFilter, limit: u32) -> Result<BatchOutcome> {
        if self.batches.load(Ordering::SeqCst) >= self.hold_after.load(Ordering::SeqCst) {
            self.waiting.store(true, Ordering::SeqCst);
            let permit = self.gate.acquire().await;
            self.waiting.store(false, Ordering::SeqCst);
            drop(permit);
        }
        let outcome = self.inner.delete_batch(filter, limit).await?;
        self.deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(outcome.deleted);
        self.batches.fetch_add(1, Ordering::SeqCst);
        Ok(outcome)
    }
    async fn type_counts(&self, now: DateTime<Utc>) -> Result<Vec<TypeCounts>> {
        self.check_up("count tokens by type")?;
        self.inner.type_counts(now).await
    }
    async fn ping(&self) -> Result<()> {
        self.check_up("ping")?;
        self.inner.ping().await
    }
}

#[async_trait]
impl<S: TestStore> RunStore for SuiteStore<S> {
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
