//! A host that runs the cleanup scheduler against an SQLite file, on a fast schedule.
//!
//! ```sh
//! CLEANUP_CRON="* * * * *" cargo run --example scheduled --features sqlite,scheduler
//! ```
//!
//! - `CLEANUP_CRON`: schedule of the cleanup job (5 fields, UTC; default every minute).
//! - `TOKEN_CLEANUP_DB`: the SQLite file (default `scheduled.db`, created if missing).
//!
//! Every 20 seconds it adds a few tokens that have already expired, so every run has
//! something to remove, and it prints each run as it finishes. Ctrl-C stops it; a job
//! running then stops at its next batch boundary. Start it twice on the same file to see
//! each tick run in only one of them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use token_cleanup::{
    CancellationToken, CronScheduler, HOURLY_CLEANUP, Scheduler, SqliteStore, TokenCleanupService,
    TokenStore, TokenTable, TracingNotifier, sqlx,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let cron = std::env::var("CLEANUP_CRON").unwrap_or_else(|_| "* * * * *".into());
    let path = std::env::var("TOKEN_CLEANUP_DB").unwrap_or_else(|_| "scheduled.db".into());

    let store =
        Arc::new(SqliteStore::connect(&format!("sqlite://{path}"), TokenTable::default()).await?);
    store.migrate().await?;
    let service = TokenCleanupService::builder(store.clone())
        .notifier(Arc::new(TracingNotifier))
        .build()?;
    // The hourly job runs on CLEANUP_CRON; the daily job keeps 02:00. A bad expression
    // stops here, naming the job.
    let scheduler = CronScheduler::builder(service.clone())
        .schedule(HOURLY_CLEANUP, cron)
        .build()?;
    println!("instance {} on {path}", scheduler.instance_id());
    for job in scheduler.jobs().await? {
        println!(
            "  {:<16} {:<12} {:<32} next {}",
            job.name,
            job.cron,
            job.description,
            job.next_run.map_or("-".into(), |t| t.to_rfc3339())
        );
    }

    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (scheduler, shutdown) = (scheduler.clone(), shutdown.clone());
        async move { scheduler.run(shutdown).await }
    });

    let mut printed = HashSet::new();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    let mut seed = tokio::time::interval(Duration::from_secs(20));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = seed.tick() => seed_expired(&store, 25).await?,
            _ = poll.tick() => {
                for run in service.recent_runs(20).await?.into_iter().rev() {
                    if run.status.is_finished() && printed.insert(run.id) {
                        let p = &run.progress;
                        println!(
                            "{} {:<14} {:<9} removed {:>4} tokens in {} batches, {} ms{}",
                            run.created_at.format("%H:%M:%S"),
                            run.job.as_deref().unwrap_or("manual"),
                            run.status.as_str(),
                            p.total_cleaned,
                            p.batches,
                            p.duration.as_millis(),
                            run.error.map(|e| format!(" ({e})")).unwrap_or_default(),
                        );
                    }
                }
            }
        }
    }
    println!("stopping ...");
    shutdown.cancel();
    running.await??;
    Ok(())
}

/// Inserts `n` tokens that expired a minute ago.
async fn seed_expired(store: &SqliteStore, n: usize) -> Result<(), sqlx::Error> {
    let expired = (Utc::now() - TimeDelta::minutes(1)).to_rfc3339();
    for i in 0..n {
        sqlx::query(
            "INSERT INTO verification_tokens (token_type, token_hash, expires_at) VALUES (?, ?, ?)",
        )
        .bind(["password_reset", "email_verification", "magic_link"][i % 3])
        .bind(uuid_like())
        .bind(&expired)
        .execute(store.pool())
        .await?;
    }
    Ok(())
}

/// A unique placeholder for the hash column (the example never makes real tokens).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "example-{}-{}",
        Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
