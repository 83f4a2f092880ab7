//! [`JwtAuthorizer`]: admin bearer tokens checked with jsonwebtoken.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::auth::{AdminAuthorizer, AdminIdentity};
use super::http::{Endpoint, RequestHead};
use crate::error::{Error, Result};

/// Shortest HS256 secret accepted: 256 bits, the size of the MAC.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Accepts `Authorization: Bearer <JWT>` from admins.
///
/// - Exactly one algorithm is accepted, the one of the key (HS256 with a shared secret,
///   RS256 or ES256 with a public key). The token header's `alg` is never trusted:
///   `alg: none` and tokens of another algorithm are refused.
/// - `exp` is required and checked, `nbf` is checked when present, with 30 s of leeway
///   for clock skew; `sub` is required and becomes the admin's identity.
/// - Issuer and audience are checked when configured.
/// - The caller is an admin when claim `role` is `"admin"` or claim `roles` (an array)
///   contains `"admin"`. Claim names and the role are configurable. Anyone else with a
///   valid token gets `403`.
///
/// ```
/// use token_cleanup_core::admin::JwtAuthorizer;
///
/// let authorizer = JwtAuthorizer::hs256(b"an example secret of at least 32 bytes!")
///     .expect("long enough")
///     .issuer("https://auth.example.com")
///     .audience("token-cleanup-admin");
/// # let _ = authorizer;
/// ```
#[derive(Clone)]
pub struct JwtAuthorizer {
    key: DecodingKey,
    validation: Validation,
    role_claim: String,
    roles_claim: String,
    admin_role: String,
}

impl fmt::Debug for JwtAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("JwtAuthorizer")
            .field("algorithm", &self.validation.algorithms)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("role_claim", &self.role_claim)
            .field("roles_claim", &self.roles_claim)
            .field("admin_role", &self.admin_role)
            .finish_non_exhaustive()
    }
}

fn key_error(kind: &'static str) -> impl FnOnce(jsonwebtoken::errors::Error) -> Error {
    move |e| Error::InvalidArgument {
        name: "jwt_key",
        message: format!("not a valid {kind} public key in PEM form: {e}"),
    }
}

impl JwtAuthorizer {
    /// HS256 with a shared secret of at least [`MIN_HS256_SECRET_BYTES`] bytes.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self> {
        let secret = secret.as_ref();
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(Error::InvalidArgument {
                name: "jwt_secret",
                message: format!(
                    "an HS256 secret needs at least {MIN_HS256_SECRET_BYTES} bytes, got {}",
                    secret.len()
                ),
            });
        }
        Ok(Self::with_key(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// RS256 with an RSA public key in PEM form.
    pub fn rs256_pem(public_key: &[u8]) -> Result<Self> {
        let key = DecodingKey::from_rsa_pem(public_key).map_err(key_error("RSA"))?;
        Ok(Self::with_key(key, Algorithm::RS256))
    }

    /// ES256 with a P-256 public key in PEM form.
    pub fn es256_pem(public_key: &[u8]) -> Result<Self> {
        let key = DecodingKey::from_ec_pem(public_key).map_err(key_error("EC P-256"))?;
        Ok(Self::with_key(key, Algorithm::ES256))
    }

    fn with_key(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key,
            validation,
            role_claim: "role".to_owned(),
            roles_claim: "roles".to_owned(),
            admin_role: "admin".to_owned(),
        }
    }

    fn require(&mut self, claim: &str) {
        self.validation
            .required_spec_claims
            .insert(claim.to_owned());
    }

    /// Requires claim `iss` to be `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.validation.set_issuer(&[issuer.into()]);
        self.require("iss");
        self
    }

    /// Requires claim `aud` to be (or contain) `audience`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.validation.set_audience(&[audience.into()]);
        self.validation.validate_aud = true;
        self.require("aud");
        self
    }

    /// Name of the single-role claim (default `role`).
    pub fn role_claim(mut self, name: impl Into<String>) -> Self {
        self.role_claim = name.into();
        self
    }

    /// Name of the role-list claim (default `roles`).
    pub fn roles_claim(mut self, name: impl Into<String>) -> Self {
        self.roles_claim = name.into();
        self
    }

    /// The role that makes an admin (default `admin`).
    pub fn admin_role(mut self, role: impl Into<String>) -> Self {
        self.admin_role = role.into();
        self
    }

    /// Clock-skew allowance for `exp` and `nbf` (default 30 s, whole seconds).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.validation.leeway = leeway.as_secs();
        self
    }

    /// Verifies `token` and returns the admin it names.
    pub fn verify(&self, token: &str) -> Result<AdminIdentity> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| {
            let reason = match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                _ => "the token is not valid",
            };
            Error::Unauthenticated {
                reason,
                source: Some(Box::new(e)),
            }
        })?;
        let claims = data.claims;
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => {
                return Err(Error::Unauthenticated {
                    reason: "the token names no subject",
                    source: None,
                });
            }
        };
        let role = claims.get(&self.role_claim).and_then(Value::as_str);
        let in_roles = claims
            .get(&self.roles_claim)
            .and_then(Value::as_array)
            .is_some_and(|roles| roles.iter().any(|r| r.as_str() == Some(&self.admin_role)));
        if role == Some(self.admin_role.as_str()) || in_roles {
            Ok(AdminIdentity::new(subject))
        } else {
            Err(Error::Forbidden { subject })
        }
    }
}

#[async_trait]
impl AdminAuthorizer for JwtAuthorizer {
    async fn authorize(
        &self,
        _endpoint: Endpoint,
        request: &RequestHead<'_>,
    ) -> Result<AdminIdentity> {
        let token = request.bearer_token().ok_or(Error::Unauthenticated {
            reason: "a bearer token is required",
            source: None,
        })?;
        self.verify(token)
    }
}

/// Unpadded base64url (enough to hand-craft test tokens such as `alg: none`).
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn hs(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn reason(r: Result<AdminIdentity>) -> &'static str {
        match r {
            Err(Error::Unauthenticated { reason, .. }) => reason,
            Err(Error::Forbidden { .. }) => "forbidden",
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            JwtAuthorizer::hs256(b"short"),
            Err(Error::InvalidArgument {
                name: "jwt_secret",
                ..
            })
        ));
    }

    #[test]
    fn admin_claims() {
        let auth = JwtAuthorizer::hs256(SECRET).unwrap();
        let exp = now() + 600;
        let ok = auth.verify(&hs(json!({"sub": "alice", "exp": exp, "role": "admin"})));
        assert_eq!(ok.unwrap().subject(), "alice");
        let ok = auth.verify(&hs(
            json!({"sub": "bob", "exp": exp, "roles": ["x", "admin"]}),
        ));
        assert_eq!(ok.unwrap().subject(), "bob");
        let user = auth.verify(&hs(json!({"sub": "eve", "exp": exp, "roles": ["user"]})));
        assert_eq!(reason(user), "forbidden");
        let renamed = JwtAuthorizer::hs256(SECRET)
            .unwrap()
            .roles_claim("groups")
            .admin_role("ops");
        let ok = renamed.verify(&hs(json!({"sub": "o", "exp": exp, "groups": ["ops"]})));
        assert_eq!(ok.unwrap().subject(), "o");
        let old_name = renamed.verify(&hs(json!({"sub": "o", "exp": exp, "roles": ["admin"]})));
        assert_eq!(reason(old_name), "forbidden");
    }

    #[test]
    fn time_claims() {
        let auth = JwtAuthorizer::hs256(SECRET).unwrap();
        let no_exp = auth.verify(&hs(json!({"sub": "a", "role": "admin"})));
        assert_eq!(reason(no_exp), "the token is not valid");
        let expired = auth.verify(&hs(
            json!({"sub": "a", "role": "admin", "exp": now() - 120}),
        ));
        assert_eq!(reason(expired), "the token has expired");
        let early =
            hs(json!({"sub": "a", "role": "admin", "exp": now() + 900, "nbf": now() + 600}));
        assert_eq!(reason(auth.verify(&early)), "the token is not valid yet");
        let no_sub = auth.verify(&hs(json!({"role": "admin", "exp": now() + 60})));
        assert_eq!(reason(no_sub), "the token is not valid");
        let empty_sub = auth.verify(&hs(json!({"sub": " ", "role": "admin", "exp": now() + 60})));
        assert_eq!(reason(empty_sub), "the token names no subject");
    }

    #[test]
    fn issuer_and_audience() {
        let auth = JwtAuthorizer::hs256(SECRET)
            .unwrap()
            .issuer("https://auth")
            .audience("cleanup");
        let exp = now() + 600;
        let good = json!({"sub": "a", "role": "admin", "exp": exp, "iss": "https://auth", "aud": "cleanup"});
        assert!(auth.verify(&hs(good)).is_ok());
        let other_iss =
            json!({"sub": "a", "role": "admin", "exp": exp, "iss": "x", "aud": "cleanup"});
        assert_eq!(
            reason(auth.verify(&hs(other_iss))),
            "the token is not valid"
        );
        let no_aud = json!({"sub": "a", "role": "admin", "exp": exp, "iss": "https://auth"});
        assert_eq!(reason(auth.verify(&hs(no_aud))), "the token is not valid");
    }

    #[test]
    fn algorithm_is_pinned() {
        let auth = JwtAuthorizer::hs256(SECRET).unwrap();
        let claims = json!({"sub": "a", "role": "admin", "exp": now() + 600});
        // `alg: none`, unsigned.
        let b64 = |v: &Value| base64_url(&serde_json::to_vec(v).unwrap());
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims)
        );
        assert_eq!(reason(auth.verify(&none)), "the token is not valid");
        // HS384 with the same secret.
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(reason(auth.verify(&hs384)), "the token is not valid");
        // Another secret.
        let other = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"another secret of thirty-two bytes!!"),
        )
        .unwrap();
        assert_eq!(reason(auth.verify(&other)), "the token is not valid");
        assert_eq!(reason(auth.verify("garbage")), "the token is not valid");
    }

    #[test]
    fn base64_url_matches_the_standard() {
        assert_eq!(base64_url(b""), "");
        assert_eq!(base64_url(b"f"), "Zg");
        assert_eq!(base64_url(b"fo"), "Zm8");
        assert_eq!(base64_url(b"foo"), "Zm9v");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn public_key_algorithms() {
        let claims = json!({"sub": "k", "role": "admin", "exp": now() + 600});
        let rsa_private = include_bytes!("../../tests/fixtures/rs256-private.pem");
        let rsa_public = include_bytes!("../../tests/fixtures/rs256-public.pem");
        let ec_private = include_bytes!("../../tests/fixtures/es256-private.pem");
        let ec_public = include_bytes!("../../tests/fixtures/es256-public.pem");
        let rs = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(rsa_private).unwrap(),
        )
        .unwrap();
        let es = encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(ec_private).unwrap(),
        )
        .unwrap();
        let rs_auth = JwtAuthorizer::rs256_pem(rsa_public).unwrap();
        let es_auth = JwtAuthorizer::es256_pem(ec_public).unwrap();
        assert_eq!(rs_auth.verify(&rs).unwrap().subject(), "k");
        assert_eq!(es_auth.verify(&es).unwrap().subject(), "k");
        assert_eq!(reason(rs_auth.verify(&es)), "the token is not valid");
        assert_eq!(reason(es_auth.verify(&rs)), "the token is not valid");
        // An HS256 token "signed" with the public key text must not pass as RS256.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(rsa_public),
        )
        .unwrap();
        assert_eq!(reason(rs_auth.verify(&confused)), "the token is not valid");
        assert!(matches!(
            JwtAuthorizer::rs256_pem(b"not a key"),
            Err(Error::InvalidArgument {
                name: "jwt_key",
                ..
            })
        ));
    }
}
