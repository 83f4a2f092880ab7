//! Prints a test admin token (HS256, one hour) for the example hosts.
//!
//! ```text
//! export ADMIN_JWT_SECRET=$(openssl rand -hex 32)
//! TOKEN=$(cargo run -q --example mint_admin_token --features jwt -- alice@example.com)
//! ```
//!
//! The subject (first argument, default `admin`) is the identity recorded in run records
//! and audit events. For a production identity provider, issue tokens there instead, with
//! claim `role: "admin"` or `roles: ["admin", ...]`.

use std::process::ExitCode;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn main() -> ExitCode {
    let Ok(secret) = std::env::var("ADMIN_JWT_SECRET") else {
        eprintln!("ADMIN_JWT_SECRET is not set (the secret the host verifies tokens with)");
        return ExitCode::from(2);
    };
    let subject = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "admin".to_owned());
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "sub": subject,
        "role": "admin",
        "iat": now,
        "exp": now + 3600,
    });
    match jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot sign: {e}");
            ExitCode::FAILURE
        }
    }
}
