//! The engine: [`TokenCleanupService`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::health::HealthConfig;
use crate::notify::{Notification, Notifier, Thresholds};
use crate::policy::{GracePolicy, RetryPolicy};
use crate::report::{CleanupReport, StopReason};
use crate::request::{CleanupRequest, MAX_BATCH_SIZE, TokenTypes};
use crate::run::{RunQuery, RunRecord, RunStatus};
use crate::store::{
    BatchFilter, BatchOutcome, Criterion, RunStore, Sweep, SweepOutcome, TokenStore,
};
use crate::{AUDIT_TARGET, metrics as m};

/// A running run is considered abandoned (its instance died) when its record was not
/// updated for this long; it then no longer blocks overlapping runs.
const STALE_RUN_AFTER: TimeDelta = TimeDelta::minutes(10);

/// Cleans expired tokens in bounded batches and records every run.
///
/// Cheap to clone; clones share the store, the configuration and the shutdown signal.
///
/// ```
/// use std::sync::Arc;
/// use chrono::{TimeDelta, Utc};
/// use token_cleanup_core::{CleanupRequest, MemoryStore, Token, TokenCleanupService};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), token_cleanup_core::Error> {
/// let store = Arc::new(MemoryStore::new());
/// store.insert([
///     Token::new(1, "password_reset", Utc::now() - TimeDelta::hours(2)),
///     Token::new(2, "password_reset", Utc::now() + TimeDelta::hours(2)),
/// ]);
/// let service = TokenCleanupService::builder(store.clone()).build()?;
/// let report = service
///     .cleanup_expired_tokens(CleanupRequest::new(["password_reset"]))
///     .await?;
/// assert_eq!(report.total_cleaned, 1);
/// assert_eq!(store.tokens().len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TokenCleanupService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn TokenStore>,
    runs: Arc<dyn RunStore>,
    notifier: Option<Arc<dyn Notifier>>,
    thresholds: Thresholds,
    grace: GracePolicy,
    retry: RetryPolicy,
    registered_types: Option<Vec<String>>,
    progress_interval: Duration,
    batch_pause: Duration,
    health: HealthConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    active: Mutex<HashMap<Uuid, ActiveRun>>,
    /// Status of the last health check, so that alerts go out on changes only.
    last_health: Mutex<Option<crate::HealthStatus>>,
    /// The last token counts read for statistics, shared by the callers that were
    /// waiting while they were read (see [`TokenCleanupService::fresh_type_counts`]).
    counts: tokio::sync::Mutex<Option<SharedCounts>>,
}

/// Token counts read from the store by one caller for all that waited on it.
#[derive(Debug)]
struct SharedCounts {
    /// When the read started.
    started: Instant,
    /// The instant the counts are as of.
    now: DateTime<Utc>,
    counts: Arc<Vec<crate::store::TypeCounts>>,
}

#[derive(Debug)]
struct ActiveRun {
    token_types: Vec<String>,
    cancel: CancellationToken,
}

/// Configures a [`TokenCleanupService`].
#[derive(Debug)]
pub struct TokenCleanupServiceBuilder {
    store: Arc<dyn TokenStore>,
    runs: Option<Arc<dyn RunStore>>,
    notifier: Option<Arc<dyn Notifier>>,
    thresholds: Thresholds,
    grace: GracePolicy,
    retry: RetryPolicy,
    registered_types: Option<Vec<String>>,
    progress_interval: Duration,
    batch_pause: Duration,
    health: HealthConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
}

impl TokenCleanupServiceBuilder {
    /// Keeps run records in another store than the tokens' (default: the same store).
    pub fn run_store(mut self, runs: Arc<dyn RunStore>) -> Self {
        self.runs = Some(runs);
        self
    }
    /// Sends significant events (see [`Thresholds`]) to `notifier`.
    pub fn notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }
    /// What counts as significant enough to notify.
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        self.thresholds = thresholds;
        self
    }
    /// Grace periods per type.
    pub fn grace(mut self, grace: GracePolicy) -> Self {
        self.grace = grace;
        self
    }
    /// Retry policy for failing batches.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// Restricts runs to these token types; requests naming others are refused.
    pub fn token_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.registered_types = Some(types.into_iter().map(Into::into).collect());
        self
    }
    /// How often a running run writes its progress to its record (default 1 s).
    pub fn progress_interval(mut self, interval: Duration) -> Self {
        self.progress_interval = interval;
        self
    }
    /// Sleeps this long after every committed batch (default 0), leaving the database
    /// to other writers between batches. A throttle: runs take longer, live writes wait
    /// less. Mostly useful on SQLite, where a waiting writer polls for the lock.
    pub fn pause_between_batches(mut self, pause: Duration) -> Self {
        self.batch_pause = pause;
        self
    }
    /// Health thresholds.
    pub fn health(mut self, health: HealthConfig) -> Self {
        self.health = health;
        self
    }
    /// Replaces the system clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Ties every run to `shutdown`: once cancelled, runs stop at their next batch boundary.
    pub fn shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Validates the configuration (grace periods, registered types).
    pub fn build(self) -> Result<TokenCleanupService> {
        self.grace.validate()?;
        if self.registered_types.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::NoTokenTypes);
        }
        let runs = self.runs.unwrap_or_else(|| self.store.clone());
        Ok(TokenCleanupService {
            inner: Arc::new(Inner {
                store: self.store,
                runs,
                notifier: self.notifier,
                thresholds: self.thresholds,
                grace: self.grace,
                retry: self.retry,
                registered_types: self.registered_types,
                progress_interval: self.progress_interval,
                batch_pause: self.batch_pause,
                health: self.health,
                clock: self.clock,
                shutdown: self.shutdown,
                active: Mutex::new(HashMap::new()),
                last_health: Mutex::new(None),
                counts: tokio::sync::Mutex::new(None),
            }),
        })
    }
}

/// A run started in the background by [`TokenCleanupService::spawn_cleanup`].
#[derive(Debug)]
pub struct RunHandle {
    run_id: Uuid,
    cancel: CancellationToken,
    join: tokio::task::JoinHandle<Result<CleanupReport>>,
}

impl RunHandle {
    /// The run's id.
    pub fn run_id(&self) -> Uuid {
        self.run_id
    }
    /// Asks the run to stop at its next batch boundary.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
    /// Waits for the run's outcome.
    pub async fn wait(self) -> Result<CleanupReport> {
        match self.join.await {
            Ok(result) => result,
            Err(join) => Err(Error::store("engine", "finish a background run", join)),
        }
    }
}

/// A validated run: types and cutoffs fixed.
struct Plan {
    types: Vec<String>,
    cutoffs: BTreeMap<String, DateTime<Utc>>,
    used_cutoffs: BTreeMap<String, DateTime<Utc>>,
}

impl TokenCleanupService {
    /// Starts configuring a service on `store` (tokens and run records).
    pub fn builder(store: Arc<dyn TokenStore>) -> TokenCleanupServiceBuilder {
        TokenCleanupServiceBuilder {
            store,
            runs: None,
            notifier: None,
            thresholds: Thresholds::default(),
            grace: GracePolicy::default(),
            retry: RetryPolicy::default(),
            registered_types: None,
            progress_interval: Duration::from_secs(1),
            batch_pause: Duration::ZERO,
            health: HealthConfig::default(),
            clock: Arc::new(SystemClock),
            shutdown: CancellationToken::new(),
        }
    }

    /// The store's token counts as of an instant no earlier than the call, and that
    /// instant.
    ///
    /// Counting is a grouped scan of the token table. Callers that arrive while a scan is
    /// running wait for it to end, then share one new scan: 200 concurrent statistics
    /// requests cost two scans, and no caller gets counts read before it asked.
    pub(crate) async fn fresh_type_counts(
        &self,
    ) -> Result<(DateTime<Utc>, Arc<Vec<crate::store::TypeCounts>>)> {
        let arrived = Instant::now();
        let mut last = self.inner.counts.lock().await;
        if let Some(shared) = last.as_ref().filter(|s| s.started >= arrived) {
            return Ok((shared.now, shared.counts.clone()));
        }
        let started = Instant::now();
        let now = self.clock().now();
        let counts = Arc::new(self.store().type_counts(now).await?);
        *last = Some(SharedCounts {
            started,
            now,
            counts: counts.clone(),
        });
        Ok((now, counts))
    }

    /// The token store.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.inner.store
    }
    /// The run store.
    pub fn run_store(&self) -> &Arc<dyn RunStore> {
        &self.inner.runs
    }
    /// The clock in use.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }
    /// The notifier, if any.
    pub fn notifier(&self) -> Option<&Arc<dyn Notifier>> {
        self.inner.notifier.as_ref()
    }
    pub(crate) fn health_config(&self) -> &HealthConfig {
        &self.inner.health
    }
    /// Token types the host registered, if it did.
    pub fn registered_types(&self) -> Option<&[String]> {
        self.inner.registered_types.as_deref()
    }
    /// The shutdown signal every run observes.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Stops every run at its next batch boundary; later runs stop before their first batch.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Cancels a run of this instance; returns whether it was running here.
    pub fn cancel_run(&self, run_id: Uuid) -> bool {
        let active = self.inner.active.lock().unwrap_or_else(|p| p.into_inner());
        match active.get(&run_id) {
            Some(run) => {
                run.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Runs a cleanup to its end and returns its report.
    ///
    /// Validation happens before any row is touched. Every batch is its own transaction;
    /// a failing batch is retried per [`RetryPolicy`]; after the last try the run is
    /// recorded as failed and [`Error::RunFailed`] carries the partial counts.
    pub async fn cleanup_expired_tokens(&self, request: CleanupRequest) -> Result<CleanupReport> {
        self.cleanup_with_cancel(request, CancellationToken::new())
            .await
    }

    /// Like [`cleanup_expired_tokens`](Self::cleanup_expired_tokens), also stopping at the
    /// next batch boundary once `cancel` is cancelled.
    pub async fn cleanup_with_cancel(
        &self,
        request: CleanupRequest,
        cancel: CancellationToken,
    ) -> Result<CleanupReport> {
        let (record, plan) = self.prepare(&request).await?;
        self.execute(record, plan, cancel).await
    }

    /// Validates and records a run, then runs it on a tokio task.
    ///
    /// Errors in the request come back here, before anything runs; the run's own outcome
    /// is in its record and in [`RunHandle::wait`].
    pub async fn spawn_cleanup(&self, request: CleanupRequest) -> Result<RunHandle> {
        let (record, plan) = self.prepare(&request).await?;
        let run_id = record.id;
        let cancel = CancellationToken::new();
        let this = self.clone();
        let run_cancel = cancel.clone();
        let join = tokio::spawn(async move { this.execute(record, plan, run_cancel).await });
        Ok(RunHandle {
            run_id,
            cancel,
            join,
        })
    }

    /// Checks a request without running it: batch size, types, grace.
    pub fn validate(&self, request: &CleanupRequest) -> Result<()> {
        if !(1..=MAX_BATCH_SIZE).contains(&request.batch_size) {
            return Err(Error::InvalidBatchSize {
                batch_size: request.batch_size,
            });
        }
        if let Some(0) = request.max_rows {
            return Err(Error::InvalidArgument {
                name: "max_rows",
                message: "must be at least 1".into(),
            });
        }
        if request.include_used && self.inner.store.table().used_column().is_none() {
            return Err(Error::InvalidArgument {
                name: "include_used",
                message: "the token table has no used-at column".into(),
            });
        }
        if let TokenTypes::Only(types) = &request.token_types {
            if types.is_empty() {
                return Err(Error::NoTokenTypes);
            }
            if let Some(unknown) = self
                .inner
                .registered_types
                .as_ref()
                .and_then(|registered| types.iter().find(|t| !registered.contains(t)))
            {
                return Err(Error::UnknownTokenType {
                    token_type: unknown.clone(),
                });
            }
            if let Some(empty) = types.iter().find(|t| t.is_empty() || t.len() > 255) {
                return Err(Error::InvalidArgument {
                    name: "token_types",
                    message: format!("token type of length {} is not allowed", empty.len()),
                });
            }
        }
        Ok(())
    }

    async fn prepare(&self, request: &CleanupRequest) -> Result<(RunRecord, Plan)> {
        self.validate(request)?;
        let types = match &request.token_types {
            TokenTypes::Only(types) => {
                let mut types = types.clone();
                types.sort();
                types.dedup();
                types
            }
            TokenTypes::All => match &self.inner.registered_types {
                Some(types) => types.clone(),
                None => self.inner.store.token_types().await?,
            },
        };
        let now = self.inner.clock.now();
        let mut cutoffs = BTreeMap::new();
        let mut used_cutoffs = BTreeMap::new();
        for t in &types {
            let grace = self.inner.grace.expired_grace(t);
            let used_grace = self.inner.grace.used_grace(t);
            if grace < TimeDelta::zero() || used_grace < TimeDelta::zero() {
                return Err(Error::NegativeGrace {
                    token_type: t.clone(),
                });
            }
            cutoffs.insert(t.clone(), now - grace);
            used_cutoffs.insert(t.clone(), now - used_grace);
        }
        let mut record = RunRecord::new(request, types.clone(), now);
        record.progress.cutoffs = cutoffs.clone();
        self.claim(&record).await?;
        if let Err(e) = self.inner.runs.insert_run(&record).await {
            self.release(record.id);
            return Err(e);
        }
        info!(
            target: AUDIT_TARGET,
            event = "cleanup_started",
            run_id = %record.id,
            trigger = ?record.trigger,
            job = record.job.as_deref(),
            requested_by = record.requested_by.as_deref(),
            token_types = ?record.token_types,
            batch_size = request.batch_size,
            dry_run = request.dry_run,
        );
        Ok((
            record,
            Plan {
                types,
                cutoffs,
                used_cutoffs,
            },
        ))
    }

    /// Refuses a run whose types overlap a run in progress here or (from the run records)
    /// on another instance.
    async fn claim(&self, record: &RunRecord) -> Result<()> {
        let overlap = |types: &[String]| -> Vec<String> {
            types
                .iter()
                .filter(|t| record.token_types.contains(t))
                .cloned()
                .collect()
        };
        {
            let mut active = self.inner.active.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((id, run)) = active
                .iter()
                .find(|(_, run)| !overlap(&run.token_types).is_empty())
            {
                return Err(Error::AlreadyRunning {
                    run_id: *id,
                    token_types: overlap(&run.token_types),
                });
            }
            active.insert(
                record.id,
                ActiveRun {
                    token_types: record.token_types.clone(),
                    cancel: CancellationToken::new(),
                },
            );
        }
        let since = record.created_at - STALE_RUN_AFTER;
        let running = self
            .inner
            .runs
            .runs(&RunQuery {
                since: Some(since - TimeDelta::days(1)),
                ..RunQuery::default()
            })
            .await;
        let running = match running {
            Ok(runs) => runs,
            Err(e) => {
                self.release(record.id);
                return Err(e);
            }
        };
        if let Some(other) = running.iter().find(|r| {
            matches!(r.status, RunStatus::Running | RunStatus::Queued)
                && r.id != record.id
                && r.progress.finished_at >= since
                && !overlap(&r.token_types).is_empty()
        }) {
            self.release(record.id);
            return Err(Error::AlreadyRunning {
                run_id: other.id,
                token_types: overlap(&other.token_types),
            });
        }
        Ok(())
    }

    fn release(&self, run_id: Uuid) {
        self.inner
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id);
    }

    fn run_cancel_token(&self, run_id: Uuid) -> CancellationToken {
        let active = self.inner.active.lock().unwrap_or_else(|p| p.into_inner());
        active
            .get(&run_id)
            .map(|r| r.cancel.clone())
            .unwrap_or_default()
    }

    async fn execute(
        &self,
        mut record: RunRecord,
        plan: Plan,
        cancel: CancellationToken,
    ) -> Result<CleanupReport> {
        let span = info_span!(
            "token_cleanup.run",
            run_id = %record.id,
            trigger = ?record.trigger,
            dry_run = record.request.dry_run,
            batch_size = record.request.batch_size,
            total = tracing::field::Empty,
        );
        let local_cancel = self.run_cancel_token(record.id);
        let result = self
            .execute_inner(&mut record, &plan, &cancel, &local_cancel)
            .instrument(span.clone())
            .await;
        span.record("total", record.progress.total_cleaned);
        self.release(record.id);

        let status = record.status;
        m::run_finished(status, record.progress.duration);
        let save = self.inner.runs.update_run(&record).await;
        info!(
            target: AUDIT_TARGET,
            event = "cleanup_finished",
            run_id = %record.id,
            status = status.as_str(),
            requested_by = record.requested_by.as_deref(),
            total_cleaned = record.progress.total_cleaned,
            batches = record.progress.batches,
            duration_ms = record.progress.duration.as_millis() as u64,
            stopped = ?record.progress.stopped,
        );
        match result {
            Ok(()) => {
                save?;
                let report = record.progress;
                if !report.dry_run {
                    self.notify(Notification::CleanupCompleted(report.clone()))
                        .await;
                }
                Ok(report)
            }
            Err(err) => {
                if let Err(save_err) = save {
                    warn!(run_id = %record.id, error = %save_err, "could not record the failed run");
                }
                let message = record.error.clone().unwrap_or_else(|| err.to_string());
                self.notify(Notification::CleanupFailed {
                    report: record.progress.clone(),
                    error: message,
                })
                .await;
                Err(err)
            }
        }
    }

    async fn execute_inner(
        &self,
        record: &mut RunRecord,
        plan: &Plan,
        cancel: &CancellationToken,
        local_cancel: &CancellationToken,
    ) -> Result<()> {
        let started = Instant::now();
        let request = record.request.clone();
        record.status = RunStatus::Running;
        record.progress.started_at = self.inner.clock.now();
        self.save_progress(record).await;
        let mut pacer = Pacer {
            started,
            last_save: Instant::now(),
            remaining: request.max_rows,
            max_duration: request.max_duration,
            batch_size: request.batch_size,
            cancelled: Box::new(|| {
                cancel.is_cancelled()
                    || local_cancel.is_cancelled()
                    || self.inner.shutdown.is_cancelled()
            }),
        };
        // One token that a store's call of several batches can watch: cancelled once the
        // run is, by any of the three ways.
        let stop = CancellationToken::new();
        let _watch = AbortOnDrop(tokio::spawn({
            let (stop, cancel, local_cancel, shutdown) = (
                stop.clone(),
                cancel.clone(),
                local_cancel.clone(),
                self.inner.shutdown.clone(),
            );
            async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = local_cancel.cancelled() => {}
                    _ = shutdown.cancelled() => {}
                }
                stop.cancel();
            }
        }));
        let expired = |token_type: &String| Criterion::Expired {
            before: plan.cutoffs[token_type],
        };

        let outcome: Result<()> = 'run: {
            let sweep = if request.dry_run {
                None
            } else {
                let filters: Vec<BatchFilter> = plan
                    .types
                    .iter()
                    .map(|t| BatchFilter::new(t.clone(), expired(t)))
                    .collect();
                match self.inner.store.plan_sweep(&filters).await {
                    Ok(sweep) => sweep,
                    Err(e) => {
                        warn!(error = %e, "could not plan a sweep; cleaning type by type");
                        None
                    }
                }
            };
            let swept = sweep.is_some();
            if let Some(sweep) = sweep {
                debug!(token_types = %plan.types.join(","), "sweeping the table for expired tokens");
                let drained = self
                    .drain(record, &mut pacer, Cursor::Sweep(sweep), &stop)
                    .await;
                if let Some(end) = run_ends(record, drained) {
                    break 'run end;
                }
            }
            for token_type in &plan.types {
                let mut criteria = Vec::new();
                if !swept {
                    criteria.push(expired(token_type));
                }
                if request.include_used {
                    criteria.push(Criterion::Used {
                        before: plan.used_cutoffs[token_type],
                        not_expired_before: plan.cutoffs[token_type],
                    });
                }
                for criterion in criteria {
                    let filter = BatchFilter::new(token_type.clone(), criterion);
                    if request.dry_run {
                        let n = match self.inner.store.count(&filter).await {
                            Ok(n) => n,
                            Err(e) => break 'run Err(e),
                        };
                        let n = pacer.remaining.map_or(n, |r| n.min(r));
                        record.progress.add(token_type, n);
                        if let Some(r) = pacer.remaining.as_mut() {
                            *r -= n;
                        }
                        continue;
                    }
                    let drained = self
                        .drain(record, &mut pacer, Cursor::Type(filter), &stop)
                        .await;
                    if let Some(end) = run_ends(record, drained) {
                        break 'run end;
                    }
                }
            }
            Ok(())
        };

        record
            .progress
            .finish(started.elapsed(), self.inner.clock.now());
        record.finished_at = Some(record.progress.finished_at);
        record.status = match (&outcome, record.progress.stopped) {
            (Err(_), _) => RunStatus::Failed,
            (Ok(()), Some(StopReason::Cancelled)) => RunStatus::Cancelled,
            (Ok(()), _) => RunStatus::Succeeded,
        };
        if let (Err(e), None) = (&outcome, &record.error) {
            record.error = Some(error_chain(e));
        }
        outcome.map_err(|e| with_final_progress(e, &record.progress))
    }

    /// Runs batches from `cursor` until it is exhausted (`Ok(None)`), the run must stop
    /// at this batch boundary (`Ok(Some(reason))`), or a batch fails for good. `stop` is
    /// cancelled once the run is.
    async fn drain(
        &self,
        record: &mut RunRecord,
        pacer: &mut Pacer<'_>,
        mut cursor: Cursor,
        stop: &CancellationToken,
    ) -> Result<Option<StopReason>> {
        let label = cursor.label();
        // The attempt the next batch starts at: past 1 when it failed in a call that
        // committed batches before it.
        let mut first_attempt = 1;
        loop {
            if let Some(stop) = pacer.stop_reason() {
                return Ok(Some(stop));
            }
            let limit = pacer.limit();
            // Several batches per call only when they follow each other at once.
            let max = if self.inner.batch_pause.is_zero() && matches!(cursor, Cursor::Type(_)) {
                pacer
                    .full_batches()
                    .min(self.inner.store.batches_per_call().max(1))
            } else {
                1
            };
            let call_started = Instant::now();
            let result = self
                .with_retry(
                    record,
                    &label,
                    limit,
                    first_attempt,
                    max > 1,
                    Steps::total,
                    || self.step(&cursor, limit, max, stop),
                )
                .await;
            let Steps {
                steps,
                failed: failure,
            } = result.map_err(|(attempts, source)| failed(record, &label, attempts, source))?;
            // Batches the store did not time share the call's time.
            let took = call_started.elapsed() / steps.len().max(1) as u32;
            let mut done = false;
            for (step, step_took) in &steps {
                let took = step_took.unwrap_or(took);
                if max > 1 {
                    // A batch of a call of several (a `token_cleanup.batches` span): its
                    // own span, recorded once the call has returned.
                    let span = info_span!(
                        "token_cleanup.batch",
                        run_id = %record.id,
                        token_type = %label,
                        batch_size = limit,
                        rows = step.total(),
                        duration_ms = took.as_millis() as u64,
                    );
                    debug!(parent: &span, rows = step.total(), "batch committed");
                }
                self.after_batch(record, pacer, &label, &step.deleted(), took)
                    .await;
                done = cursor.advance(step, limit);
            }
            first_attempt = 1;
            if let Some(e) = failure {
                // The batch after the committed ones failed, on its first attempt.
                let retry = self.inner.retry;
                if !(e.is_transient() && retry.max_attempts > 1) {
                    warn!(
                        token_type = %label,
                        error = %e,
                        "batch failed and was rolled back; giving up"
                    );
                    return Err(failed(record, &label, 1, e));
                }
                let wait = retry.backoff(1);
                warn!(
                    token_type = %label,
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "batch failed and was rolled back; retrying"
                );
                record.progress.retries += 1;
                tokio::time::sleep(wait).await;
                first_attempt = 2;
                continue;
            }
            if done {
                return Ok(None);
            }
            self.pause().await;
        }
    }

    /// Batches from `cursor`'s current position: one of a sweep, up to `max` of a type.
    async fn step(
        &self,
        cursor: &Cursor,
        limit: u32,
        max: u32,
        stop: &CancellationToken,
    ) -> Result<Steps> {
        Ok(match cursor {
            Cursor::Sweep(sweep) => Steps {
                steps: vec![(
                    Step::Sweep(self.inner.store.sweep_batch(sweep, limit).await?),
                    None,
                )],
                failed: None,
            },
            Cursor::Type(filter) => {
                let batches = self
                    .inner
                    .store
                    .delete_batches(filter, limit, max, stop)
                    .await?;
                let steps = batches
                    .committed
                    .into_iter()
                    .map(|(outcome, took)| (Step::Type(filter.token_type.clone(), outcome), took))
                    .collect();
                Steps {
                    steps,
                    failed: batches.failed,
                }
            }
        })
    }

    /// Books a committed batch: counts, metrics, the row budget, and the run record
    /// every progress interval.
    async fn after_batch(
        &self,
        record: &mut RunRecord,
        pacer: &mut Pacer<'_>,
        label: &str,
        deleted: &[(String, u64)],
        took: Duration,
    ) {
        record.progress.batches += 1;
        record.progress.slowest_batch = record.progress.slowest_batch.max(took);
        m::batch_duration(label, took);
        for (token_type, n) in deleted {
            record.progress.add(token_type, *n);
            m::tokens_deleted(token_type, *n);
            if let Some(r) = pacer.remaining.as_mut() {
                *r -= (*n).min(*r);
            }
        }
        if pacer.last_save.elapsed() >= self.inner.progress_interval {
            record
                .progress
                .finish(pacer.started.elapsed(), self.inner.clock.now());
            self.save_progress(record).await;
            pacer.last_save = Instant::now();
        }
    }

    async fn pause(&self) {
        if !self.inner.batch_pause.is_zero() {
            tokio::time::sleep(self.inner.batch_pause).await;
        }
    }

    /// Runs one batch (`attempt`), retrying transient failures per the retry policy,
    /// from attempt `first_attempt` on. `label` names the token type(s) in the batch's
    /// span; `several` says the store may run several batches in the call (its span is
    /// then `token_cleanup.batches`); `rows` reads the rows a committed call deleted.
    #[allow(clippy::too_many_arguments)]
    async fn with_retry<T, F, Fut>(
        &self,
        record: &mut RunRecord,
        label: &str,
        limit: u32,
        first_attempt: u32,
        several: bool,
        rows: impl Fn(&T) -> u64,
        mut attempt_batch: F,
    ) -> std::result::Result<T, (u32, Error)>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let retry = self.inner.retry;
        let mut attempt = first_attempt;
        loop {
            // A span's name is a literal: one macro call per name, with the same fields.
            macro_rules! call_span {
                ($name:literal) => {
                    info_span!(
                        $name,
                        run_id = %record.id,
                        token_type = %label,
                        batch_size = limit,
                        attempt,
                        rows = tracing::field::Empty,
                        duration_ms = tracing::field::Empty,
                    )
                };
            }
            let span = if several {
                call_span!("token_cleanup.batches")
            } else {
                call_span!("token_cleanup.batch")
            };
            let started = Instant::now();
            let result = attempt_batch().instrument(span.clone()).await;
            span.record("duration_ms", started.elapsed().as_millis() as u64);
            match result {
                Ok(outcome) => {
                    let n = rows(&outcome);
                    span.record("rows", n);
                    if !several {
                        debug!(parent: &span, rows = n, "batch committed");
                    }
                    return Ok(outcome);
                }
                Err(e) if e.is_transient() && attempt < retry.max_attempts => {
                    let wait = retry.backoff(attempt);
                    warn!(
                        parent: &span,
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        "batch failed and was rolled back; retrying"
                    );
                    record.progress.retries += 1;
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => {
                    warn!(parent: &span, error = %e, "batch failed and was rolled back; giving up");
                    return Err((attempt, e));
                }
            }
        }
    }

    async fn save_progress(&self, record: &RunRecord) {
        if let Err(e) = self.inner.runs.update_run(record).await {
            warn!(run_id = %record.id, error = %e, "could not save run progress");
        }
    }

    /// Sends `notification` if it is significant; a failing notifier only logs a WARN.
    pub async fn notify(&self, notification: Notification) {
        let Some(notifier) = &self.inner.notifier else {
            return;
        };
        if !self.inner.thresholds.is_significant(&notification) {
            return;
        }
        if let Err(e) = notifier.notify(&notification).await {
            warn!(
                notifier = notifier.name(),
                kind = notification.kind(),
                error = %e,
                "notification failed; the cleanup itself is unaffected"
            );
        }
    }

    /// Records `status` as the latest health; returns whether it differs from the previous
    /// check's (so a polled health endpoint alerts once per change, not on every poll).
    pub(crate) fn health_changed(&self, status: crate::HealthStatus) -> bool {
        let mut last = self
            .inner
            .last_health
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        last.replace(status) != Some(status)
    }

    /// A run record by id.
    pub async fn run(&self, run_id: Uuid) -> Result<Option<RunRecord>> {
        self.inner.runs.run(run_id).await
    }

    /// The `limit` most recent runs, newest first.
    pub async fn recent_runs(&self, limit: u32) -> Result<Vec<RunRecord>> {
        self.inner.runs.runs(&RunQuery::latest(limit)).await
    }
}

/// An error and its sources, `: `-separated (for run records and notifications).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Puts the final progress (duration, finish time) into a `RunFailed` error.
/// Where a run stands against its limits (rows, duration, cancellation) and its
/// progress saves.
struct Pacer<'a> {
    started: Instant,
    last_save: Instant,
    remaining: Option<u64>,
    max_duration: Option<Duration>,
    batch_size: u32,
    cancelled: Box<dyn Fn() -> bool + Send + Sync + 'a>,
}

impl Pacer<'_> {
    /// Why the run must stop before its next batch, if it must.
    fn stop_reason(&self) -> Option<StopReason> {
        if (self.cancelled)() {
            Some(StopReason::Cancelled)
        } else if self
            .max_duration
            .is_some_and(|max| self.started.elapsed() >= max)
        {
            Some(StopReason::MaxDuration)
        } else if self.remaining == Some(0) {
            Some(StopReason::MaxRows)
        } else {
            None
        }
    }

    /// The next batch's size: the batch size, or what is left of `max_rows`.
    fn limit(&self) -> u32 {
        self.remaining.map_or(self.batch_size, |r| {
            r.min(u64::from(self.batch_size)) as u32
        })
    }

    /// How many batches of the next size fit in what is left of `max_rows` (at least one).
    fn full_batches(&self) -> u32 {
        self.remaining
            .map_or(u32::MAX, |r| {
                u32::try_from(r / u64::from(self.limit().max(1))).unwrap_or(u32::MAX)
            })
            .max(1)
    }
}

/// Where a pass of a run stands: a sweep through the table, or one type and criterion.
enum Cursor {
    Sweep(Sweep),
    Type(BatchFilter),
}

impl Cursor {
    /// The batches' `token_type` label: the type, or a sweep's types joined by commas.
    fn label(&self) -> String {
        match self {
            Cursor::Sweep(sweep) => sweep
                .filters
                .iter()
                .map(|f| f.token_type.as_str())
                .collect::<Vec<_>>()
                .join(","),
            Cursor::Type(filter) => filter.token_type.clone(),
        }
    }

    /// Moves past a committed batch of at most `limit` rows; `true` when nothing is left.
    fn advance(&mut self, step: &Step, limit: u32) -> bool {
        match (self, step) {
            (Cursor::Sweep(sweep), Step::Sweep(outcome)) => {
                sweep.position = outcome.position;
                outcome.done
            }
            (Cursor::Type(filter), Step::Type(_, outcome)) => {
                filter.resume_from = outcome.resume_from.or(filter.resume_from);
                outcome.deleted < u64::from(limit) && !outcome.more
            }
            _ => unreachable!("a step comes from its own cursor"),
        }
    }
}

/// The batches one call committed, and what stopped it after them (see
/// [`Batches`](crate::Batches)).
struct Steps {
    steps: Vec<(Step, Option<Duration>)>,
    failed: Option<Error>,
}

impl Steps {
    fn total(&self) -> u64 {
        self.steps.iter().map(|(step, _)| step.total()).sum()
    }
}

/// Aborts a task when dropped (the run's cancellation watcher, when the run ends or its
/// future is dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one committed batch did.
enum Step {
    Sweep(SweepOutcome),
    Type(String, BatchOutcome),
}

impl Step {
    /// Rows deleted per type.
    fn deleted(&self) -> Vec<(String, u64)> {
        match self {
            Step::Sweep(outcome) => outcome.deleted.clone(),
            Step::Type(token_type, outcome) => vec![(token_type.clone(), outcome.deleted)],
        }
    }

    fn total(&self) -> u64 {
        match self {
            Step::Sweep(outcome) => outcome.total(),
            Step::Type(_, outcome) => outcome.deleted,
        }
    }
}

/// How a drained pass ends the run: not at all (`None`: go on), stopped at a batch
/// boundary (recorded), or failed.
fn run_ends(record: &mut RunRecord, drained: Result<Option<StopReason>>) -> Option<Result<()>> {
    match drained {
        Ok(None) => None,
        Ok(Some(stop)) => {
            record.progress.stopped = Some(stop);
            Some(Ok(()))
        }
        Err(e) => Some(Err(e)),
    }
}

/// Records a batch that failed for good on the run and wraps the error.
fn failed(record: &mut RunRecord, label: &str, attempts: u32, source: Error) -> Error {
    record.error = Some(error_chain(&source));
    Error::RunFailed {
        partial: Box::new(record.progress.clone()),
        token_type: label.to_owned(),
        attempts,
        source: Box::new(source),
    }
}

fn with_final_progress(err: Error, progress: &CleanupReport) -> Error {
    match err {
        Error::RunFailed {
            token_type,
            attempts,
            source,
            ..
        } => Error::RunFailed {
            partial: Box::new(progress.clone()),
            token_type,
            attempts,
            source,
        },
        other => other,
    }
}
