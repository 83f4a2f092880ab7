//! The pool connection that consecutive batches hand on to each other.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

/// How long a kept connection waits for the next batch before it goes back to the pool.
const IDLE: Duration = Duration::from_millis(250);

/// The kept connection with the state its batch left it in and when it was kept.
type Slot<DB, S> = Option<(PoolConnection<DB>, S, Instant)>;

/// The kept connection, and whether a task watches it.
struct Shared<DB: Database, S> {
    slot: Mutex<Slot<DB, S>>,
    watched: AtomicBool,
}

impl<DB: Database, S> Shared<DB, S> {
    fn slot(&self) -> MutexGuard<'_, Slot<DB, S>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The connection a batch hands on to the next one, so that the batches of a run do not
/// each pay the pool's liveness check on acquire (a round trip to the server, which sqlx
/// makes by default: `test_before_acquire`). A connection is kept only after a batch
/// that succeeded on it, and goes back to the pool when no batch has taken it for 250 ms.
///
/// `S` is what the store needs to know of the state its last batch left the connection
/// in; it travels with the connection, so a connection from the pool never passes for a
/// kept one.
pub(crate) struct KeptConnection<DB: Database, S = ()> {
    shared: Arc<Shared<DB, S>>,
}

impl<DB: Database, S: Send + 'static> KeptConnection<DB, S> {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                slot: Mutex::new(None),
                watched: AtomicBool::new(false),
            }),
        }
    }

    /// The kept connection with its state and how long it waited, or else one from
    /// `pool` (and `None`).
    pub(crate) async fn take(
        &self,
        pool: &Pool<DB>,
    ) -> Result<(PoolConnection<DB>, Option<(S, Duration)>), sqlx::Error> {
        let kept = self.shared.slot().take();
        match kept {
            Some((conn, state, kept_at)) => Ok((conn, Some((state, kept_at.elapsed())))),
            None => Ok((pool.acquire().await?, None)),
        }
    }

    /// Keeps `conn`, on which a batch just succeeded, in `state`, for the next batch.
    pub(crate) fn keep(&self, conn: PoolConnection<DB>, state: S) {
        // A connection already kept (by a batch running alongside) is dropped: it goes
        // back to the pool (or is closed, if its store marked it so).
        let displaced = self.shared.slot().replace((conn, state, Instant::now()));
        drop(displaced);
        // One task watches the slot for as long as it holds a connection, not one per batch.
        if !self.shared.watched.swap(true, Ordering::SeqCst) {
            tokio::spawn(watch(Arc::downgrade(&self.shared)));
        }
    }
}

/// Drops the kept connection (back to the pool, or closed if its store marked it so) once
/// it has waited `IDLE` for a batch; ends when the slot is empty (deciding so under the
/// slot's lock, so that a connection kept meanwhile finds the slot unwatched and starts a
/// new watcher).
async fn watch<DB: Database, S>(shared: std::sync::Weak<Shared<DB, S>>) {
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
                Some((_, _, kept_at)) if kept_at.elapsed() >= IDLE => {
                    slot.take();
                    shared.watched.store(false, Ordering::SeqCst);
                    return;
                }
                Some((_, _, kept_at)) => *kept_at + IDLE,
            }
        };
        tokio::time::sleep_until(due.into()).await;
    }
}

impl<DB: Database, S> fmt::Debug for KeptConnection<DB, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeptConnection")
            .field("kept", &self.shared.slot().is_some())
            .finish()
    }
}
