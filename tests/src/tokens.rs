//! Bearer tokens for a test system whose API checks them: a fresh HS256 secret per system,
//! written to a file the services read (`AUTH_JWT_SECRET_FILE`), and tokens signed with it
//! for any customer, with or without the admin role.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use runtime::auth::{TokenClaims, sign_hs256};

/// The `iss` the services are configured to expect.
pub const ISSUER: &str = "https://auth.e2e.test";
/// The `aud` the services are configured to expect.
pub const AUDIENCE: &str = "order-saga";
/// How long a minted token is valid.
const LIFETIME_SECONDS: u64 = 3600;

/// Signs tokens the system's services accept.
#[derive(Clone)]
pub struct TokenIssuer {
    secret: Vec<u8>,
    secret_file: PathBuf,
}

/// The secret is not shown, so that it never reaches a test's output.
impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("secret_file", &self.secret_file)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// A new random secret, written to `directory/jwt-secret`.
    pub fn create(directory: &Path) -> Result<TokenIssuer> {
        let secret: String = (0..48)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random_range(0..36)]))
            .collect();
        let secret_file = directory.join("jwt-secret");
        std::fs::write(&secret_file, &secret)
            .with_context(|| format!("failed to write {}", secret_file.display()))?;
        Ok(TokenIssuer {
            secret: secret.into_bytes(),
            secret_file,
        })
    }

    /// The services' environment that makes them verify this issuer's tokens.
    pub fn service_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AUTH_JWT_SECRET_FILE".to_owned(),
                self.secret_file.display().to_string(),
            ),
            ("AUTH_JWT_ISSUER".to_owned(), ISSUER.to_owned()),
            ("AUTH_JWT_AUDIENCE".to_owned(), AUDIENCE.to_owned()),
        ]
    }

    /// A valid token for `subject` with `roles`.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        let claims = TokenClaims {
            sub: subject,
            iss: ISSUER,
            aud: AUDIENCE,
            exp: jsonwebtoken::get_current_timestamp() + LIFETIME_SECONDS,
            roles,
        };
        sign_hs256(&self.secret, &claims).expect("HS256 signing cannot fail")
    }
}
