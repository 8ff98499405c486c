//! What travels over the wire, apart from the routes, the bodies (`model.rs`) and the
//! times (`time.rs`): query values, percent-encoding, and problem responses.

use super::model::ProblemBody;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;

/// An error answer: `application/problem+json` (RFC 9457) with a message that says what to
/// do.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) detail: String,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            detail: detail.into(),
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            r#type: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            message: &self.detail,
            exception_message: &self.detail,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => raw_json_response(status, bytes),
        Err(error) => internal(&error),
    }
}

/// A response whose body is JSON text already.
pub(crate) fn raw_json_response(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut response = (status, body.into()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// A generic 500; the cause goes to the log, once, not to the client.
pub(crate) fn internal(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(%error, "internal error in the HTTP management API");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; the server log has the details",
    )
    .into_response()
}

/// A `true`/`false` query value (any case); `None` when absent.
pub(crate) fn parse_bool(name: &str, value: Option<&String>) -> Result<Option<bool>, Problem> {
    match value.map(|value| value.to_ascii_lowercase()) {
        None => Ok(None),
        Some(value) if value == "true" => Ok(Some(true)),
        Some(value) if value == "false" => Ok(Some(false)),
        Some(value) => Err(Problem::bad_request(format!(
            "query parameter `{name}` must be `true` or `false`, not `{value}`"
        ))),
    }
}

/// A whole number of seconds (or a decimal one) for `timeout`/`pollingInterval`.
pub(crate) fn parse_seconds(name: &str, value: &str) -> Result<Duration, Problem> {
    value
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs >= 0.0 && *secs <= 86_400.0 * 365.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "query parameter `{name}` must be a number of seconds, not `{value}`"
            ))
        })
}

/// Percent-encodes a path segment or query value: everything but unreserved characters.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn problems_are_rfc_9457_bodies() {
        let response = Problem::bad_request("send `x` \"quoted\"").into_response();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(
            body,
            r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"send `x` \"quoted\"","Message":"send `x` \"quoted\"","ExceptionMessage":"send `x` \"quoted\""}"#
        );
    }

    #[test]
    fn encoding_keeps_unreserved_characters() {
        assert_eq!(encode("abc-1._~"), "abc-1._~");
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
