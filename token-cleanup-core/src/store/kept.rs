//! The pool connection that consecutive batches hand on to each other.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

/// How long a kept connection waits for the next batch before it goes back to the pool.
const IDLE: Duration = Duration::from_millis(250);

/// The kept connection and when it was kept.
type Slot<DB> = Arc<Mutex<Option<(PoolConnection<DB>, Instant)>>>;

/// The connection a batch hands on to the next one, so that the batches of a run do not
/// each pay the pool's liveness check on acquire (a round trip to the server, which sqlx
/// makes by default: `test_before_acquire`). A connection is kept only after a batch
/// that succeeded on it, and goes back to the pool when no batch has taken it for 250 ms.
pub(crate) struct KeptConnection<DB: Database> {
    slot: Slot<DB>,
}

impl<DB: Database> KeptConnection<DB> {
    pub(crate) fn new() -> Self {
        Self {
            slot: Arc::new(Mutex::new(None)),
        }
    }

    /// The kept connection, or else one from `pool`.
    pub(crate) async fn take(&self, pool: &Pool<DB>) -> Result<PoolConnection<DB>, sqlx::Error> {
        let kept = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match kept {
            Some((conn, _)) => Ok(conn),
            None => pool.acquire().await,
        }
    }

    /// Keeps `conn`, on which a batch just succeeded, for the next batch.
    pub(crate) fn keep(&self, conn: PoolConnection<DB>) {
        let kept_at = Instant::now();
        // A connection already kept (by a batch running alongside) goes back to the pool.
        let displaced = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace((conn, kept_at));
        drop(displaced);
        let slot = Arc::downgrade(&self.slot);
        tokio::spawn(async move {
            tokio::time::sleep(IDLE).await;
            let Some(slot) = slot.upgrade() else {
                return;
            };
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_some_and(|(_, at)| *at == kept_at) {
                // No batch took it since: back to the pool.
                slot.take();
            }
        });
    }
}

impl<DB: Database> fmt::Debug for KeptConnection<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        f.debug_struct("KeptConnection")
            .field("kept", &kept)
            .finish()
    }
}
