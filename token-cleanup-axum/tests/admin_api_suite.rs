//! The admin-API conformance suite on the axum adapter, once per store.

use std::sync::Arc;

use token_cleanup_axum::AxumIntegration;
use token_cleanup_core::MemoryStore;
use token_cleanup_core::admin::suite::{fresh_postgres_store, fresh_sqlite_store};

token_cleanup_core::admin_api_conformance_tests!(sqlite, AxumIntegration, fresh_sqlite_store(), #[tokio::test]);
token_cleanup_core::admin_api_conformance_tests!(memory, AxumIntegration, async { Arc::new(MemoryStore::new()) }, #[tokio::test]);
token_cleanup_core::admin_api_conformance_tests!(postgres, AxumIntegration, fresh_postgres_store(), #[tokio::test]);
