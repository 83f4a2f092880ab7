//! # token-cleanup-actix
//!
//! The admin API of token-cleanup as actix-web 4 routes, and the scheduler as a background
//! task tied to the host's graceful shutdown. Routing, extraction and response mapping
//! only: validation, authorization, rate limits, JSON shapes, error codes and the OpenAPI
//! document come from [`token_cleanup_core::admin`], so this adapter and
//! `token-cleanup-axum` answer byte for byte alike (one conformance suite runs on both).
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `jwt` | `JwtAuthorizer` (HS256 / RS256 / ES256 admin tokens) |
//! | `test-util` | `ActixIntegration`, this adapter in the core's admin-API conformance suite |
//!
//! ## Mounting
//!
//! ```no_run
//! # #[cfg(feature = "jwt")]
//! # async fn host(service: token_cleanup_core::TokenCleanupService,
//! #               scheduler: std::sync::Arc<dyn token_cleanup_core::Scheduler>)
//! #               -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use actix_web::{App, HttpServer, web};
//! use token_cleanup_actix::{AdminApi, CancellationToken, JwtAuthorizer, admin_routes, spawn_scheduler};
//!
//! let authorizer = JwtAuthorizer::hs256(std::env::var("ADMIN_JWT_SECRET")?)?;
//! let api = AdminApi::builder(service, Arc::new(authorizer)).scheduler(scheduler.clone()).build()?;
//!
//! let shutdown = CancellationToken::new();
//! let jobs = spawn_scheduler(scheduler, shutdown.clone());
//! HttpServer::new(move || {
//!     App::new()
//!         .route("/", web::get().to(|| async { "the host's own route" }))
//!         .service(web::scope("/api/admin/cleanup").configure(admin_routes(api.clone())))
//! })
//! .bind("127.0.0.1:8080")?
//! .run() // returns after SIGINT/SIGTERM and a graceful stop
//! .await?;
//! jobs.shutdown().await; // the running job stops at its next batch boundary
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::web::{self, Bytes, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
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
pub use integration::ActixIntegration;

/// The admin API's routes, to `configure` a `web::scope` with any prefix.
///
/// Every endpoint of [`Endpoint::ALL`] at its path; other methods on those paths answer
/// `405` and other paths below the scope `404`, in the API's JSON error shape.
pub fn admin_routes(api: AdminApi) -> impl FnOnce(&mut ServiceConfig) {
    move |config| {
        for endpoint in Endpoint::ALL {
            let method = match endpoint.method() {
                Method::Get => actix_web::http::Method::GET,
                Method::Post => actix_web::http::Method::POST,
            };
            let (matched, other_method) = (api.clone(), api.clone());
            config.service(
                web::resource(endpoint.path())
                    .route(web::method(method).to(
                        move |request: HttpRequest, payload: web::Payload| {
                            serve(matched.clone(), Some(endpoint), request, payload)
                        },
                    ))
                    .default_service(web::to(
                        move |request: HttpRequest, payload: web::Payload| {
                            serve(other_method.clone(), None, request, payload)
                        },
                    )),
            );
        }
        config.default_service(web::to(
            move |request: HttpRequest, payload: web::Payload| {
                serve(api.clone(), None, request, payload)
            },
        ));
    }
}

async fn serve(
    api: AdminApi,
    endpoint: Option<Endpoint>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (bytes, body_error) = match read_body(&api, &request, payload).await {
        Ok(bytes) => (bytes, None),
        Err(e) => (Bytes::new(), Some(e)),
    };
    let uri = request.uri();
    let head = RequestHead::new(request.method().as_str(), uri.path(), uri.query()).with_headers(
        request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
    );
    let admin_request = AdminRequest {
        head,
        body: body_error.map_or(Ok(&bytes[..]), Err),
    };
    let response = match endpoint {
        Some(endpoint) => api.handle(endpoint, admin_request).await,
        None => api.handle_unmatched(admin_request).await,
    };
    into_response(response)
}

/// The body up to the API's limit: refused early on a larger `Content-Length`, and cut
/// off while streaming otherwise.
async fn read_body(
    api: &AdminApi,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<Bytes, Error> {
    let limit = api.max_body_bytes();
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(api.body_too_large());
    }
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        // actix's error is not `Send`; its text is all the log needs.
        Ok(Err(e)) => Err(Error::MalformedBody {
            source: e.to_string().into(),
        }),
        Err(_over_limit) => Err(api.body_too_large()),
    }
}

fn into_response(response: AdminResponse) -> HttpResponse {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = HttpResponse::build(status);
    for (name, value) in response.headers {
        out.append_header((name, value));
    }
    out.body(response.body)
}
