//! The scheduler as a supervised background task tied to the host's shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::schedule::Scheduler;

/// First pause before restarting a scheduler that failed; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A scheduler that ran this long before failing starts again from the first pause.
const HEALTHY_RUN: Duration = Duration::from_secs(300);

/// The scheduler running in the background, from [`spawn_scheduler`].
#[derive(Debug)]
pub struct SchedulerTask {
    shutdown: CancellationToken,
    join: tokio::task::JoinHandle<()>,
}

impl SchedulerTask {
    /// The token that stops the scheduler.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Stops the scheduler (a running job stops at its next batch boundary) and waits for
    /// it.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.join().await;
    }

    /// Waits until the scheduler has stopped (after the shutdown token was cancelled).
    pub async fn join(self) {
        if let Err(e) = self.join.await {
            error!(error = %e, "the scheduler supervisor ended abnormally");
        }
    }
}

/// Runs `scheduler` on a tokio task until `shutdown` is cancelled.
///
/// When [`Scheduler::run`] fails, panics or returns early, the error is logged and the
/// scheduler starts again after a pause (1 s doubling up to 60 s): a database outage
/// must not end scheduled cleanups for the life of the process. Cancel `shutdown` from the
/// host's graceful-shutdown signal, then await [`SchedulerTask::join`].
///
/// ```
/// # use std::sync::Arc;
/// # use async_trait::async_trait;
/// # use token_cleanup_core::{JobInfo, Scheduler, CancellationToken};
/// # #[derive(Debug)] struct Idle;
/// # #[async_trait] impl Scheduler for Idle {
/// #     async fn jobs(&self) -> token_cleanup_core::Result<Vec<JobInfo>> { Ok(vec![]) }
/// #     async fn run(&self, shutdown: CancellationToken) -> token_cleanup_core::Result<()> {
/// #         shutdown.cancelled().await; Ok(())
/// #     }
/// # }
/// use token_cleanup_core::admin::spawn_scheduler;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let shutdown = CancellationToken::new();
/// let task = spawn_scheduler(Arc::new(Idle), shutdown.clone());
/// // ... serve until the host's shutdown signal, then:
/// shutdown.cancel();
/// task.join().await;
/// # }
/// ```
pub fn spawn_scheduler(
    scheduler: Arc<dyn Scheduler>,
    shutdown: CancellationToken,
) -> SchedulerTask {
    let token = shutdown.clone();
    let join = tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if token.is_cancelled() {
                break;
            }
            let started = Instant::now();
            let run = {
                let scheduler = scheduler.clone();
                let token = token.clone();
                // Its own task, so that a panic in a job is caught here.
                tokio::spawn(async move { scheduler.run(token).await })
            };
            match run.await {
                Ok(Ok(())) if token.is_cancelled() => break,
                Ok(Ok(())) => warn!("the scheduler returned before shutdown; starting it again"),
                Ok(Err(e)) => error!(error = %e, "the scheduler failed; starting it again"),
                Err(e) => error!(error = %e, "the scheduler panicked; starting it again"),
            }
            if started.elapsed() >= HEALTHY_RUN {
                backoff = FIRST_BACKOFF;
            }
            if tokio::time::timeout(backoff, token.cancelled())
                .await
                .is_ok()
            {
                break;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        info!("scheduler stopped");
    });
    SchedulerTask { shutdown, join }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::error::{Error, Result};
    use crate::schedule::JobInfo;

    /// Fails twice, panics once, then runs until shutdown.
    #[derive(Debug, Default)]
    struct Flaky {
        starts: AtomicU32,
    }

    #[async_trait]
    impl Scheduler for Flaky {
        async fn jobs(&self) -> Result<Vec<JobInfo>> {
            Ok(Vec::new())
        }
        async fn run(&self, shutdown: CancellationToken) -> Result<()> {
            match self.starts.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(Error::store("memory", "read jobs", "down")),
                2 => panic!("a job panicked"),
                _ => {
                    shutdown.cancelled().await;
                    Ok(())
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_after_errors_and_panics_until_shutdown() {
        let scheduler = Arc::new(Flaky::default());
        let shutdown = CancellationToken::new();
        let task = spawn_scheduler(scheduler.clone(), shutdown.clone());
        // Paused time auto-advances through the backoffs while the task waits.
        while scheduler.starts.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!task.join.is_finished());
        task.shutdown().await;
        assert_eq!(scheduler.starts.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_backoff_stops_at_once() {
        let scheduler = Arc::new(Flaky::default());
        let shutdown = CancellationToken::new();
        let task = spawn_scheduler(scheduler.clone(), shutdown.clone());
        while scheduler.starts.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        shutdown.cancel();
        task.join().await;
        assert_eq!(scheduler.starts.load(Ordering::SeqCst), 1);
    }
}
