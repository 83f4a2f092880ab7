//! The admin HTTP API, without a web framework.
//!
//! [`AdminApi`] answers framework-neutral requests: an adapter (`token-cleanup-axum`,
//! `token-cleanup-actix`) registers every [`Endpoint`] at its [`path`](Endpoint::path),
//! reads the body up to [`AdminApi::max_body_bytes`], calls [`AdminApi::handle`] and copies
//! the [`AdminResponse`] back. Validation, authorization, rate limits, JSON shapes, the
//! error-to-status mapping ([`http_status`]), audit events and the OpenAPI document all
//! live here, once, so the adapters cannot drift apart.
//!
//! | method, path | does |
//! | --- | --- |
//! | `GET /statistics?days=30` | statistics (days 1..=365) |
//! | `POST /expired-tokens` | starts a cleanup in the background: `202` with `task_id` and `status_url` |
//! | `GET /task-status/{task_id}` | status, progress so far, result or error |
//! | `POST /generate-report?report_type=weekly&send=false` | builds a report in the background: `202` |
//! | `POST /health-check` | health: `200` healthy or degraded, `503` unhealthy |
//! | `GET /scheduled-tasks` | the scheduler's jobs |
//! | `GET /runs?limit=20` | recent runs and tasks |
//! | `GET /openapi.json` | the OpenAPI 3.1 document |
//!
//! Every error answers `{"error": "<code>", "message": "..."}`: malformed JSON `400`,
//! missing or invalid credentials `401`, not an admin `403`, unknown task `404`, a run of
//! the same types in progress `409`, body too large `413`, invalid values `422`, rate
//! limit `429` with `Retry-After`, internal `500` with a generic message (details go to
//! the log).
//!
//! ```
//! use std::sync::Arc;
//! use token_cleanup_core::admin::{AdminApi, AdminRequest, Endpoint, JwtAuthorizer, RequestHead};
//! use token_cleanup_core::{MemoryStore, TokenCleanupService};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), token_cleanup_core::Error> {
//! let service = TokenCleanupService::builder(Arc::new(MemoryStore::new())).build()?;
//! let authorizer = JwtAuthorizer::hs256(b"an example secret of at least 32 bytes!")?;
//! let api = AdminApi::builder(service, Arc::new(authorizer)).build()?;
//!
//! // What an adapter does for `GET /admin/statistics` without credentials:
//! let head = RequestHead::new("GET", "/admin/statistics", None);
//! let response = api.handle(Endpoint::Statistics, AdminRequest::new(head, b"")).await;
//! assert_eq!(response.status, 401);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error, info};
use uuid::Uuid;

use crate::AUDIT_TARGET;
use crate::error::{Error, Result};
use crate::schedule::Scheduler;
use crate::service::TokenCleanupService;

mod auth;
mod background;
mod handlers;
mod http;
#[cfg(feature = "jwt")]
mod jwt;
mod limit;
mod model;
mod openapi;
#[cfg(all(feature = "test-util", feature = "jwt"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "test-util", feature = "jwt"))))]
pub mod suite;

pub use auth::{AdminAuthorizer, AdminIdentity};
pub use background::{SchedulerTask, spawn_scheduler};
pub use http::{AdminRequest, AdminResponse, Endpoint, Method, RequestHead};
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use jwt::{JwtAuthorizer, MIN_HS256_SECRET_BYTES};
pub use limit::RateLimit;
pub use model::{
    CleanupBody, ErrorBody, ReportParams, RunList, RunsParams, ScheduledTasks, StatisticsParams,
    TaskAccepted, TaskKind, TaskProgress, TaskResult, TaskStatus, UnhealthyBody,
};
pub use openapi::openapi;

use limit::AdminRateLimiter;

/// Default request body limit: 64 KiB (a cleanup request is a few hundred bytes).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// The admin API: a [`TokenCleanupService`], an [`AdminAuthorizer`] and optionally a
/// [`Scheduler`]. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AdminApi {
    inner: Arc<Inner>,
}

struct Inner {
    service: TokenCleanupService,
    authorizer: Arc<dyn AdminAuthorizer>,
    scheduler: Option<Arc<dyn Scheduler>>,
    limiter: Option<AdminRateLimiter>,
    max_body_bytes: usize,
    public_openapi: bool,
    openapi: utoipa::openapi::OpenApi,
}

impl fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminApi")
            .field("authorizer", &self.inner.authorizer)
            .field("scheduler", &self.inner.scheduler.is_some())
            .field("limiter", &self.inner.limiter)
            .field("max_body_bytes", &self.inner.max_body_bytes)
            .field("public_openapi", &self.inner.public_openapi)
            .finish_non_exhaustive()
    }
}

/// Configures an [`AdminApi`].
#[derive(Debug)]
pub struct AdminApiBuilder {
    service: TokenCleanupService,
    authorizer: Arc<dyn AdminAuthorizer>,
    scheduler: Option<Arc<dyn Scheduler>>,
    rate_limit: Option<RateLimit>,
    max_body_bytes: usize,
    public_openapi: bool,
}

impl AdminApiBuilder {
    /// Lists this scheduler's jobs at `GET /scheduled-tasks`.
    pub fn scheduler(mut self, scheduler: Arc<dyn Scheduler>) -> Self {
        self.scheduler = Some(scheduler);
        self
    }
    /// Rate limit per admin on the mutating endpoints (default [`RateLimit::default`]).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }
    /// Turns the rate limit off (when the host limits requests itself).
    pub fn without_rate_limit(mut self) -> Self {
        self.rate_limit = None;
        self
    }
    /// Largest request body accepted (default [`DEFAULT_MAX_BODY_BYTES`]); larger ones
    /// answer `413`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
    /// Serves `GET /openapi.json` without authorization (default: admins only).
    pub fn public_openapi(mut self, public: bool) -> Self {
        self.public_openapi = public;
        self
    }
    /// Checks the configuration.
    pub fn build(self) -> Result<AdminApi> {
        let limiter = self.rate_limit.map(AdminRateLimiter::new).transpose()?;
        Ok(AdminApi {
            inner: Arc::new(Inner {
                openapi: openapi::document(self.public_openapi),
                service: self.service,
                authorizer: self.authorizer,
                scheduler: self.scheduler,
                limiter,
                max_body_bytes: self.max_body_bytes,
                public_openapi: self.public_openapi,
            }),
        })
    }
}

/// One request being answered.
pub(crate) struct Call<'a> {
    head: &'a RequestHead<'a>,
    body: &'a [u8],
    /// The mount point: the full path up to the endpoint's route.
    prefix: &'a str,
    admin: Option<AdminIdentity>,
    task_id: Option<Uuid>,
}

impl Call<'_> {
    fn admin_subject(&self) -> &str {
        self.admin.as_ref().map_or("", AdminIdentity::subject)
    }
}

impl AdminApi {
    /// Starts configuring the API.
    pub fn builder(
        service: TokenCleanupService,
        authorizer: Arc<dyn AdminAuthorizer>,
    ) -> AdminApiBuilder {
        AdminApiBuilder {
            service,
            authorizer,
            scheduler: None,
            rate_limit: Some(RateLimit::default()),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            public_openapi: false,
        }
    }

    /// The engine.
    pub fn service(&self) -> &TokenCleanupService {
        &self.inner.service
    }
    /// The scheduler, if any.
    pub fn scheduler(&self) -> Option<&Arc<dyn Scheduler>> {
        self.inner.scheduler.as_ref()
    }
    /// Largest request body accepted; adapters stop reading beyond it and pass
    /// `Err(Error::PayloadTooLarge { limit })`.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// The error an adapter passes as the body when the request declares (in
    /// `Content-Length`) or sends more than [`max_body_bytes`](Self::max_body_bytes).
    pub fn body_too_large(&self) -> Error {
        Error::PayloadTooLarge {
            limit: self.inner.max_body_bytes,
        }
    }

    /// The OpenAPI document, with `prefix` (the mount point) as its server, as JSON.
    pub fn openapi_json(&self, prefix: &str) -> Vec<u8> {
        let mut doc = self.inner.openapi.clone();
        let url = if prefix.is_empty() { "/" } else { prefix };
        doc.servers = Some(vec![utoipa::openapi::server::Server::new(url)]);
        serde_json::to_vec(&doc).expect("the OpenAPI document always serializes")
    }

    /// Answers a request that the adapter routed to `endpoint`.
    pub async fn handle(&self, endpoint: Endpoint, request: AdminRequest<'_>) -> AdminResponse {
        let started = Instant::now();
        let head = &request.head;
        let path = head.path();
        let prefix = path
            .rfind(endpoint.static_suffix())
            .map_or("", |at| &path[..at]);
        let mut call = Call {
            head,
            body: &[],
            prefix,
            admin: None,
            task_id: None,
        };
        let result = self.answer(endpoint, request.body, &mut call).await;
        let response = match result {
            Ok(response) => response,
            Err(err) => self.error_response(endpoint, &err),
        };
        let subject = call.admin.as_ref().map(AdminIdentity::subject);
        let outcome = error_code_of(&response);
        if endpoint.is_mutating() {
            info!(
                target: AUDIT_TARGET,
                event = "admin_request",
                endpoint = endpoint.name(),
                admin = subject,
                status = response.status,
                outcome = outcome.as_deref().unwrap_or("accepted"),
                task_id = call.task_id.map(|id| id.to_string()),
            );
        }
        debug!(
            endpoint = endpoint.name(),
            admin = subject,
            status = response.status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "admin API request"
        );
        response
    }

    async fn answer<'a>(
        &self,
        endpoint: Endpoint,
        body: Result<&'a [u8]>,
        call: &mut Call<'a>,
    ) -> Result<AdminResponse> {
        if !(endpoint == Endpoint::OpenApi && self.inner.public_openapi) {
            let admin = self.inner.authorizer.authorize(endpoint, call.head).await?;
            call.admin = Some(admin);
        }
        if let (true, Some(limiter)) = (endpoint.is_mutating(), &self.inner.limiter) {
            limiter.check(call.admin_subject())?;
        }
        call.body = body?;
        match endpoint {
            Endpoint::Statistics => handlers::statistics(self, call).await,
            Endpoint::ExpiredTokens => handlers::start_cleanup(self, call).await,
            Endpoint::TaskStatus => handlers::task_status(self, call).await,
            Endpoint::GenerateReport => handlers::generate_report(self, call).await,
            Endpoint::HealthCheck => handlers::health_check(self, call).await,
            Endpoint::ScheduledTasks => handlers::scheduled_tasks(self, call).await,
            Endpoint::Runs => handlers::recent_runs(self, call).await,
            Endpoint::OpenApi => handlers::openapi(self, call).await,
        }
    }

    /// Answers a request under the mount point that matched no route: `405` with `Allow`
    /// when the path is an endpoint's, `404` otherwise. Adapters install it as the
    /// fallback of the mounted routes, so that these answers are JSON too.
    pub async fn handle_unmatched(&self, request: AdminRequest<'_>) -> AdminResponse {
        let path = request.head.path();
        let known = Endpoint::ALL.into_iter().find(|e| {
            path.rfind(e.static_suffix())
                .is_some_and(|at| Endpoint::matching(&path[at..]) == Some(*e))
        });
        match known {
            Some(endpoint) if endpoint.method().as_str() != request.head.method() => {
                let allowed = endpoint.method().as_str();
                let body = ErrorBody {
                    error: "method_not_allowed".to_owned(),
                    message: format!("this endpoint only answers {allowed}"),
                };
                AdminResponse::json(405, &body).with_header("allow", allowed.to_owned())
            }
            _ => self.error_response_for(None, &Error::NotFound { what: "endpoint" }),
        }
    }

    fn error_response(&self, endpoint: Endpoint, err: &Error) -> AdminResponse {
        self.error_response_for(Some(endpoint), err)
    }

    fn error_response_for(&self, endpoint: Option<Endpoint>, err: &Error) -> AdminResponse {
        let status = http_status(err);
        let endpoint = endpoint.map(Endpoint::name);
        let body = if status >= 500 {
            error!(endpoint, error = %err, cause = %SourceChain(err), "admin API request failed");
            ErrorBody {
                error: "internal_error".to_owned(),
                message: "internal error; the details are in the server log".to_owned(),
            }
        } else {
            debug!(endpoint, code = err.code(), cause = %SourceChain(err), "admin API request refused");
            ErrorBody {
                error: err.code().to_owned(),
                message: client_message(err),
            }
        };
        let mut response = AdminResponse::json(status, &body);
        match err {
            Error::RateLimited { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                response = response.with_header("retry-after", secs.max(1).to_string());
            }
            Error::Unauthenticated { .. } => {
                response = response.with_header("www-authenticate", "Bearer".to_owned());
            }
            _ => {}
        }
        response
    }
}

/// The HTTP status of an error, the one mapping every adapter uses.
///
/// ```
/// use token_cleanup_core::{admin::http_status, Error};
///
/// assert_eq!(http_status(&Error::InvalidBatchSize { batch_size: 0 }), 422);
/// assert_eq!(http_status(&Error::NotFound { what: "task" }), 404);
/// ```
pub fn http_status(err: &Error) -> u16 {
    match err {
        Error::MalformedBody { .. } => 400,
        Error::Unauthenticated { .. } => 401,
        Error::Forbidden { .. } => 403,
        Error::NotFound { .. } => 404,
        Error::AlreadyRunning { .. } => 409,
        Error::PayloadTooLarge { .. } => 413,
        Error::RateLimited { .. } => 429,
        e if e.is_invalid_input() => 422,
        _ => 500,
    }
}

/// The message shown to the caller of a `4xx`: the error's own text, plus the decoder's
/// explanation for body errors (it names fields and types, the caller's own input).
fn client_message(err: &Error) -> String {
    match err {
        Error::MalformedBody { source } => format!("{err}: {source}"),
        Error::InvalidBody { source } => format!("{err}: {source}"),
        other => other.to_string(),
    }
}

fn error_code_of(response: &AdminResponse) -> Option<String> {
    if response.status < 400 {
        return None;
    }
    serde_json::from_slice::<ErrorBody>(&response.body)
        .ok()
        .map(|b| b.error)
        .or_else(|| Some(response.status.to_string()))
}

/// Every `source()` below an error, for the log.
struct SourceChain<'a>(&'a Error);

impl fmt::Display for SourceChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut source = std::error::Error::source(self.0);
        let mut first = true;
        while let Some(err) = source {
            if !first {
                f.write_str(": ")?;
            }
            write!(f, "{err}")?;
            first = false;
            source = err.source();
        }
        Ok(())
    }
}
