//! The routes of the management API. Each handler validates what it was sent (a bad value
//! is a `400` that says what to send instead), calls the [`Client`], and maps its outcome
//! to Durable Functions' status codes.

use super::check_status::{CheckStatusResponse, base_url, check_status};
use super::model::{EntityStatusBody, InstanceStatusBody, PurgedBody, history_bodies, raw};
use super::shared::{Api, OPENAPI_PATH};
use super::time::parse_time;
use super::wire::{Problem, encode, json_response, parse_bool, parse_seconds, raw_json_response};
use crate::client;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use durable_types::{EntityId, InstanceId, InstanceQuery, Json, RuntimeStatus, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;

type Params = RawQuery;
type Body = Result<Bytes, BytesRejection>;
type Answer = Result<Response, Problem>;

const CONTINUATION: &str = "x-ms-continuation-token";
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 10_000;

/// The query parameters that may be given more than once (as Durable Functions allows):
/// their values are joined with commas.
const LIST_PARAMS: &[&str] = &["runtimeStatus"];

/// The query parameters by name, percent-decoded. Bytes that do not decode to UTF-8 are
/// refused, as in paths; a parameter given twice is refused unless it is a list.
fn params(RawQuery(query): Params) -> Result<BTreeMap<String, String>, Problem> {
    let mut params = BTreeMap::<String, String>::new();
    for pair in query.as_deref().unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (query_text(name)?, query_text(value)?);
        match params.get_mut(&name) {
            Some(joined) if LIST_PARAMS.contains(&name.as_str()) => {
                joined.push(',');
                joined.push_str(&value);
            }
            Some(_) => {
                return Err(Problem::bad_request(format!(
                    "query parameter `{name}` is given more than once; give it once"
                )));
            }
            None => {
                params.insert(name, value);
            }
        }
    }
    Ok(params)
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

/// A query string's name or value, decoded (`+` is a space, `%XX` a byte).
fn query_text(raw: &str) -> Result<String, Problem> {
    let bad = || {
        Problem::bad_request(format!(
            "bad query string: `{raw}` is not percent-encoded UTF-8"
        ))
    };
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw.bytes();
    while let Some(byte) = rest.next() {
        bytes.push(match byte {
            b'+' => b' ',
            b'%' => {
                let high = rest.next().and_then(hex_digit).ok_or_else(bad)?;
                let low = rest.next().and_then(hex_digit).ok_or_else(bad)?;
                high << 4 | low
            }
            other => other,
        });
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// A request's body: JSON (sent with `Content-Type: application/json` or a `+json`
/// type, or with none), within the API's size limit. Every endpoint that takes a body
/// takes it so.
fn body(api: &Api, headers: &HeaderMap, body: Body) -> Result<Bytes, Problem> {
    if headers.contains_key(header::CONTENT_TYPE) && !is_json(headers) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON: send it with `Content-Type: application/json` (or no Content-Type)",
        ));
    }
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                status,
                format!(
                    "the request body is larger than this server accepts: {} bytes at most (http::Options::max_body_bytes)",
                    api.body_limit
                ),
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
        | E::UnknownOperation { .. }
        | E::InvalidEntityInput { .. }
        | E::InvalidInstanceId(_)
        | E::InstanceIdTooLong { .. }
        | E::TooLong { .. }
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
            body(&api, &headers, payload)?,
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
            body(&api, &headers, payload)?,
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
    // Every parameter is checked before the instance starts.
    let wait = wait_time(&query)?;
    let fail = fail_on_failure(&query)?;
    let instance = api
        .client
        .start_by_name(name, id.as_ref().map(InstanceId::as_str), input.as_str())
        .await
        .map_err(|error| match error {
            client::Error::NotRegistered { name, .. } => Problem::bad_request(format!(
                "no orchestrator named `{name}` is registered with this runtime"
            )),
            other => client_error(other),
        })?;
    let accepted = check_status(api, headers, uri, "/orchestrators/", instance.clone());
    wait_or_accept(api, fail, wait, &instance, accepted).await
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
    fail: bool,
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
            let code = if fail && status.runtime_status == RuntimeStatus::Failed {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            Ok(json_response(
                code,
                &InstanceStatusBody::of(&status, true, None),
            ))
        }
        Err(client::Error::Timeout { .. }) => Ok(accepted.into_response()),
        Err(error) => Err(client_error(error)),
    }
}

// ---------------------------------------------------------------------------------------
// Status and lists

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
        let fail = fail_on_failure(&query)?;
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
            .map(|history| history_bodies(history, show_output));
        let body = InstanceStatusBody::of(&status, show_input, history);
        let code = status_code(status.runtime_status, fail);
        let response = json_response(code, &body);
        if code != StatusCode::ACCEPTED {
            return Ok(response);
        }
        let location = format!(
            "{}/instances/{}{}",
            base_url(&api, &headers, &uri, "/instances/"),
            encode(id.as_str()),
            uri.query().map_or_else(String::new, |q| format!("?{q}"))
        );
        Ok::<_, Problem>(poll_again(response, &location))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// `returnInternalServerErrorOnFailure`: answer a failed instance with `500`.
fn fail_on_failure(query: &BTreeMap<String, String>) -> Result<bool, Problem> {
    let name = "returnInternalServerErrorOnFailure";
    Ok(parse_bool(name, query.get(name))?.unwrap_or(false))
}

/// The status code of an instance's status: `202` while it has not ended, `500` for a
/// failure when the request asked for it, else `200`.
fn status_code(status: RuntimeStatus, fail: bool) -> StatusCode {
    match status {
        RuntimeStatus::Pending | RuntimeStatus::Running | RuntimeStatus::Suspended => {
            StatusCode::ACCEPTED
        }
        RuntimeStatus::Failed if fail => StatusCode::INTERNAL_SERVER_ERROR,
        RuntimeStatus::Failed | RuntimeStatus::Completed | RuntimeStatus::Terminated => {
            StatusCode::OK
        }
    }
}

/// `response` as an answer to poll again: at `location`, in 5 seconds.
fn poll_again(mut response: Response, location: &str) -> Response {
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
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
        let bodies: Vec<InstanceStatusBody<'_>> = page
            .instances
            .iter()
            .map(|status| InstanceStatusBody::of(status, show_input, None))
            .collect();
        let response = json_response(StatusCode::OK, &bodies);
        Ok::<_, Problem>(with_continuation(response, page.continuation))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
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
            &PurgedBody {
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
            &PurgedBody {
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
        let data = client::once_encoded(
            json_body(&body(&api, &headers, payload)?, "event data")?,
            None,
        );
        let data = raw(&data).ok_or_else(|| Problem::bad_request("the event data is not JSON"))?;
        api.client
            .raise_event(&id, event, data)
            .await
            .map_err(client_error)?;
        Ok::<_, Problem>(accepted())
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
        let fail = fail_on_failure(&query)?;
        let started = api
            .client
            .restart(&id, new_id)
            .await
            .map_err(client_error)?;
        let accepted = check_status(&api, &headers, &uri, "/instances/", started.clone());
        wait_or_accept(&api, fail, wait, &started, accepted).await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------------------------------
// Entities

pub(crate) async fn signal_entity(
    State(api): State<Arc<Api>>,
    names: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
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
        let input = client::once_encoded(
            json_body(&body(&api, &headers, payload)?, "operation input")?,
            None,
        );
        api.client
            .signal_entity(&entity, operation, input)
            .await
            .map_err(|error| entity_error(error, &name))?;
        Ok::<_, Problem>(accepted())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// A client error about entity type `name`, as a problem: an unregistered type is a bad
/// request, whose remedy (the runtime builder) is not the caller's to apply.
fn entity_error(error: client::Error, name: &str) -> Problem {
    match error {
        client::Error::NotRegistered { .. } => Problem::bad_request(format!(
            "no entity type named `{name}` is registered with this runtime"
        )),
        other => client_error(other),
    }
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
            .map_err(|error| entity_error(error, &name))?
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
            .map_err(|error| entity_error(error, &name))?;
        Ok::<_, Problem>(accepted())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
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
        let bodies: Vec<EntityStatusBody<'_>> = page
            .entities
            .iter()
            .map(|status| EntityStatusBody::of(status, fetch_state))
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
            OPENAPI_PATH
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
            OPENAPI_PATH
        ),
    )
    .into_response()
}
