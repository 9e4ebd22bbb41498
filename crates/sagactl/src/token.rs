//! Bearer tokens for trying a system's API by hand: HS256, signed with the shared secret the
//! services verify (`AUTH_JWT_SECRET_FILE`). An identity provider issues the real ones.

use std::time::Duration;

use serde::Serialize;

/// What a token says.
#[derive(Debug)]
pub struct Claims<'a> {
    /// The customer (`sub`).
    pub subject: &'a str,
    pub issuer: &'a str,
    pub audience: &'a str,
    /// `["admin"]` for an operator.
    pub roles: &'a [&'a str],
    pub valid_for: Duration,
}

#[derive(Serialize)]
struct Wire<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    roles: &'a [&'a str],
}

/// The signed token.
pub fn sign(secret: &[u8], claims: &Claims<'_>) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jsonwebtoken::get_current_timestamp();
    let wire = Wire {
        sub: claims.subject,
        iss: claims.issuer,
        aud: claims.audience,
        iat: now,
        exp: now.saturating_add(claims.valid_for.as_secs()),
        roles: claims.roles,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &wire,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
}

#[cfg(test)]
mod tests {
    use runtime::auth::{Authenticator, Caller};

    use super::*;

    #[test]
    fn the_services_accept_what_it_signs() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let token = sign(
            secret,
            &Claims {
                subject: "c-1",
                issuer: "https://issuer.test",
                audience: "orders",
                roles: &["admin"],
                valid_for: Duration::from_secs(60),
            },
        )
        .expect("signed");
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a header value"),
        );
        let caller = Authenticator::shared_secret(secret, "https://issuer.test", "orders")
            .authenticate(&headers)
            .expect("accepted");
        assert_eq!(
            caller,
            Caller::Customer {
                customer_id: "c-1".into(),
                admin: true
            }
        );
    }
}
