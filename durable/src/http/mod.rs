//! The HTTP management API of Durable Functions, over [axum]: start orchestrations, poll
//! their status, raise events, terminate, suspend, resume, restart, purge, list, and
//! signal and read entities — with Durable Functions' paths, verbs, query parameters,
//! status codes and JSON field names, under `/runtime/webhooks/durabletask/`.
//!
//! Serve it on its own with [`Runtime::serve_http`](crate::Runtime::serve_http), or mount
//! [`router`] in your own axum app:
//!
//! ```no_run
//! use durable::http::{self, HttpOptions};
//! # async fn demo(runtime: durable::Runtime) -> Result<(), Box<dyn std::error::Error>> {
//! let api = http::router(runtime.client(), HttpOptions::with_key("a long random secret"));
//! let app = axum::Router::new()
//!     .route("/health", axum::routing::get(|| async { "ok" }))
//!     .merge(api);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Every route but the OpenAPI document ([`OPENAPI_PATH`]) requires the key, as
//! `Authorization: Bearer <key>`, `x-functions-key: <key>` or `?code=<key>` (as Durable
//! Functions' function keys),
//! unless the options say [`HttpOptions::anonymous`] — an explicit choice, logged as a
//! warning.
//!
//! # Where this API differs from Durable Functions, and why
//! - Starting an instance id that is still running answers `409 Conflict` (Durable
//!   Functions has answered `500` here in some versions): the request conflicts with the
//!   instance's state, and a 5xx would tell clients and proxies to retry what can never
//!   succeed.
//! - Lists (`GET instances`, `GET entities`) return pages of `top` items (default 100)
//!   with the `x-ms-continuation-token` header for the next page.
//! - Management URLs carry the key as `code=` only when the request itself used `code=`;
//!   a bearer key is never echoed into a response.
//! - Purging an instance that is still running answers `409 Conflict` (Durable
//!   Functions: `412 Precondition Failed`); terminate it first.
//! - Names are case-sensitive: orchestrator and entity names, the literal path segments
//!   and the query parameter names (`showHistory`, not `showhistory`); a trailing `/` is
//!   not trimmed.
//! - `POST instances/{id}/rewind` answers `501 Not Implemented`; entity lists do not
//!   filter by `lastOperationTimeFrom`/`To` (`400`).
//! - History events (`showHistory=true`) follow Durable Functions' shape (`EventType`,
//!   `Timestamp`, `FunctionName`, `Result`, scheduling folded into completions) with this
//!   runtime's event types (`SubOrchestrationCreated`, `TimerCreated`, ...) and its
//!   other fields in PascalCase; `Input` is shown too with `showHistoryOutput=true`.

mod handlers;
mod model;
mod wire;

use crate::client::Client;
use crate::runtime::Runtime;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Method;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use std::net::SocketAddr;
use std::sync::Arc;

pub use handlers::CheckStatusResponse;

/// Where Durable Functions serves its management API; [`Runtime::serve_http`] serves
/// [`router`] here.
pub const BASE_PATH: &str = "/runtime/webhooks/durabletask";

/// The OpenAPI 3 document of this API, served without a key at [`OPENAPI_PATH`].
pub const OPENAPI: &str = include_str!("openapi.json");

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/runtime/webhooks/durabletask/openapi.json";

/// How the management API is served: its key, body size limit and public address.
#[derive(Clone)]
pub struct HttpOptions {
    key: Option<String>,
    max_body_bytes: usize,
    public_base_url: Option<String>,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("public_base_url", &self.public_base_url)
            .finish()
    }
}

/// The environment variable [`HttpOptions::from_env`] reads the key from.
pub const KEY_VAR: &str = "DURABLE_HTTP_KEY";
/// Set to `1` to serve without a key when [`KEY_VAR`] is not set.
pub const ANONYMOUS_VAR: &str = "DURABLE_HTTP_ANONYMOUS";

/// The configuration of the management API is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// No key was configured, and serving without one was not chosen.
    #[error(
        "the HTTP management API needs a key: set {KEY_VAR} (or use HttpOptions::with_key); to serve it without one, set {ANONYMOUS_VAR}=1 (or HttpOptions::anonymous)"
    )]
    NoKey,
    /// The key is empty.
    #[error("the HTTP management API key is empty; use a long random secret")]
    EmptyKey,
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime has stopped.
    #[error("the runtime has stopped")]
    Stopped,
}

impl HttpOptions {
    /// Requires `key` on every request (as a bearer token or `code=`).
    pub fn with_key(key: impl Into<String>) -> HttpOptions {
        HttpOptions {
            key: Some(key.into()),
            ..HttpOptions::anonymous_unlogged()
        }
    }

    /// Serves without any key: anyone who can reach the port can manage every instance.
    /// Meant for local development; logged as a warning when the API starts.
    pub fn anonymous() -> HttpOptions {
        HttpOptions::anonymous_unlogged()
    }

    fn anonymous_unlogged() -> HttpOptions {
        HttpOptions {
            key: None,
            max_body_bytes: 4 * 1024 * 1024,
            public_base_url: None,
        }
    }

    /// The key from [`KEY_VAR`]; without it, anonymous only if [`ANONYMOUS_VAR`] is `1`.
    ///
    /// # Errors
    /// [`HttpError::NoKey`] when neither is set.
    pub fn from_env() -> Result<HttpOptions, HttpError> {
        match std::env::var(KEY_VAR) {
            Ok(key) => Ok(HttpOptions::with_key(key)),
            Err(_) if std::env::var(ANONYMOUS_VAR).is_ok_and(|value| value == "1") => {
                Ok(HttpOptions::anonymous())
            }
            Err(_) => Err(HttpError::NoKey),
        }
    }

    /// The largest request body accepted (default 4 MiB); larger ones get `413`.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> HttpOptions {
        self.max_body_bytes = bytes;
        self
    }

    /// The scheme and host the management URLs in responses start with (e.g.
    /// `https://api.example.com`), when the `Host` header a request carries is not the
    /// address clients should use (behind a proxy). Default: from the request.
    #[must_use]
    pub fn public_base_url(mut self, url: impl Into<String>) -> HttpOptions {
        self.public_base_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }
}

/// What the handlers share.
pub(crate) struct Api {
    pub(crate) client: Client,
    pub(crate) options: HttpOptions,
}

/// The management API's routes, under [`BASE_PATH`], for `client`: merge it into your
/// axum app (or serve it with [`Runtime::serve_http`]).
///
/// With no key in `options` ([`HttpOptions::anonymous`]), a warning is logged.
pub fn router(client: Client, options: HttpOptions) -> Router {
    if options.key.as_deref().is_some_and(str::is_empty) {
        tracing::error!("the HTTP management API key is empty: every request will be refused");
    } else if options.key.is_none() {
        tracing::warn!(
            "the HTTP management API is served WITHOUT a key: anyone who can reach it can start, terminate and purge instances"
        );
    }
    let body_limit = options.max_body_bytes;
    let api = Arc::new(Api { client, options });
    let routes = endpoints()
        .into_iter()
        .fold(Router::new(), |routes, endpoint| {
            routes.route(endpoint.path, endpoint.handler)
        })
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&api),
            authorize,
        ))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(api);
    Router::new()
        .nest(BASE_PATH, routes)
        .route(OPENAPI_PATH, get(openapi))
}

/// One operation of the API: a method on a path under [`BASE_PATH`]. The router is built
/// from this list, and a test holds the OpenAPI document to it.
struct Endpoint {
    // Read by the test that holds the OpenAPI document to the routes.
    #[cfg_attr(not(test), expect(dead_code))]
    method: Method,
    path: &'static str,
    handler: MethodRouter<Arc<Api>>,
}

fn endpoints() -> Vec<Endpoint> {
    use handlers as h;
    let endpoint = |method: Method, path, handler| Endpoint {
        method,
        path,
        handler,
    };
    vec![
        endpoint(
            Method::POST,
            "/orchestrators/{orchestratorName}",
            post(h::start_without_id),
        ),
        endpoint(
            Method::POST,
            "/orchestrators/{orchestratorName}/{instanceId}",
            post(h::start_with_id),
        ),
        endpoint(Method::GET, "/instances", get(h::list_instances)),
        endpoint(Method::DELETE, "/instances", delete(h::purge_where)),
        endpoint(Method::GET, "/instances/{instanceId}", get(h::status)),
        endpoint(Method::DELETE, "/instances/{instanceId}", delete(h::purge)),
        endpoint(
            Method::POST,
            "/instances/{instanceId}/raiseEvent/{eventName}",
            post(h::raise_event),
        ),
        endpoint(
            Method::POST,
            "/instances/{instanceId}/terminate",
            post(h::terminate),
        ),
        endpoint(
            Method::POST,
            "/instances/{instanceId}/suspend",
            post(h::suspend),
        ),
        endpoint(
            Method::POST,
            "/instances/{instanceId}/resume",
            post(h::resume),
        ),
        endpoint(
            Method::POST,
            "/instances/{instanceId}/restart",
            post(h::restart),
        ),
        endpoint(
            Method::POST,
            "/instances/{instanceId}/rewind",
            post(h::rewind),
        ),
        endpoint(Method::GET, "/entities", get(h::list_all_entities)),
        endpoint(Method::GET, "/entities/{entityName}", get(h::list_entities)),
        endpoint(
            Method::GET,
            "/entities/{entityName}/{entityKey}",
            get(h::entity_state),
        ),
        endpoint(
            Method::POST,
            "/entities/{entityName}/{entityKey}",
            post(h::signal_entity),
        ),
        endpoint(
            Method::DELETE,
            "/entities/{entityName}/{entityKey}",
            delete(h::delete_entity),
        ),
    ]
}

async fn openapi() -> Response {
    wire::raw_json_response(StatusCode::OK, OPENAPI)
}

/// Lets a request through only with the key, compared in constant time.
async fn authorize(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
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
    let mut response = wire::Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
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

/// The management API served by [`Runtime::serve_http`]; dropping it stops the server.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpServer {
    /// The address it listens on (with the port chosen, if `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the API: `http://addr/runtime/webhooks/durabletask`.
    pub fn base_url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.addr)
    }

    /// Stops accepting connections and waits for the requests in progress.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Runtime {
    /// Serves the HTTP management API on `addr` (e.g. `"127.0.0.1:8080"`, or port 0 for
    /// any free one), with the key from the environment ([`HttpOptions::from_env`]).
    ///
    /// # Errors
    /// [`HttpError::NoKey`] when no key is configured, [`HttpError::Bind`].
    pub async fn serve_http(&self, addr: impl Into<SocketAddr>) -> Result<HttpServer, HttpError> {
        self.serve_http_with(addr, HttpOptions::from_env()?).await
    }

    /// Serves the HTTP management API on `addr` with `options`.
    ///
    /// # Errors
    /// [`HttpError::EmptyKey`], [`HttpError::Bind`], [`HttpError::Stopped`].
    pub async fn serve_http_with(
        &self,
        addr: impl Into<SocketAddr>,
        options: HttpOptions,
    ) -> Result<HttpServer, HttpError> {
        if options.key.as_deref().is_some_and(str::is_empty) {
            return Err(HttpError::EmptyKey);
        }
        let addr = addr.into();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        let shared = self.shared().ok_or(HttpError::Stopped)?;
        *shared
            .http_base
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!("http://{local}"));
        let app = router(self.client(), options);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the HTTP management API stopped");
            }
        });
        tracing::info!(address = %local, "serving the HTTP management API at http://{local}{BASE_PATH}");
        Ok(HttpServer {
            addr: local,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// The `202 Accepted` answer with the management URLs of `instance_id`, for routes of your
/// own that start orchestrations with the client (Durable Functions'
/// `CreateCheckStatusResponse`). The URLs are absolute when the client's runtime serves
/// the API ([`Runtime::serve_http`]), else paths under [`BASE_PATH`]; set another base with
/// [`CheckStatusResponse::base_url`].
///
/// ```
/// use durable::http::create_check_status_response;
/// use durable::prelude::*;
/// # #[orchestrator]
/// # async fn work(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> { Ok(n) }
/// async fn start_work(
///     axum::extract::State(client): axum::extract::State<Client>,
/// ) -> Result<durable::http::CheckStatusResponse, String> {
///     let handle = client.start(work, 7).await.map_err(|e| e.to_string())?;
///     Ok(create_check_status_response(&client, handle.id()))
/// }
/// let _app: axum::Router<Client> = axum::Router::new().route("/work", axum::routing::post(start_work));
/// ```
pub fn create_check_status_response(
    client: &Client,
    instance_id: &crate::InstanceId,
) -> CheckStatusResponse {
    let base = client
        .http_base()
        .map_or_else(|| BASE_PATH.to_owned(), |host| format!("{host}{BASE_PATH}"));
    CheckStatusResponse::new(instance_id.clone(), base, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use std::collections::BTreeSet;
    use tower::ServiceExt;

    fn documented_operations() -> BTreeSet<(String, String)> {
        let document: serde_json::Value =
            serde_json::from_str(OPENAPI).expect("the OpenAPI document is JSON");
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(document["servers"][0]["url"], BASE_PATH);
        let mut operations = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
        operations
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let mut routed: BTreeSet<(String, String)> = endpoints()
            .iter()
            .map(|endpoint| (endpoint.method.to_string(), endpoint.path.to_owned()))
            .collect();
        routed.insert(("GET".into(), OPENAPI_PATH[BASE_PATH.len()..].to_owned()));
        let documented = documented_operations();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "openapi.json documents routes that do not exist: {unrouted:?}"
        );
    }

    #[orchestrator]
    async fn nothing(_ctx: OrchestrationContext, _input: ()) -> Result<(), Error> {
        Ok(())
    }

    /// Each listed endpoint answers its method: a request reaches a handler, not the
    /// fallbacks (which say "no such endpoint" or "does not take that method").
    #[tokio::test]
    async fn every_endpoint_answers_its_method() {
        let runtime = Runtime::builder()
            .in_memory()
            .register(nothing)
            .start()
            .await
            .unwrap();
        let app = router(runtime.client(), HttpOptions::anonymous());
        for endpoint in endpoints()
            .iter()
            .map(|e| (e.method.clone(), e.path))
            .chain([(Method::GET, &OPENAPI_PATH[BASE_PATH.len()..])])
        {
            let (method, path) = endpoint;
            let path = path
                .replace("{orchestratorName}", "nothing")
                .replace("{instanceId}", "some-id")
                .replace("{eventName}", "Approval")
                .replace("{entityName}", "Counter")
                .replace("{entityKey}", "k");
            let request = axum::http::Request::builder()
                .method(method.clone())
                .uri(format!("{BASE_PATH}{path}"))
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&body);
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {text}"
            );
            assert!(
                !text.contains("no such endpoint"),
                "{method} {path}: {text}"
            );
        }
        runtime.shutdown().await;
    }
}
