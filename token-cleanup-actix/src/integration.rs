//! This adapter in the core's admin-API conformance suite.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use actix_web::{App, test, web};
use async_trait::async_trait;
use token_cleanup_core::admin::AdminApi;
use token_cleanup_core::admin::suite::{AdminHttpIntegration, TestRequest, TestResponse};

use crate::admin_routes;

type Call = Box<dyn Fn(TestRequest) -> Pin<Box<dyn Future<Output = TestResponse>>>>;

/// An actix-web app with the admin API in a scope, driven in process. Runs inside an
/// actix runtime (`#[actix_web::test]`).
pub struct ActixIntegration {
    call: Call,
}

impl fmt::Debug for ActixIntegration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActixIntegration").finish_non_exhaustive()
    }
}

#[async_trait(?Send)]
impl AdminHttpIntegration for ActixIntegration {
    async fn mount(api: AdminApi, prefix: &'static str) -> Self {
        let app = App::new().service(web::scope(prefix).configure(admin_routes(api)));
        let service = Rc::new(test::init_service(app).await);
        let call: Call = Box::new(move |request: TestRequest| {
            let service = service.clone();
            Box::pin(async move {
                let mut builder = test::TestRequest::default()
                    .method(request.method.parse().expect("a valid method"))
                    .uri(&request.uri);
                for (name, value) in request.headers {
                    builder = builder.insert_header((name, value));
                }
                // `set_payload` also sets `Content-Length`, so the early check answers
                // `413` here (the axum integration exercises the streaming limit).
                if !request.body.is_empty() {
                    builder = builder.set_payload(request.body);
                }
                let response = test::call_service(&*service, builder.to_request()).await;
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
                let body = test::read_body(response).await.to_vec();
                TestResponse {
                    status,
                    headers,
                    body,
                }
            })
        });
        Self { call }
    }

    async fn send(&self, request: TestRequest) -> TestResponse {
        (self.call)(request).await
    }
}
