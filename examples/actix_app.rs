//! A small actix-web host with the token-cleanup admin API and the background scheduler.
//!
//! ```text
//! export ADMIN_JWT_SECRET=$(openssl rand -hex 32)
//! cargo run --example actix_app --features actix,sqlite
//! TOKEN=$(cargo run -q --example mint_admin_token --features jwt -- alice)
//! curl -s -H "Authorization: Bearer $TOKEN" localhost:8080/api/admin/cleanup/statistics
//! ```
//!
//! Environment: `DATABASE_URL` (default `sqlite://token-cleanup-example.db`),
//! `ADMIN_JWT_SECRET` (required), `BIND` (default `127.0.0.1:8080`).

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;

use actix_web::HttpServer;
use token_cleanup::CancellationToken;
use token_cleanup::actix::spawn_scheduler;

#[actix_web::main]
async fn main() -> ExitCode {
    common::run(serve).await
}

async fn serve(config: common::Config) -> Result<(), String> {
    let store = common::connect_store(&config.database_url).await?;
    let shutdown = CancellationToken::new();
    let (api, scheduler) = common::build(store, &config.jwt_secret, shutdown.clone())?;

    let jobs = spawn_scheduler(scheduler, shutdown.clone());
    let server = HttpServer::new(move || common::actix_app(api.clone()))
        .bind(&config.bind)
        .map_err(|e| format!("cannot listen on {}: {e}", config.bind))?;
    println!("listening on http://{}", config.bind);
    // actix-web stops gracefully on SIGINT/SIGTERM; then running cleanups stop at their
    // next batch boundary and the scheduler ends.
    let result = server.run().await.map_err(|e| e.to_string());
    shutdown.cancel();
    jobs.join().await;
    result
}
