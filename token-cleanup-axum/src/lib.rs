//! # token-cleanup-axum
//!
//! The admin API of token-cleanup as an axum 0.8 [`Router`], and the scheduler as a
//! background task tied to the host's graceful shutdown. Routing, extraction and response
//! mapping only: validation, authorization, rate limits, JSON shapes, error codes and the
//! OpenAPI document come from [`token_cleanup_core::admin`], so this adapter and
//! `token-cleanup-actix` answer byte for byte alike (one conformance suite runs on both).
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `jwt` | `JwtAuthorizer` (HS256 / RS256 / ES256 admin tokens) |
//! | `test-util` | `AxumIntegration`, this adapter in the core's admin-API conformance suite |
//!
//! ## Mounting
//!
//! ```no_run
//! # #[cfg(feature = "jwt")]
//! # async fn host(service: token_cleanup_core::TokenCleanupService,
//! #               scheduler: std::sync::Arc<dyn token_cleanup_core::Scheduler>)
//! #               -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use token_cleanup_axum::{AdminApi, CancellationToken, JwtAuthorizer, admin_routes, spawn_scheduler};
//!
//! let authorizer = JwtAuthorizer::hs256(std::env::var("ADMIN_JWT_SECRET")?)?;
//! let api = AdminApi::builder(service, Arc::new(authorizer)).scheduler(scheduler.clone()).build()?;
//! let app = Router::new()
//!     .route("/", get(|| async { "the host's own route" }))
//!     .nest("/api/admin/cleanup", admin_routes(api));
//!
//! let shutdown = CancellationToken::new();
//! let jobs = spawn_scheduler(scheduler, shutdown.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(async move { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! jobs.shutdown().await; // the running job stops at its next batch boundary
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{OriginalUri, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{MethodFilter, on};
use token_cleanup_core::Error;
use token_cleanup_core::admin::{AdminRequest, AdminResponse, Endpoint, Method, RequestHead};

pub use token_cleanup_core::CancellationToken;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use token_cleanup_core::admin::JwtAuthorizer;
pub use token_cleanup_core::admin::{
    AdminApi, AdminApiBuilder, AdminAuthorizer, AdminIdentity, RateLimit, SchedulerTask,
    spawn_scheduler,
};

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
mod integration;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use integration::AxumIntegration;

/// The admin API's routes, to `nest` under any prefix of the host's router.
///
/// Every endpoint of [`Endpoint::ALL`] at its path; other methods on those paths answer
/// `405` and other paths below the prefix `404`, in the API's JSON error shape.
pub fn admin_routes<S>(api: AdminApi) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        let filter = match endpoint.method() {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
        };
        let (matched, other_method) = (api.clone(), api.clone());
        let route = on(filter, move |request: Request| {
            serve(matched.clone(), Some(endpoint), request)
        })
        .fallback(move |request: Request| serve(other_method.clone(), None, request));
        router = router.route(endpoint.path(), route);
    }
    router.fallback(move |request: Request| serve(api.clone(), None, request))
}

async fn serve(api: AdminApi, endpoint: Option<Endpoint>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (bytes, body_error) = match read_body(&api, &parts.headers, body).await {
        Ok(bytes) => (bytes, None),
        Err(e) => (Bytes::new(), Some(e)),
    };
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    let head = RequestHead::new(parts.method.as_str(), uri.path(), uri.query()).with_headers(
        parts
            .headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
    );
    let request = AdminRequest {
        head,
        body: body_error.map_or(Ok(&bytes[..]), Err),
    };
    let response = match endpoint {
        Some(endpoint) => api.handle(endpoint, request).await,
        None => api.handle_unmatched(request).await,
    };
    into_response(response)
}

/// The body up to the API's limit: refused early on a larger `Content-Length`, and cut
/// off while streaming otherwise.
async fn read_body(api: &AdminApi, headers: &HeaderMap, body: Body) -> Result<Bytes, Error> {
    let limit = api.max_body_bytes();
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(api.body_too_large());
    }
    to_bytes(body, limit).await.map_err(|e| {
        let over_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over_limit {
            api.body_too_large()
        } else {
            Error::MalformedBody {
                source: Box::new(e),
            }
        }
    })
}

fn into_response(response: AdminResponse) -> Response {
    let mut out = Response::new(Body::from(response.body));
    *out.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in response.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.headers_mut()
                .append(HeaderName::from_static(name), value);
        }
    }
    out
}
