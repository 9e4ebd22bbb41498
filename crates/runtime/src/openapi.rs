//! A service's OpenAPI 3.1 document, completed with what the shared HTTP layer adds, and
//! JSON Schema pieces for the string rules several services share; with the `testing`
//! feature, the checks each service's tests run on its document.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required, Response, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use crate::http::{
    ErrorBody, MAX_BODY_BYTES, REQUEST_TIMEOUT, document_api, health_api, metrics_api,
};

/// The tag of the routes every service has.
pub const OPERATIONS: &str = "operations";

/// The name of the bearer-token security scheme operations refer to in `security(...)`.
pub const BEARER: &str = "bearer";

/// A service's whole OpenAPI document: its own routes (`service`) with the answers the shared
/// layers give on them (`500` from `ApiError`, `400`/`413`/`415` from `JsonBody` on routes
/// that take a body), plus the routes `http::finish` adds; `408` from the timeout on every
/// route.
pub fn document(service: OpenApi) -> OpenApi {
    let mut document = service;
    for_each_operation(&mut document, |operation| {
        add_error_responses(operation);
        // A path parameter is required by definition; utoipa leaves it out for a parameter
        // whose schema comes from `schema_with`.
        for parameter in operation.parameters.iter_mut().flatten() {
            if parameter.parameter_in == ParameterIn::Path {
                parameter.required = Required::True;
            }
        }
    });
    document.merge(health_api().into_openapi());
    document.merge(metrics_api().into_openapi());
    document.merge(document_api().into_openapi());
    let components = document.components.get_or_insert_with(Default::default);
    components
        .schemas
        .entry(ErrorBody::name().into_owned())
        .or_insert_with(ErrorBody::schema);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A JWT from the configured issuer; its `sub` is the customer, a `roles` \
                     claim holding `admin` grants operator rights. Not checked under \
                     INSECURE_DEV_AUTH.",
                ))
                .build(),
        ),
    );
    for_each_operation(&mut document, |operation| {
        let timeout = ResponseBuilder::new()
            .description(format!(
                "Not answered within {} s; no body",
                REQUEST_TIMEOUT.as_secs()
            ))
            .build();
        operation
            .responses
            .responses
            .entry("408".to_owned())
            .or_insert(RefOr::T(timeout));
    });
    document
}

fn for_each_operation(document: &mut OpenApi, mut change: impl FnMut(&mut Operation)) {
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            change(operation);
        }
    }
}

/// The errors any handler of a service can answer, whatever its annotation lists.
fn add_error_responses(operation: &mut Operation) {
    let mut shared = vec![
        (
            "500",
            error_response("Internal error (logged); the body says no more"),
        ),
        ("429", too_many_requests()),
    ];
    if operation.security.is_some() {
        shared.push((
            "401",
            error_response("No valid bearer token; the body says what is wrong with it"),
        ));
    }
    if operation.request_body.is_some() {
        shared.extend([
            ("400", error_response("The body is not JSON")),
            (
                "413",
                error_response(&format!("The body is larger than {MAX_BODY_BYTES} bytes")),
            ),
            (
                "415",
                error_response("The body is not declared as application/json"),
            ),
        ]);
    }
    for (status, response) in shared {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert(RefOr::T(response));
    }
}

/// The rate limit's answer, which says when to come back.
fn too_many_requests() -> Response {
    let mut response = error_response("This client sent too many requests; retry later");
    response.headers.insert(
        "Retry-After".to_owned(),
        HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            )
            .description(Some("Seconds to wait before the next request"))
            .build(),
    );
    response
}

fn error_response(description: &str) -> Response {
    let body = ContentBuilder::new()
        .schema(Some(RefOr::Ref(Ref::from_schema_name(ErrorBody::name()))))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", body)
        .build()
}

/// What `char::is_whitespace` (Unicode White_Space) accepts, so what `str::trim` removes.
const WHITESPACE: [(char, char); 10] = [
    ('\u{0009}', '\u{000d}'),
    ('\u{0020}', '\u{0020}'),
    ('\u{0085}', '\u{0085}'),
    ('\u{00a0}', '\u{00a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// The inside of a regex character class matching [`WHITESPACE`], each character written
/// `\uXXXX`: both the ECMA-262 dialect JSON Schema names and Python's `re` read that alike.
pub fn whitespace_class() -> String {
    WHITESPACE
        .iter()
        .map(|&(first, last)| {
            if first == last {
                format!("\\u{:04x}", u32::from(first))
            } else {
                format!("\\u{:04x}-\\u{:04x}", u32::from(first), u32::from(last))
            }
        })
        .collect()
}

/// NUL, which a Postgres `text` cannot hold, so no service accepts it in a string it stores.
pub const NUL: &str = "\\u0000";

/// A string of at most `max_chars` characters with at least one that is not whitespace, and
/// no NUL.
pub fn non_blank_text(max_chars: usize) -> Object {
    let space = whitespace_class();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(max_chars))
        .pattern(Some(format!("^[^{NUL}]*[^{NUL}{space}][^{NUL}]*$")))
        .build()
}

/// A string that is 1 to `max_chars` characters once trimmed of whitespace, with no NUL.
pub fn trimmed_text(max_chars: usize) -> Object {
    let space = whitespace_class();
    // The trimmed text: a first character, then, when it may be longer, up to the rest.
    let rest = match max_chars.checked_sub(2) {
        Some(inner) => format!("([^{NUL}]{{0,{inner}}}[^{NUL}{space}])?"),
        None => String::new(),
    };
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(format!("^[{space}]*[^{NUL}{space}]{rest}[{space}]*$")))
        .build()
}

/// The order a path names (`/orders/{order_id}`, `/payments/{order_id}`, ...), for the
/// documents of the services that read by order.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OrderIdPath {
    /// The order's id; anything but a UUID names no order.
    pub order_id: uuid::Uuid,
}

/// A product's SKU in a path (`/products/{sku}`, `/catalogue/{sku}`): 1 to 64 letters,
/// digits, `-` or `_`; anything else names no product.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SkuPath {
    #[param(schema_with = subject_token)]
    pub sku: String,
}

/// A string that is one of `values`: a status, a kind, as the API spells them.
pub fn string_enum(values: impl IntoIterator<Item = &'static str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .build()
}

/// A SKU or other key that is one NATS subject token (`events::streams::is_subject_token`).
pub fn subject_token() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9_-]{1,64}$"))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whitespace_class_is_what_trim_removes() {
        let listed = |c: char| {
            WHITESPACE
                .iter()
                .any(|&(first, last)| (first..=last).contains(&c))
        };
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(listed(c), c.is_whitespace(), "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn the_shared_routes_and_error_body_are_documented() {
        let document = document(OpenApi::default());
        let json = serde_json::to_value(&document).expect("a document serialises");
        assert_eq!(json["openapi"], "3.1.0");
        let paths: Vec<&str> = json["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(paths, ["/healthz", "/metrics", "/openapi.json", "/readyz"]);
        assert!(json["components"]["schemas"]["ErrorBody"].is_object());
        for path in paths {
            assert!(
                json["paths"][path]["get"]["responses"]["408"].is_object(),
                "{path} documents the timeout"
            );
        }
    }
}

/// Checks for each service's document, for its integration tests (the `testing` feature).
#[cfg(feature = "testing")]
pub mod testing {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Method, Request, header};
    use sqlx::PgPool;
    use utoipa::openapi::path::{Operation, ParameterIn};
    use utoipa::openapi::{OpenApi, Required};
    use utoipa_axum::router::OpenApiRouter;

    use crate::consumer::ConsumerHealth;
    use crate::http::{Readiness, finish};
    use crate::metrics::{Metrics, Scrape};
    use crate::testing::{call, send};

    /// Where the checked-in document of `service` lives.
    pub fn checked_in_path(service: &str) -> PathBuf {
        // The runtime crate is `crates/runtime` in the workspace.
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .expect("the workspace holds crates/runtime");
        workspace
            .join("schemas/openapi")
            .join(format!("{service}.json"))
    }

    /// The document as it is checked in: pretty JSON, one newline at the end.
    pub fn to_file_text(document: &OpenApi) -> String {
        let mut text = document.to_pretty_json().expect("a document serialises");
        text.push('\n');
        text
    }

    /// Fails when `schemas/openapi/<service>.json` differs from `document`; with
    /// `UPDATE_SCHEMAS` set, rewrites it instead. Then reads the file back as OpenAPI 3.1.
    pub fn check_checked_in(service: &str, document: &OpenApi) {
        let path = checked_in_path(service);
        let expected = to_file_text(document);
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        if actual != expected {
            if std::env::var_os("UPDATE_SCHEMAS").is_some() {
                std::fs::create_dir_all(path.parent().expect("the file lives in a folder"))
                    .expect("create schemas/openapi");
                std::fs::write(&path, &expected).expect("write the document");
            } else {
                panic!(
                    "{} is stale: run `UPDATE_SCHEMAS=1 cargo test -p {service}` and check in \
                     the result",
                    path.display()
                );
            }
        }
        let text = std::fs::read_to_string(&path).expect("read the document back");
        let parsed: OpenApi = serde_json::from_str(&text).expect("the file parses as OpenAPI");
        let raw: serde_json::Value = serde_json::from_str(&text).expect("the file is JSON");
        assert_eq!(raw["openapi"], "3.1.0", "{} is OpenAPI 3.1", path.display());
        assert_eq!(
            serde_json::to_value(&parsed).expect("a document serialises"),
            serde_json::to_value(document).expect("a document serialises"),
            "{} reads back unchanged",
            path.display()
        );
    }

    /// Every operation the document lists, as `GET /orders/{order_id}`.
    pub fn operations(document: &OpenApi) -> BTreeSet<String> {
        each_operation(document)
            .map(|(method, path, _)| format!("{method} {path}"))
            .collect()
    }

    fn each_operation(document: &OpenApi) -> impl Iterator<Item = (Method, &str, &Operation)> {
        document.paths.paths.iter().flat_map(|(path, item)| {
            [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
            ]
            .into_iter()
            .filter_map(move |(method, operation)| {
                operation
                    .as_ref()
                    .map(|operation| (method, path.as_str(), operation))
            })
        })
    }

    /// The service's routes as `http::finish` serves them, on `pool`, with a NATS client that
    /// never gets a server (so `/readyz` answers 503): enough to call every route.
    pub async fn serve(routes: OpenApiRouter, pool: PgPool) -> Router {
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .expect("a client that connects in the background");
        let jetstream = async_nats::jetstream::new(nats.clone());
        finish(
            routes,
            Readiness {
                pool: pool.clone(),
                nats,
                consumers: Arc::new(ConsumerHealth::default()),
            },
            Scrape {
                metrics: Metrics::new(),
                pool,
                jetstream,
                consumers: Vec::new(),
            },
            crate::http::Access {
                authenticator: Arc::new(crate::auth::Authenticator::insecure()),
                rate_limit: None,
            },
        )
    }

    /// Calls every operation of `document` once on `router` (path and required query
    /// parameters from `parameter`, a `{}` JSON body where it takes one) and fails unless the
    /// route itself answers, with a status the document lists for the operation. Then checks
    /// that `GET /openapi.json` serves `document`.
    pub async fn assert_every_operation_is_served(
        router: &Router,
        document: &OpenApi,
        parameter: impl Fn(&str) -> String,
    ) {
        for (method, path, operation) in each_operation(document) {
            let mut uri = path.to_owned();
            let mut query = Vec::new();
            for parameter_spec in operation.parameters.iter().flatten() {
                let name = &parameter_spec.name;
                match parameter_spec.parameter_in {
                    ParameterIn::Path => {
                        uri = uri.replace(&format!("{{{name}}}"), &parameter(name));
                    }
                    ParameterIn::Query if parameter_spec.required == Required::True => {
                        query.push(format!("{name}={}", parameter(name)));
                    }
                    _ => {}
                }
            }
            if !query.is_empty() {
                uri = format!("{uri}?{}", query.join("&"));
            }
            let mut request = Request::builder().method(method.clone()).uri(&uri);
            let body = if operation.request_body.is_some() {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from("{}")
            } else {
                Body::empty()
            };
            let request = request.body(body).expect("a request");
            let (status, body) = send(router.clone(), request).await;
            let listed: Vec<&String> = operation.responses.responses.keys().collect();
            assert!(
                listed.contains(&&status.as_str().to_owned()),
                "{method} {uri} answered {status}, which the document does not list ({listed:?})"
            );
            let fallback: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
            assert!(
                fallback.is_none_or(|body| body["error"] != "no such endpoint"),
                "{method} {uri} is documented but not routed"
            );
        }

        let request = Request::get("/openapi.json")
            .body(Body::empty())
            .expect("a request");
        let (_, served) = call(router.clone(), request).await;
        let expected = serde_json::to_value(document).expect("a document serialises");
        assert_eq!(served, expected, "GET /openapi.json serves the document");
    }
}
