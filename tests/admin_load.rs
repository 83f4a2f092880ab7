//! The example hosts under load: 200 concurrent `GET /statistics` and 200 concurrent
//! `POST /health-check` on loopback, against the axum and the actix-web app. Every answer
//! must be `200` with a JSON body; no error, no panic. Bounded (30 s per request); no
//! timing assertion (the numbers are in `examples/bench_admin_api.rs`).

#[path = "../examples/common/mod.rs"]
mod common;
#[path = "../examples/common/load.rs"]
mod load;

use token_cleanup::CancellationToken;

const CONCURRENT: usize = 200;

async fn check(name: &str, addr: std::net::SocketAddr) {
    for (method, path) in [
        ("GET", "/api/admin/cleanup/statistics"),
        ("POST", "/api/admin/cleanup/health-check"),
    ] {
        let (results, _) = load::burst(addr, method, path, CONCURRENT).await;
        assert_eq!(results.len(), CONCURRENT);
        let failures: Vec<_> = results
            .iter()
            .filter(|(outcome, _)| outcome != &Ok(200))
            .map(|(outcome, _)| outcome.clone())
            .collect();
        assert!(
            failures.is_empty(),
            "{name} {method} {path}: {} failed, e.g. {:?}",
            failures.len(),
            failures.first()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_example_hosts_answer_200_concurrent_requests() {
    let shutdown = CancellationToken::new();
    let axum_addr = load::serve_axum(
        load::seeded_store("load-axum", 2_000).await,
        shutdown.clone(),
    );
    let (actix_addr, actix) = load::serve_actix(
        load::seeded_store("load-actix", 2_000).await,
        shutdown.clone(),
    );
    check("axum", axum_addr).await;
    check("actix", actix_addr).await;
    shutdown.cancel();
    actix.stop(true).await;
}
