//! Loopback load on the example hosts: 200 concurrent `GET /statistics` and 200 concurrent
//! `POST /health-check`, each on its own connection, against the axum and the actix-web
//! app (SQLite file with 10,000 tokens). Prints p50/p99 latency and checks every answer.
//!
//! ```text
//! cargo run --release --example bench_admin_api --features axum,actix,jwt,sqlite
//! ```

#[path = "common/mod.rs"]
mod common;
#[path = "common/load.rs"]
mod load;

use std::time::Duration;

use token_cleanup::CancellationToken;

const CONCURRENT: usize = 200;
const ROUNDS: usize = 3;

#[tokio::main]
async fn main() {
    let shutdown = CancellationToken::new();
    let axum_addr = load::serve_axum(
        load::seeded_store("bench-axum", 10_000).await,
        shutdown.clone(),
    );
    let (actix_addr, actix) = load::serve_actix(
        load::seeded_store("bench-actix", 10_000).await,
        shutdown.clone(),
    );

    println!(
        "{CONCURRENT} concurrent requests per burst, {ROUNDS} bursts, loopback, SQLite 10k tokens"
    );
    println!(
        "{:<7} {:<22} {:>9} {:>9} {:>9} {:>10}",
        "app", "request", "p50 ms", "p99 ms", "max ms", "burst ms"
    );
    for (name, addr) in [("axum", axum_addr), ("actix", actix_addr)] {
        for (method, path) in [
            ("GET", "/api/admin/cleanup/statistics"),
            ("POST", "/api/admin/cleanup/health-check"),
        ] {
            let mut latencies = Vec::new();
            let mut walls = Vec::new();
            for _ in 0..ROUNDS {
                let (results, wall) = load::burst(addr, method, path, CONCURRENT).await;
                for (outcome, latency) in results {
                    match outcome {
                        Ok(200) => latencies.push(latency),
                        other => panic!("{name} {method} {path}: {other:?}"),
                    }
                }
                walls.push(wall);
            }
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let p50 = load::percentile(&mut latencies, 50.0);
            let p99 = load::percentile(&mut latencies, 99.0);
            let max = load::percentile(&mut latencies, 100.0);
            walls.sort();
            println!(
                "{name:<7} {:<22} {:>9.1} {:>9.1} {:>9.1} {:>10.1}",
                format!("{method} {}", path.rsplit('/').next().unwrap_or(path)),
                ms(p50),
                ms(p99),
                ms(max),
                ms(walls[walls.len() / 2])
            );
        }
    }
    shutdown.cancel();
    actix.stop(true).await;
}
