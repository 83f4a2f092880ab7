//! The framework-neutral request and response an adapter exchanges with [`AdminApi`].
//!
//! [`AdminApi`]: super::AdminApi

use std::fmt;

use crate::error::Error;

/// HTTP method of an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`: reads only.
    Get,
    /// `POST`.
    Post,
}

impl Method {
    /// `"GET"` or `"POST"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// One route of the admin API. Adapters register [`Endpoint::ALL`], each under
/// [`path`](Endpoint::path) with [`method`](Endpoint::method), and hand matching requests
/// to [`AdminApi::handle`](super::AdminApi::handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /statistics?days=30`.
    Statistics,
    /// `POST /expired-tokens`: starts a cleanup run in the background.
    ExpiredTokens,
    /// `GET /task-status/{task_id}`.
    TaskStatus,
    /// `POST /generate-report?report_type=weekly&send=false`: starts a report task.
    GenerateReport,
    /// `POST /health-check`.
    HealthCheck,
    /// `GET /scheduled-tasks`.
    ScheduledTasks,
    /// `GET /runs?limit=20`: recent runs and tasks, newest first.
    Runs,
    /// `GET /openapi.json`: the OpenAPI 3 document of this API.
    OpenApi,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 8] = [
        Endpoint::Statistics,
        Endpoint::ExpiredTokens,
        Endpoint::TaskStatus,
        Endpoint::GenerateReport,
        Endpoint::HealthCheck,
        Endpoint::ScheduledTasks,
        Endpoint::Runs,
        Endpoint::OpenApi,
    ];

    /// The method the endpoint answers.
    pub fn method(self) -> Method {
        match self {
            Endpoint::ExpiredTokens | Endpoint::GenerateReport | Endpoint::HealthCheck => {
                Method::Post
            }
            _ => Method::Get,
        }
    }

    /// The route below the mount point, with `{task_id}` in the path-parameter syntax
    /// that axum 0.8 and actix-web 4 share.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Statistics => "/statistics",
            Endpoint::ExpiredTokens => "/expired-tokens",
            Endpoint::TaskStatus => "/task-status/{task_id}",
            Endpoint::GenerateReport => "/generate-report",
            Endpoint::HealthCheck => "/health-check",
            Endpoint::ScheduledTasks => "/scheduled-tasks",
            Endpoint::Runs => "/runs",
            Endpoint::OpenApi => "/openapi.json",
        }
    }

    /// Stable name (the OpenAPI operation id and the audit events' `endpoint`).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Statistics => "statistics",
            Endpoint::ExpiredTokens => "start_cleanup",
            Endpoint::TaskStatus => "task_status",
            Endpoint::GenerateReport => "generate_report",
            Endpoint::HealthCheck => "health_check",
            Endpoint::ScheduledTasks => "scheduled_tasks",
            Endpoint::Runs => "recent_runs",
            Endpoint::OpenApi => "openapi",
        }
    }

    /// Whether the endpoint changes something (starts a task). These are rate limited per
    /// admin and audit logged.
    pub fn is_mutating(self) -> bool {
        matches!(self, Endpoint::ExpiredTokens | Endpoint::GenerateReport)
    }

    /// The static part of the route, used to find the mount prefix in a full path.
    pub(crate) fn static_suffix(self) -> &'static str {
        match self {
            Endpoint::TaskStatus => "/task-status/",
            other => other.path(),
        }
    }

    /// The endpoint whose route matches `relative` (a path below the mount point).
    pub(crate) fn matching(relative: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| match e {
            Endpoint::TaskStatus => relative
                .strip_prefix("/task-status/")
                .is_some_and(|id| !id.is_empty() && !id.contains('/')),
            other => relative == other.path(),
        })
    }
}

/// Method, path, query and headers of a request, borrowed from the framework's request.
///
/// `path` is the full path as the client sent it (mount prefix included): the API derives
/// its status URLs and the OpenAPI `servers` entry from it.
#[derive(Clone)]
pub struct RequestHead<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
}

impl<'a> RequestHead<'a> {
    /// A request head with no headers.
    ///
    /// ```
    /// use token_cleanup_core::admin::RequestHead;
    ///
    /// let head = RequestHead::new("GET", "/admin/statistics", Some("days=7"))
    ///     .with_header("Authorization", "Bearer abc");
    /// assert_eq!(head.bearer_token(), Some("abc"));
    /// ```
    pub fn new(method: &'a str, path: &'a str, query: Option<&'a str>) -> Self {
        Self {
            method,
            path,
            query,
            headers: Vec::new(),
        }
    }

    /// Adds a header (names compare case-insensitively).
    pub fn with_header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds headers; adapters pass the request's headers whose values are valid UTF-8.
    pub fn with_headers(mut self, headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.headers.extend(headers);
        self
    }

    /// The method.
    pub fn method(&self) -> &'a str {
        self.method
    }
    /// The full path.
    pub fn path(&self) -> &'a str {
        self.path
    }
    /// The raw query string, without `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers_named(name).next()
    }

    /// Every value of header `name`, in order.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The credentials of an `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&'a str> {
        let value = self.header("authorization")?.trim();
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }
}

/// Header values that carry credentials are never printed.
fn is_secret_header(name: &str) -> bool {
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
    ]
    .iter()
    .any(|s| name.eq_ignore_ascii_case(s))
}

impl fmt::Debug for RequestHead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    *n,
                    if is_secret_header(n) {
                        "<redacted>"
                    } else {
                        *v
                    },
                )
            })
            .collect();
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &headers)
            .finish()
    }
}

/// A request as an adapter hands it to [`AdminApi::handle`](super::AdminApi::handle).
#[derive(Debug)]
pub struct AdminRequest<'a> {
    /// Method, path, query and headers.
    pub head: RequestHead<'a>,
    /// The body, read up to [`AdminApi::max_body_bytes`](super::AdminApi::max_body_bytes):
    /// `Err(Error::PayloadTooLarge { .. })` when it is larger,
    /// `Err(Error::MalformedBody { .. })` when it could not be read.
    pub body: Result<&'a [u8], Error>,
}

impl<'a> AdminRequest<'a> {
    /// A request with a body that was read completely.
    pub fn new(head: RequestHead<'a>, body: &'a [u8]) -> Self {
        Self {
            head,
            body: Ok(body),
        }
    }
}

/// What an adapter sends back: status, headers and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResponse {
    /// HTTP status code.
    pub status: u16,
    /// Headers (lowercase names), `content-type` always among them.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl AdminResponse {
    /// A JSON response.
    pub(crate) fn json(status: u16, value: &impl serde::Serialize) -> Self {
        Self::raw_json(
            status,
            serde_json::to_vec(value).expect("admin API bodies always serialize"),
        )
    }

    pub(crate) fn raw_json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type", "application/json".to_owned()),
                ("cache-control", "no-store".to_owned()),
            ],
            body,
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_exactly() {
        assert_eq!(
            Endpoint::matching("/statistics"),
            Some(Endpoint::Statistics)
        );
        assert_eq!(
            Endpoint::matching("/task-status/abc"),
            Some(Endpoint::TaskStatus)
        );
        assert_eq!(Endpoint::matching("/task-status/"), None);
        assert_eq!(Endpoint::matching("/task-status/a/b"), None);
        assert_eq!(Endpoint::matching("/statistics/"), None);
        for e in Endpoint::ALL {
            if e != Endpoint::TaskStatus {
                assert_eq!(Endpoint::matching(e.path()), Some(e));
            }
        }
    }

    #[test]
    fn bearer_tokens_and_redaction() {
        let head = RequestHead::new("GET", "/x", None)
            .with_header("AUTHORIZATION", "bearer  secret-value ")
            .with_header("x-trace", "1");
        assert_eq!(head.bearer_token(), Some("secret-value"));
        let printed = format!("{head:?}");
        assert!(!printed.contains("secret-value"), "{printed}");
        assert!(printed.contains("x-trace"));
        let basic = RequestHead::new("GET", "/x", None).with_header("authorization", "Basic abc");
        assert_eq!(basic.bearer_token(), None);
        assert_eq!(RequestHead::new("GET", "/x", None).bearer_token(), None);
    }
}
