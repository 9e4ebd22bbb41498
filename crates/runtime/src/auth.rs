//! Who is calling an API. In production a customer, identified by the `sub` of a bearer JWT
//! whose signature, issuer, audience and expiry are checked against configured keys (an
//! `admin` role in the token adds the operator's rights). For local development only,
//! `INSECURE_DEV_AUTH=1` trusts the request to say who it is.
//!
//! Handlers state what they need by taking a [`Caller`]: a route without one is public.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;

use crate::http::ApiError;

/// How long past `exp` (and before `nbf`) a token is still accepted, for clock skew.
const LEEWAY: Duration = Duration::from_secs(30);

/// How callers authenticate. Keys come from files, never from the environment itself, so
/// that no secret shows in a process listing, a crash report or `Settings`' debug output.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthSettings {
    /// The `iss` every token must carry.
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The `aud` every token must carry.
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// A file holding the HS256 shared secret tokens are signed with (at least 32 bytes).
    #[arg(long, env = "AUTH_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// A PEM file holding the public key tokens are signed with (RSA, EC or Ed25519; its
    /// algorithm is AUTH_JWT_ALGORITHM).
    #[arg(long, env = "AUTH_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// The algorithm of AUTH_JWT_PUBLIC_KEY_FILE: RS256, RS384, RS512, PS256, PS384, PS512,
    /// ES256, ES384 or EdDSA.
    #[arg(long, env = "AUTH_JWT_ALGORITHM", default_value = "RS256")]
    pub jwt_algorithm: String,

    /// A JSON Web Key Set file (the issuer's `jwks.json`); a token's `kid` picks the key.
    #[arg(long, env = "AUTH_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// The value in a token's `roles` claim that grants operator rights (product writes,
    /// every customer's orders).
    #[arg(long, env = "AUTH_ADMIN_ROLE", default_value = "admin")]
    pub admin_role: String,

    /// Local development only: accept every request without a token and take the customer
    /// from the request body. Refused together with any key.
    #[arg(long, env = "INSECURE_DEV_AUTH", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_dev_auth: bool,
}

/// Authentication that is configured wrong: the service refuses to start.
#[derive(Debug, Error)]
pub enum AuthConfigError {
    #[error(
        "no authentication is configured: set AUTH_JWT_ISSUER, AUTH_JWT_AUDIENCE and one of \
         AUTH_JWT_SECRET_FILE, AUTH_JWT_PUBLIC_KEY_FILE or AUTH_JWKS_FILE; or, for local \
         development only, INSECURE_DEV_AUTH=1"
    )]
    Missing,
    #[error("INSECURE_DEV_AUTH=1 is set together with token keys; set one or the other")]
    Ambiguous,
    #[error("{0} must be set when tokens are verified")]
    Required(&'static str),
    #[error("set only one of AUTH_JWT_SECRET_FILE, AUTH_JWT_PUBLIC_KEY_FILE and AUTH_JWKS_FILE")]
    SeveralKeySources,
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("AUTH_JWT_ALGORITHM {0:?} is not an asymmetric JWT algorithm")]
    Algorithm(String),
}

/// Why a request is not authenticated: answered `401`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("this endpoint needs a bearer token: send `Authorization: Bearer <JWT>`")]
    Missing,
    #[error("the bearer token is not accepted: {0}")]
    Invalid(String),
}

/// The caller of a request, as far as it could be established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A verified token: `customer_id` is its subject.
    Customer { customer_id: String, admin: bool },
    /// `INSECURE_DEV_AUTH`: nobody was checked, so everything is allowed.
    Unverified,
}

impl Caller {
    /// The customer an order is placed for: the token's subject (the body may repeat it but
    /// not name anyone else, unless an admin places it on a customer's behalf), or,
    /// unverified, the body's.
    pub fn customer_for(&self, from_body: Option<&str>) -> Result<String, ApiError> {
        match (self, from_body) {
            (Caller::Customer { customer_id, .. }, None) => Ok(customer_id.clone()),
            (Caller::Customer { customer_id, .. }, Some(claimed)) if claimed == customer_id => {
                Ok(customer_id.clone())
            }
            (Caller::Customer { admin: true, .. }, Some(claimed)) => Ok(claimed.to_owned()),
            (Caller::Customer { .. }, Some(_)) => Err(ApiError::Forbidden(
                "customer_id names another customer than the bearer token; leave it out".into(),
            )),
            (Caller::Unverified, Some(claimed)) => Ok(claimed.to_owned()),
            (Caller::Unverified, None) => Err(ApiError::invalid(
                "customer_id",
                "is required when no bearer token says who the customer is",
            )),
        }
    }

    /// Whether this caller may see and act on what belongs to `owner`.
    pub fn may_access(&self, owner: &str) -> bool {
        match self {
            Caller::Customer { customer_id, admin } => *admin || customer_id == owner,
            Caller::Unverified => true,
        }
    }

    /// Fails with `403` unless the caller holds the admin role.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Customer { admin: true, .. } | Caller::Unverified => Ok(()),
            Caller::Customer { admin: false, .. } => Err(ApiError::Forbidden(
                "this needs the admin role, which the bearer token does not grant".into(),
            )),
        }
    }
}

/// Establishes the [`Caller`] of each request; installed by `http::finish` as an extension.
#[derive(Debug)]
pub struct Authenticator {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Tokens(Verifier),
    InsecureDev,
    /// A process that serves no API: nobody is let in.
    Closed,
}

struct Verifier {
    /// Each key with what a token it verifies must carry.
    keys: Vec<(Key, Validation)>,
    issuer: String,
    audience: String,
    admin_role: String,
}

impl Verifier {
    fn new(keys: Vec<Key>, issuer: String, audience: String, admin_role: String) -> Verifier {
        let keys = keys
            .into_iter()
            .map(|key| {
                let validation = validation(key.algorithm, &issuer, &audience);
                (key, validation)
            })
            .collect();
        Verifier {
            keys,
            issuer,
            audience,
            admin_role,
        }
    }
}

/// Keys are secret material; only their ids and algorithms are shown.
impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|(key, _)| (key.id.as_deref(), key.algorithm))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// What a token must carry to be accepted with a key of `algorithm`: built once per key, not
/// per request.
fn validation(algorithm: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY.as_secs();
    validation
}

/// What a token says, for signing one with a shared HS256 secret: development tools and
/// tests. An identity provider issues the real ones.
#[derive(Debug, serde::Serialize)]
pub struct TokenClaims<'a> {
    /// The customer.
    pub sub: &'a str,
    pub iss: &'a str,
    pub aud: &'a str,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// `["admin"]` for an operator.
    pub roles: &'a [&'a str],
}

/// A token signed with `secret`, which [`Authenticator`]s verifying that secret accept.
pub fn sign_hs256(
    secret: &[u8],
    claims: &TokenClaims<'_>,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
}

/// The claims read from a verified token; `iss`, `aud`, `exp` and `nbf` are checked by
/// [`Validation`].
#[derive(Debug, Deserialize)]
struct Claims {
    // Optional here so that a token without one is refused for that reason, not as
    // malformed.
    sub: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

impl Authenticator {
    /// The authenticator the settings describe; refuses a service with none.
    pub fn from_settings(settings: &AuthSettings) -> Result<Authenticator, AuthConfigError> {
        let sources = [
            settings.jwt_secret_file.is_some(),
            settings.jwt_public_key_file.is_some(),
            settings.jwks_file.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        match (settings.insecure_dev_auth, sources) {
            (true, 0) => return Ok(Authenticator::insecure()),
            (true, _) => return Err(AuthConfigError::Ambiguous),
            (false, 0) => return Err(AuthConfigError::Missing),
            (false, 1) => {}
            (false, _) => return Err(AuthConfigError::SeveralKeySources),
        }
        let keys = if let Some(path) = &settings.jwt_secret_file {
            vec![secret_key(path)?]
        } else if let Some(path) = &settings.jwt_public_key_file {
            vec![public_key(path, &settings.jwt_algorithm)?]
        } else if let Some(path) = &settings.jwks_file {
            key_set(path)?
        } else {
            unreachable!("exactly one key source is set")
        };
        let issuer = settings
            .jwt_issuer
            .clone()
            .ok_or(AuthConfigError::Required("AUTH_JWT_ISSUER"))?;
        let audience = settings
            .jwt_audience
            .clone()
            .ok_or(AuthConfigError::Required("AUTH_JWT_AUDIENCE"))?;
        Ok(Authenticator {
            mode: Mode::Tokens(Verifier::new(
                keys,
                issuer,
                audience,
                settings.admin_role.clone(),
            )),
        })
    }

    /// `INSECURE_DEV_AUTH`: every caller is [`Caller::Unverified`].
    pub fn insecure() -> Authenticator {
        Authenticator {
            mode: Mode::InsecureDev,
        }
    }

    /// Lets nobody in: for a process that serves no API.
    pub fn closed() -> Authenticator {
        Authenticator { mode: Mode::Closed }
    }

    /// Verifies HS256 tokens signed with `secret` (for tests and the local tools).
    pub fn shared_secret(secret: &[u8], issuer: &str, audience: &str) -> Authenticator {
        Authenticator {
            mode: Mode::Tokens(Verifier::new(
                vec![Key {
                    id: None,
                    algorithm: Algorithm::HS256,
                    key: DecodingKey::from_secret(secret),
                }],
                issuer.to_owned(),
                audience.to_owned(),
                "admin".to_owned(),
            )),
        }
    }

    /// Whether requests are let in unchecked.
    pub fn is_insecure(&self) -> bool {
        matches!(self.mode, Mode::InsecureDev)
    }

    /// The caller the request's `Authorization` header proves.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let verifier = match &self.mode {
            Mode::InsecureDev => return Ok(Caller::Unverified),
            Mode::Closed => return Err(AuthError::Invalid("this process serves no API".into())),
            Mode::Tokens(verifier) => verifier,
        };
        let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                AuthError::Invalid("the Authorization header is not `Bearer <JWT>`".into())
            })?;
        verifier.verify(token)
    }
}

impl Verifier {
    fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|error| invalid(&error))?;
        // The key decides the algorithm, never the token: a token naming another algorithm
        // than its key's (the classic "alg: none" or HS256-with-a-public-key tricks) finds no
        // key at all.
        let (key, validation) = self
            .keys
            .iter()
            .find(|(key, _)| {
                key.algorithm == header.alg
                    && (header.kid.is_none() || key.id.is_none() || key.id == header.kid)
            })
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "no configured key verifies {:?} tokens{}",
                    header.alg,
                    header
                        .kid
                        .as_deref()
                        .map(|kid| format!(" with key id {kid:?}"))
                        .unwrap_or_default()
                ))
            })?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            .map_err(|error| invalid(&error))?
            .claims;
        let customer_id = match claims.sub {
            None => return Err(AuthError::Invalid("it lacks the \"sub\" claim".into())),
            Some(sub) if sub.trim().is_empty() => {
                return Err(AuthError::Invalid("its subject (sub) is empty".into()));
            }
            Some(sub) => sub,
        };
        Ok(Caller::Customer {
            admin: claims.roles.contains(&self.admin_role),
            customer_id,
        })
    }
}

/// A reason a client can act on, without echoing the token.
fn invalid(error: &jsonwebtoken::errors::Error) -> AuthError {
    let reason = match error.kind() {
        ErrorKind::ExpiredSignature => "it has expired",
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "its issuer (iss) is not the one expected",
        ErrorKind::InvalidAudience => "its audience (aud) is not this API",
        ErrorKind::InvalidSignature => "its signature does not verify",
        ErrorKind::MissingRequiredClaim(claim) => {
            return AuthError::Invalid(format!("it lacks the {claim:?} claim"));
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "its algorithm is not the key's"
        }
        _ => "it is not a well-formed JWT",
    };
    AuthError::Invalid(reason.to_owned())
}

fn read(path: &Path) -> Result<Vec<u8>, AuthConfigError> {
    std::fs::read(path).map_err(|source| AuthConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn key_error(path: &Path, message: impl Into<String>) -> AuthConfigError {
    AuthConfigError::Key {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Shortest HS256 secret accepted: the hash's own size (RFC 7518 §3.2).
const MIN_SECRET_BYTES: usize = 32;

fn secret_key(path: &Path) -> Result<Key, AuthConfigError> {
    let secret = read(path)?;
    // A trailing newline from `echo secret > file` is not part of the secret.
    let secret = secret.trim_ascii_end();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(key_error(
            path,
            format!("an HS256 secret needs at least {MIN_SECRET_BYTES} bytes"),
        ));
    }
    Ok(Key {
        id: None,
        algorithm: Algorithm::HS256,
        key: DecodingKey::from_secret(secret),
    })
}

fn public_key(path: &Path, algorithm: &str) -> Result<Key, AuthConfigError> {
    let algorithm = Algorithm::from_str(algorithm)
        .ok()
        .filter(|algorithm| {
            !matches!(
                algorithm,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            )
        })
        .ok_or_else(|| AuthConfigError::Algorithm(algorithm.to_owned()))?;
    let pem = read(path)?;
    let key = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        _ => DecodingKey::from_rsa_pem(&pem),
    }
    .map_err(|error| {
        key_error(
            path,
            format!("not a {algorithm:?} public key in PEM: {error}"),
        )
    })?;
    Ok(Key {
        id: None,
        algorithm,
        key,
    })
}

fn key_set(path: &Path) -> Result<Vec<Key>, AuthConfigError> {
    let set: JwkSet = serde_json::from_slice(&read(path)?)
        .map_err(|error| key_error(path, format!("not a JSON Web Key Set: {error}")))?;
    let mut keys = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let algorithm = jwk
            .common
            .key_algorithm
            .and_then(|algorithm| Algorithm::from_str(&algorithm.to_string()).ok())
            .ok_or_else(|| {
                key_error(
                    path,
                    format!("keys[{index}] has no \"alg\" this service can verify"),
                )
            })?;
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|error| key_error(path, format!("keys[{index}]: {error}")))?;
        keys.push(Key {
            id: jwk.common.key_id.clone(),
            algorithm,
            key,
        });
    }
    if keys.is_empty() {
        return Err(key_error(path, "the key set holds no key"));
    }
    Ok(keys)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let authenticator = parts
            .extensions
            .get::<Arc<Authenticator>>()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no authenticator is installed")))?;
        authenticator
            .authenticate(&parts.headers)
            .map_err(|error| ApiError::Unauthorized(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn authenticator() -> Authenticator {
        Authenticator::shared_secret(SECRET, "https://issuer.test", "orders")
    }

    fn claims(subject: &str) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({"sub": subject, "iss": "https://issuer.test", "aud": "orders", "exp": now + 300})
    }

    fn token(claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("the token encodes")
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value"),
        );
        headers
    }

    fn check(claims: &Value) -> Result<Caller, AuthError> {
        authenticator().authenticate(&bearer(&token(claims)))
    }

    #[test]
    fn a_valid_token_names_its_subject_as_the_customer() {
        assert_eq!(
            check(&claims("c-1")),
            Ok(Caller::Customer {
                customer_id: "c-1".into(),
                admin: false
            })
        );
        let mut admin = claims("ops");
        admin["roles"] = json!(["support", "admin"]);
        assert_eq!(
            check(&admin),
            Ok(Caller::Customer {
                customer_id: "ops".into(),
                admin: true
            })
        );
    }

    #[test]
    fn every_claim_that_matters_is_checked() {
        let now = jsonwebtoken::get_current_timestamp();
        let cases = [
            ("exp", json!(now - 120), "it has expired"),
            ("iss", json!("https://evil.test"), "its issuer"),
            ("aud", json!("payments"), "its audience"),
            ("nbf", json!(now + 120), "not valid yet"),
        ];
        for (claim, value, reason) in cases {
            let mut claims = claims("c-1");
            claims[claim] = value;
            let error = check(&claims).expect_err(claim);
            assert!(error.to_string().contains(reason), "{claim}: {error}");
        }
        for claim in ["exp", "sub", "iss", "aud"] {
            let mut claims = claims("c-1");
            claims.as_object_mut().map(|claims| claims.remove(claim));
            let error = check(&claims).expect_err(claim);
            assert!(error.to_string().contains(claim), "{claim}: {error}");
        }
    }

    #[test]
    fn a_token_signed_with_another_key_or_algorithm_is_refused() {
        let forged = jsonwebtoken::encode(
            &Header::default(),
            &claims("c-1"),
            &EncodingKey::from_secret(b"another secret, just as long as ours"),
        )
        .expect("the token encodes");
        assert_eq!(
            authenticator().authenticate(&bearer(&forged)),
            Err(AuthError::Invalid("its signature does not verify".into()))
        );
        let other_algorithm = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims("c-1"),
            &EncodingKey::from_secret(SECRET),
        )
        .expect("the token encodes");
        let error = authenticator()
            .authenticate(&bearer(&other_algorithm))
            .expect_err("HS512 is not the key's algorithm");
        assert!(error.to_string().contains("no configured key"), "{error}");
        // `alg: none`: a header and claims with an empty signature.
        let unsigned = format!(
            "{}.{}.",
            base64_url(br#"{"alg":"none","typ":"JWT"}"#),
            base64_url(claims("c-1").to_string().as_bytes())
        );
        assert!(authenticator().authenticate(&bearer(&unsigned)).is_err());
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn the_services_accept_what_sign_hs256_signs() {
        let signed = sign_hs256(
            SECRET,
            &TokenClaims {
                sub: "c-1",
                iss: "https://issuer.test",
                aud: "orders",
                exp: jsonwebtoken::get_current_timestamp() + 60,
                roles: &["admin"],
            },
        )
        .expect("signed");
        assert_eq!(
            authenticator().authenticate(&bearer(&signed)),
            Ok(Caller::Customer {
                customer_id: "c-1".into(),
                admin: true
            })
        );
    }

    #[test]
    fn a_missing_or_malformed_header_is_refused() {
        assert_eq!(
            authenticator().authenticate(&HeaderMap::new()),
            Err(AuthError::Missing)
        );
        let mut basic = HeaderMap::new();
        basic.insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert!(authenticator().authenticate(&basic).is_err());
        assert!(authenticator().authenticate(&bearer("not.a.jwt")).is_err());
    }

    #[test]
    fn insecure_mode_lets_everyone_in_and_takes_the_customer_from_the_body() {
        let caller = Authenticator::insecure()
            .authenticate(&HeaderMap::new())
            .expect("insecure mode checks nothing");
        assert_eq!(caller, Caller::Unverified);
        assert_eq!(caller.customer_for(Some("c-9")).ok(), Some("c-9".into()));
        assert!(caller.customer_for(None).is_err());
    }

    #[test]
    fn a_customer_acts_only_for_themselves_unless_admin() {
        let customer = Caller::Customer {
            customer_id: "c-1".into(),
            admin: false,
        };
        assert!(customer.may_access("c-1"));
        assert!(!customer.may_access("c-2"));
        assert!(customer.require_admin().is_err());
        assert_eq!(customer.customer_for(None).ok(), Some("c-1".into()));
        assert_eq!(customer.customer_for(Some("c-1")).ok(), Some("c-1".into()));
        assert!(customer.customer_for(Some("c-2")).is_err());
        let admin = Caller::Customer {
            customer_id: "ops".into(),
            admin: true,
        };
        assert!(admin.may_access("c-2"));
        assert!(admin.require_admin().is_ok());
        assert_eq!(admin.customer_for(Some("c-2")).ok(), Some("c-2".into()));
    }

    fn settings(args: &[&str]) -> AuthSettings {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            auth: AuthSettings,
        }
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        <Cli as clap::Parser>::try_parse_from(argv)
            .expect("the flags parse")
            .auth
    }

    #[test]
    fn a_service_without_authentication_is_refused() {
        let error = Authenticator::from_settings(&settings(&[])).expect_err("nothing is set");
        assert!(error.to_string().contains("INSECURE_DEV_AUTH=1"), "{error}");
        let insecure = Authenticator::from_settings(&settings(&["--insecure-dev-auth"]))
            .expect("insecure mode is a choice");
        assert!(insecure.is_insecure());
    }

    #[test]
    fn keys_come_from_files_and_are_checked_at_start() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let short = directory.path().join("short");
        std::fs::write(&short, "too short\n").expect("written");
        let error = Authenticator::from_settings(&settings(&[
            "--jwt-secret-file",
            short.to_str().expect("utf-8"),
            "--jwt-issuer",
            "i",
            "--jwt-audience",
            "a",
        ]))
        .expect_err("a short secret");
        assert!(error.to_string().contains("at least 32 bytes"), "{error}");

        let secret = directory.path().join("secret");
        std::fs::write(&secret, [SECRET, b"\n"].concat()).expect("written");
        let path = secret.to_str().expect("utf-8");
        let error = Authenticator::from_settings(&settings(&["--jwt-secret-file", path]))
            .expect_err("no issuer");
        assert!(error.to_string().contains("AUTH_JWT_ISSUER"), "{error}");
        let error = Authenticator::from_settings(&settings(&[
            "--jwt-secret-file",
            path,
            "--insecure-dev-auth",
        ]))
        .expect_err("both modes");
        assert!(matches!(error, AuthConfigError::Ambiguous));

        let configured = Authenticator::from_settings(&settings(&[
            "--jwt-secret-file",
            path,
            "--jwt-issuer",
            "https://issuer.test",
            "--jwt-audience",
            "orders",
        ]))
        .expect("a complete configuration");
        assert!(
            configured
                .authenticate(&bearer(&token(&claims("c-1"))))
                .is_ok()
        );
    }

    #[test]
    fn a_key_set_picks_the_key_by_id() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let path = directory.path().join("jwks.json");
        let k = |secret: &[u8]| base64_url(secret);
        let set = json!({"keys": [
            {"kty": "oct", "kid": "old", "alg": "HS256", "k": k(b"an old secret that is long enough!")},
            {"kty": "oct", "kid": "new", "alg": "HS256", "k": k(SECRET)},
        ]});
        std::fs::write(&path, set.to_string()).expect("written");
        let authenticator = Authenticator::from_settings(&settings(&[
            "--jwks-file",
            path.to_str().expect("utf-8"),
            "--jwt-issuer",
            "https://issuer.test",
            "--jwt-audience",
            "orders",
        ]))
        .expect("the key set loads");
        let mut header = Header {
            kid: Some("new".into()),
            ..Header::default()
        };
        let signed =
            jsonwebtoken::encode(&header, &claims("c-1"), &EncodingKey::from_secret(SECRET))
                .expect("the token encodes");
        assert!(authenticator.authenticate(&bearer(&signed)).is_ok());
        header.kid = Some("old".into());
        let wrong_key =
            jsonwebtoken::encode(&header, &claims("c-1"), &EncodingKey::from_secret(SECRET))
                .expect("the token encodes");
        assert!(authenticator.authenticate(&bearer(&wrong_key)).is_err());
    }
}
