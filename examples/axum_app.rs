//! A small axum host with the token-cleanup admin API and the background scheduler.
//!
//! ```text
//! export ADMIN_JWT_SECRET=$(openssl rand -hex 32)
//! cargo run --example axum_app --features axum,sqlite
//! TOKEN=$(cargo run -q --example mint_admin_token --features jwt -- alice)
//! curl -s -H "Authorization: Bearer $TOKEN" localhost:8080/api/admin/cleanup/statistics
//! ```
//!
//! Environment: `DATABASE_URL` (default `sqlite://token-cleanup-example.db`),
//! `ADMIN_JWT_SECRET` (required), `BIND` (default `127.0.0.1:8080`).

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;

use token_cleanup::CancellationToken;
use token_cleanup::axum::spawn_scheduler;

#[tokio::main]
async fn main() -> ExitCode {
    common::run(serve).await
}

async fn serve(config: common::Config) -> Result<(), String> {
    let store = common::connect_store(&config.database_url).await?;
    let shutdown = CancellationToken::new();
    let (api, scheduler) = common::build(store, &config.jwt_secret, shutdown.clone())?;
    let app = common::axum_app(api);

    let jobs = spawn_scheduler(scheduler, shutdown.clone());
    let listener = common::listen(&config.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.bind))?;
    println!("listening on http://{}", config.bind);
    let signal = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            common::shutdown_signal().await;
            // Running cleanups stop at their next batch boundary.
            signal.cancel();
        })
        .await
        .map_err(|e| e.to_string())?;
    shutdown.cancel();
    jobs.join().await;
    Ok(())
}
