//! The pool connection that consecutive batches hand on to each other.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

/// How long a kept connection waits for the next batch before it goes back to the pool.
const IDLE: Duration = Duration::from_millis(250);

/// The kept connection (and when it was kept), and whether a task watches it.
struct Shared<DB: Database> {
    slot: Mutex<Option<(PoolConnection<DB>, Instant)>>,
    watched: AtomicBool,
}

impl<DB: Database> Shared<DB> {
    fn slot(&self) -> MutexGuard<'_, Option<(PoolConnection<DB>, Instant)>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The connection a batch hands on to the next one, so that the batches of a run do not
/// each pay the pool's liveness check on acquire (a round trip to the server, which sqlx
/// makes by default: `test_before_acquire`). A connection is kept only after a batch
/// that succeeded on it, and goes back to the pool when no batch has taken it for 250 ms.
pub(crate) struct KeptConnection<DB: Database> {
    shared: Arc<Shared<DB>>,
}

impl<DB: Database> KeptConnection<DB> {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                slot: Mutex::new(None),
                watched: AtomicBool::new(false),
            }),
        }
    }

    /// The kept connection, or else one from `pool`.
    pub(crate) async fn take(&self, pool: &Pool<DB>) -> Result<PoolConnection<DB>, sqlx::Error> {
        let kept = self.shared.slot().take();
        match kept {
            Some((conn, _)) => Ok(conn),
            None => pool.acquire().await,
        }
    }

    /// Keeps `conn`, on which a batch just succeeded, for the next batch.
    pub(crate) fn keep(&self, conn: PoolConnection<DB>) {
        // A connection already kept (by a batch running alongside) goes back to the pool.
        let displaced = self.shared.slot().replace((conn, Instant::now()));
        drop(displaced);
        // One task watches the slot for as long as it holds a connection, not one per batch.
        if !self.shared.watched.swap(true, Ordering::SeqCst) {
            tokio::spawn(watch(Arc::downgrade(&self.shared)));
        }
    }
}

/// Gives the kept connection back to the pool once it has waited `IDLE` for a batch; ends
/// when the slot is empty (deciding so under the slot's lock, so that a connection kept
/// meanwhile finds the slot unwatched and starts a new watcher).
async fn watch<DB: Database>(shared: std::sync::Weak<Shared<DB>>) {
    loop {
        let due = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut slot = shared.slot();
            match slot.as_ref() {
                None => {
                    shared.watched.store(false, Ordering::SeqCst);
                    return;
                }
                Some((_, kept_at)) if kept_at.elapsed() >= IDLE => {
                    slot.take();
                    shared.watched.store(false, Ordering::SeqCst);
                    return;
                }
                Some((_, kept_at)) => *kept_at + IDLE,
            }
        };
        tokio::time::sleep_until(due.into()).await;
    }
}

impl<DB: Database> fmt::Debug for KeptConnection<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeptConnection")
            .field("kept", &self.shared.slot().is_some())
            .finish()
    }
}
