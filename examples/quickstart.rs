//! Quickstart: an SQLite file, 100,000 tokens, statistics, a dry run, a real cleanup and a
//! health check. No server and no environment variable needed.
//!
//! ```sh
//! cargo run --release --example quickstart --features sqlite
//! ```
//!
//! Set `RUST_LOG=token_cleanup=debug` to see the run and batch spans.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use token_cleanup::{
    CleanupRequest, HealthConfig, SqliteStore, TokenCleanupService, TokenStore, TokenTable, sqlx,
    token_types,
};

const TOKENS: usize = 100_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    // 1. The host's database: a fresh SQLite file in the working directory.
    let path = "token-cleanup-quickstart.db";
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let store =
        Arc::new(SqliteStore::connect(&format!("sqlite://{path}"), TokenTable::default()).await?);
    store.migrate().await?;

    // 2. Seed 100,000 tokens the way an application writes them.
    seed(store.pool()).await?;
    println!("Seeded {TOKENS} tokens into {path}\n");

    // 3. The engine. No scheduler runs in this example, so health does not expect one.
    let service = TokenCleanupService::builder(store.clone())
        .health(HealthConfig::default().max_scheduled_run_age(None))
        .build()?;

    let stats = service.statistics(30).await?;
    println!("Statistics");
    println!(
        "  {:<20} {:>8} {:>8} {:>8} {:>8} {:>14}",
        "type", "total", "expired", "active", "used", "oldest expired"
    );
    for t in &stats.token_types {
        let c = &t.counts;
        let age = t
            .oldest_expired_age_secs
            .map(|s| format!("{:.1} days ago", s as f64 / 86_400.0))
            .unwrap_or_default();
        println!(
            "  {:<20} {:>8} {:>8} {:>8} {:>8} {:>14}",
            c.token_type, c.total, c.expired, c.active, c.used, age
        );
    }
    println!(
        "  recommendation: run now = {}, batch size {}\n",
        stats.recommendation.run_now, stats.recommendation.suggested_batch_size
    );

    let dry = service
        .cleanup_expired_tokens(CleanupRequest::all_types().dry_run(true))
        .await?;
    println!(
        "Dry run: {} tokens would be removed {:?}",
        dry.total_cleaned, dry.by_type
    );

    let report = service
        .cleanup_expired_tokens(CleanupRequest::all_types().batch_size(1000))
        .await?;
    println!(
        "Cleanup: removed {} tokens in {} batches of up to {} in {:.0} ms ({:.0} tokens/s, slowest batch {:.1} ms)",
        report.total_cleaned,
        report.batches,
        report.batch_size,
        report.duration.as_secs_f64() * 1000.0,
        report.tokens_per_second,
        report.slowest_batch.as_secs_f64() * 1000.0,
    );
    for (token_type, n) in &report.by_type {
        println!("  {token_type:<20} {n:>8}");
    }
    assert_eq!(dry.total_cleaned, report.total_cleaned);

    let health = service.health_check().await;
    println!(
        "\nHealth: {:?} (database {:.2} ms, expired backlog {}){}",
        health.status,
        health.database.latency_ms,
        health.expired_backlog.unwrap_or_default(),
        if health.reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", health.reasons.join("; "))
        }
    );
    Ok(())
}

/// 100,000 tokens over the four well-known types: about 60% expired (up to 30 days ago),
/// 30% active, 10% used, spread the way a live table looks.
async fn seed(pool: &sqlx::SqlitePool) -> Result<(), sqlx::Error> {
    let now = Utc::now();
    let mut tx = pool.begin().await?;
    for i in 0..TOKENS {
        let token_type = token_types::ALL[i % 4];
        // A cheap deterministic spread: minutes in [-30 days, +20 days).
        let minutes = ((i * 7919) % 72_000) as i64 - 43_200;
        let expires_at = now + TimeDelta::minutes(minutes);
        let used_at = ((i / 4) % 10 == 0).then(|| expires_at - TimeDelta::minutes(30));
        sqlx::query(
            "INSERT INTO verification_tokens (token_type, token_hash, expires_at, used_at) VALUES (?, ?, ?, ?)",
        )
        .bind(token_type)
        .bind(format!("sha256:{i:016x}"))
        .bind(expires_at)
        .bind(used_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
