//! The OpenAPI 3.1 document, built once from the endpoint functions' descriptions plus the
//! answers every endpoint shares (auth, limits, internal errors).

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};

use super::handlers;
use super::http::{Endpoint, Method};
use super::model::{
    CleanupBody, ErrorBody, RunList, ScheduledTasks, TaskAccepted, TaskKind, TaskProgress,
    TaskResult, TaskStatus, UnhealthyBody,
};

/// Name of the bearer-token security scheme in the document.
const SECURITY: &str = "admin_bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "token-cleanup admin API",
        description = "Statistics, manual cleanup runs, reports, health and schedules of token-cleanup. \
            Every operation requires an admin (`Authorization: Bearer <JWT>` with the ready JWT authorizer). \
            Every error answers `{\"error\": code, \"message\": text}`."
    ),
    paths(
        handlers::statistics,
        handlers::start_cleanup,
        handlers::task_status,
        handlers::generate_report,
        handlers::health_check,
        handlers::scheduled_tasks,
        handlers::recent_runs,
        handlers::openapi,
    ),
    components(schemas(
        CleanupBody, ErrorBody, RunList, ScheduledTasks, TaskAccepted, TaskKind, TaskProgress,
        TaskResult, TaskStatus, UnhealthyBody,
    )),
    tags((name = "token-cleanup", description = "Expired verification token cleanup"))
)]
struct AdminDoc;

/// The document, paths relative to the mount point (adapters serve it with the mount
/// point as `servers[0]`).
///
/// ```
/// let doc = token_cleanup_core::admin::openapi();
/// assert!(doc.paths.paths.contains_key("/expired-tokens"));
/// ```
pub fn openapi() -> utoipa::openapi::OpenApi {
    document(false)
}

fn error_response(description: &str) -> RefOr<Response> {
    let content = Content::new(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))));
    RefOr::T(
        Response::builder()
            .description(description)
            .content("application/json", content)
            .build(),
    )
}

fn with_header(response: RefOr<Response>, name: &str, description: &str) -> RefOr<Response> {
    match response {
        RefOr::T(mut r) => {
            let header = utoipa::openapi::header::HeaderBuilder::new()
                .schema(Some(utoipa::openapi::schema::Object::with_type(
                    utoipa::openapi::schema::Type::String,
                )))
                .description(Some(description))
                .build();
            r.headers.insert(name.to_owned(), RefOr::T(header));
            RefOr::T(r)
        }
        other => other,
    }
}

pub(crate) fn document(public_openapi: bool) -> utoipa::openapi::OpenApi {
    let mut doc = AdminDoc::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        SECURITY,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("An admin's token, checked by the host's authorizer"))
                .build(),
        ),
    );
    for endpoint in Endpoint::ALL {
        let Some(item) = doc.paths.paths.get_mut(endpoint.path()) else {
            continue;
        };
        let operation: Option<&mut Operation> = match endpoint.method() {
            Method::Get => item.get.as_mut(),
            Method::Post => item.post.as_mut(),
        };
        let Some(op) = operation else { continue };
        let public = public_openapi && endpoint == Endpoint::OpenApi;
        let responses = &mut op.responses.responses;
        let mut add = |status: &str, response: RefOr<Response>| {
            responses.entry(status.to_owned()).or_insert(response);
        };
        if !public {
            add(
                "401",
                with_header(
                    error_response("Missing, invalid or expired credentials"),
                    "WWW-Authenticate",
                    "`Bearer`",
                ),
            );
            add("403", error_response("Valid credentials, but not an admin"));
        }
        if endpoint.method() == Method::Post {
            add(
                "413",
                error_response("The request body is larger than the configured limit"),
            );
        }
        if endpoint.is_mutating() {
            add(
                "429",
                with_header(
                    error_response("Too many requests from this admin"),
                    "Retry-After",
                    "Seconds until the next request is accepted",
                ),
            );
        }
        add(
            "500",
            error_response("Internal error; details are in the server log"),
        );
        op.security = Some(if public {
            Vec::new()
        } else {
            vec![SecurityRequirement::new(SECURITY, Vec::<String>::new())]
        });
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_described_with_its_errors() {
        let doc = document(false);
        for endpoint in Endpoint::ALL {
            let item = &doc.paths.paths[endpoint.path()];
            let op = match endpoint.method() {
                Method::Get => item.get.as_ref(),
                Method::Post => item.post.as_ref(),
            }
            .unwrap_or_else(|| panic!("{} has no {:?}", endpoint.path(), endpoint.method()));
            assert_eq!(op.operation_id.as_deref(), Some(endpoint.name()));
            let statuses: Vec<&str> = op.responses.responses.keys().map(String::as_str).collect();
            for status in ["401", "403", "500"] {
                assert!(
                    statuses.contains(&status),
                    "{} lacks {status}",
                    endpoint.path()
                );
            }
            assert_eq!(statuses.contains(&"429"), endpoint.is_mutating());
            assert_eq!(statuses.contains(&"413"), endpoint.method() == Method::Post);
        }
        let json = serde_json::to_value(&doc).unwrap();
        let schemas = json["components"]["schemas"].as_object().unwrap();
        for name in [
            "Statistics",
            "CleanupBody",
            "CleanupReport",
            "PeriodReport",
            "HealthReport",
            "JobInfo",
            "TaskStatus",
            "ErrorBody",
        ] {
            assert!(schemas.contains_key(name), "schema {name} missing");
        }
        // Every `$ref` points at a schema that exists.
        let text = json.to_string();
        for piece in text.split("\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
        }
    }

    #[test]
    fn public_document_needs_no_credentials() {
        let doc = document(true);
        let op = doc.paths.paths["/openapi.json"].get.as_ref().unwrap();
        assert!(op.security.as_ref().is_some_and(Vec::is_empty));
        assert!(!op.responses.responses.contains_key("401"));
    }
}
