//! The store conformance suite on [`MemoryStore`].

use std::sync::Arc;

use token_cleanup_core::MemoryStore;

token_cleanup_core::store_conformance_tests!(memory, async { Arc::new(MemoryStore::new()) });
