//! The routes of the management API. Each handler validates what it was sent (a bad value
//! is a `400` that says what to send instead), calls the [`Client`], and maps its outcome
//! to Durable Functions' status codes.

use super::wire::{
    Problem, encode, format_time, json_response, parse_bool, parse_seconds, parse_time,
    raw_json_response,
};
use super::{Api, code_param};
use crate::client::{self, EntityStatus, InstanceStatus};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use durable_store::{
    EntityId, HistoryEvent, InstanceId, InstanceQuery, Json, RuntimeStatus, Timestamp,
};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;

type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;
type Body = Result<Bytes, BytesRejection>;
type Answer = Result<Response, Problem>;

const CONTINUATION: &str = "x-ms-continuation-token";
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 10_000;

/// The query parameters by name. A parameter given more than once (as Durable Functions
/// allows for `runtimeStatus`) has its values joined with commas.
fn params(query: Params) -> Result<BTreeMap<String, String>, Problem> {
    let Query(pairs) = query
        .map_err(|rejection| Problem::bad_request(format!("bad query string: {rejection}")))?;
    let mut params = BTreeMap::<String, String>::new();
    for (name, value) in pairs {
        params
            .entry(name)
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    Ok(params)
}

fn body(body: Body) -> Result<Bytes, Problem> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                status,
                "the request body is larger than the server accepts (see HttpOptions::max_body_bytes)",
            )
        } else {
            Problem::new(status, format!("cannot read the request body: {rejection}"))
        }
    })
}

fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, Problem> {
    path.map(|Path(value)| value)
        .map_err(|rejection| Problem::bad_request(format!("bad path: {rejection}")))
}

/// The body as JSON text: empty means `null`.
fn json_body(bytes: &Bytes, what: &str) -> Result<Json, Problem> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Problem::bad_request(format!("the {what} is not UTF-8 text")))?;
    if text.trim().is_empty() {
        return Ok(Json::null());
    }
    Json::parse(text)
        .map_err(|error| Problem::bad_request(format!("the {what} is not valid JSON: {error}")))
}

fn instance_id(text: &str) -> Result<InstanceId, Problem> {
    InstanceId::new(text).map_err(|error| Problem::bad_request(error.to_string()))
}

fn entity_id(name: &str, key: &str) -> Result<EntityId, Problem> {
    EntityId::new(name, key).map_err(|error| Problem::bad_request(error.to_string()))
}

/// Maps a client error to the status code Durable Functions answers with.
fn client_error(error: client::Error) -> Problem {
    use client::Error as E;
    let status = match &error {
        E::NotFound { .. } => StatusCode::NOT_FOUND,
        E::AlreadyExists { .. } | E::NotEnded { .. } => StatusCode::CONFLICT,
        E::NotRunning { .. } => StatusCode::GONE,
        E::NotRegistered { .. }
        | E::InvalidInstanceId(_)
        | E::InstanceIdTooLong { .. }
        | E::InvalidInput { .. }
        | E::InvalidContinuation => StatusCode::BAD_REQUEST,
        E::ShuttingDown | E::Poisoned => StatusCode::SERVICE_UNAVAILABLE,
        E::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        E::Timeout { .. }
        | E::Failed { .. }
        | E::Terminated { .. }
        | E::OutputDecode { .. }
        | E::Store(_) => {
            tracing::error!(%error, "internal error in the HTTP management API");
            return Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the server log has the details",
            );
        }
    };
    Problem::new(status, error.to_string())
}

/// `scheme://host/…/durabletask` for the URLs of a response: the configured public base, or
/// the request's `Host` (and `X-Forwarded-Proto`), and the path the API is mounted at.
fn base_url(api: &Api, headers: &HeaderMap, uri: &Uri, suffix_start: &str) -> String {
    let path = uri.path();
    let mount = path
        .find(suffix_start)
        .map_or(super::BASE_PATH, |at| &path[..at]);
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

/// The `202 Accepted` answer with an instance's management URLs (Durable Functions'
/// check-status response): `Location` and `Retry-After: 10` headers and the payload
/// `{id, statusQueryGetUri, sendEventPostUri, terminatePostUri, purgeHistoryDeleteUri,
/// restartPostUri, suspendPostUri, resumePostUri}`. Made by
/// [`create_check_status_response`](super::create_check_status_response).
#[derive(Clone, Debug)]
pub struct CheckStatusResponse {
    instance: InstanceId,
    base: String,
    code: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckStatusPayload {
    id: String,
    status_query_get_uri: String,
    send_event_post_uri: String,
    terminate_post_uri: String,
    purge_history_delete_uri: String,
    restart_post_uri: String,
    suspend_post_uri: String,
    resume_post_uri: String,
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
    /// [`BASE_PATH`](super::BASE_PATH) on that host: what Durable Functions'
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
        let base = format!("{}{}", request_origin(headers), super::BASE_PATH);
        self.base_url(base)
    }

    /// The URL to poll for the status (also the `Location` header).
    pub fn status_query_get_uri(&self) -> String {
        self.payload().status_query_get_uri
    }

    fn payload(&self) -> CheckStatusPayload {
        let instance = format!("{}/instances/{}", self.base, encode(self.instance.as_str()));
        let code = self.code.as_deref().map(encode);
        let plain = code
            .as_ref()
            .map_or_else(String::new, |code| format!("?code={code}"));
        let with_reason = match &code {
            Some(code) => format!("?reason={{text}}&code={code}"),
            None => "?reason={text}".to_owned(),
        };
        CheckStatusPayload {
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

fn check_status(
    api: &Api,
    headers: &HeaderMap,
    uri: &Uri,
    suffix_start: &str,
    instance: InstanceId,
) -> CheckStatusResponse {
    let base = base_url(api, headers, uri, suffix_start);
    CheckStatusResponse::new(instance, base, code_param(uri.query()))
}

// ---------------------------------------------------------------------------------------
// Starting

pub(crate) async fn start_without_id(
    State(api): State<Arc<Api>>,
    name: Result<Path<String>, PathRejection>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    query: Params,
    payload: Body,
) -> Response {
    let answer = async {
        let name = path(name)?;
        start(
            &api,
            &name,
            None,
            &uri,
            &headers,
            params(query)?,
            body(payload)?,
        )
        .await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn start_with_id(
    State(api): State<Arc<Api>>,
    names: Result<Path<(String, String)>, PathRejection>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    query: Params,
    payload: Body,
) -> Response {
    let answer = async {
        let (name, id) = path(names)?;
        let id = instance_id(&id)?;
        start(
            &api,
            &name,
            Some(id),
            &uri,
            &headers,
            params(query)?,
            body(payload)?,
        )
        .await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn start(
    api: &Api,
    name: &str,
    id: Option<InstanceId>,
    uri: &Uri,
    headers: &HeaderMap,
    query: BTreeMap<String, String>,
    payload: Bytes,
) -> Answer {
    let input = json_body(&payload, "input")?;
    let wait = wait_time(&query)?;
    let instance = api
        .client
        .start_by_name(name, id.as_ref().map(InstanceId::as_str), input.as_str())
        .await
        .map_err(|error| match error {
            client::Error::NotRegistered { name } => Problem::bad_request(format!(
                "no orchestrator named `{name}` is registered with this runtime"
            )),
            other => client_error(other),
        })?;
    let accepted = check_status(api, headers, uri, "/orchestrators/", instance.clone());
    wait_or_accept(api, &query, wait, &instance, accepted).await
}

/// How long to wait for a started instance: with both `timeout` and `pollingInterval`
/// (seconds), as Durable Functions waits only with both; one alone is checked and ignored.
fn wait_time(query: &BTreeMap<String, String>) -> Result<Option<std::time::Duration>, Problem> {
    match (query.get("timeout"), query.get("pollingInterval")) {
        (Some(timeout), Some(interval)) => {
            parse_seconds("pollingInterval", interval)?;
            Ok(Some(parse_seconds("timeout", timeout)?))
        }
        (Some(timeout), None) => parse_seconds("timeout", timeout).map(|_| None),
        (None, Some(interval)) => parse_seconds("pollingInterval", interval).map(|_| None),
        (None, None) => Ok(None),
    }
}

/// Without `wait`, the `202` check-status answer; with it, waits that long for the
/// instance to end: `200` and the raw output if it completed, its status if it failed or
/// was terminated, else the `202` answer all the same.
async fn wait_or_accept(
    api: &Api,
    query: &BTreeMap<String, String>,
    wait: Option<std::time::Duration>,
    instance: &InstanceId,
    accepted: CheckStatusResponse,
) -> Answer {
    let Some(timeout) = wait else {
        return Ok(accepted.into_response());
    };
    match api.client.wait_for_completion(instance, timeout).await {
        Ok(status) if status.runtime_status == RuntimeStatus::Completed => Ok(raw_json_response(
            StatusCode::OK,
            status
                .output
                .map_or_else(|| "null".to_owned(), |output| output.to_string()),
        )),
        // Failed or terminated in time: its status, as `GET instances/{id}` gives it.
        Ok(status) => {
            let fail = parse_bool(
                "returnInternalServerErrorOnFailure",
                query.get("returnInternalServerErrorOnFailure"),
            )?
            .unwrap_or(false);
            let code = if fail && status.runtime_status == RuntimeStatus::Failed {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &StatusBody::of(&status, true, None)))
        }
        Err(client::Error::Timeout { .. }) => Ok(accepted.into_response()),
        Err(error) => Err(client_error(error)),
    }
}

// ---------------------------------------------------------------------------------------
// Status and lists

/// An instance as Durable Functions' status endpoints show it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    name: &'a str,
    instance_id: &'a str,
    runtime_status: &'static str,
    input: Option<&'a RawValue>,
    custom_status: Option<&'a RawValue>,
    output: Option<Box<RawValue>>,
    created_time: String,
    last_updated_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    history_events: Option<Vec<serde_json::Value>>,
}

fn raw(json: &Json) -> Option<&RawValue> {
    serde_json::from_str(json.as_str()).ok()
}

impl<'a> StatusBody<'a> {
    fn of(
        status: &'a InstanceStatus,
        show_input: bool,
        history: Option<Vec<serde_json::Value>>,
    ) -> StatusBody<'a> {
        // A failed instance shows its error, a terminated one the reason, as output.
        let output = match status.runtime_status {
            RuntimeStatus::Completed => status
                .output
                .as_ref()
                .and_then(|output| RawValue::from_string(output.to_string()).ok()),
            RuntimeStatus::Failed | RuntimeStatus::Terminated => {
                status.failure.as_ref().and_then(|failure| {
                    let text = if status.runtime_status == RuntimeStatus::Terminated {
                        failure.message.clone()
                    } else {
                        failure.to_string()
                    };
                    serde_json::to_string(&text)
                        .ok()
                        .and_then(|json| RawValue::from_string(json).ok())
                })
            }
            _ => None,
        };
        StatusBody {
            name: &status.name,
            instance_id: status.instance_id.as_str(),
            runtime_status: status.runtime_status.as_str(),
            input: if show_input { raw(&status.input) } else { None },
            custom_status: status.custom_status.as_ref().and_then(raw),
            output,
            created_time: format_time(status.created_at),
            last_updated_time: format_time(status.last_updated_at),
            history_events: history,
        }
    }
}

/// History events shaped as Durable Functions shows them: `EventType`, `Timestamp` (the
/// time of the turn that recorded it) and the event's fields in PascalCase, with `name`
/// as `FunctionName` (of an orchestration, activity or sub-orchestration) and outputs as
/// `Result`. The turn markers (`OrchestratorStarted`) are left out, and a task's
/// scheduling is folded into its completion or failure (`FunctionName`, `ScheduledTime`),
/// leaving only tasks still running as `TaskScheduled`. Payloads (`Input`, `Result`)
/// appear only with `showHistoryOutput=true`.
fn history_json(history: &[HistoryEvent], show_output: bool) -> Vec<serde_json::Value> {
    use serde_json::{Map, Value};
    let mut now = Timestamp::EPOCH;
    let mut events: Vec<Map<String, Value>> = Vec::with_capacity(history.len());
    // Scheduled tasks by id: where their event is in `events`, to fold it away.
    let mut scheduled = BTreeMap::<u64, usize>::new();
    let mut folded = Vec::new();
    for event in history {
        if let HistoryEvent::OrchestratorStarted { at } = event {
            now = *at;
            continue;
        }
        let kind = event.kind();
        let mut object = Map::new();
        object.insert("EventType".into(), kind.into());
        object.insert("Timestamp".into(), format_time(now.to_system_time()).into());
        if let Ok(Value::Object(outer)) = serde_json::to_value(event)
            && let Some((_, Value::Object(fields))) = outer.into_iter().next()
        {
            for (name, value) in fields {
                let payload = name == "input" || name == "output";
                if payload && !show_output {
                    continue;
                }
                let value = match value {
                    // Payloads are JSON text inside the record: show them as JSON.
                    Value::String(text) if payload => {
                        serde_json::from_str(&text).unwrap_or(Value::String(text))
                    }
                    value => value,
                };
                let field = match (kind, &*name) {
                    ("ExecutionStarted" | "TaskScheduled" | "SubOrchestrationCreated", "name") => {
                        "FunctionName".to_owned()
                    }
                    (_, "output") => "Result".to_owned(),
                    (
                        "TaskCompleted"
                        | "TaskFailed"
                        | "SubOrchestrationCompleted"
                        | "SubOrchestrationFailed",
                        "id",
                    ) => "TaskScheduledId".to_owned(),
                    (_, name) => pascal_case(name),
                };
                object.insert(field, value);
            }
        }
        let task = |object: &Map<String, Value>, field: &str| object.get(field)?.as_u64();
        match kind {
            "TaskScheduled" | "SubOrchestrationCreated" => {
                if let Some(id) = task(&object, "Id") {
                    scheduled.insert(id, events.len());
                }
            }
            "TaskCompleted"
            | "TaskFailed"
            | "SubOrchestrationCompleted"
            | "SubOrchestrationFailed" => {
                if let Some(at) =
                    task(&object, "TaskScheduledId").and_then(|id| scheduled.remove(&id))
                {
                    let origin = &events[at];
                    if let Some(name) = origin.get("FunctionName") {
                        object.insert("FunctionName".into(), name.clone());
                    }
                    if let Some(time) = origin.get("Timestamp") {
                        object.insert("ScheduledTime".into(), time.clone());
                    }
                    folded.push(at);
                }
            }
            _ => {}
        }
        events.push(object);
    }
    folded.sort_unstable();
    let mut folded = folded.into_iter().peekable();
    events
        .into_iter()
        .enumerate()
        .filter(|(at, _)| folded.next_if_eq(at).is_none())
        .map(|(_, object)| Value::Object(object))
        .collect()
}

/// `fire_at` → `FireAt`.
fn pascal_case(name: &str) -> String {
    name.split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect()
}

pub(crate) async fn status(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    query: Params,
) -> Response {
    let answer = async {
        let id = instance_id(&path(id)?)?;
        let query = params(query)?;
        let show_history = parse_bool("showHistory", query.get("showHistory"))?.unwrap_or(false);
        let show_output =
            parse_bool("showHistoryOutput", query.get("showHistoryOutput"))?.unwrap_or(false);
        let show_input = parse_bool("showInput", query.get("showInput"))?.unwrap_or(true);
        let fail = parse_bool(
            "returnInternalServerErrorOnFailure",
            query.get("returnInternalServerErrorOnFailure"),
        )?
        .unwrap_or(false);
        let found = if show_history {
            api.client.status_with_history(&id).await
        } else {
            api.client.status(&id).await
        };
        let status = found.map_err(client_error)?.ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                format!("no orchestration instance `{id}` exists"),
            )
        })?;
        let history = status
            .history
            .as_ref()
            .map(|history| history_json(history, show_output));
        let body = StatusBody::of(&status, show_input, history);
        let code = match status.runtime_status {
            RuntimeStatus::Pending | RuntimeStatus::Running | RuntimeStatus::Suspended => {
                StatusCode::ACCEPTED
            }
            RuntimeStatus::Failed if fail => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::OK,
        };
        let mut response = json_response(code, &body);
        if code == StatusCode::ACCEPTED {
            let base = base_url(&api, &headers, &uri, "/instances/");
            let location = format!(
                "{base}/instances/{}{}",
                encode(id.as_str()),
                uri.query().map_or_else(String::new, |q| format!("?{q}"))
            );
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        Ok::<_, Problem>(response)
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// The filters of `GET instances` and `DELETE instances`.
fn instance_query(query: &BTreeMap<String, String>) -> Result<InstanceQuery, Problem> {
    let time = |name: &str| -> Result<Option<Timestamp>, Problem> {
        query
            .get(name)
            .map(|text| {
                parse_time(text)
                    .map(Timestamp::from_system_time)
                    .map_err(|message| Problem::bad_request(format!("`{name}`: {message}")))
            })
            .transpose()
    };
    let statuses = query
        .get("runtimeStatus")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|status| !status.is_empty())
                .map(|status| {
                    status.parse::<RuntimeStatus>().map_err(|message| {
                        Problem::bad_request(format!("`runtimeStatus`: {message}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        // `runtimeStatus=` with no status is no filter, not a filter nothing passes.
        .filter(|statuses| !statuses.is_empty());
    Ok(InstanceQuery {
        statuses,
        created_from: time("createdTimeFrom")?,
        created_to: time("createdTimeTo")?,
        id_prefix: query.get("instanceIdPrefix").cloned(),
        ..InstanceQuery::default()
    })
}

fn page_size(query: &BTreeMap<String, String>) -> Result<usize, Problem> {
    match query.get("top") {
        None => Ok(DEFAULT_PAGE),
        Some(top) => top
            .parse::<usize>()
            .ok()
            .filter(|top| (1..=MAX_PAGE).contains(top))
            .ok_or_else(|| {
                Problem::bad_request(format!(
                    "query parameter `top` must be a whole number from 1 to {MAX_PAGE}, not `{top}`"
                ))
            }),
    }
}

fn continuation(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    headers
        .get(CONTINUATION)
        .map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| Problem::bad_request("the continuation token is not text"))
        })
        .transpose()
        .map(|token| token.filter(|token| !token.is_empty()))
}

fn with_continuation(mut response: Response, token: Option<String>) -> Response {
    if let Some(value) = token.and_then(|token| HeaderValue::from_str(&token).ok()) {
        response.headers_mut().insert(CONTINUATION, value);
    }
    response
}

pub(crate) async fn list_instances(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    query: Params,
) -> Response {
    let answer = async {
        let query = params(query)?;
        let filter = instance_query(&query)?;
        let top = page_size(&query)?;
        let show_input = parse_bool("showInput", query.get("showInput"))?.unwrap_or(true);
        let token = continuation(&headers)?;
        let page = api
            .client
            .list(&filter, top, token.as_deref())
            .await
            .map_err(client_error)?;
        let bodies: Vec<StatusBody<'_>> = page
            .instances
            .iter()
            .map(|status| StatusBody::of(status, show_input, None))
            .collect();
        let response = json_response(StatusCode::OK, &bodies);
        Ok::<_, Problem>(with_continuation(response, page.continuation))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Purged {
    instances_deleted: u64,
}

pub(crate) async fn purge(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let answer = async {
        let id = instance_id(&path(id)?)?;
        api.client.purge(&id).await.map_err(client_error)?;
        Ok::<_, Problem>(json_response(
            StatusCode::OK,
            &Purged {
                instances_deleted: 1,
            },
        ))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn purge_where(State(api): State<Arc<Api>>, query: Params) -> Response {
    let answer = async {
        let query = params(query)?;
        if !query.contains_key("createdTimeFrom") {
            return Err(Problem::bad_request(
                "purging by filter needs `createdTimeFrom` (and optionally `createdTimeTo`, `runtimeStatus`)",
            ));
        }
        let filter = instance_query(&query)?;
        let deleted = api
            .client
            .purge_where(&filter)
            .await
            .map_err(client_error)?;
        // As Durable Functions: nothing matched is a 404.
        let status = if deleted == 0 {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        Ok(json_response(
            status,
            &Purged {
                instances_deleted: deleted,
            },
        ))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------------------------------
// Commands to an instance

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

pub(crate) async fn raise_event(
    State(api): State<Arc<Api>>,
    names: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    payload: Body,
) -> Response {
    let answer = async {
        let (id, event) = path(names)?;
        let id = instance_id(&id)?;
        if !is_json(&headers) {
            return Err(Problem::bad_request(
                "an event's body must be JSON, sent with `Content-Type: application/json`",
            ));
        }
        let data = json_body(&body(payload)?, "event data")?;
        let data = raw(&data).ok_or_else(|| Problem::bad_request("the event data is not JSON"))?;
        api.client
            .raise_event(&id, event, data)
            .await
            .map_err(client_error)?;
        Ok(accepted())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

fn reason(query: &BTreeMap<String, String>) -> String {
    query.get("reason").cloned().unwrap_or_default()
}

/// The commands that take an instance and a `reason` and answer `202`.
#[derive(Clone, Copy)]
enum Command {
    Terminate,
    Suspend,
    Resume,
}

async fn command(
    api: &Api,
    command: Command,
    id: Result<Path<String>, PathRejection>,
    query: Params,
) -> Response {
    let answer = async {
        let id = instance_id(&path(id)?)?;
        let reason = reason(&params(query)?);
        let sent = match command {
            Command::Terminate => api.client.terminate(&id, reason).await,
            Command::Suspend => api.client.suspend(&id, reason).await,
            Command::Resume => api.client.resume(&id, reason).await,
        };
        sent.map_err(client_error)?;
        Ok::<_, Problem>(accepted())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn terminate(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
    query: Params,
) -> Response {
    command(&api, Command::Terminate, id, query).await
}

pub(crate) async fn suspend(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
    query: Params,
) -> Response {
    command(&api, Command::Suspend, id, query).await
}

pub(crate) async fn resume(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
    query: Params,
) -> Response {
    command(&api, Command::Resume, id, query).await
}

pub(crate) async fn restart(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    query: Params,
) -> Response {
    let answer = async {
        let id = instance_id(&path(id)?)?;
        let query = params(query)?;
        let new_id = parse_bool(
            "restartWithNewInstanceId",
            query.get("restartWithNewInstanceId"),
        )?
        .unwrap_or(true);
        let wait = wait_time(&query)?;
        let started = api
            .client
            .restart(&id, new_id)
            .await
            .map_err(client_error)?;
        let accepted = check_status(&api, &headers, &uri, "/instances/", started.clone());
        wait_or_accept(&api, &query, wait, &started, accepted).await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------------------------------
// Entities

pub(crate) async fn signal_entity(
    State(api): State<Arc<Api>>,
    names: Result<Path<(String, String)>, PathRejection>,
    query: Params,
    payload: Body,
) -> Response {
    let answer = async {
        let (name, key) = path(names)?;
        let entity = entity_id(&name, &key)?;
        let query = params(query)?;
        let operation = query
            .get("op")
            .filter(|op| !op.is_empty())
            .ok_or_else(|| Problem::bad_request("name the operation to signal with `?op=`"))?;
        let input = json_body(&body(payload)?, "operation input")?;
        api.client
            .signal_entity(&entity, operation, input)
            .await
            .map_err(|error| match error {
                client::Error::NotRegistered { .. } => Problem::bad_request(format!(
                    "no entity type named `{name}` is registered with this runtime"
                )),
                other => client_error(other),
            })?;
        Ok::<_, Problem>(accepted())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn entity_state(
    State(api): State<Arc<Api>>,
    names: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let answer = async {
        let (name, key) = path(names)?;
        let entity = entity_id(&name, &key)?;
        let state = api
            .client
            .entity_status(&entity)
            .await
            .map_err(client_error)?
            .and_then(|status| status.state)
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::NOT_FOUND,
                    format!("entity `{name}` with key `{key}` has no state"),
                )
            })?;
        Ok::<_, Problem>(raw_json_response(StatusCode::OK, state.to_string()))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn delete_entity(
    State(api): State<Arc<Api>>,
    names: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let answer = async {
        let (name, key) = path(names)?;
        let entity = entity_id(&name, &key)?;
        api.client
            .delete_entity(&entity)
            .await
            .map_err(|error| match error {
                client::Error::NotRegistered { .. } => Problem::bad_request(format!(
                    "no entity type named `{name}` is registered with this runtime"
                )),
                other => client_error(other),
            })?;
        Ok::<_, Problem>(accepted())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
struct EntityIdBody<'a> {
    name: &'a str,
    key: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntityBody<'a> {
    entity_id: EntityIdBody<'a>,
    last_operation_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a RawValue>,
}

impl<'a> EntityBody<'a> {
    fn of(status: &'a EntityStatus, fetch_state: bool) -> EntityBody<'a> {
        EntityBody {
            entity_id: EntityIdBody {
                name: status.id.name(),
                key: status.id.key(),
            },
            last_operation_time: format_time(status.last_modified),
            state: if fetch_state {
                status.state.as_ref().and_then(raw)
            } else {
                None
            },
        }
    }
}

pub(crate) async fn list_all_entities(
    state: State<Arc<Api>>,
    headers: HeaderMap,
    query: Params,
) -> Response {
    entities(state, None, headers, query).await
}

pub(crate) async fn list_entities(
    state: State<Arc<Api>>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Params,
) -> Response {
    match path(name) {
        Ok(name) => entities(state, Some(name), headers, query).await,
        Err(problem) => problem.into_response(),
    }
}

async fn entities(
    State(api): State<Arc<Api>>,
    name: Option<String>,
    headers: HeaderMap,
    query: Params,
) -> Response {
    let answer = async {
        let query = params(query)?;
        if let Some(filter) = ["lastOperationTimeFrom", "lastOperationTimeTo"]
            .into_iter()
            .find(|name| query.contains_key(*name))
        {
            return Err(Problem::bad_request(format!(
                "`{filter}` is not supported: entities are listed by name only; filter on `lastOperationTime` in the results"
            )));
        }
        let top = page_size(&query)?;
        let fetch_state = parse_bool("fetchState", query.get("fetchState"))?.unwrap_or(false);
        let token = continuation(&headers)?;
        let page = api
            .client
            .list_entities(name.as_deref(), top, token.as_deref())
            .await
            .map_err(client_error)?;
        let bodies: Vec<EntityBody<'_>> = page
            .entities
            .iter()
            .map(|status| EntityBody::of(status, fetch_state))
            .collect();
        let response = json_response(StatusCode::OK, &bodies);
        Ok::<_, Problem>(with_continuation(response, page.continuation))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------------------------------
// Everything else

pub(crate) async fn not_found(uri: Uri) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {}; see {} for the API",
            uri.path(),
            super::OPENAPI_PATH
        ),
    )
    .into_response()
}

/// `POST instances/{id}/rewind` (a preview feature of Durable Functions): not supported.
pub(crate) async fn rewind() -> Response {
    Problem::new(
        StatusCode::NOT_IMPLEMENTED,
        "rewind is not supported: restart the instance (`POST instances/{id}/restart`) to run it again from its input",
    )
    .into_response()
}

pub(crate) async fn method_not_allowed() -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "this endpoint does not take that method; see {}",
            super::OPENAPI_PATH
        ),
    )
    .into_response()
}

/// The JSON this API answers with, pinned byte for byte: a change to a stored record must
/// never move the wire.
#[cfg(test)]
mod wire_pins {
    use super::*;
    use durable_store::{ExecutionId, Failure, FailureKind, ParentRef, TaskId};
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-01-01T00:00:00Z, in milliseconds.
    const NEW_YEAR_MS: u64 = 1_767_225_600_000;

    fn history_wire(history: &[HistoryEvent], show_output: bool) -> String {
        serde_json::to_string(&history_json(history, show_output)).unwrap()
    }

    fn status_wire(
        status: &InstanceStatus,
        show_input: bool,
        history: Option<&[HistoryEvent]>,
    ) -> String {
        let history = history.map(|history| history_json(history, false));
        serde_json::to_string(&StatusBody::of(status, show_input, history)).unwrap()
    }

    fn entity_wire(status: &EntityStatus, fetch_state: bool) -> String {
        serde_json::to_string(&EntityBody::of(status, fetch_state)).unwrap()
    }

    fn check_status_wire(response: &CheckStatusResponse) -> String {
        serde_json::to_string(&response.payload()).unwrap()
    }

    fn purged_wire(instances_deleted: u64) -> String {
        serde_json::to_string(&Purged { instances_deleted }).unwrap()
    }

    fn json(text: &str) -> Json {
        Json::parse(text).unwrap()
    }

    fn id(text: &str) -> InstanceId {
        InstanceId::new(text).unwrap()
    }

    fn entity(name: &str, key: &str) -> EntityId {
        EntityId::new(name, key).unwrap()
    }

    fn turn(seconds: u64) -> HistoryEvent {
        HistoryEvent::OrchestratorStarted {
            at: Timestamp(NEW_YEAR_MS + seconds * 1000),
        }
    }

    fn failure(kind: FailureKind, message: &str) -> Failure {
        Failure::new(kind, message)
    }

    /// Every kind of event a stored history holds (in an order no execution would take),
    /// each task's completion after its scheduling, one task left running.
    fn every_kind() -> Vec<HistoryEvent> {
        use HistoryEvent as E;
        let locked = vec![entity("Lock", "a"), entity("Lock", "b")];
        vec![
            E::ExecutionStarted {
                name: "order".into(),
                input: json(r#"{"b": 1, "a": [1, 2]}"#),
                parent: Some(ParentRef {
                    instance: id("parent-1"),
                    execution: ExecutionId(3),
                    task: TaskId(4),
                }),
            },
            turn(0),
            E::TaskScheduled {
                id: TaskId(0),
                name: "charge".into(),
                input: json("42"),
            },
            E::TimerCreated {
                id: TaskId(1),
                fire_at: Timestamp(NEW_YEAR_MS + 60_000),
            },
            E::SubOrchestrationCreated {
                id: TaskId(2),
                name: "ship".into(),
                instance: id("child-1"),
                input: json(r#""box""#),
            },
            E::TaskScheduled {
                id: TaskId(3),
                name: "notify".into(),
                input: json("null"),
            },
            E::EntityCalled {
                id: TaskId(4),
                entity: entity("Counter", "k"),
                operation: "add".into(),
                input: json("1"),
            },
            E::EntitySignaled {
                id: TaskId(5),
                entity: entity("Counter", "k"),
                operation: "reset".into(),
                input: json("null"),
            },
            E::LocksRequested {
                id: TaskId(6),
                entities: locked.clone(),
            },
            E::SubOrchestrationCreated {
                id: TaskId(7),
                name: "pack".into(),
                instance: id("child-2"),
                input: json("[]"),
            },
            E::TaskScheduled {
                id: TaskId(8),
                name: "refund".into(),
                input: json("{}"),
            },
            turn(1),
            E::TaskCompleted {
                id: TaskId(0),
                output: json(r#""ok""#),
            },
            E::TimerFired { id: TaskId(1) },
            E::SubOrchestrationFailed {
                id: TaskId(2),
                failure: Failure {
                    details: Some(json(r#"{"code": 7}"#)),
                    cause: Some(Box::new(failure(FailureKind::Application, "no stock"))),
                    ..failure(FailureKind::SubOrchestrationFailed, "ship failed")
                },
            },
            E::EntityCompleted {
                id: TaskId(4),
                output: json("2"),
            },
            E::LocksGranted {
                id: TaskId(6),
                entities: locked,
            },
            E::SubOrchestrationCompleted {
                id: TaskId(7),
                output: json("true"),
            },
            E::TaskFailed {
                id: TaskId(8),
                failure: failure(FailureKind::Panic, "refund panicked"),
            },
            E::EventRaised {
                name: "Approval".into(),
                input: json("true"),
            },
            turn(2),
            E::LocksReleased { id: TaskId(6) },
            E::EntityFailed {
                id: TaskId(9),
                failure: failure(FailureKind::EntityOperationFailed, "boom"),
            },
            E::TimerCreated {
                id: TaskId(10),
                fire_at: Timestamp(NEW_YEAR_MS + 3_600_000),
            },
            E::TimerCancelled { id: TaskId(10) },
            E::ExecutionSuspended {
                reason: "pause".into(),
            },
            E::ExecutionResumed {
                reason: "go".into(),
            },
            E::ContinuedAsNew { input: json("5") },
            E::ExecutionCompleted {
                output: json(r#"{"z": null, "y": "x"}"#),
            },
            E::ExecutionFailed {
                failure: failure(FailureKind::Application, "bad"),
            },
            E::ExecutionTerminated {
                reason: "stop".into(),
            },
        ]
    }

    /// A running execution: no turn yet, a payload that is not JSON (a damaged record shows
    /// as text), a sub-orchestration still running and a completion of an unknown task.
    fn running() -> Vec<HistoryEvent> {
        use HistoryEvent as E;
        vec![
            E::ExecutionStarted {
                name: "order".into(),
                input: serde_json::from_str::<Json>(r#""not json""#).unwrap(),
                parent: None,
            },
            E::SubOrchestrationCreated {
                id: TaskId(0),
                name: "ship".into(),
                instance: id("child-1"),
                input: json("7"),
            },
            E::TaskCompleted {
                id: TaskId(5),
                output: json("1"),
            },
        ]
    }

    fn status(runtime_status: RuntimeStatus) -> InstanceStatus {
        InstanceStatus {
            instance_id: id("order-1"),
            name: "order".into(),
            execution: ExecutionId(2),
            runtime_status,
            input: json(r#"{"n": 1}"#),
            output: None,
            failure: None,
            custom_status: None,
            created_at: UNIX_EPOCH + Duration::from_millis(NEW_YEAR_MS),
            last_updated_at: UNIX_EPOCH + Duration::from_millis(NEW_YEAR_MS + 61_500),
            parent: None,
            history: None,
        }
    }

    fn entity_status(state: Option<&str>) -> EntityStatus {
        EntityStatus {
            id: entity("Counter", "k"),
            state: state.map(json),
            locked_by: Some(id("order-1")),
            last_modified: UNIX_EPOCH + Duration::from_millis(NEW_YEAR_MS + 1_000),
        }
    }

    /// `[a,b,...]`: a JSON array of the events' texts.
    fn array(events: &[&str]) -> String {
        format!("[{}]", events.join(","))
    }

    #[test]
    fn history_events_with_output() {
        let expected = [
            r#"{"EventType":"ExecutionStarted","FunctionName":"order","Input":{"a":[1,2],"b":1},"Parent":{"execution":3,"instance":"parent-1","task":4},"Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TimerCreated","FireAt":1767225660000,"Id":1,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskScheduled","FunctionName":"notify","Id":3,"Input":null,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entity":{"key":"k","name":"Counter"},"EventType":"EntityCalled","Id":4,"Input":1,"Operation":"add","Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entity":{"key":"k","name":"Counter"},"EventType":"EntitySignaled","Id":5,"Input":null,"Operation":"reset","Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entities":[{"key":"a","name":"Lock"},{"key":"b","name":"Lock"}],"EventType":"LocksRequested","Id":6,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskCompleted","FunctionName":"charge","Result":"ok","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":0,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"TimerFired","Id":1,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"SubOrchestrationFailed","Failure":{"cause":{"cause":null,"details":null,"kind":"Application","message":"no stock"},"details":"{\"code\": 7}","kind":"SubOrchestrationFailed","message":"ship failed"},"FunctionName":"ship","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":2,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"EntityCompleted","Id":4,"Result":2,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"Entities":[{"key":"a","name":"Lock"},{"key":"b","name":"Lock"}],"EventType":"LocksGranted","Id":6,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"SubOrchestrationCompleted","FunctionName":"pack","Result":true,"ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":7,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"TaskFailed","Failure":{"cause":null,"details":null,"kind":"Panic","message":"refund panicked"},"FunctionName":"refund","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":8,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"EventRaised","Input":true,"Name":"Approval","Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"LocksReleased","Id":6,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"EntityFailed","Failure":{"cause":null,"details":null,"kind":"EntityOperationFailed","message":"boom"},"Id":9,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"TimerCreated","FireAt":1767229200000,"Id":10,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"TimerCancelled","Id":10,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionSuspended","Reason":"pause","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionResumed","Reason":"go","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ContinuedAsNew","Input":5,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionCompleted","Result":{"y":"x","z":null},"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionFailed","Failure":{"cause":null,"details":null,"kind":"Application","message":"bad"},"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionTerminated","Reason":"stop","Timestamp":"2026-01-01T00:00:02Z"}"#,
        ];
        assert_eq!(history_wire(&every_kind(), true), array(&expected));
    }

    #[test]
    fn history_events_without_output() {
        let expected = [
            r#"{"EventType":"ExecutionStarted","FunctionName":"order","Parent":{"execution":3,"instance":"parent-1","task":4},"Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TimerCreated","FireAt":1767225660000,"Id":1,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskScheduled","FunctionName":"notify","Id":3,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entity":{"key":"k","name":"Counter"},"EventType":"EntityCalled","Id":4,"Operation":"add","Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entity":{"key":"k","name":"Counter"},"EventType":"EntitySignaled","Id":5,"Operation":"reset","Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"Entities":[{"key":"a","name":"Lock"},{"key":"b","name":"Lock"}],"EventType":"LocksRequested","Id":6,"Timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskCompleted","FunctionName":"charge","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":0,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"TimerFired","Id":1,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"SubOrchestrationFailed","Failure":{"cause":{"cause":null,"details":null,"kind":"Application","message":"no stock"},"details":"{\"code\": 7}","kind":"SubOrchestrationFailed","message":"ship failed"},"FunctionName":"ship","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":2,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"EntityCompleted","Id":4,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"Entities":[{"key":"a","name":"Lock"},{"key":"b","name":"Lock"}],"EventType":"LocksGranted","Id":6,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"SubOrchestrationCompleted","FunctionName":"pack","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":7,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"TaskFailed","Failure":{"cause":null,"details":null,"kind":"Panic","message":"refund panicked"},"FunctionName":"refund","ScheduledTime":"2026-01-01T00:00:00Z","TaskScheduledId":8,"Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"EventRaised","Name":"Approval","Timestamp":"2026-01-01T00:00:01Z"}"#,
            r#"{"EventType":"LocksReleased","Id":6,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"EntityFailed","Failure":{"cause":null,"details":null,"kind":"EntityOperationFailed","message":"boom"},"Id":9,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"TimerCreated","FireAt":1767229200000,"Id":10,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"TimerCancelled","Id":10,"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionSuspended","Reason":"pause","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionResumed","Reason":"go","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ContinuedAsNew","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionCompleted","Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionFailed","Failure":{"cause":null,"details":null,"kind":"Application","message":"bad"},"Timestamp":"2026-01-01T00:00:02Z"}"#,
            r#"{"EventType":"ExecutionTerminated","Reason":"stop","Timestamp":"2026-01-01T00:00:02Z"}"#,
        ];
        assert_eq!(history_wire(&every_kind(), false), array(&expected));
    }

    #[test]
    fn history_of_a_running_execution() {
        let with_output = [
            r#"{"EventType":"ExecutionStarted","FunctionName":"order","Input":"not json","Parent":null,"Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"SubOrchestrationCreated","FunctionName":"ship","Id":0,"Input":7,"Instance":"child-1","Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskCompleted","Result":1,"TaskScheduledId":5,"Timestamp":"1970-01-01T00:00:00Z"}"#,
        ];
        assert_eq!(history_wire(&running(), true), array(&with_output));
        let without_output = [
            r#"{"EventType":"ExecutionStarted","FunctionName":"order","Parent":null,"Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"SubOrchestrationCreated","FunctionName":"ship","Id":0,"Instance":"child-1","Timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"EventType":"TaskCompleted","TaskScheduledId":5,"Timestamp":"1970-01-01T00:00:00Z"}"#,
        ];
        assert_eq!(history_wire(&running(), false), array(&without_output));
    }

    #[test]
    fn status_shows_the_output_of_a_completed_instance() {
        let completed = InstanceStatus {
            output: Some(json("[1, 2]")),
            custom_status: Some(json(r#" "done" "#)),
            failure: Some(failure(FailureKind::Application, "ignored")),
            ..status(RuntimeStatus::Completed)
        };
        assert_eq!(
            status_wire(&completed, true, None),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Completed","input":{"n": 1},"customStatus":"done","output":[1, 2],"createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z"}"#
        );
    }

    #[test]
    fn status_shows_the_failure_or_the_reason_as_output() {
        let cause = failure(FailureKind::Application, "card declined");
        let failed = InstanceStatus {
            failure: Some(Failure {
                cause: Some(Box::new(cause)),
                ..failure(FailureKind::ActivityFailed, "activity `charge` failed")
            }),
            ..status(RuntimeStatus::Failed)
        };
        assert_eq!(
            status_wire(&failed, true, None),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Failed","input":{"n": 1},"customStatus":null,"output":"activity `charge` failed: card declined","createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z"}"#
        );
        let terminated = InstanceStatus {
            failure: Some(Failure {
                cause: Some(Box::new(failure(FailureKind::Application, "hidden"))),
                ..failure(FailureKind::Terminated, "stop \"now\"")
            }),
            ..status(RuntimeStatus::Terminated)
        };
        assert_eq!(
            status_wire(&terminated, true, None),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Terminated","input":{"n": 1},"customStatus":null,"output":"stop \"now\"","createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z"}"#
        );
    }

    #[test]
    fn status_with_history_and_without_input() {
        assert_eq!(
            status_wire(&status(RuntimeStatus::Running), false, Some(&running())),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Running","input":null,"customStatus":null,"output":null,"createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z","historyEvents":[{"EventType":"ExecutionStarted","FunctionName":"order","Parent":null,"Timestamp":"1970-01-01T00:00:00Z"},{"EventType":"SubOrchestrationCreated","FunctionName":"ship","Id":0,"Instance":"child-1","Timestamp":"1970-01-01T00:00:00Z"},{"EventType":"TaskCompleted","TaskScheduledId":5,"Timestamp":"1970-01-01T00:00:00Z"}]}"#
        );
        assert_eq!(
            status_wire(&status(RuntimeStatus::Pending), true, Some(&[])),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Pending","input":{"n": 1},"customStatus":null,"output":null,"createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z","historyEvents":[]}"#
        );
        assert_eq!(
            status_wire(&status(RuntimeStatus::Suspended), true, None),
            r#"{"name":"order","instanceId":"order-1","runtimeStatus":"Suspended","input":{"n": 1},"customStatus":null,"output":null,"createdTime":"2026-01-01T00:00:00Z","lastUpdatedTime":"2026-01-01T00:01:01Z"}"#
        );
    }

    #[test]
    fn entity_bodies_with_and_without_state() {
        let stateful = entity_status(Some(r#"{"value": 3}"#));
        assert_eq!(
            entity_wire(&stateful, true),
            r#"{"entityId":{"name":"Counter","key":"k"},"lastOperationTime":"2026-01-01T00:00:01Z","state":{"value": 3}}"#
        );
        assert_eq!(
            entity_wire(&stateful, false),
            r#"{"entityId":{"name":"Counter","key":"k"},"lastOperationTime":"2026-01-01T00:00:01Z"}"#
        );
        assert_eq!(
            entity_wire(&entity_status(None), true),
            r#"{"entityId":{"name":"Counter","key":"k"},"lastOperationTime":"2026-01-01T00:00:01Z"}"#
        );
    }

    #[test]
    fn check_status_payloads_with_and_without_code() {
        let base = "http://h:1/runtime/webhooks/durabletask";
        let plain = CheckStatusResponse::new(id("a:b"), base.to_owned(), None);
        assert_eq!(
            check_status_wire(&plain),
            r#"{"id":"a:b","statusQueryGetUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab","sendEventPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/raiseEvent/{eventName}","terminatePostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/terminate?reason={text}","purgeHistoryDeleteUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab","restartPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/restart","suspendPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/suspend?reason={text}","resumePostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/resume?reason={text}"}"#
        );
        let with_code = CheckStatusResponse::new(id("a:b"), base.to_owned(), Some("k y&z".into()));
        assert_eq!(
            check_status_wire(&with_code),
            r#"{"id":"a:b","statusQueryGetUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab?code=k%20y%26z","sendEventPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/raiseEvent/{eventName}?code=k%20y%26z","terminatePostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/terminate?reason={text}&code=k%20y%26z","purgeHistoryDeleteUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab?code=k%20y%26z","restartPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/restart?code=k%20y%26z","suspendPostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/suspend?reason={text}&code=k%20y%26z","resumePostUri":"http://h:1/runtime/webhooks/durabletask/instances/a%3Ab/resume?reason={text}&code=k%20y%26z"}"#
        );
    }

    #[test]
    fn purge_counts() {
        assert_eq!(purged_wire(3), r#"{"instancesDeleted":3}"#);
    }
}
