//! The `202 Accepted` answer with an instance's management URLs (Durable Functions'
//! check-status response), for the API's own start routes and for routes of your own,
//! and where those URLs start: a configured public base, the request's host, or the
//! server's address.

use super::auth::code_param;
use super::model::CheckStatusBody;
use super::shared::{Api, BASE_PATH};
use super::wire::{encode, json_response};
use crate::client::Client;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use durable_types::InstanceId;

/// The `202 Accepted` answer with the management URLs of `instance_id`, for routes of your
/// own that start orchestrations with the client (Durable Functions'
/// `CreateCheckStatusResponse`). The URLs are paths under [`BASE_PATH`](BASE_PATH);
/// make them absolute with [`CheckStatusResponse::for_request`] (the host the request was
/// sent to), [`CheckStatusResponse::base_url`], or, for the API served by
/// [`serve`](super::serve), [`Server::check_status_response`](super::Server::check_status_response).
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
///
/// The URLs depend on the id and the base only; the client is taken as Durable Functions'
/// `CreateCheckStatusResponse` is called on its client.
pub fn create_check_status_response(
    _client: &Client,
    instance_id: &InstanceId,
) -> CheckStatusResponse {
    CheckStatusResponse::new(instance_id.clone(), BASE_PATH.to_owned(), None)
}

/// The `202 Accepted` answer with an instance's management URLs (Durable Functions'
/// check-status response): `Location` and `Retry-After: 10` headers and the payload
/// `{id, statusQueryGetUri, sendEventPostUri, terminatePostUri, purgeHistoryDeleteUri,
/// restartPostUri, suspendPostUri, resumePostUri}`. Made by
/// [`create_check_status_response`] or
/// [`Server::check_status_response`](super::Server::check_status_response).
#[derive(Clone, Debug)]
pub struct CheckStatusResponse {
    instance: InstanceId,
    base: String,
    code: Option<String>,
}

impl CheckStatusResponse {
    pub(crate) fn new(instance: InstanceId, base: String, code: Option<String>) -> Self {
        CheckStatusResponse {
            instance,
            base,
            code,
        }
    }

    /// Uses `base` (e.g. `https://api.example.com/runtime/webhooks/durabletask`) as the
    /// start of every URL.
    #[must_use]
    pub fn base_url(mut self, base: impl Into<String>) -> Self {
        self.base = base.into().trim_end_matches('/').to_owned();
        self
    }

    /// Makes the URLs absolute for the host `headers` say the request was sent to (its
    /// `Host`, and `X-Forwarded-Proto: https` behind a proxy), with the API at
    /// [`BASE_PATH`](BASE_PATH) on that host: what Durable Functions'
    /// `CreateCheckStatusResponse(request, id)` does, for an app that merges
    /// [`router`](super::router) at its root.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// # #[orchestrator]
    /// # async fn work(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> { Ok(n) }
    /// async fn start_work(
    ///     axum::extract::State(client): axum::extract::State<Client>,
    ///     headers: axum::http::HeaderMap,
    /// ) -> Result<durable::http::CheckStatusResponse, String> {
    ///     let handle = client.start(work, 7).await.map_err(|e| e.to_string())?;
    ///     Ok(durable::http::create_check_status_response(&client, handle.id()).for_request(&headers))
    /// }
    /// ```
    #[must_use]
    pub fn for_request(self, headers: &HeaderMap) -> Self {
        let base = format!("{}{}", request_origin(headers), BASE_PATH);
        self.base_url(base)
    }

    /// The URL to poll for the status (also the `Location` header).
    pub fn status_query_get_uri(&self) -> String {
        self.payload().status_query_get_uri
    }

    pub(crate) fn payload(&self) -> CheckStatusBody {
        let instance = format!("{}/instances/{}", self.base, encode(self.instance.as_str()));
        let code = self.code.as_deref().map(encode);
        let plain = code
            .as_ref()
            .map_or_else(String::new, |code| format!("?code={code}"));
        let with_reason = match &code {
            Some(code) => format!("?reason={{text}}&code={code}"),
            None => "?reason={text}".to_owned(),
        };
        CheckStatusBody {
            id: self.instance.to_string(),
            status_query_get_uri: format!("{instance}{plain}"),
            send_event_post_uri: format!("{instance}/raiseEvent/{{eventName}}{plain}"),
            terminate_post_uri: format!("{instance}/terminate{with_reason}"),
            purge_history_delete_uri: format!("{instance}{plain}"),
            restart_post_uri: format!("{instance}/restart{plain}"),
            suspend_post_uri: format!("{instance}/suspend{with_reason}"),
            resume_post_uri: format!("{instance}/resume{with_reason}"),
        }
    }
}

impl IntoResponse for CheckStatusResponse {
    fn into_response(self) -> Response {
        let payload = self.payload();
        let location = HeaderValue::from_str(&payload.status_query_get_uri).ok();
        let mut response = json_response(StatusCode::ACCEPTED, &payload);
        if let Some(location) = location {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        response
    }
}

/// `scheme://host/…/durabletask` for the URLs of a response: the configured public base, or
/// the request's `Host` (and `X-Forwarded-Proto`), and the path the API is mounted at.
pub(crate) fn base_url(api: &Api, headers: &HeaderMap, uri: &Uri, suffix_start: &str) -> String {
    let path = uri.path();
    let mount = path.find(suffix_start).map_or(BASE_PATH, |at| &path[..at]);
    let origin = match &api.options.public_base_url {
        Some(base) => base.clone(),
        None => request_origin(headers),
    };
    format!("{origin}{mount}")
}

/// `scheme://host` a request was sent to: its `Host` header (`localhost` when missing or
/// malformed) and `X-Forwarded-Proto: https` behind a proxy.
fn request_origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"/\\?#@".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|proto| proto.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// The check-status answer of the API's own routes: URLs where the request was sent
/// ([`base_url`]), with the request's `code=` if it carried one.
pub(crate) fn check_status(
    api: &Api,
    headers: &HeaderMap,
    uri: &Uri,
    suffix_start: &str,
    instance: InstanceId,
) -> CheckStatusResponse {
    let base = base_url(api, headers, uri, suffix_start);
    CheckStatusResponse::new(instance, base, code_param(uri.query()))
}
