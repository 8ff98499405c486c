//! The key check in front of every route but the OpenAPI document: a bearer token, an
//! `x-functions-key` header or a `code=` query parameter, compared in constant time.

use super::shared::Api;
use super::wire::Problem;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Lets a request through only with the key, compared in constant time.
pub(crate) async fn authorize(
    State(api): State<Arc<Api>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = &api.options.key else {
        return next.run(request).await;
    };
    if key.is_empty() {
        // An empty key would let an empty bearer token in: refuse everything instead.
        return unauthorized(
            "the server is configured with an empty key and accepts no request; configure a long random key",
        );
    }
    let offered = bearer(request.headers())
        .or_else(|| functions_key(request.headers()))
        .or_else(|| code_param(request.uri().query()));
    match offered {
        Some(offered) if constant_time_eq(offered.as_bytes(), key.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => unauthorized("the key is wrong"),
        None => unauthorized(
            "this API needs a key: send `Authorization: Bearer <key>` or add `?code=<key>`",
        ),
    }
}

fn unauthorized(detail: &str) -> Response {
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The `x-functions-key` header, as the Azure Functions host takes a function key.
fn functions_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-functions-key")?.to_str().ok()?;
    Some(value.trim().to_owned())
}

/// The `code` (or `systemKey`) query parameter, percent-decoded.
pub(crate) fn code_param(query: Option<&str>) -> Option<String> {
    let query = query?;
    let pairs: Vec<(String, String)> = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}").parse().ok()?,
    )
    .ok()?
    .0;
    pairs
        .into_iter()
        .find(|(name, _)| name == "code" || name == "systemKey")
        .map(|(_, value)| value)
}

/// Compares without stopping at the first difference, so the time taken says nothing
/// about how much of the key was right.
fn constant_time_eq(offered: &[u8], key: &[u8]) -> bool {
    let mut difference = offered.len() ^ key.len();
    for (index, byte) in key.iter().enumerate() {
        let other = offered.get(index).copied().unwrap_or(0);
        difference |= usize::from(byte ^ other);
    }
    difference == 0
}
