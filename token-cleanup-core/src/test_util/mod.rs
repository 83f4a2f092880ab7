//! Test support: the store conformance suite, a fault-injecting wrapper and fixtures.
//!
//! A store joins the suite by implementing [`TestStore`] and invoking
//! [`store_conformance_tests!`](crate::store_conformance_tests) with an async factory that
//! returns a fresh, migrated store on its own table or database:
//!
//! ```no_run
//! use std::sync::Arc;
//! use token_cleanup_core::MemoryStore;
//!
//! // In `tests/my_store.rs`: one `#[tokio::test]` per suite function in `mod memory`.
//! token_cleanup_core::store_conformance_tests!(memory, async { Arc::new(MemoryStore::new()) });
//! # fn main() {}
//! ```

use async_trait::async_trait;

use crate::error::Result;
use crate::store::{MemoryStore, Token, TokenStore};

mod observed;
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "mysql"))))]
pub mod servers;
pub mod suite;

pub use observed::ObservedStore;

/// What the conformance suite needs beyond [`TokenStore`]: seeding, inspection and fault
/// injection. Implemented by every store of this crate when `test-util` is on.
#[async_trait]
pub trait TestStore: TokenStore {
    /// Inserts tokens (into a table created by `migrate()`).
    async fn insert_tokens(&self, tokens: &[Token]) -> Result<()>;

    /// Ids of every token left, ascending.
    async fn token_ids(&self) -> Result<Vec<i64>>;

    /// Makes every batch that would delete `id` fail inside the database, rolling the
    /// whole batch back.
    async fn fail_deleting(&self, id: i64) -> Result<()>;

    /// Removes injected failures.
    async fn clear_failures(&self) -> Result<()>;

    /// `true` when every batch deletes its whole limit while that many rows are left;
    /// `false` for a store whose batches may stop short of it by design (they never
    /// exceed it). The suite checks exact batch counts only for stores that fill them.
    fn fills_batches(&self) -> bool {
        true
    }

    /// The finest instant the store keeps (what a stored expiry is truncated to).
    fn time_precision(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::nanoseconds(1)
    }
}

#[async_trait]
impl TestStore for MemoryStore {
    async fn insert_tokens(&self, tokens: &[Token]) -> Result<()> {
        self.insert(tokens.iter().cloned());
        Ok(())
    }

    async fn token_ids(&self) -> Result<Vec<i64>> {
        Ok(self.tokens().into_iter().map(|t| t.id).collect())
    }

    async fn fail_deleting(&self, id: i64) -> Result<()> {
        MemoryStore::fail_deleting(self, id);
        Ok(())
    }

    async fn clear_failures(&self) -> Result<()> {
        MemoryStore::clear_failures(self);
        Ok(())
    }
}
