//! Who may call the admin API.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::http::{Endpoint, RequestHead};
use crate::error::Result;

/// An authenticated admin. The subject is the identity written to run records
/// (`requested_by`) and audit events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdminIdentity {
    subject: String,
}

impl AdminIdentity {
    /// An admin identified by `subject` (user id, e-mail, API key name; never a secret).
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
        }
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl fmt::Display for AdminIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.subject)
    }
}

/// Decides whether a request comes from an admin. Every request to the admin API goes
/// through it (the OpenAPI document too, unless made public).
///
/// Return [`Error::Unauthenticated`](crate::Error::Unauthenticated) for missing or invalid
/// credentials (`401`), [`Error::Forbidden`](crate::Error::Forbidden) for a valid caller who
/// is not an admin (`403`); any other error answers `500` with a generic message.
///
/// An authorizer that accepts cookies must also protect against cross-site requests
/// (check `Origin` or a CSRF header from `request`): a bearer token cannot be sent by
/// another site, a cookie can.
///
/// ```
/// use async_trait::async_trait;
/// use token_cleanup_core::admin::{AdminAuthorizer, AdminIdentity, Endpoint, RequestHead};
/// use token_cleanup_core::{Error, Result};
///
/// /// One static API key for operators (compare in constant time in real code).
/// #[derive(Debug)]
/// struct ApiKey(String);
///
/// #[async_trait]
/// impl AdminAuthorizer for ApiKey {
///     async fn authorize(&self, _endpoint: Endpoint, request: &RequestHead<'_>) -> Result<AdminIdentity> {
///         match request.header("x-api-key") {
///             Some(key) if key == self.0 => Ok(AdminIdentity::new("ops-api-key")),
///             _ => Err(Error::Unauthenticated { reason: "missing or invalid API key", source: None }),
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait AdminAuthorizer: Send + Sync + fmt::Debug + 'static {
    /// The admin making `request` to `endpoint`, or why not.
    async fn authorize(
        &self,
        endpoint: Endpoint,
        request: &RequestHead<'_>,
    ) -> Result<AdminIdentity>;
}
