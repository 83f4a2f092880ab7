//! This adapter in the core's admin-API conformance suite.

use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::Request;
use token_cleanup_core::admin::AdminApi;
use token_cleanup_core::admin::suite::{AdminHttpIntegration, TestRequest, TestResponse};
use tower::ServiceExt;

use crate::admin_routes;

/// An axum app with the admin API nested under a prefix, driven in process.
#[derive(Debug, Clone)]
pub struct AxumIntegration {
    app: Router,
}

#[async_trait(?Send)]
impl AdminHttpIntegration for AxumIntegration {
    async fn mount(api: AdminApi, prefix: &'static str) -> Self {
        Self {
            app: Router::new().nest(prefix, admin_routes(api)),
        }
    }

    async fn send(&self, request: TestRequest) -> TestResponse {
        let mut builder = Request::builder().method(request.method).uri(&request.uri);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        // No `Content-Length`: the body streams, so the streaming limit is what answers
        // `413` here (the actix integration exercises the `Content-Length` check).
        let request = builder
            .body(Body::from(request.body))
            .expect("valid test request");
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("read the response body")
            .to_vec();
        TestResponse {
            status,
            headers,
            body,
        }
    }
}
