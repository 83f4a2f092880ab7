//! [`CronScheduler`]: the default jobs and custom cron schedules, on tokio.
//!
//! Each enabled job has its own loop: it sleeps until the next tick of its cron
//! expression (UTC), takes the tick's lease in the run store so that only one instance
//! runs it, runs it, and computes the next tick from the clock again. Ticks that fell
//! while a run was still going, or while the process was not scheduled, are skipped and
//! logged, never queued up.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::report::StopReason;
use crate::request::{CleanupRequest, TokenTypes};
use crate::run::{RunQuery, RunStatus};
use crate::schedule::{DAILY_CLEANUP, JobAction, JobInfo, JobSpec, LastJobRun, Scheduler};
use crate::service::{TokenCleanupService, error_chain};
use crate::table::token_types;

/// A tick's lease is kept this long past the job's following tick, so that an instance
/// whose clock runs a little behind cannot take the tick again.
const LEASE_MARGIN: TimeDelta = TimeDelta::minutes(1);
/// Counting skipped ticks stops here (an every-minute job after a long suspend).
const MAX_COUNTED_TICKS: u64 = 100_000;
/// The run store is searched this far back at most for a job's last run.
const MAX_LOOKBACK: TimeDelta = TimeDelta::days(35);

/// Wall-clock time that follows tokio's clock: `anchor + (tokio now - start)`.
///
/// Under `tokio::time::pause()` tokio's clock jumps straight to the next timer, so a
/// scheduler (and a service) on this clock runs weeks of ticks in milliseconds, at exactly
/// the instants the cron expressions name. Outside tests, use the system clock.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use token_cleanup_core::{Clock, TokioClock};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let start = Utc.with_ymd_and_hms(2026, 3, 1, 1, 59, 0).unwrap();
/// let clock = TokioClock::starting_at(start);
/// tokio::time::sleep(std::time::Duration::from_secs(60)).await;
/// assert_eq!(clock.now(), Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0).unwrap());
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    anchor: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `anchor` now and advances with tokio's clock.
    pub fn starting_at(anchor: DateTime<Utc>) -> Self {
        Self {
            anchor,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.anchor + TimeDelta::from_std(self.start.elapsed()).unwrap_or(TimeDelta::zero())
    }
}

/// Parses a standard 5-field cron expression (minute hour day-of-month month
/// day-of-week, Sunday = 0 or 7; `@hourly`, `@daily`, `@weekly` ... too) and checks that it
/// fires at least once after `now`.
fn parse_cron(job: &str, expression: &str, now: DateTime<Utc>) -> Result<Cron> {
    let invalid = |source: croner::errors::CronError| Error::InvalidCron {
        job: job.to_owned(),
        expression: expression.to_owned(),
        source: Box::new(source),
    };
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(invalid)?;
    cron.find_next_occurrence(&now, false).map_err(invalid)?;
    Ok(cron)
}

/// A validated job.
#[derive(Debug)]
struct Job {
    spec: JobSpec,
    cron: Cron,
    description: String,
}

impl Job {
    /// First tick strictly after `t`.
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// Last tick at or before `t`.
    fn tick_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&t, true).ok()
    }

    /// Ticks in `(after, until]`: how many, and the last one.
    fn ticks_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> (u64, Option<DateTime<Utc>>) {
        let mut count = 0;
        let mut last = None;
        for tick in self.cron.iter_after(after) {
            if tick > until || count >= MAX_COUNTED_TICKS {
                break;
            }
            count += 1;
            last = Some(tick);
        }
        (count, last)
    }

    /// Roughly two periods of the schedule: how far back its last run is looked for.
    fn lookback(&self, now: DateTime<Utc>) -> TimeDelta {
        let period = self
            .next_after(now)
            .and_then(|a| self.next_after(a).map(|b| b - a))
            .unwrap_or(MAX_LOOKBACK);
        (period * 2 + TimeDelta::hours(1)).min(MAX_LOOKBACK)
    }
}

#[derive(Debug, Default)]
struct JobState {
    last: Option<LastJobRun>,
    /// The lease of the last tick this instance won; released when it wins the next.
    held_lease: Option<String>,
}

/// A [`Scheduler`] on tokio timers: cron expressions in UTC, one lease per tick.
///
/// Built from a [`TokenCleanupService`] with the three default jobs of
/// [`JobSpec::defaults`] (hourly cleanup, daily 02:00 comprehensive cleanup, weekly
/// Sunday 03:00 report); each can be rescheduled or disabled, and jobs can be added,
/// for example a schedule of its own for one token type. Every mistake (a cron
/// expression that does not parse, an unknown job or token type) is an error of
/// [`build`](CronSchedulerBuilder::build), never of the first tick.
///
/// With several instances of the host sharing one database, each tick of each job runs
/// on exactly one of them: before running, an instance takes the lease
/// `"<job>@<tick RFC 3339>"` through [`RunStore::try_acquire_lease`]; the others see it
/// taken and skip the tick.
///
/// ```
/// use std::sync::Arc;
/// use token_cleanup_core::{
///     CancellationToken, CronScheduler, MemoryStore, Scheduler, TokenCleanupService,
///     HOURLY_CLEANUP, WEEKLY_REPORT, token_types,
/// };
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), token_cleanup_core::Error> {
/// let service = TokenCleanupService::builder(Arc::new(MemoryStore::new())).build()?;
/// let scheduler = CronScheduler::builder(service)
///     .schedule(HOURLY_CLEANUP, "*/30 * * * *")
///     .enable(WEEKLY_REPORT, false)
///     .cleanup_type(token_types::MAGIC_LINK, "*/5 * * * *")
///     .build()?;
///
/// let shutdown = CancellationToken::new();
/// let running = tokio::spawn({
///     let (scheduler, shutdown) = (scheduler.clone(), shutdown.clone());
///     async move { scheduler.run(shutdown).await }
/// });
/// for job in scheduler.jobs().await? {
///     println!("{} ({}): {}, next {:?}", job.name, job.cron, job.description, job.next_run);
/// }
/// shutdown.cancel(); // on host shutdown; a running job stops at its next batch boundary
/// running.await.expect("scheduler task")?;
/// # Ok(()) }
/// ```
///
/// [`RunStore::try_acquire_lease`]: crate::RunStore::try_acquire_lease
#[derive(Debug, Clone)]
pub struct CronScheduler {
    inner: Arc<Inner>,
}

struct Inner {
    service: TokenCleanupService,
    clock: Arc<dyn Clock>,
    jobs: Vec<Job>,
    holder: String,
    wake_interval: Duration,
    busy_retry: Duration,
    state: Mutex<HashMap<String, JobState>>,
    running: AtomicBool,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronScheduler")
            .field("instance", &self.holder)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

/// Configures a [`CronScheduler`]; see [`CronScheduler::builder`].
#[derive(Debug)]
pub struct CronSchedulerBuilder {
    service: TokenCleanupService,
    jobs: Vec<JobSpec>,
    default_daily: bool,
    errors: Vec<Error>,
    instance_id: Option<String>,
    clock: Option<Arc<dyn Clock>>,
    wake_interval: Duration,
    busy_retry: Duration,
}

impl CronScheduler {
    /// Starts from the three default jobs of [`JobSpec::defaults`], running on `service`
    /// (its store holds the leases and the run records; its clock tells the time).
    pub fn builder(service: TokenCleanupService) -> CronSchedulerBuilder {
        CronSchedulerBuilder {
            service,
            jobs: JobSpec::defaults(),
            default_daily: true,
            errors: Vec::new(),
            instance_id: None,
            clock: None,
            wake_interval: Duration::from_secs(60),
            busy_retry: Duration::from_secs(5),
        }
    }

    /// The id this instance takes leases under.
    pub fn instance_id(&self) -> &str {
        &self.inner.holder
    }

    /// The configured jobs (enabled or not).
    pub fn job_specs(&self) -> impl Iterator<Item = &JobSpec> {
        self.inner.jobs.iter().map(|j| &j.spec)
    }
}

impl CronSchedulerBuilder {
    /// Adds `job`, or replaces the job of the same name.
    pub fn job(mut self, job: JobSpec) -> Self {
        if job.name == DAILY_CLEANUP {
            self.default_daily = false;
        }
        match self.jobs.iter_mut().find(|j| j.name == job.name) {
            Some(existing) => *existing = job,
            None => self.jobs.push(job),
        }
        self
    }

    /// Drops every job configured so far, the defaults included.
    pub fn without_defaults(mut self) -> Self {
        self.jobs.clear();
        self.default_daily = false;
        self
    }

    /// Enables or disables the job `name` (disabled jobs are listed but never run).
    pub fn enable(mut self, name: &str, enabled: bool) -> Self {
        match self.jobs.iter_mut().find(|j| j.name == name) {
            Some(job) => job.enabled = enabled,
            None => self.errors.push(unknown_job(name)),
        }
        self
    }

    /// Gives the job `name` another cron expression (5 fields, UTC).
    pub fn schedule(mut self, name: &str, cron: impl Into<String>) -> Self {
        match self.jobs.iter_mut().find(|j| j.name == name) {
            Some(job) => job.cron = cron.into(),
            None => self.errors.push(unknown_job(name)),
        }
        self
    }

    /// Adds the job `cleanup:<token_type>`: expired tokens of that one type on `cron`.
    ///
    /// The type must be one the service registered with
    /// [`token_types`](crate::TokenCleanupServiceBuilder::token_types) or, when it
    /// registered none, one of the well-known [`token_types::ALL`]; anything else is
    /// refused by [`build`](Self::build).
    pub fn cleanup_type(self, token_type: impl Into<String>, cron: impl Into<String>) -> Self {
        let token_type = token_type.into();
        self.job(JobSpec::new(
            format!("cleanup:{token_type}"),
            cron,
            JobAction::Cleanup(CleanupRequest::new([token_type])),
        ))
    }

    /// The id under which this instance takes leases (default: process id plus a UUID).
    /// Must differ between instances.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Another clock than the service's (it must advance with time; see [`TokioClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Longest single sleep (default 60 s): a sleeping job re-reads the wall clock at
    /// least this often, so clock adjustments shift its ticks accordingly.
    pub fn wake_interval(mut self, interval: Duration) -> Self {
        self.wake_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How often a job whose run overlaps a run in progress (same token types) tries
    /// again (default 5 s). It gives up, and skips the tick, when its next tick comes.
    pub fn busy_retry(mut self, interval: Duration) -> Self {
        self.busy_retry = interval.max(Duration::from_millis(1));
        self
    }

    /// Validates every job (cron expression, cleanup parameters, token types).
    pub fn build(mut self) -> Result<CronScheduler> {
        if let Some(err) = self.errors.into_iter().next() {
            return Err(err);
        }
        let clock = self.clock.unwrap_or_else(|| self.service.clock().clone());
        let now = clock.now();
        let has_used_column = self.service.store().table().used_column().is_some();
        let mut jobs = Vec::with_capacity(self.jobs.len());
        for mut spec in std::mem::take(&mut self.jobs) {
            if spec.name.trim().is_empty() {
                return Err(Error::InvalidArgument {
                    name: "job",
                    message: "job names must not be empty".into(),
                });
            }
            let cron = parse_cron(&spec.name, &spec.cron, now)?;
            if let JobAction::Cleanup(request) = &mut spec.action {
                if self.default_daily
                    && spec.name == DAILY_CLEANUP
                    && request.include_used
                    && !has_used_column
                {
                    // Without a used-at column "comprehensive" can only mean expired.
                    info!(
                        job = %spec.name,
                        "the token table has no used-at column; the daily job removes expired tokens only"
                    );
                    request.include_used = false;
                }
                validate_scheduled(&self.service, request)?;
            }
            let description = format!("{} (UTC)", cron.describe().trim_end_matches('.'));
            jobs.push(Job {
                spec,
                cron,
                description,
            });
        }
        let holder = self
            .instance_id
            .unwrap_or_else(|| format!("pid{}-{}", std::process::id(), Uuid::now_v7()));
        Ok(CronScheduler {
            inner: Arc::new(Inner {
                service: self.service,
                clock,
                jobs,
                holder,
                wake_interval: self.wake_interval,
                busy_retry: self.busy_retry,
                state: Mutex::new(HashMap::new()),
                running: AtomicBool::new(false),
            }),
        })
    }
}

fn unknown_job(name: &str) -> Error {
    Error::InvalidArgument {
        name: "job",
        message: format!("there is no job named `{name}`"),
    }
}

/// The engine's own validation, plus: named types must be known (registered, or
/// well-known when the host registered none).
fn validate_scheduled(service: &TokenCleanupService, request: &CleanupRequest) -> Result<()> {
    service.validate(request)?;
    let unknown = match (&request.token_types, service.registered_types()) {
        (TokenTypes::Only(types), None) => types
            .iter()
            .find(|t| !token_types::ALL.contains(&t.as_str())),
        _ => None,
    };
    if let Some(unknown) = unknown {
        return Err(Error::UnknownTokenType {
            token_type: unknown.clone(),
        });
    }
    Ok(())
}

/// `"<job>@<tick>"`, the tick in RFC 3339 UTC with seconds.
fn lease_name(job: &str, tick: DateTime<Utc>) -> String {
    format!("{job}@{}", tick.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Clears the "running" flag when [`Scheduler::run`] ends, however it ends.
struct RunningGuard<'a>(&'a AtomicBool);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, HashMap<String, JobState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_last(&self, job: &str, last: LastJobRun) {
        self.state().entry(job.to_owned()).or_default().last = Some(last);
    }

    /// Sleeps until the clock reads `tick`; `false` when `shutdown` came first.
    async fn sleep_until(&self, tick: DateTime<Utc>, shutdown: &CancellationToken) -> bool {
        loop {
            let now = self.clock.now();
            if now >= tick {
                return true;
            }
            let wait = (tick - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(self.wake_interval);
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn job_loop(self: Arc<Self>, index: usize, shutdown: CancellationToken) {
        let job = &self.jobs[index];
        let name = job.spec.name.as_str();
        let mut after = self.clock.now();
        while !shutdown.is_cancelled() {
            let Some(next) = job.next_after(after) else {
                warn!(job = name, after = %after, "the schedule has no further tick; the job stops");
                return;
            };
            debug!(job = name, next = %next, "sleeping until the next tick");
            if !self.sleep_until(next, &shutdown).await {
                return;
            }
            let now = self.clock.now();
            // Woke late (suspended process, starved runtime): run the latest due tick once.
            let (skipped, latest) = job.ticks_between(next, now);
            let tick = latest.unwrap_or(next);
            if skipped > 0 {
                warn!(
                    job = name,
                    skipped,
                    first_skipped = %next,
                    running = %tick,
                    "woke up late; missed ticks are skipped, the latest one runs"
                );
            }
            self.clone().fire(index, tick, &shutdown).await;
            let done = self.clock.now();
            let (missed, _) = job.ticks_between(tick, done);
            if missed > 0 {
                warn!(
                    job = name,
                    skipped = missed,
                    tick = %tick,
                    finished = %done,
                    "the run outlasted later ticks; they are skipped"
                );
            }
            after = tick.max(done);
        }
    }

    /// Takes the tick's lease and, if this instance won it, runs the job once.
    async fn fire(
        self: Arc<Self>,
        index: usize,
        tick: DateTime<Utc>,
        shutdown: &CancellationToken,
    ) {
        let job = &self.jobs[index];
        let name = job.spec.name.clone();
        let runs = self.service.run_store().clone();
        let lease = lease_name(&name, tick);
        let now = self.clock.now();
        let hold_until = job.next_after(tick).unwrap_or(tick).max(now) + LEASE_MARGIN;
        let ttl = (hold_until - now)
            .to_std()
            .unwrap_or(Duration::from_secs(60));
        match runs.try_acquire_lease(&lease, &self.holder, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                debug!(job = %name, tick = %tick, "another instance runs this tick");
                return;
            }
            Err(e) => {
                warn!(job = %name, tick = %tick, error = %e, "could not take the tick's lease; the tick is skipped");
                return;
            }
        }
        let previous = self
            .state()
            .entry(name.clone())
            .or_default()
            .held_lease
            .replace(lease);
        if let Some(previous) = previous {
            // Nobody can want that tick any more: every instance has moved past it.
            if let Err(e) = runs.release_lease(&previous, &self.holder).await {
                debug!(job = %name, lease = %previous, error = %e, "could not release an old lease");
            }
        }

        let before = self
            .state()
            .entry(name.clone())
            .or_default()
            .last
            .replace(LastJobRun {
                fired_at: tick,
                run_id: None,
                status: RunStatus::Running,
                error: None,
            });
        info!(job = %name, tick = %tick, instance = %self.holder, "scheduled job started");
        let cancel = shutdown.child_token();
        let this = self.clone();
        let outcome = tokio::spawn(async move { this.execute(index, tick, cancel).await }).await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(join) => Some(LastJobRun {
                fired_at: tick,
                run_id: None,
                status: RunStatus::Failed,
                error: Some(format!("the job's task ended abnormally: {join}")),
            }),
        };
        match outcome {
            Some(last) => {
                match last.status {
                    RunStatus::Failed => error!(
                        job = %name,
                        tick = %tick,
                        run_id = ?last.run_id,
                        error = last.error.as_deref().unwrap_or(""),
                        "scheduled job failed; its next tick runs as usual"
                    ),
                    status => info!(
                        job = %name,
                        tick = %tick,
                        run_id = ?last.run_id,
                        status = status.as_str(),
                        "scheduled job finished"
                    ),
                }
                self.set_last(&name, last);
            }
            // Skipped (overlap, shutdown before it started): the previous outcome stands.
            None => self.state().entry(name).or_default().last = before,
        }
    }

    /// Runs the job's action for `tick`. `None` when the tick was skipped.
    async fn execute(
        &self,
        index: usize,
        tick: DateTime<Utc>,
        cancel: CancellationToken,
    ) -> Option<LastJobRun> {
        let job = &self.jobs[index];
        let name = job.spec.name.as_str();
        let finished = |run_id, status, error| LastJobRun {
            fired_at: tick,
            run_id,
            status,
            error,
        };
        match &job.spec.action {
            JobAction::Cleanup(request) => {
                let request = request.clone().scheduled(name);
                let give_up_at = job.next_after(tick);
                loop {
                    match self
                        .service
                        .cleanup_with_cancel(request.clone(), cancel.clone())
                        .await
                    {
                        Ok(report) => {
                            let status = if report.stopped == Some(StopReason::Cancelled) {
                                RunStatus::Cancelled
                            } else {
                                RunStatus::Succeeded
                            };
                            return Some(finished(Some(report.run_id), status, None));
                        }
                        Err(Error::AlreadyRunning { run_id, .. }) => {
                            let retry_at = self.clock.now()
                                + TimeDelta::from_std(self.busy_retry)
                                    .unwrap_or(TimeDelta::seconds(5));
                            if give_up_at.is_some_and(|t| retry_at >= t) {
                                warn!(job = name, tick = %tick, other_run = %run_id,
                                    "an overlapping run is still in progress at the next tick; this tick is skipped");
                                return None;
                            }
                            debug!(job = name, other_run = %run_id, "an overlapping run is in progress; waiting for it");
                            tokio::select! {
                                _ = cancel.cancelled() => return None,
                                _ = tokio::time::sleep(self.busy_retry) => {}
                            }
                        }
                        Err(e) => {
                            let run_id = match &e {
                                Error::RunFailed { partial, .. } => Some(partial.run_id),
                                _ => None,
                            };
                            return Some(finished(
                                run_id,
                                RunStatus::Failed,
                                Some(error_chain(&e)),
                            ));
                        }
                    }
                }
            }
            JobAction::Report(period) => match self.service.generate_and_send_report(*period).await
            {
                Ok(_) => Some(finished(None, RunStatus::Succeeded, None)),
                Err(e) => Some(finished(None, RunStatus::Failed, Some(error_chain(&e)))),
            },
        }
    }

    /// The newest recorded run of every cleanup job (any instance), from the run store.
    async fn recorded_last_runs(&self, now: DateTime<Utc>) -> HashMap<String, LastJobRun> {
        let cleanup_jobs: Vec<&Job> = self
            .jobs
            .iter()
            .filter(|j| matches!(j.spec.action, JobAction::Cleanup(_)))
            .collect();
        let Some(lookback) = cleanup_jobs.iter().map(|j| j.lookback(now)).max() else {
            return HashMap::new();
        };
        let query = RunQuery {
            since: Some(now - lookback),
            ..RunQuery::default()
        };
        let runs = match self.service.run_store().runs(&query).await {
            Ok(runs) => runs,
            Err(e) => {
                warn!(error = %e, "could not read run records; listing this instance's last runs only");
                return HashMap::new();
            }
        };
        let mut found = HashMap::new();
        for job in cleanup_jobs {
            // Newest first.
            if let Some(run) = runs
                .iter()
                .find(|r| r.job.as_deref() == Some(job.spec.name.as_str()))
            {
                found.insert(
                    job.spec.name.clone(),
                    LastJobRun {
                        fired_at: job
                            .tick_at_or_before(run.created_at)
                            .unwrap_or(run.created_at),
                        run_id: Some(run.id),
                        status: run.status,
                        error: run.error.clone(),
                    },
                );
            }
        }
        found
    }
}

/// The later of what this instance remembers and what the run store says; the store
/// wins a tie (it has the final status even when another instance ran the job).
fn newest(local: Option<LastJobRun>, recorded: Option<LastJobRun>) -> Option<LastJobRun> {
    match (local, recorded) {
        (Some(l), Some(r)) => Some(if l.fired_at > r.fired_at { l } else { r }),
        (l, r) => r.or(l),
    }
}

#[async_trait]
impl Scheduler for CronScheduler {
    async fn jobs(&self) -> Result<Vec<JobInfo>> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut recorded = inner.recorded_last_runs(now).await;
        let state = inner.state();
        Ok(inner
            .jobs
            .iter()
            .map(|job| {
                let name = &job.spec.name;
                let local = state.get(name).and_then(|s| s.last.clone());
                JobInfo {
                    name: name.clone(),
                    cron: job.spec.cron.clone(),
                    description: job.description.clone(),
                    enabled: job.spec.enabled,
                    next_run: if job.spec.enabled {
                        job.next_after(now)
                    } else {
                        None
                    },
                    last_run: newest(local, recorded.remove(name)),
                }
            })
            .collect())
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let inner = &self.inner;
        if inner.running.swap(true, Ordering::SeqCst) {
            return Err(Error::InvalidArgument {
                name: "scheduler",
                message: "this scheduler is already running".into(),
            });
        }
        let _running = RunningGuard(&inner.running);
        let mut loops = tokio::task::JoinSet::new();
        for (index, job) in inner.jobs.iter().enumerate() {
            if job.spec.enabled {
                loops.spawn(inner.clone().job_loop(index, shutdown.clone()));
            } else {
                debug!(job = %job.spec.name, "job disabled");
            }
        }
        info!(instance = %inner.holder, jobs = loops.len(), "scheduler started");
        if loops.is_empty() {
            shutdown.cancelled().await;
        }
        while let Some(ended) = loops.join_next().await {
            if let Err(e) = ended {
                error!(error = %e, "a job loop ended abnormally");
            }
        }
        info!(instance = %inner.holder, "scheduler stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap()
    }

    #[test]
    fn five_fields_only_and_errors_name_the_job() {
        let now = at(1, 0, 0);
        assert!(parse_cron("j", "0 * * * *", now).is_ok());
        assert!(parse_cron("j", "@weekly", now).is_ok());
        for bad in [
            "",
            "0 0 * * * *",
            "61 * * * *",
            "* * *",
            "0 0 30 2 *",
            "nonsense",
        ] {
            match parse_cron("nightly", bad, now) {
                Err(Error::InvalidCron {
                    job, expression, ..
                }) => {
                    assert_eq!(job, "nightly");
                    assert_eq!(expression, bad);
                }
                other => panic!("`{bad}` gave {other:?}"),
            }
        }
    }

    #[test]
    fn default_ticks_fall_where_the_spec_says() {
        // 2026-03-01 is a Sunday.
        assert_eq!(at(1, 0, 0).format("%a").to_string(), "Sun");
        let job = |cron: &str| Job {
            spec: JobSpec::new("j", cron, JobAction::Report(crate::ReportPeriod::Weekly)),
            cron: parse_cron("j", cron, at(1, 0, 0)).unwrap(),
            description: String::new(),
        };
        let weekly = job("0 3 * * 0");
        assert_eq!(weekly.next_after(at(1, 3, 0)), Some(at(8, 3, 0)));
        assert_eq!(weekly.next_after(at(2, 0, 0)), Some(at(8, 3, 0)));
        let daily = job("0 2 * * *");
        assert_eq!(daily.next_after(at(1, 2, 0)), Some(at(2, 2, 0)));
        let hourly = job("0 * * * *");
        assert_eq!(
            hourly.ticks_between(at(1, 0, 0), at(1, 5, 30)),
            (5, Some(at(1, 5, 0)))
        );
        assert_eq!(hourly.tick_at_or_before(at(1, 5, 0)), Some(at(1, 5, 0)));
        assert!(hourly.lookback(at(1, 0, 30)) >= TimeDelta::hours(2));
    }

    #[test]
    fn lease_names_carry_job_and_tick() {
        assert_eq!(
            lease_name("hourly_cleanup", at(1, 2, 0)),
            "hourly_cleanup@2026-03-01T02:00:00Z"
        );
    }
}
