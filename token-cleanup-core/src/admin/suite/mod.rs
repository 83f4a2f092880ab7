//! The admin-API conformance suite: one set of HTTP-level checks that every adapter
//! passes, against every store.
//!
//! An adapter joins by implementing [`AdminHttpIntegration`] (mount an [`AdminApi`] under
//! a prefix, send it a request in process) and invoking
//! [`admin_api_conformance_tests!`](crate::admin_api_conformance_tests) once per store:
//!
//! ```text
//! token_cleanup_core::admin_api_conformance_tests!(
//!     sqlite, MyIntegration, token_cleanup_core::admin::suite::fresh_sqlite_store(), #[tokio::test]
//! );
//! ```
//!
//! Every case also returns a normalized transcript of its exchanges (ids, instants and
//! timings masked), and [`run_admin_api_suite`] runs them all: two adapters are
//! interchangeable when their transcripts are equal.
//!
//! Every response is checked on the way: JSON content type, `{"error", "message"}` on
//! every error, the status listed in the OpenAPI document for that operation, and no
//! credential or internal detail in any body or header.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{AdminApi, Endpoint, JwtAuthorizer, Method, RateLimit};
use crate::error::Result;
use crate::schedule::{JobInfo, LastJobRun, Scheduler};
use crate::service::TokenCleanupService;
use crate::test_util::TestStore;
use crate::{RetryPolicy, RunStatus, token_types};

pub mod cases;
mod store;

pub use cases::*;
pub use store::SuiteStore;

/// Where the suite mounts the API (the examples' prefix).
pub const PREFIX: &str = "/api/admin/cleanup";
/// The suite's HS256 secret.
pub const SECRET: &[u8] = b"admin-suite-secret-0123456789abcdef";
/// Largest body the suite's API accepts.
pub const MAX_BODY: usize = 4096;
/// Mutating requests per admin the suite's API accepts (per hour, as a burst).
pub const RATE: u32 = 3;

/// What the suite needs from an adapter.
///
/// `?Send`: the suite drives one app from one task, so adapters whose test services are
/// not `Send` (actix-web) join as they are.
#[async_trait(?Send)]
pub trait AdminHttpIntegration: Sized {
    /// A fresh app with `api` mounted under `prefix`, ready to answer requests in process.
    async fn mount(api: AdminApi, prefix: &'static str) -> Self;

    /// Sends `request` through the app.
    async fn send(&self, request: TestRequest) -> TestResponse;
}

/// A request the suite sends.
#[derive(Debug, Clone)]
pub struct TestRequest {
    /// `GET`, `POST`, ...
    pub method: &'static str,
    /// Path and query (`/api/admin/cleanup/statistics?days=7`).
    pub uri: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl TestRequest {
    fn new(method: &'static str, relative: &str) -> Self {
        Self {
            method,
            uri: format!("{PREFIX}{relative}"),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    /// `GET` of `relative` below the mount point.
    pub fn get(relative: &str) -> Self {
        Self::new("GET", relative)
    }
    /// `POST` of `relative` below the mount point.
    pub fn post(relative: &str) -> Self {
        Self::new("POST", relative)
    }
    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    /// Sets a JSON body.
    pub fn json(self, body: &Value) -> Self {
        self.raw(serde_json::to_vec(body).expect("JSON"))
            .header("content-type", "application/json")
    }
    /// Sets raw body bytes.
    pub fn raw(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status code.
    pub status: u16,
    /// Headers (names as the framework gives them).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl TestResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The suite's tokens: HS256 with [`SECRET`] unless said otherwise.
pub fn mint(claims: Value) -> String {
    mint_with(claims, SECRET)
}

/// A token signed with another secret.
pub fn mint_with(claims: Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign a test token")
}

/// A valid admin token for `sub`.
pub fn admin_token(sub: &str) -> String {
    mint(json!({"sub": sub, "role": "admin", "exp": Utc::now().timestamp() + 600}))
}

/// An unsigned `alg: none` token claiming admin.
pub fn none_token(sub: &str) -> String {
    let b64 = |v: Value| super::jwt::base64_url(&serde_json::to_vec(&v).expect("JSON"));
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": sub, "role": "admin", "exp": Utc::now().timestamp() + 600}))
    )
}

/// A scheduler with two fixed jobs that idles until shutdown.
#[derive(Debug, Default)]
pub struct FixedScheduler;

impl FixedScheduler {
    /// The jobs it lists.
    pub fn job_list() -> Vec<JobInfo> {
        let tick = chrono::DateTime::parse_from_rfc3339("2026-06-15T12:00:00Z")
            .expect("instant")
            .to_utc();
        vec![
            JobInfo {
                name: crate::HOURLY_CLEANUP.to_owned(),
                cron: "0 * * * *".to_owned(),
                description: "every hour at minute 0".to_owned(),
                enabled: true,
                next_run: Some(tick + chrono::TimeDelta::hours(1)),
                last_run: Some(LastJobRun {
                    fired_at: tick,
                    run_id: None,
                    status: RunStatus::Succeeded,
                    error: None,
                }),
            },
            JobInfo {
                name: crate::WEEKLY_REPORT.to_owned(),
                cron: "0 3 * * 0".to_owned(),
                description: "at 03:00 on Sunday".to_owned(),
                enabled: false,
                next_run: None,
                last_run: None,
            },
        ]
    }
}

#[async_trait]
impl Scheduler for FixedScheduler {
    async fn jobs(&self) -> Result<Vec<JobInfo>> {
        Ok(Self::job_list())
    }
    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        shutdown.cancelled().await;
        Ok(())
    }
}

/// A fresh in-memory SQLite database (one connection, so one database per test) with the
/// default table, migrated.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub async fn fresh_sqlite_store() -> Arc<crate::SqliteStore> {
    use crate::TokenStore as _;
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("in-memory SQLite");
    let store = Arc::new(crate::SqliteStore::new(pool, crate::TokenTable::default()));
    store.migrate().await.expect("migrate");
    store
}

/// A fresh schema on the test PostgreSQL server (see [`crate::test_util::servers`]) with
/// the default table, migrated. Fails, naming the server, when it is unreachable.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub async fn fresh_postgres_store() -> Arc<crate::PostgresStore> {
    use crate::TokenStore as _;
    use crate::test_util::servers::postgres as server;
    let pool = server::pool("token-cleanup-admin-suite", 4).await;
    let schema = server::fresh_schema(&pool).await;
    let table = crate::TokenTable::builder()
        .schema(schema)
        .build()
        .expect("valid identifiers");
    let store = Arc::new(crate::PostgresStore::new(pool, table));
    store.migrate().await.expect("migrate");
    store
}

/// How the suite configures the API.
#[derive(Debug, Clone, Copy)]
pub struct SuiteOptions {
    /// Whether a scheduler is attached.
    pub scheduler: bool,
    /// Whether the OpenAPI document is public.
    pub public_openapi: bool,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        Self {
            scheduler: true,
            public_openapi: false,
        }
    }
}

/// An app under test, its store, and the transcript of what it answered.
pub struct Harness<I, S> {
    app: I,
    store: Arc<SuiteStore<S>>,
    doc: Value,
    transcript: RefCell<Vec<Value>>,
}

impl<I: AdminHttpIntegration, S: TestStore> Harness<I, S> {
    /// Mounts a fresh API on `store` with the suite's configuration.
    pub async fn new(store: Arc<S>, options: SuiteOptions) -> Self {
        let store = Arc::new(SuiteStore::new(store));
        let service = TokenCleanupService::builder(store.clone())
            .token_types(token_types::ALL)
            .retry(RetryPolicy::new(2, Duration::from_millis(1)))
            .progress_interval(Duration::ZERO)
            .build()
            .expect("valid service");
        let authorizer = JwtAuthorizer::hs256(SECRET).expect("valid secret");
        let mut builder = AdminApi::builder(service, Arc::new(authorizer))
            .rate_limit(RateLimit::per_hour(RATE))
            .max_body_bytes(MAX_BODY)
            .public_openapi(options.public_openapi);
        if options.scheduler {
            builder = builder.scheduler(Arc::new(FixedScheduler));
        }
        let api = builder.build().expect("valid API");
        let doc = serde_json::from_slice(&api.openapi_json(PREFIX)).expect("OpenAPI JSON");
        Self {
            app: I::mount(api, PREFIX).await,
            store,
            doc,
            transcript: RefCell::new(Vec::new()),
        }
    }

    /// The store under test (behind the suite's wrapper).
    pub fn store(&self) -> &Arc<SuiteStore<S>> {
        &self.store
    }

    /// Sends a request, checks the answer's shape, and records it.
    pub async fn send(&self, request: TestRequest) -> TestResponse {
        let response = self.send_unrecorded(request.clone()).await;
        self.transcript
            .borrow_mut()
            .push(exchange(&request, &response));
        response
    }

    /// Like [`send`](Self::send), without a transcript entry (polling).
    pub async fn send_unrecorded(&self, request: TestRequest) -> TestResponse {
        let response = self.app.send(request.clone()).await;
        self.check_shape(&request, &response);
        response
    }

    /// Polls a task until it finishes; records only the final answer.
    pub async fn wait_for_task(&self, status_url: &str, token: &str) -> Value {
        let relative = status_url
            .strip_prefix(PREFIX)
            .unwrap_or_else(|| panic!("status URL {status_url} is not below {PREFIX}"));
        for _ in 0..2000 {
            let response = self
                .send_unrecorded(TestRequest::get(relative).bearer(token))
                .await;
            assert_eq!(
                response.status,
                200,
                "task status: {}",
                String::from_utf8_lossy(&response.body)
            );
            let body = response.json();
            let status = body["status"].as_str().unwrap_or_default();
            if !matches!(status, "queued" | "running") {
                return self
                    .send(TestRequest::get(relative).bearer(token))
                    .await
                    .json();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("task {status_url} did not finish within 10 s");
    }

    /// The transcript so far.
    pub fn into_transcript(self) -> Vec<Value> {
        self.transcript.into_inner()
    }

    fn check_shape(&self, request: &TestRequest, response: &TestResponse) {
        let what = format!("{} {} -> {}", request.method, request.uri, response.status);
        let content_type = response.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{what}: content-type {content_type:?}"
        );
        let body = response.json();
        if response.status >= 400 {
            let object = body
                .as_object()
                .unwrap_or_else(|| panic!("{what}: error body {body}"));
            assert!(
                object["error"].is_string(),
                "{what}: no error code in {body}"
            );
            assert!(
                object["message"].is_string(),
                "{what}: no message in {body}"
            );
            let extra: Vec<&String> = object
                .keys()
                .filter(|k| !matches!(k.as_str(), "error" | "message"))
                .collect();
            let allowed: &[&str] = if response.status == 503 {
                &["health"]
            } else {
                &[]
            };
            assert!(
                extra.iter().all(|k| allowed.contains(&k.as_str())),
                "{what}: unexpected fields {extra:?}"
            );
        }
        // No credential and no internal detail, anywhere in the answer.
        let text = String::from_utf8_lossy(&response.body);
        for (name, value) in &request.headers {
            if name.eq_ignore_ascii_case("authorization") {
                let token = value.trim_start_matches("Bearer ");
                assert!(!text.contains(token), "{what}: the token is echoed");
                assert!(
                    response.headers.iter().all(|(_, v)| !v.contains(token)),
                    "{what}: the token is in a header"
                );
            }
        }
        assert!(
            !text.contains(store::INTERNAL_DETAIL),
            "{what}: internal detail leaked: {text}"
        );
        // The status is one the OpenAPI document lists for this operation.
        let path = request.uri.split('?').next().unwrap_or_default();
        if let Some(endpoint) = path
            .strip_prefix(PREFIX)
            .and_then(super::http::Endpoint::matching)
            .filter(|e| e.method().as_str() == request.method)
        {
            let method = match endpoint.method() {
                Method::Get => "get",
                Method::Post => "post",
            };
            let documented = &self.doc["paths"][endpoint.path()][method]["responses"];
            assert!(
                documented.get(response.status.to_string()).is_some(),
                "{what}: status not documented for {}",
                endpoint.path()
            );
        }
    }
}

/// Every `(method, relative path)` the API serves, with a sample path parameter.
pub fn every_endpoint() -> Vec<(Endpoint, &'static str, String)> {
    Endpoint::ALL
        .into_iter()
        .map(|e| {
            let path = e
                .path()
                .replace("{task_id}", "0190b6a2-7c4e-7cc0-8000-000000000000");
            (e, e.method().as_str(), path)
        })
        .collect()
}

/// One exchange, normalized: ids, instants, timings and floats masked.
fn exchange(request: &TestRequest, response: &TestResponse) -> Value {
    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let kept = [
        "content-type",
        "location",
        "allow",
        "www-authenticate",
        "retry-after",
    ];
    let mut headers: Vec<(String, String)> = response
        .headers
        .iter()
        .filter(|(n, _)| kept.iter().any(|k| n.eq_ignore_ascii_case(k)))
        .map(|(n, v)| {
            let v = if n.eq_ignore_ascii_case("retry-after") {
                "<seconds>".to_owned()
            } else {
                mask_uuids(v)
            };
            (n.to_ascii_lowercase(), v)
        })
        .collect();
    headers.sort();
    json!({
        "request": format!("{} {}", request.method, mask_uuids(&request.uri)),
        "status": response.status,
        "headers": headers,
        "body": normalize(body),
    })
}

fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let timing = k.ends_with("_ms")
                        || k.ends_with("_secs")
                        || k == "tokens_per_second"
                        || k == "checked_at"
                        || k == "generated_at";
                    let v = if timing && !v.is_null() {
                        json!("<timing>")
                    } else {
                        normalize(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(&s).is_ok() => json!("<instant>"),
        Value::String(s) => Value::String(mask_uuids(&s)),
        Value::Number(n) if !n.is_u64() && !n.is_i64() => json!("<float>"),
        other => other,
    }
}

/// Replaces every UUID in `s` with `<uuid>`.
fn mask_uuids(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        if rest.len() >= 36
            && rest.is_char_boundary(36)
            && uuid::Uuid::try_parse(&rest[..36]).is_ok()
        {
            out.push_str("<uuid>");
            rest = &rest[36..];
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Runs every case of the suite against fresh stores from `factory`, and returns the
/// concatenated transcripts.
pub async fn run_admin_api_suite<I, S, F, Fut>(factory: F) -> Vec<Value>
where
    I: AdminHttpIntegration,
    S: TestStore,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<S>>,
{
    let mut all = Vec::new();
    macro_rules! run {
        ($($case:ident),* $(,)?) => {
            $(
                let transcript = cases::$case::<I, S>(factory().await).await;
                all.push(json!({ "case": stringify!($case), "exchanges": transcript }));
            )*
        };
    }
    run!(
        statistics_answer_and_validate_days,
        credentials_are_checked_on_every_endpoint,
        cleanup_runs_in_the_background_and_rows_are_gone,
        invalid_cleanup_requests_are_refused,
        progress_is_visible_and_overlapping_runs_conflict,
        unknown_and_malformed_task_ids_are_404,
        reports_run_in_the_background,
        health_check_answers_200_or_503,
        scheduled_tasks_are_listed,
        recent_runs_are_listed,
        mutating_requests_are_rate_limited_per_admin,
        openapi_document_is_served,
        unmatched_routes_answer_json,
        internal_errors_are_generic,
    );
    all
}

/// Generates one test per suite case for an adapter and a store:
/// `admin_api_conformance_tests!(module, Integration, store_factory_future, #[test_attribute])`.
#[macro_export]
macro_rules! admin_api_conformance_tests {
    ($module:ident, $integration:ty, $factory:expr, #[$test:meta]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__admin_api_tests!($integration, $factory, $test;
                statistics_answer_and_validate_days,
                credentials_are_checked_on_every_endpoint,
                cleanup_runs_in_the_background_and_rows_are_gone,
                invalid_cleanup_requests_are_refused,
                progress_is_visible_and_overlapping_runs_conflict,
                unknown_and_malformed_task_ids_are_404,
                reports_run_in_the_background,
                health_check_answers_200_or_503,
                scheduled_tasks_are_listed,
                recent_runs_are_listed,
                mutating_requests_are_rate_limited_per_admin,
                openapi_document_is_served,
                unmatched_routes_answer_json,
                internal_errors_are_generic
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __admin_api_tests {
    ($integration:ty, $factory:expr, $test:meta; $($case:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $case() {
                let store = $factory.await;
                let _ = $crate::admin::suite::cases::$case::<$integration, _>(store).await;
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_masks_what_varies() {
        let v = normalize(json!({
            "task_id": "0190b6a2-7c4e-7cc0-8000-000000000000",
            "status_url": "/x/task-status/0190b6a2-7c4e-7cc0-8000-000000000000",
            "created_at": "2026-06-15T12:00:00Z",
            "duration_ms": 3,
            "rate": 0.5,
            "count": 7,
        }));
        assert_eq!(
            v,
            json!({
                "task_id": "<uuid>",
                "status_url": "/x/task-status/<uuid>",
                "created_at": "<instant>",
                "duration_ms": "<timing>",
                "rate": "<float>",
                "count": 7,
            })
        );
    }
}
