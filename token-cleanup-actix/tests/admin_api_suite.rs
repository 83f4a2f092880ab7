//! The admin-API conformance suite on the actix-web adapter, once per store.

use std::sync::Arc;

use token_cleanup_actix::ActixIntegration;
use token_cleanup_core::MemoryStore;
use token_cleanup_core::admin::suite::{fresh_postgres_store, fresh_sqlite_store};

token_cleanup_core::admin_api_conformance_tests!(sqlite, ActixIntegration, fresh_sqlite_store(), #[actix_web::test]);
token_cleanup_core::admin_api_conformance_tests!(memory, ActixIntegration, async { Arc::new(MemoryStore::new()) }, #[actix_web::test]);
token_cleanup_core::admin_api_conformance_tests!(postgres, ActixIntegration, fresh_postgres_store(), #[actix_web::test]);
