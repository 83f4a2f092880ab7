//! What the example hosts share: configuration from the environment, the store, the
//! engine, the admin API and the cron scheduler with the default jobs.
//!
//! Not an example of its own: `axum_app.rs`, `actix_app.rs`, `bench_admin_api.rs` and the
//! load test include it with `#[path]`.
#![allow(dead_code, unreachable_pub)]

use std::process::ExitCode;
use std::sync::Arc;

use token_cleanup::admin::{AdminApi, JwtAuthorizer};
use token_cleanup::{
    CancellationToken, CronScheduler, Scheduler, SqliteStore, TokenCleanupService, TokenStore,
    TokenTable, token_types,
};

/// Where the admin API is mounted.
pub const ADMIN_PREFIX: &str = "/api/admin/cleanup";

/// Settings from the environment.
pub struct Config {
    /// `DATABASE_URL`, default an SQLite file in the working directory.
    pub database_url: String,
    /// `ADMIN_JWT_SECRET`, required.
    pub jwt_secret: String,
    /// `BIND`, default `127.0.0.1:8080`.
    pub bind: String,
}

impl Config {
    /// Reads the environment; explains and fails when `ADMIN_JWT_SECRET` is missing.
    pub fn from_env() -> Result<Self, ExitCode> {
        let Ok(jwt_secret) = std::env::var("ADMIN_JWT_SECRET") else {
            eprintln!(
                "ADMIN_JWT_SECRET is not set. The admin API only accepts HS256 tokens signed \
                 with this secret (at least 32 bytes), so it will not start without one.\n\
                 Try: export ADMIN_JWT_SECRET=$(openssl rand -hex 32)"
            );
            return Err(ExitCode::from(2));
        };
        Ok(Self {
            database_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "sqlite://token-cleanup-example.db".to_owned()),
            jwt_secret,
            bind: std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8080".to_owned()),
        })
    }
}

/// The whole `main` of an example host: logs to stderr (`RUST_LOG`, default `info`),
/// reads the [`Config`], runs `serve`, and turns its error into a message and a failure
/// exit code.
pub async fn run<F, Fut>(serve: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(code) => return code,
    };
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the store named by `url` and creates the tables cleanup needs.
pub async fn connect_store(url: &str) -> Result<Arc<dyn TokenStore>, String> {
    let store: Arc<dyn TokenStore> = if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url, TokenTable::default())
            .await
            .map_err(|e| format!("cannot open {url}: {e}"))?;
        Arc::new(store)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres_store(url).await?
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        mysql_store(url).await?
    } else {
        return Err(format!(
            "DATABASE_URL must start with sqlite:, postgres:// or mysql://, not {url:?}"
        ));
    };
    store
        .migrate()
        .await
        .map_err(|e| format!("cannot create the tables: {e}"))?;
    Ok(store)
}

#[cfg(feature = "postgres")]
async fn postgres_store(url: &str) -> Result<Arc<dyn TokenStore>, String> {
    let store = token_cleanup::PostgresStore::connect(url, TokenTable::default())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", redact(url)))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
async fn postgres_store(_: &str) -> Result<Arc<dyn TokenStore>, String> {
    Err("DATABASE_URL is a PostgreSQL URL: build the example with `--features postgres`".into())
}

#[cfg(feature = "mysql")]
async fn mysql_store(url: &str) -> Result<Arc<dyn TokenStore>, String> {
    let url = url.replacen("mariadb://", "mysql://", 1);
    let store = token_cleanup::MySqlStore::connect(&url, TokenTable::default())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", redact(&url)))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "mysql"))]
async fn mysql_store(_: &str) -> Result<Arc<dyn TokenStore>, String> {
    Err("DATABASE_URL is a MySQL URL: build the example with `--features mysql`".into())
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The engine, the scheduler and the admin API on `store`, all tied to `shutdown`.
pub fn build(
    store: Arc<dyn TokenStore>,
    jwt_secret: &str,
    shutdown: CancellationToken,
) -> Result<(AdminApi, Arc<dyn Scheduler>), String> {
    let service = TokenCleanupService::builder(store)
        .token_types(token_types::ALL)
        .shutdown(shutdown)
        .build()
        .map_err(|e| e.to_string())?;
    // The default jobs: hourly cleanup, daily 02:00 cleanup, weekly Sunday 03:00 report.
    let scheduler: Arc<dyn Scheduler> = Arc::new(
        CronScheduler::builder(service.clone())
            .build()
            .map_err(|e| e.to_string())?,
    );
    let authorizer = JwtAuthorizer::hs256(jwt_secret)
        .map_err(|e| format!("ADMIN_JWT_SECRET is not usable: {e}"))?;
    let api = AdminApi::builder(service, Arc::new(authorizer))
        .scheduler(scheduler.clone())
        .build()
        .map_err(|e| e.to_string())?;
    Ok((api, scheduler))
}

/// Ctrl-C, or SIGTERM on Unix.
#[cfg(feature = "axum")]
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Listens on `addr` with a backlog of 1024 connections. `tokio::net::TcpListener::bind`
/// uses 128 (like std): a burst of a few hundred new connections then overflows the
/// queue, and the kernel drops SYNs that clients retry only after a second.
#[cfg(feature = "axum")]
pub async fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let addr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The axum host: a route of its own and the admin API under [`ADMIN_PREFIX`].
#[cfg(feature = "axum")]
pub fn axum_app(api: AdminApi) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/",
            get(|| async { "host application: admin API under /api/admin/cleanup\n" }),
        )
        .nest(ADMIN_PREFIX, token_cleanup::axum::admin_routes(api))
}

/// The actix-web host: a route of its own and the admin API under [`ADMIN_PREFIX`].
#[cfg(feature = "actix")]
pub fn actix_app(
    api: AdminApi,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    use actix_web::web;
    actix_web::App::new()
        .route(
            "/",
            web::get().to(|| async { "host application: admin API under /api/admin/cleanup\n" }),
        )
        .service(web::scope(ADMIN_PREFIX).configure(token_cleanup::actix::admin_routes(api)))
}
