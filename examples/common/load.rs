//! Loopback load for the example hosts: serve both apps on `127.0.0.1:0` and fire bounded
//! bursts of concurrent requests at them. Used by `bench_admin_api.rs` (which prints
//! percentiles) and `tests/admin_load.rs` (which checks every answer).
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use token_cleanup::admin::AdminApi;
use token_cleanup::{CancellationToken, SqliteStore, TokenStore, TokenTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common;

/// Secret the load hosts verify tokens with.
pub const SECRET: &str = "load-test-secret-0123456789abcdef0123";

/// A fresh SQLite file in the temp directory with `tokens` tokens (half expired).
pub async fn seeded_store(name: &str, tokens: i64) -> Arc<dyn TokenStore> {
    let path = std::env::temp_dir().join(format!("token-cleanup-{name}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::connect(&url, TokenTable::default())
        .await
        .expect("open SQLite");
    store.migrate().await.expect("migrate");
    let now = chrono::Utc::now();
    let types = token_cleanup::token_types::ALL;
    let mut tx = store.pool().begin().await.expect("begin");
    for id in 0..tokens {
        let expires = if id % 2 == 0 {
            now - chrono::TimeDelta::minutes(id + 1)
        } else {
            now + chrono::TimeDelta::minutes(id + 1)
        };
        sqlx::query(
            "INSERT INTO verification_tokens (id, token_type, token_hash, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(id + 1)
        .bind(types[(id % 4) as usize])
        .bind(format!("hash-{id}"))
        .bind(expires.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
        .execute(&mut *tx)
        .await
        .expect("insert a token");
    }
    tx.commit().await.expect("commit");
    Arc::new(store)
}

/// An admin token for [`SECRET`].
pub fn admin_token() -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "load", "role": "admin", "exp": now + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn api(store: Arc<dyn TokenStore>, shutdown: CancellationToken) -> AdminApi {
    common::build(store, SECRET, shutdown)
        .expect("valid configuration")
        .0
}

/// Serves the axum example app on its own 2-thread runtime (as a host process would,
/// apart from the load generator); returns its address.
pub fn serve_axum(store: Arc<dyn TokenStore>, shutdown: CancellationToken) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async move {
            let app = common::axum_app(api(store, shutdown.clone()));
            let listener = common::listen("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("address"))
                .expect("report the address");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .expect("axum server");
        });
    });
    rx.recv().expect("the axum server starts")
}

/// Serves the actix example app (2 workers) on its own thread; returns its address and a
/// handle that stops it.
pub fn serve_actix(
    store: Arc<dyn TokenStore>,
    shutdown: CancellationToken,
) -> (SocketAddr, actix_web::dev::ServerHandle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let api = api(store, shutdown);
            let server = actix_web::HttpServer::new(move || common::actix_app(api.clone()))
                .workers(2)
                .disable_signals()
                .bind("127.0.0.1:0")
                .expect("bind");
            let addr = server.addrs()[0];
            let server = server.run();
            tx.send((addr, server.handle()))
                .expect("report the address");
            server.await.expect("actix server");
        });
    });
    rx.recv().expect("the actix server starts")
}

/// One HTTP/1.1 request on its own connection; the status code, or an error text.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP response: {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    if !text.contains("\r\n\r\n{") {
        return Err(format!("status {status} without a JSON body"));
    }
    Ok(status)
}

/// Fires `n` concurrent requests (each bounded by 30 s); per request the outcome and
/// latency, plus the wall time of the burst.
pub async fn burst(
    addr: SocketAddr,
    method: &'static str,
    path: &'static str,
    n: usize,
) -> (Vec<(Result<u16, String>, Duration)>, Duration) {
    let token = Arc::new(admin_token());
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let token = token.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let outcome = tokio::time::timeout(
                    Duration::from_secs(30),
                    request(addr, method, path, &token),
                )
                .await
                .unwrap_or_else(|_| Err("timed out after 30 s".to_owned()));
                (outcome, t.elapsed())
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        results.push(task.await.expect("request task"));
    }
    (results, started.elapsed())
}

/// The `p`-th percentile (0..=100) of `latencies`.
pub fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    let rank = ((p / 100.0) * (latencies.len() as f64 - 1.0)).round() as usize;
    latencies[rank.min(latencies.len() - 1)]
}
