//! The management API's routes: one [`Endpoint`] per operation, and the router built from
//! them, with the key check in front and the fallbacks that say what is wrong.

use super::options::Options;
use super::shared::{Api, BASE_PATH, OPENAPI, OPENAPI_PATH};
use super::wire::Problem;
use super::{auth, handlers, wire};
use crate::client::Client;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use std::sync::Arc;

/// The management API's routes, under [`BASE_PATH`], for `client`: merge it into your
/// axum app (or serve it with [`serve`](super::serve)). Being a router, it can also be
/// called without a socket, as here:
///
/// ```
/// use axum::body::Body;
/// use axum::http::{Request, StatusCode};
/// use durable::http::{self, BASE_PATH, Options};
/// use durable::prelude::*;
/// use tower::ServiceExt; // `oneshot`
///
/// #[orchestrator]
/// async fn hello(_ctx: OrchestrationContext, name: String) -> Result<String, Error> {
///     Ok(format!("hello, {name}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::builder().in_memory().register(hello).start().await?;
/// let api = http::router(runtime.client(), Options::with_key("s3cret"));
/// let app = axum::Router::new()
///     .route("/health", axum::routing::get(|| async { "ok" }))
///     .merge(api);
///
/// let start = Request::post(format!("{BASE_PATH}/orchestrators/hello/greeting-1"))
///     .header("Authorization", "Bearer s3cret")
///     .header("Content-Type", "application/json")
///     .body(Body::from(r#""Ada""#))?;
/// let response = app.clone().oneshot(start).await?;
/// assert_eq!(response.status(), StatusCode::ACCEPTED);
///
/// // Without the key: refused.
/// let status = Request::get(format!("{BASE_PATH}/instances/greeting-1")).body(Body::empty())?;
/// let response = app.oneshot(status).await?;
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// runtime.shutdown().await;
/// # Ok(())
/// # }
/// ```
///
/// With no key in `options` ([`Options::anonymous`]), a warning is logged.
pub fn router(client: Client, options: Options) -> Router {
    if options.has_empty_key() {
        tracing::error!("the HTTP management API key is empty: every request will be refused");
    } else if options.key.is_none() {
        tracing::warn!(
            "the HTTP management API is served WITHOUT a key: anyone who can reach it can start, terminate and purge instances"
        );
    }
    let body_limit = options.body_limit(client.max_payload_bytes());
    let document: Arc<str> = Arc::from(served_document(&client));
    let api = Arc::new(Api {
        client,
        options,
        body_limit,
    });
    // Each path also with a trailing slash, as Durable Functions takes it: its client
    // libraries list and purge at `instances/?…`.
    let routes = endpoints()
        .into_iter()
        .fold(Router::new(), |routes, endpoint| {
            routes
                .route(&format!("{}/", endpoint.path), endpoint.handler.clone())
                .route(endpoint.path, endpoint.handler)
        })
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&api),
            read_body,
        ))
        // Outermost: a request without the key is refused before its body is read.
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&api),
            auth::authorize,
        ))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(api);
    Router::new().nest(BASE_PATH, routes).route(
        OPENAPI_PATH,
        get(move || async move { wire::raw_json_response(StatusCode::OK, document.to_string()) }),
    )
}

/// The OpenAPI document as this router serves it: [`OPENAPI`], with the names the runtime
/// registers as the only values of `orchestratorName` and `entityName`, when it knows them.
fn served_document(client: &Client) -> String {
    let Some((orchestrators, entities)) = client.registered_names() else {
        return OPENAPI.to_owned();
    };
    let Ok(mut document) = serde_json::from_str::<serde_json::Value>(OPENAPI) else {
        return OPENAPI.to_owned();
    };
    let parameters = &mut document["components"]["parameters"];
    for (parameter, names) in [
        ("orchestratorName", orchestrators),
        ("entityName", entities),
    ] {
        if let Some(schema) = parameters[parameter]["schema"].as_object_mut()
            && !names.is_empty()
        {
            schema.insert("enum".to_owned(), serde_json::json!(names));
        }
    }
    serde_json::to_string_pretty(&document).unwrap_or_else(|_| OPENAPI.to_owned())
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

impl Endpoint {
    fn get<H: Handler<T, Arc<Api>>, T: 'static>(path: &'static str, handler: H) -> Endpoint {
        Endpoint::new(Method::GET, path, axum::routing::get(handler))
    }

    fn post<H: Handler<T, Arc<Api>>, T: 'static>(path: &'static str, handler: H) -> Endpoint {
        Endpoint::new(Method::POST, path, axum::routing::post(handler))
    }

    fn delete<H: Handler<T, Arc<Api>>, T: 'static>(path: &'static str, handler: H) -> Endpoint {
        Endpoint::new(Method::DELETE, path, axum::routing::delete(handler))
    }

    fn new(method: Method, path: &'static str, handler: MethodRouter<Arc<Api>>) -> Endpoint {
        Endpoint {
            method,
            path,
            handler,
        }
    }
}

fn endpoints() -> Vec<Endpoint> {
    use handlers as h;
    let instance = "/instances/{instanceId}";
    let entity = "/entities/{entityName}/{entityKey}";
    vec![
        Endpoint::post("/orchestrators/{orchestratorName}", h::start_without_id),
        Endpoint::post(
            "/orchestrators/{orchestratorName}/{instanceId}",
            h::start_with_id,
        ),
        Endpoint::get("/instances", h::list_instances),
        Endpoint::delete("/instances", h::purge_where),
        Endpoint::get(instance, h::status),
        Endpoint::delete(instance, h::purge),
        Endpoint::post(
            "/instances/{instanceId}/raiseEvent/{eventName}",
            h::raise_event,
        ),
        Endpoint::post("/instances/{instanceId}/terminate", h::terminate),
        Endpoint::post("/instances/{instanceId}/suspend", h::suspend),
        Endpoint::post("/instances/{instanceId}/resume", h::resume),
        Endpoint::post("/instances/{instanceId}/restart", h::restart),
        Endpoint::post("/instances/{instanceId}/rewind", h::rewind),
        Endpoint::get("/entities", h::list_all_entities),
        Endpoint::get("/entities/{entityName}", h::list_entities),
        Endpoint::get(entity, h::entity_state),
        Endpoint::post(entity, h::signal_entity),
        Endpoint::delete(entity, h::delete_entity),
    ]
}

/// Reads the whole body before the handler runs, within the body timeout and the size
/// limit: a client that sends a body slowly, or never finishes it, does not hold a
/// request open.
async fn read_body(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than this server accepts: {} bytes at most (http::Options::max_body_bytes)",
                api.body_limit
            ),
        )
        .into_response()
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > api.body_limit) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let timeout = api.options.body_timeout;
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, api.body_limit));
    match read.await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(error)) if error.to_string().contains("length limit") => too_large(),
        Ok(Err(error)) => {
            Problem::bad_request(format!("cannot read the request body: {error}")).into_response()
        }
        Err(_) => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {timeout:?}"),
        )
        .into_response(),
    }
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
    async fn nothing(_ctx: OrchestrationContext, _input: ()) -> Result<(), crate::Error> {
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
        let app = router(runtime.client(), Options::anonymous());
        // Every endpoint also with a trailing slash (but the document's own path).
        let slashed: Vec<(Method, String)> = endpoints()
            .iter()
            .map(|e| (e.method.clone(), format!("{}/", e.path)))
            .collect();
        for endpoint in endpoints()
            .iter()
            .map(|e| (e.method.clone(), e.path.to_owned()))
            .chain([(Method::GET, OPENAPI_PATH[BASE_PATH.len()..].to_owned())])
            .chain(slashed)
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
