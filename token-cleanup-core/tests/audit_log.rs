//! Spans and audit events of a run carry ids and counts, never token values.
//!
//! Alone in its test binary: `tracing` caches per-callsite interest process-wide, so a
//! concurrently running test without a subscriber could make these callsites look
//! disabled while this test's scoped subscriber is installed.

use std::io::Write;
use std::sync::{Arc, Mutex};

use sqlx::sqlite::SqlitePoolOptions;
use token_cleanup_core::test_util::TestStore;
use token_cleanup_core::test_util::suite::{mixed_tokens, service};
use token_cleanup_core::{AUDIT_TARGET, CleanupRequest, SqliteStore, TokenStore, TokenTable};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

async fn sqlite_store() -> Arc<SqliteStore> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let store = Arc::new(SqliteStore::new(pool, TokenTable::default()));
    store.migrate().await.unwrap();
    store
}

/// Runs `run` under a subscriber that writes every event and span close to a buffer;
/// returns what it wrote and what `run` returned.
fn captured<T>(run: impl std::future::Future<Output = T>) -> (String, T) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = tracing::subscriber::with_default(subscriber, || rt.block_on(run));
    (captured.text(), out)
}

/// The rows that the closing `token_cleanup.batch` spans in `logs` recorded.
fn batch_span_rows(logs: &str) -> u64 {
    logs.lines()
        .filter(|line| line.contains(": close time.busy"))
        .filter_map(|line| line.split("token_cleanup.batch{").nth(1))
        .filter_map(|fields| fields.split('}').next())
        .filter_map(|fields| fields.split(" rows=").nth(1))
        .map(|rows| {
            let rows = rows.split(' ').next().unwrap_or_default();
            rows.parse::<u64>().expect("a row count")
        })
        .sum()
}

#[test]
fn spans_and_audit_events_carry_ids_and_counts_never_token_values() {
    let (logs, report) = captured(async {
        let store = sqlite_store().await;
        // The test seeding writes `hash-<id>` as each token's hash.
        store.insert_tokens(&mixed_tokens(5)).await.unwrap();
        service(store)
            .cleanup_expired_tokens(
                CleanupRequest::all_types()
                    .batch_size(3)
                    .requested_by("alice"),
            )
            .await
            .unwrap()
    });
    assert!(logs.contains(AUDIT_TARGET), "{logs}");
    assert!(logs.contains("cleanup_started") && logs.contains("cleanup_finished"));
    assert!(logs.contains("requested_by=\"alice\""), "{logs}");
    assert!(logs.contains(&report.run_id.to_string()));
    assert!(logs.contains("token_cleanup.run") && logs.contains("token_cleanup.batch"));
    // Batch spans record their rows: the spans of the committed batches, as they close,
    // add up to the report.
    assert!(report.total_cleaned > 0);
    assert_eq!(batch_span_rows(&logs), report.total_cleaned, "{logs}");
    assert!(!logs.contains("hash-"), "a token hash reached the logs");

    // On PostgreSQL, where one `CALL` runs several batches, each batch still has its
    // span, and the spans add up to the report.
    #[cfg(feature = "postgres")]
    {
        use token_cleanup_core::PostgresStore;
        use token_cleanup_core::test_util::servers::postgres as server;
        let (logs, report) = captured(async {
            let pool = server::pool("token-cleanup-test", 2).await;
            let schema = server::fresh_schema(&pool).await;
            let table = TokenTable::builder().schema(&schema).build().unwrap();
            let store = Arc::new(PostgresStore::new(pool, table));
            store.migrate().await.unwrap();
            store.insert_tokens(&mixed_tokens(40)).await.unwrap();
            service(store)
                .cleanup_expired_tokens(CleanupRequest::all_types().batch_size(3))
                .await
                .unwrap()
        });
        assert!(logs.contains("token_cleanup.batches{"), "{logs}");
        assert!(report.total_cleaned > 0);
        assert_eq!(batch_span_rows(&logs), report.total_cleaned, "{logs}");
        let batch_spans = logs
            .lines()
            .filter(|line| line.contains(": close time.busy"))
            .filter(|line| line.contains("token_cleanup.batch{"))
            .count();
        assert_eq!(batch_spans as u64, report.batches, "{logs}");
        assert!(!logs.contains("hash-"), "a token hash reached the logs");
    }
}
