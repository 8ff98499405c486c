//! The HTTP management API (`durable::http`) from the outside, as a Durable Functions
//! client uses it: start, poll, raise events, terminate, suspend, resume, restart, purge,
//! list, entities, keys, and every kind of bad request.
//!
//! Each test runs one in-memory runtime and reaches it two ways: over a real socket
//! (`durable::http::serve` on 127.0.0.1, spoken to by the small HTTP/1.1 client at the
//! end of this file) and through the router itself (`tower::ServiceExt::oneshot`). Answers
//! are checked field by field, and so is the durable state behind them (through the
//! `Client`), not only the status codes.

use axum::extract::State;
use durable::http::{
    self, BASE_PATH, CheckStatusResponse, OPENAPI_PATH, Options, Server,
    create_check_status_response,
};
use durable::prelude::*;
use durable::{Client, RuntimeBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const KEY: &str = "test-key-5f0c2a";
const WAIT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(5);
const POLL_ATTEMPTS_MAX: u32 = 2_000;
const CONTINUATION: &str = "x-ms-continuation-token";
const PROBLEM_JSON: &str = "application/problem+json";

/// The fields of an instance status, without `historyEvents`.
const STATUS_FIELDS: [&str; 8] = [
    "name",
    "instanceId",
    "runtimeStatus",
    "input",
    "customStatus",
    "output",
    "createdTime",
    "lastUpdatedTime",
];

// ---------------------------------------------------------------------------------------
// What the runtime runs

#[activity]
async fn double_it(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x * 2)
}

/// Completes at once (one activity) with its input doubled.
#[orchestrator]
async fn double(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ctx.call_activity(double_it, x).await
}

const WAITING: &str = "waiting for approval";

/// Runs until it receives the `Approval` event (a bool).
#[orchestrator]
async fn approval(ctx: OrchestrationContext, request: String) -> Result<String, Error> {
    ctx.set_custom_status(WAITING)?;
    let approved: bool = ctx.wait_for_event("Approval").await?;
    let verdict = if approved { "approved" } else { "rejected" };
    Ok(format!("{request}: {verdict}"))
}

/// Always fails.
#[orchestrator]
async fn refuse(_ctx: OrchestrationContext, _input: ()) -> Result<(), Error> {
    Err(Error::msg("refused on purpose"))
}

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: i64) {
        self.value += amount;
    }

    fn get(&self) -> i64 {
        self.value
    }
}

async fn start_runtime() -> Runtime {
    start_runtime_with(Runtime::builder()).await
}

async fn start_runtime_with(builder: RuntimeBuilder) -> Runtime {
    builder
        .in_memory()
        .register(double_it)
        .register(double)
        .register(approval)
        .register(refuse)
        .register_entity::<Counter>()
        .start()
        .await
        .expect("the runtime starts")
}

// ---------------------------------------------------------------------------------------
// The harness: one runtime, reached over a socket and through the router

struct Harness {
    runtime: Runtime,
    server: Server,
    socket: Api,
    router: Api,
}

impl Harness {
    /// Served with the key [`KEY`].
    async fn start() -> Harness {
        Harness::with_options(Options::with_key(KEY), Some(KEY)).await
    }

    /// Served with `options`; `key` is what the test's requests send by default.
    async fn with_options(options: Options, key: Option<&str>) -> Harness {
        Harness::serve(start_runtime().await, options, key).await
    }

    async fn serve(runtime: Runtime, options: Options, key: Option<&str>) -> Harness {
        let server = http::serve(runtime.client(), ([127, 0, 0, 1], 0), options.clone())
            .await
            .expect("the API is served");
        let socket = Api {
            transport: Transport::Socket(server.local_addr()),
            key: key.map(str::to_owned),
        };
        let router = Api {
            transport: Transport::Router(http::router(runtime.client(), options)),
            key: key.map(str::to_owned),
        };
        Harness {
            runtime,
            server,
            socket,
            router,
        }
    }

    fn client(&self) -> Client {
        self.runtime.client()
    }

    fn transports(&self) -> [&Api; 2] {
        [&self.socket, &self.router]
    }

    async fn stop(self) {
        self.server.shutdown().await;
        self.runtime.shutdown().await;
    }
}

/// One way to reach the API, and the key its requests carry unless told otherwise.
struct Api {
    transport: Transport,
    key: Option<String>,
}

enum Transport {
    /// A real TCP connection per request.
    Socket(SocketAddr),
    /// `oneshot` on the router, with this `Host` header.
    Router(axum::Router),
}

/// The `Host` the router transport sends: the management URLs must be built from it.
const ROUTER_HOST: &str = "api.test";

impl Api {
    /// Which transport, for instance ids and failure messages.
    fn name(&self) -> &'static str {
        match self.transport {
            Transport::Socket(_) => "socket",
            Transport::Router(_) => "router",
        }
    }

    fn host(&self) -> String {
        match &self.transport {
            Transport::Socket(addr) => addr.to_string(),
            Transport::Router(_) => ROUTER_HOST.to_owned(),
        }
    }

    /// `http://host/runtime/webhooks/durabletask`: what every management URL starts with.
    fn base_url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.host())
    }

    /// The path and query of a URL this API handed out.
    fn path_of(&self, url: &str) -> String {
        let origin = format!("http://{}", self.host());
        url.strip_prefix(&origin)
            .unwrap_or_else(|| panic!("{}: `{url}` is not on {origin}", self.name()))
            .to_owned()
    }

    async fn send(&self, call: Call) -> Reply {
        let call = match (&self.key, call.with_key) {
            (Some(key), true) => call.header("Authorization", &format!("Bearer {key}")),
            _ => call,
        };
        match &self.transport {
            Transport::Socket(addr) => send_over_socket(*addr, &self.host(), &call).await,
            Transport::Router(router) => send_to_router(router, &call).await,
        }
    }

    /// Starts `orchestrator` with `input` over HTTP: the id from its 202 answer.
    async fn start(&self, orchestrator: &str, input: &Value) -> String {
        let reply = self
            .send(Call::post(&format!("orchestrators/{orchestrator}")).json(input))
            .await;
        assert_check_status(self, &reply)
    }
}

/// A path under the API's base: `api_path("instances")`.
fn api_path(rest: &str) -> String {
    format!("{BASE_PATH}/{rest}")
}

/// One request.
#[derive(Clone, Debug)]
struct Call {
    method: &'static str,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    with_key: bool,
}

impl Call {
    /// A request to `target`, a path (with query) from the server's root.
    fn to(method: &'static str, target: impl Into<String>) -> Call {
        Call {
            method,
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
            with_key: true,
        }
    }

    /// `GET` of a path under the API's base.
    fn get(rest: &str) -> Call {
        Call::to("GET", api_path(rest))
    }

    fn post(rest: &str) -> Call {
        Call::to("POST", api_path(rest))
    }

    fn delete(rest: &str) -> Call {
        Call::to("DELETE", api_path(rest))
    }

    fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A JSON body, with `Content-Type: application/json`.
    fn json(self, body: &Value) -> Call {
        self.json_text(&body.to_string())
    }

    /// A body sent as JSON whatever it holds.
    fn json_text(self, text: &str) -> Call {
        self.header("Content-Type", "application/json")
            .body(text.as_bytes())
    }

    fn body(mut self, bytes: impl Into<Vec<u8>>) -> Call {
        self.body = bytes.into();
        self
    }

    /// Sends `key` as a bearer token, instead of the API's default key.
    fn bearer(self, key: &str) -> Call {
        self.without_key()
            .header("Authorization", &format!("Bearer {key}"))
    }

    /// Sends no key (the API's default key is not added).
    fn without_key(mut self) -> Call {
        self.with_key = false;
        self
    }
}

/// One response, whichever transport carried it.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(found, _)| found.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text()))
    }

    /// Asserts the status code, showing the body when it is not.
    #[track_caller]
    fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {} with {}",
            self.status,
            self.text()
        );
        self
    }
}

// ---------------------------------------------------------------------------------------
// What answers must look like

/// The check-status payload of `id` under `base`, with `code` when the request sent one.
fn expected_check_status(base: &str, id: &str, code: Option<&str>) -> Value {
    let instance = format!("{base}/instances/{}", percent_encoded(id));
    let plain = code.map_or_else(String::new, |code| format!("?code={code}"));
    let reason = match code {
        Some(code) => format!("?reason={{text}}&code={code}"),
        None => "?reason={text}".to_owned(),
    };
    json!({
        "id": id,
        "statusQueryGetUri": format!("{instance}{plain}"),
        "sendEventPostUri": format!("{instance}/raiseEvent/{{eventName}}{plain}"),
        "terminatePostUri": format!("{instance}/terminate{reason}"),
        "purgeHistoryDeleteUri": format!("{instance}{plain}"),
        "restartPostUri": format!("{instance}/restart{plain}"),
        "suspendPostUri": format!("{instance}/suspend{reason}"),
        "resumePostUri": format!("{instance}/resume{reason}"),
    })
}

/// `text` as a URL path segment: every byte but RFC 3986's unreserved ones as `%XX`.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// A `202` check-status answer on `api` with exactly the expected payload, `Location` and
/// `Retry-After: 10`; returns the instance id.
#[track_caller]
fn assert_check_status(api: &Api, reply: &Reply) -> String {
    assert_check_status_at(&api.base_url(), reply, None)
}

#[track_caller]
fn assert_check_status_at(base: &str, reply: &Reply, code: Option<&str>) -> String {
    assert_eq!(
        reply.status,
        202,
        "not a check-status answer: {}",
        reply.text()
    );
    let payload = reply.json();
    let id = payload["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {payload}"))
        .to_owned();
    assert_eq!(payload, expected_check_status(base, &id, code));
    assert_eq!(
        reply.header("location"),
        payload["statusQueryGetUri"].as_str()
    );
    assert_eq!(reply.header("retry-after"), Some("10"));
    assert!(
        reply
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json")),
        "{:?}",
        reply.header("content-type")
    );
    id
}

/// An error answer: `status`, `application/problem+json`, a title and a detail.
#[track_caller]
fn assert_problem(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    assert_eq!(reply.header("content-type"), Some(PROBLEM_JSON), "{what}");
    let problem = reply.json();
    assert_eq!(problem["status"], status, "{what}: {problem}");
    let filled = |field: &str| problem[field].as_str().is_some_and(|text| !text.is_empty());
    assert!(filled("title") && filled("detail"), "{what}: {problem}");
}

/// `yyyy-MM-ddTHH:mm:ssZ`, as Durable Functions writes times.
#[track_caller]
fn assert_durable_time(time: &Value) {
    let text = time
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {time}"));
    let shape_ok = text.len() == 20
        && text.bytes().enumerate().all(|(at, byte)| match at {
            4 | 7 => byte == b'-',
            10 => byte == b'T',
            13 | 16 => byte == b':',
            19 => byte == b'Z',
            _ => byte.is_ascii_digit(),
        });
    assert!(shape_ok, "not yyyy-MM-ddTHH:mm:ssZ: {text}");
}

fn field_names(object: &Value) -> BTreeSet<&str> {
    object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object}"))
        .keys()
        .map(String::as_str)
        .collect()
}

#[track_caller]
fn assert_status_fields(status: &Value, extra: &[&str]) {
    let expected: BTreeSet<&str> = STATUS_FIELDS.iter().chain(extra).copied().collect();
    assert_eq!(field_names(status), expected, "{status}");
    assert_durable_time(&status["createdTime"]);
    assert_durable_time(&status["lastUpdatedTime"]);
}

fn ids_of(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|status| status["instanceId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn set_of(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// Asks `probe` until it answers `Some`, a bounded number of times.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..POLL_ATTEMPTS_MAX {
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    panic!("{what}: still not after {POLL_ATTEMPTS_MAX} attempts");
}

/// Waits until `id` has run its first turn (its custom status is set): `Running`.
async fn until_waiting(client: &Client, id: &str) {
    eventually("the instance waits for its event", async || {
        let status = client.status(id).await.expect("status")?;
        (status.custom_status_as::<String>().ok()?? == WAITING).then_some(())
    })
    .await;
}

async fn wait_for_status(client: &Client, id: &str) -> durable::InstanceStatus {
    client
        .status(id)
        .await
        .expect("status")
        .unwrap_or_else(|| panic!("{id} is not stored"))
}

async fn wait_for_end(client: &Client, id: &str) -> durable::InstanceStatus {
    client
        .wait_for_completion(id, WAIT)
        .await
        .unwrap_or_else(|error| panic!("{id} does not end: {error}"))
}

// ---------------------------------------------------------------------------------------
// Starting and polling

#[tokio::test(flavor = "multi_thread")]
async fn start_poll_and_raise_through_the_payload_urls() {
    let harness = Harness::start().await;
    for api in harness.transports() {
        let started = api
            .send(Call::post("orchestrators/approval").json(&json!("new laptop")))
            .await;
        let id = assert_check_status(api, &started);
        let payload = started.json();
        let location = api.path_of(started.header("location").expect("Location"));

        // While it runs: 202, the same Location, Retry-After 5, and the status so far.
        let running = eventually("the status shows the custom status", async || {
            let reply = api.send(Call::to("GET", &location)).await.expect(202);
            assert_eq!(
                reply.header("location"),
                payload["statusQueryGetUri"].as_str()
            );
            assert_eq!(reply.header("retry-after"), Some("5"));
            let status = reply.json();
            (status["customStatus"] == WAITING).then_some(status)
        })
        .await;
        assert_status_fields(&running, &[]);
        assert_eq!(running["name"], "approval");
        assert_eq!(running["instanceId"], id.as_str());
        assert_eq!(running["runtimeStatus"], "Running");
        assert_eq!(running["input"], "new laptop");
        assert_eq!(running["output"], Value::Null);

        let raise_url = payload["sendEventPostUri"]
            .as_str()
            .expect("sendEventPostUri")
            .replace("{eventName}", "Approval");
        let raised = api
            .send(Call::to("POST", api.path_of(&raise_url)).json(&json!(true)))
            .await
            .expect(202);
        assert!(raised.body.is_empty(), "{}", raised.text());

        let done = eventually("the instance completes", async || {
            let reply = api.send(Call::to("GET", &location)).await;
            (reply.status == 200).then_some(reply)
        })
        .await;
        assert_eq!(done.header("location"), None);
        let status = done.json();
        assert_status_fields(&status, &[]);
        assert_eq!(status["runtimeStatus"], "Completed");
        assert_eq!(status["output"], "new laptop: approved");
        assert_eq!(status["customStatus"], WAITING);
        let stored = wait_for_status(&harness.client(), &id).await;
        assert_eq!(
            stored.output_as::<String>().expect("a string output"),
            Some("new laptop: approved".to_owned())
        );
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_history_and_hides_input_on_request() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        let id = format!("{}-history", api.name());
        client
            .start_with_id(approval, &id, "desk".to_owned())
            .await
            .expect("started");
        client
            .raise_event(&id, "Approval", true)
            .await
            .expect("raised");
        wait_for_end(&client, &id).await;
        let status_of = |query: &str| Call::get(&format!("instances/{id}{query}"));

        let plain = api.send(status_of("")).await.expect(200).json();
        assert_status_fields(&plain, &[]);
        assert_eq!(plain["input"], "desk");
        let hidden = api
            .send(status_of("?showInput=false"))
            .await
            .expect(200)
            .json();
        assert_status_fields(&hidden, &[]);
        assert_eq!(hidden["input"], Value::Null);
        assert_eq!(hidden["output"], "desk: approved");

        let with_history = api
            .send(status_of("?showHistory=true"))
            .await
            .expect(200)
            .json();
        assert_status_fields(&with_history, &["historyEvents"]);
        let events = with_history["historyEvents"].as_array().expect("a list");
        let kinds: Vec<&str> = events
            .iter()
            .map(|event| event["EventType"].as_str().unwrap_or_default())
            .collect();
        let started_at = kinds.iter().position(|kind| *kind == "ExecutionStarted");
        let raised_at = kinds.iter().position(|kind| *kind == "EventRaised");
        assert!(started_at.is_some() && started_at < raised_at, "{kinds:?}");
        assert_eq!(kinds.last(), Some(&"ExecutionCompleted"), "{kinds:?}");
        for event in events {
            assert_durable_time(&event["Timestamp"]);
        }

        assert!(!kinds.contains(&"OrchestratorStarted"), "{kinds:?}");

        // Payloads appear in the history only with showHistoryOutput=true.
        let bare = execution_started(&with_history);
        assert_eq!(bare["FunctionName"], "approval", "{bare}");
        assert_eq!(bare.get("Input"), None, "{bare}");
        let query = "?showHistory=true&showHistoryOutput=true";
        let with_payloads = api.send(status_of(query)).await.expect(200).json();
        let full = execution_started(&with_payloads);
        assert_eq!(full["Input"], "desk", "{full}");

        // An activity's scheduling is folded into its completion, as Durable Functions
        // shows it.
        let chained = format!("{}-chained", api.name());
        client
            .start_with_id(double, &chained, 4)
            .await
            .expect("started");
        wait_for_end(&client, &chained).await;
        let history = api
            .send(Call::get(&format!(
                "instances/{chained}?showHistory=true&showHistoryOutput=true"
            )))
            .await
            .expect(200)
            .json();
        let events = history["historyEvents"].as_array().expect("a list");
        assert!(
            !events
                .iter()
                .any(|event| event["EventType"] == "TaskScheduled"),
            "{events:?}"
        );
        let completed = events
            .iter()
            .find(|event| event["EventType"] == "TaskCompleted")
            .expect("a TaskCompleted event");
        assert_eq!(completed["FunctionName"], "double_it", "{completed}");
        assert_eq!(completed["Result"], 8, "{completed}");
        assert_durable_time(&completed["ScheduledTime"]);
        let ended = events.last().expect("events");
        assert_eq!(ended["EventType"], "ExecutionCompleted", "{ended}");
        assert_eq!(ended["Result"], 8, "{ended}");
    }
    harness.stop().await;
}

/// The `ExecutionStarted` event of a status's `historyEvents`.
fn execution_started(status: &Value) -> Value {
    let events = status["historyEvents"].as_array().expect("a list");
    let found = events
        .iter()
        .find(|event| event["EventType"] == "ExecutionStarted");
    found.expect("an ExecutionStarted event").clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn start_under_an_id_of_your_own() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        let name = api.name();
        let plain_id = format!("{name}-plain");
        let reply = api
            .send(Call::post(&format!("orchestrators/double/{plain_id}")).json(&json!(1)))
            .await;
        assert_eq!(assert_check_status(api, &reply), plain_id);
        let ended = wait_for_end(&client, &plain_id).await;
        assert_eq!(ended.output_as::<u64>().expect("a number"), Some(2));

        // An id that needs escaping in a URL: escaped in every URL, and they work.
        let spaced_id = format!("{name} order é");
        let path = format!("orchestrators/double/{}", percent_encoded(&spaced_id));
        let reply = api.send(Call::post(&path).json(&json!(2))).await;
        assert_eq!(assert_check_status(api, &reply), spaced_id);
        let status_url = reply.header("location").expect("Location").to_owned();
        assert!(status_url.ends_with("%20order%20%C3%A9"), "{status_url}");
        wait_for_end(&client, &spaced_id).await;
        let status = api
            .send(Call::to("GET", api.path_of(&status_url)))
            .await
            .expect(200)
            .json();
        assert_eq!(status["instanceId"], spaced_id.as_str());
        assert_eq!(status["output"], 4);
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn start_and_wait_answers_the_output_in_time_or_the_check_status() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        let name = api.name();
        // Done in time: 200 with the raw output.
        let done_id = format!("{name}-in-time");
        let done = api
            .send(
                Call::post(&format!(
                    "orchestrators/double/{done_id}?timeout=20&pollingInterval=0.05"
                ))
                .json(&json!(21)),
            )
            .await
            .expect(200);
        assert_eq!(done.text(), "42");
        assert!(
            done.header("content-type")
                .is_some_and(|value| value.starts_with("application/json"))
        );

        // Not done in time: the 202 check-status answer, and it still runs.
        let late_id = format!("{name}-late");
        let late = api
            .send(
                Call::post(&format!(
                    "orchestrators/approval/{late_id}?timeout=0.1&pollingInterval=0.05"
                ))
                .json(&json!("x")),
            )
            .await;
        assert_eq!(assert_check_status(api, &late), late_id);
        let still = client.status(&late_id).await.expect("status");
        assert!(!still.expect("stored").is_ended());

        // Failed in time: its status, 200 unless asked for a 500.
        let failed_id = format!("{name}-failed");
        let failed = api
            .send(Call::post(&format!(
                "orchestrators/refuse/{failed_id}?timeout=20&pollingInterval=0.05"
            )))
            .await
            .expect(200)
            .json();
        assert_status_fields(&failed, &[]);
        assert_eq!(failed["runtimeStatus"], "Failed");
        let error = failed["output"].as_str().expect("the error as output");
        assert!(error.contains("refused on purpose"), "{error}");
        let asked_id = format!("{name}-failed-500");
        let asked = api
            .send(Call::post(&format!(
                "orchestrators/refuse/{asked_id}?timeout=20&pollingInterval=0.05&returnInternalServerErrorOnFailure=true"
            )))
            .await
            .expect(500);
        assert_eq!(asked.json()["runtimeStatus"], "Failed");
    }
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------
// Commands to an instance

#[tokio::test(flavor = "multi_thread")]
async fn raise_event_reaches_a_waiting_instance_and_refuses_the_rest() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        let id = format!("{}-raise", api.name());
        client
            .start_with_id(approval, &id, "trip".to_owned())
            .await
            .expect("started");
        let raise = || Call::post(&format!("instances/{id}/raiseEvent/Approval"));

        // (Without a Content-Type the body is taken as JSON: see http_compat.rs.)
        let text = api
            .send(raise().header("Content-Type", "text/plain").body("true"))
            .await;
        assert_problem(&text, 415, "an event sent as text/plain");
        let broken = api.send(raise().json_text("{not json")).await;
        assert_problem(&broken, 400, "an event that is not JSON");
        assert!(!wait_for_status(&client, &id).await.is_ended());

        api.send(
            raise()
                .header("Content-Type", "application/json; charset=utf-8")
                .body("true"),
        )
        .await
        .expect(202);
        let ended = wait_for_end(&client, &id).await;
        assert_eq!(
            ended.output_as::<String>().expect("a string"),
            Some("trip: approved".to_owned())
        );

        let late = api.send(raise().json(&json!(false))).await;
        assert_problem(&late, 410, "an event to an ended instance");
        let unknown = api
            .send(Call::post("instances/nobody/raiseEvent/Approval").json(&json!(true)))
            .await;
        assert_problem(&unknown, 404, "an event to an unknown instance");
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_ends_the_instance_with_the_reason_as_output() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        let started = api
            .send(Call::post("orchestrators/approval").json(&json!("x")))
            .await;
        let id = assert_check_status(api, &started);
        let terminate_url = started.json()["terminatePostUri"]
            .as_str()
            .expect("terminatePostUri")
            .replace("{text}", "changed%20my%20mind");
        api.send(Call::to("POST", api.path_of(&terminate_url)))
            .await
            .expect(202);

        let ended = wait_for_end(&client, &id).await;
        assert_eq!(ended.runtime_status, RuntimeStatus::Terminated);
        let status = api
            .send(Call::get(&format!("instances/{id}")))
            .await
            .expect(200)
            .json();
        assert_eq!(status["runtimeStatus"], "Terminated");
        assert_eq!(status["output"], "changed my mind");

        let again = api
            .send(Call::post(&format!("instances/{id}/terminate")))
            .await;
        assert_problem(&again, 410, "terminating an ended instance");
        let unknown = api.send(Call::post("instances/nobody/terminate")).await;
        assert_problem(&unknown, 404, "terminating an unknown instance");
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_holds_the_instance_and_resume_runs_it_on() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        let id = api.start("approval", &json!("holiday")).await;
        until_waiting(&client, &id).await;

        api.send(Call::post(&format!("instances/{id}/suspend?reason=pause")))
            .await
            .expect(202);
        let suspended = eventually("the status reads Suspended", async || {
            let reply = api.send(Call::get(&format!("instances/{id}"))).await;
            let status = reply.expect(202).json();
            (status["runtimeStatus"] == "Suspended").then_some(status)
        })
        .await;
        assert_status_fields(&suspended, &[]);

        // What arrives meanwhile is stored, not run.
        api.send(Call::post(&format!("instances/{id}/raiseEvent/Approval")).json(&json!(true)))
            .await
            .expect(202);
        let held = wait_for_status(&client, &id).await;
        assert_eq!(held.runtime_status, RuntimeStatus::Suspended);

        api.send(Call::post(&format!("instances/{id}/resume?reason=go")))
            .await
            .expect(202);
        let ended = wait_for_end(&client, &id).await;
        assert_eq!(ended.runtime_status, RuntimeStatus::Completed);
        assert_eq!(
            ended.output_as::<String>().expect("a string"),
            Some("holiday: approved".to_owned())
        );

        for command in ["suspend", "resume"] {
            let ended = api
                .send(Call::post(&format!("instances/{id}/{command}")))
                .await;
            assert_problem(&ended, 410, &format!("{command} of an ended instance"));
            let unknown = api
                .send(Call::post(&format!("instances/nobody/{command}")))
                .await;
            assert_problem(&unknown, 404, &format!("{command} of an unknown instance"));
        }
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_under_a_new_id_or_the_same() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        let id = api.start("double", &json!(21)).await;
        let first = wait_for_end(&client, &id).await;

        let restarted = api
            .send(Call::post(&format!("instances/{id}/restart")))
            .await;
        let new_id = assert_check_status(api, &restarted);
        assert_ne!(new_id, id, "restartWithNewInstanceId defaults to true");
        let rerun = wait_for_end(&client, &new_id).await;
        assert_eq!(rerun.name, "double");
        assert_eq!(rerun.output_as::<u64>().expect("a number"), Some(42));

        let same = api
            .send(Call::post(&format!(
                "instances/{id}/restart?restartWithNewInstanceId=false"
            )))
            .await;
        assert_eq!(assert_check_status(api, &same), id);
        let second = wait_for_end(&client, &id).await;
        assert!(
            second.execution > first.execution,
            "a new execution of the same id: {} then {}",
            first.execution,
            second.execution
        );
        assert_eq!(second.output_as::<u64>().expect("a number"), Some(42));

        // With `timeout` and `pollingInterval`, as a start: the output once it completes.
        let waited = api
            .send(Call::post(&format!(
                "instances/{id}/restart?timeout=10&pollingInterval=1"
            )))
            .await
            .expect(200);
        assert_eq!(waited.json(), json!(42));

        let running = api.start("approval", &json!("x")).await;
        let busy = api
            .send(Call::post(&format!(
                "instances/{running}/restart?restartWithNewInstanceId=false"
            )))
            .await;
        assert_problem(&busy, 409, "restarting a running id under the same id");
        let unknown = api.send(Call::post("instances/nobody/restart")).await;
        assert_problem(&unknown, 404, "restarting an unknown instance");
    }
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------
// Purging

#[tokio::test(flavor = "multi_thread")]
async fn purge_one_instance() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        let started = api
            .send(Call::post("orchestrators/double").json(&json!(1)))
            .await;
        let id = assert_check_status(api, &started);
        wait_for_end(&client, &id).await;
        let purge_url = started.json()["purgeHistoryDeleteUri"]
            .as_str()
            .expect("purgeHistoryDeleteUri")
            .to_owned();

        let purged = api
            .send(Call::to("DELETE", api.path_of(&purge_url)))
            .await
            .expect(200);
        assert_eq!(purged.json(), json!({"instancesDeleted": 1}));
        assert!(client.status(&id).await.expect("status").is_none());
        let gone = api.send(Call::get(&format!("instances/{id}"))).await;
        assert_problem(&gone, 404, "the status of a purged instance");
        let twice = api.send(Call::delete(&format!("instances/{id}"))).await;
        assert_problem(&twice, 404, "purging a purged instance");

        let running = api.start("approval", &json!("x")).await;
        let refused = api
            .send(Call::delete(&format!("instances/{running}")))
            .await;
        assert_problem(&refused, 409, "purging a running instance");
        assert!(client.status(&running).await.expect("status").is_some());
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_filter_deletes_what_matches() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        let name = api.name();
        let mut completed = Vec::new();
        for n in 0..3 {
            let id = format!("{name}-purge-done-{n}");
            client.start_with_id(double, &id, n).await.expect("started");
            wait_for_end(&client, &id).await;
            completed.push(id);
        }
        let failed = format!("{name}-purge-failed");
        client
            .start_with_id(refuse, &failed, ())
            .await
            .expect("started");
        wait_for_end(&client, &failed).await;
        let running = format!("{name}-purge-running");
        client
            .start_with_id(approval, &running, "x".to_owned())
            .await
            .expect("started");

        let too_old = api
            .send(Call::delete(
                "instances?createdTimeFrom=2000-01-01T00:00:00Z&createdTimeTo=2000-01-02T00:00:00Z",
            ))
            .await
            .expect(404);
        assert_eq!(too_old.json(), json!({"instancesDeleted": 0}));
        for id in &completed {
            assert!(client.status(id).await.expect("status").is_some());
        }

        let purged = api
            .send(Call::delete(
                "instances?createdTimeFrom=2000-01-01T00:00:00Z&runtimeStatus=Completed",
            ))
            .await
            .expect(200);
        assert_eq!(purged.json(), json!({"instancesDeleted": completed.len()}));
        for id in &completed {
            assert!(client.status(id).await.expect("status").is_none(), "{id}");
        }
        assert!(client.status(&failed).await.expect("status").is_some());
        assert!(client.status(&running).await.expect("status").is_some());

        let unfiltered = api
            .send(Call::delete("instances?runtimeStatus=Completed"))
            .await;
        assert_problem(
            &unfiltered,
            400,
            "purging by filter without createdTimeFrom",
        );
    }
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------
// Lists

#[tokio::test(flavor = "multi_thread")]
async fn list_pages_follow_the_continuation_header() {
    const INSTANCES: u64 = 300;
    const PAGE: usize = 50;
    let harness = Harness::start().await;
    let client = harness.client();
    let mut expected = BTreeSet::new();
    for n in 0..INSTANCES {
        let id = format!("page-{n:03}");
        client.start_with_id(double, &id, n).await.expect("started");
        expected.insert(id);
    }
    for api in harness.transports() {
        let pages = list_pages(api, &format!("instances?top={PAGE}"), 6).await;
        assert_eq!(pages.len(), 6, "{}: 300 instances, 50 a page", api.name());
        assert!(pages.iter().all(|page| page.len() == PAGE));
        let listed: Vec<String> = pages
            .iter()
            .flatten()
            .map(|status| {
                assert_status_fields(status, &[]);
                status["instanceId"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        let distinct: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(listed.len(), distinct.len(), "an instance listed twice");
        assert_eq!(distinct, expected, "instances missing");

        let forged = api
            .send(Call::get("instances?top=50").header(CONTINUATION, "not-a-token"))
            .await;
        assert_problem(
            &forged,
            400,
            "a continuation token that was never handed out",
        );
    }
    harness.stop().await;
}

/// Every page of the list at `list`, following the `x-ms-continuation-token` header; at
/// most `pages_max`. A token always leads to a page with items.
async fn list_pages(api: &Api, list: &str, pages_max: usize) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut call = Call::get(list);
        if let Some(token) = &token {
            call = call.header(CONTINUATION, token);
        }
        let reply = api.send(call).await.expect(200);
        token = reply.header(CONTINUATION).map(str::to_owned);
        let page = reply.json().as_array().cloned().expect("a list");
        if page.is_empty() {
            assert!(
                pages.is_empty() && token.is_none(),
                "{}: a continuation token led to an empty page",
                api.name()
            );
            return pages;
        }
        pages.push(page);
        assert!(
            pages.len() <= pages_max,
            "{}: over {pages_max} pages of {list}",
            api.name()
        );
        if token.is_none() {
            return pages;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_by_prefix_status_and_creation_time() {
    let harness = Harness::start().await;
    let client = harness.client();
    for n in 0..3 {
        let id = format!("done-{n}");
        client.start_with_id(double, &id, n).await.expect("started");
        wait_for_end(&client, &id).await;
    }
    for n in 0..2 {
        let id = format!("wait-{n}");
        client
            .start_with_id(approval, &id, format!("r{n}"))
            .await
            .expect("started");
        until_waiting(&client, &id).await;
    }
    client
        .start_with_id(approval, "stop-0", "r".to_owned())
        .await
        .expect("started");
    client
        .terminate("stop-0", "stop")
        .await
        .expect("terminated");
    wait_for_end(&client, "stop-0").await;

    let all = set_of(&["done-0", "done-1", "done-2", "wait-0", "wait-1", "stop-0"]);
    let cases: [(&str, BTreeSet<String>); 10] = [
        ("instanceIdPrefix=wait-", set_of(&["wait-0", "wait-1"])),
        // Repeated, as Durable Functions also takes it; empty is no filter.
        (
            "runtimeStatus=Running&runtimeStatus=Terminated",
            set_of(&["wait-0", "wait-1", "stop-0"]),
        ),
        ("runtimeStatus=", all.clone()),
        (
            "runtimeStatus=Running,Terminated",
            set_of(&["wait-0", "wait-1", "stop-0"]),
        ),
        (
            "runtimeStatus=Completed",
            set_of(&["done-0", "done-1", "done-2"]),
        ),
        (
            "runtimeStatus=Completed&instanceIdPrefix=wait-",
            set_of(&[]),
        ),
        ("createdTimeFrom=2000-01-01T00:00:00Z", all.clone()),
        ("createdTimeTo=2000-01-01T00:00:00Z", set_of(&[])),
        ("createdTimeFrom=2999-01-01", set_of(&[])),
        (
            "createdTimeFrom=2000-01-01&createdTimeTo=2999-12-31T23:59:59Z&instanceIdPrefix=done-",
            set_of(&["done-0", "done-1", "done-2"]),
        ),
    ];
    for api in harness.transports() {
        for (query, expected) in &cases {
            let reply = api.send(Call::get(&format!("instances?{query}"))).await;
            let listed = reply.expect(200).json();
            assert_eq!(&ids_of(&listed), expected, "{}: {query}", api.name());
        }
        let hidden = api
            .send(Call::get("instances?showInput=false"))
            .await
            .expect(200)
            .json();
        assert_eq!(ids_of(&hidden), all);
        for status in hidden.as_array().expect("a list") {
            assert_status_fields(status, &[]);
            assert_eq!(status["input"], Value::Null, "{status}");
        }
    }
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------
// Entities

#[tokio::test(flavor = "multi_thread")]
async fn entities_are_signalled_read_and_deleted() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        let key = format!("{}-visits", api.name());
        let entity = format!("entities/Counter/{key}");
        for amount in [5, 3] {
            let signal = Call::post(&format!("{entity}?op=add")).json(&json!(amount));
            let signalled = api.send(signal).await.expect(202);
            assert!(signalled.body.is_empty(), "{}", signalled.text());
        }
        eventually("both signals are applied", async || {
            let reply = api.send(Call::get(&entity)).await;
            (reply.status == 200 && reply.json() == json!({"value": 8})).then_some(())
        })
        .await;
        let stored = client.entity_state::<Counter>(&key).await.expect("state");
        assert_eq!(stored.map(|counter| counter.value), Some(8));

        let nobody = api.send(Call::get("entities/Counter/nobody")).await;
        assert_problem(&nobody, 404, "an entity that has no state");

        api.send(Call::delete(&entity)).await.expect(202);
        eventually("the state is deleted", async || {
            let reply = api.send(Call::get(&entity)).await;
            (reply.status == 404).then_some(())
        })
        .await;
        let stored = client.entity_state::<Counter>(&key).await.expect("state");
        assert!(stored.is_none(), "{key} still has a state");
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn entities_are_listed_by_page_with_or_without_state() {
    let harness = Harness::start().await;
    let client = harness.client();
    let keys = set_of(&["a", "b", "c"]);
    for key in &keys {
        let counter = client.entity::<Counter>(key);
        counter.signal().add(7).await.expect("signalled");
    }
    eventually("every counter has its state", async || {
        for key in &keys {
            client.entity_state::<Counter>(key).await.expect("state")?;
        }
        Some(())
    })
    .await;
    for api in harness.transports() {
        let listed = api.send(Call::get("entities")).await.expect(200).json();
        assert_eq!(entity_keys(&listed), keys, "{listed}");
        for entity in listed.as_array().expect("a list") {
            let fields = BTreeSet::from(["entityId", "lastOperationTime"]);
            assert_eq!(
                field_names(entity),
                fields,
                "no state unless fetchState=true"
            );
            assert_eq!(entity["entityId"]["name"], "counter");
            assert_durable_time(&entity["lastOperationTime"]);
        }
        let with_state = Call::get("entities/Counter?fetchState=true");
        let with_state = api.send(with_state).await.expect(200).json();
        assert_eq!(entity_keys(&with_state), keys);
        for entity in with_state.as_array().expect("a list") {
            assert_eq!(entity["state"], json!({"value": 7}), "{entity}");
        }
        let other_type = api.send(Call::get("entities/Nope")).await.expect(200);
        assert_eq!(other_type.json(), json!([]));

        let pages = list_pages(api, "entities/Counter?top=2", 2).await;
        assert_eq!(pages.len(), 2, "{}: three entities, two a page", api.name());
        let listed: Vec<Value> = pages.concat();
        assert_eq!(listed.len(), keys.len(), "an entity listed twice");
        assert_eq!(entity_keys(&Value::Array(listed)), keys);
    }
    harness.stop().await;
}

/// The keys of a list of entities.
fn entity_keys(list: &Value) -> BTreeSet<String> {
    let entities = list.as_array().expect("a list");
    let key_of = |entity: &Value| entity["entityId"]["key"].as_str().map(str::to_owned);
    entities.iter().filter_map(key_of).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn entity_requests_need_a_known_type_and_an_operation() {
    let harness = Harness::start().await;
    for api in harness.transports() {
        let cases = [
            (
                "a signal to an unknown entity type",
                Call::post("entities/Nope/k?op=add").json(&json!(1)),
            ),
            (
                "a signal without op",
                Call::post("entities/Counter/k").json(&json!(1)),
            ),
            (
                "a signal with an empty op",
                Call::post("entities/Counter/k?op=").json(&json!(1)),
            ),
            (
                "a signal with a body that is not JSON",
                Call::post("entities/Counter/k?op=add").json_text("{one"),
            ),
            (
                "a signal to an invalid key",
                Call::post("entities/Counter/bad%23key?op=add").json(&json!(1)),
            ),
            (
                "a read of an invalid key",
                Call::get("entities/Counter/bad%23key"),
            ),
            (
                "a delete of an unknown entity type",
                Call::delete("entities/Nope/k"),
            ),
            (
                "a read of an unknown entity type",
                Call::get("entities/Nope/k"),
            ),
            (
                "a signal with an unknown op",
                Call::post("entities/Counter/k?op=nope").json(&json!(1)),
            ),
            (
                "a signal whose input is not the operation's argument type",
                Call::post("entities/Counter/k?op=add").json(&json!("one")),
            ),
            ("a list with top=0", Call::get("entities?top=0")),
            (
                "a list with fetchState=maybe",
                Call::get("entities?fetchState=maybe"),
            ),
        ];
        for (what, call) in cases {
            assert_problem(&api.send(call).await, 400, what);
        }
        let unknown = Call::post("entities/Counter/k?op=nope").json(&json!(1));
        let detail = api.send(unknown).await.json()["detail"].to_string();
        assert!(detail.contains("its operations are: add, get"), "{detail}");
        let mistyped = Call::post("entities/Counter/k?op=add").json(&json!("one"));
        let detail = api.send(mistyped).await.json()["detail"].to_string();
        assert!(
            detail.contains("operation `add` of entity `counter`"),
            "{detail}"
        );
        let listed = api.send(Call::get("entities")).await.expect(200);
        assert_eq!(
            listed.json(),
            json!([]),
            "a refused signal left an entity behind"
        );
    }
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------
// Keys and the OpenAPI document

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_the_key_are_401_and_change_nothing() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        let truncated = &KEY[..KEY.len() - 1];
        let refused = [
            Call::get("instances").without_key(),
            Call::get("instances").bearer("wrong"),
            Call::get("instances").bearer(truncated),
            Call::get("instances").bearer(&format!("{KEY}x")),
            Call::get("instances")
                .without_key()
                .header("Authorization", KEY),
            Call::get("instances?code=wrong").without_key(),
        ];
        for call in refused {
            let what = format!("{call:?}");
            let reply = api.send(call).await;
            assert_problem(&reply, 401, &what);
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{what}");
        }

        let id = format!("{}-refused", api.name());
        let start = Call::post(&format!("orchestrators/double/{id}")).json(&json!(1));
        let reply = api.send(start.without_key()).await;
        assert_problem(&reply, 401, "a start without a key");
        let stored = client.status(&id).await.expect("status");
        assert!(stored.is_none(), "a refused start created the instance");
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_works_as_bearer_or_code_and_only_code_is_echoed() {
    let harness = Harness::start().await;
    for api in harness.transports() {
        let accepted = [
            Call::get("instances").bearer(KEY),
            Call::get("instances")
                .without_key()
                .header("Authorization", &format!("bearer {KEY}")),
            Call::get(&format!("instances?code={KEY}")).without_key(),
            Call::get("instances")
                .without_key()
                .header("x-functions-key", KEY),
        ];
        for call in accepted {
            let what = format!("{call:?}");
            let reply = api.send(call).await;
            assert_eq!(reply.status, 200, "{what}: {}", reply.text());
        }

        // A key sent as `code=` is carried into the management URLs; a bearer key never is.
        let start = Call::post(&format!("orchestrators/double?code={KEY}")).json(&json!(1));
        let by_code = api.send(start.without_key()).await;
        assert_check_status_at(&api.base_url(), &by_code, Some(KEY));
        let by_bearer = api
            .send(
                Call::post("orchestrators/double")
                    .bearer(KEY)
                    .json(&json!(1)),
            )
            .await;
        assert_check_status(api, &by_bearer);
        assert!(!by_bearer.text().contains(KEY), "{}", by_bearer.text());
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_served_without_a_key() {
    let harness = Harness::start().await;
    for api in harness.transports() {
        let reply = api
            .send(Call::to("GET", OPENAPI_PATH).without_key())
            .await
            .expect(200);
        assert!(
            reply
                .header("content-type")
                .is_some_and(|value| value.starts_with("application/json"))
        );
        let document = reply.json();
        let version = document["openapi"].as_str().expect("an openapi version");
        assert!(version.starts_with("3."), "{version}");
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_options_serve_without_a_key() {
    let harness = Harness::with_options(Options::anonymous(), None).await;
    let client = harness.client();
    for api in harness.transports() {
        api.send(Call::get("instances")).await.expect(200);
        let id = api.start("double", &json!(4)).await;
        let ended = wait_for_end(&client, &id).await;
        assert_eq!(ended.output_as::<u64>().expect("a number"), Some(8));
    }
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------
// Bad input

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_body_is_413_and_starts_nothing() {
    let options = Options::with_key(KEY).max_body_bytes(1024);
    let harness = Harness::with_options(options, Some(KEY)).await;
    let client = harness.client();
    for api in harness.transports() {
        let big = json!("x".repeat(4 * 1024));
        let reply = api
            .send(Call::post(&format!("orchestrators/approval/{}-big", api.name())).json(&big))
            .await;
        assert_problem(&reply, 413, "a 4 KiB body with a 1 KiB limit");

        let small = json!("x".repeat(900));
        let id = format!("{}-small", api.name());
        let fits = api
            .send(Call::post(&format!("orchestrators/approval/{id}")).json(&small))
            .await;
        assert_eq!(assert_check_status(api, &fits), id);
    }
    let stored = client
        .list(&durable::InstanceQuery::default(), 10, None)
        .await
        .expect("list");
    let ids: BTreeSet<String> = stored
        .instances
        .iter()
        .map(|status| status.instance_id.to_string())
        .collect();
    assert_eq!(ids, set_of(&["router-small", "socket-small"]));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payload_over_the_runtime_limit_is_413_and_changes_nothing() {
    let runtime = start_runtime_with(Runtime::builder().max_payload_bytes(256)).await;
    let harness = Harness::serve(runtime, Options::with_key(KEY), Some(KEY)).await;
    let client = harness.client();
    let large = json!("x".repeat(1024));
    for api in harness.transports() {
        let name = api.name();
        let start = api
            .send(Call::post(&format!("orchestrators/approval/{name}-large")).json(&large))
            .await;
        assert_problem(&start, 413, "an input over max_payload_bytes");
        let refused = client
            .status(format!("{name}-large"))
            .await
            .expect("status");
        assert!(refused.is_none(), "the refused start created the instance");

        let id = api.start("approval", &json!("small")).await;
        let event = api
            .send(Call::post(&format!("instances/{id}/raiseEvent/Approval")).json(&large))
            .await;
        assert_problem(&event, 413, "an event over max_payload_bytes");
        let signal = api
            .send(Call::post(&format!("entities/Counter/{name}?op=add")).json(&large))
            .await;
        assert_problem(&signal, 413, "a signal over max_payload_bytes");
        let state = client.entity_state::<Counter>(name).await.expect("state");
        assert!(state.is_none(), "the refused signal reached the entity");

        api.send(Call::post(&format!("instances/{id}/raiseEvent/Approval")).json(&json!(true)))
            .await
            .expect(202);
        let ended = wait_for_end(&client, &id).await;
        assert_eq!(
            ended.output_as::<String>().expect("a string"),
            Some("small: approved".to_owned()),
            "the refused event reached the instance"
        );
    }
    harness.stop().await;
}

/// A request the API must refuse with a `400` whose detail names what is wrong.
struct BadRequest {
    what: &'static str,
    call: Call,
    /// Text the problem's detail must contain.
    names: &'static str,
}

fn bad(what: &'static str, names: &'static str, call: Call) -> BadRequest {
    BadRequest { what, call, names }
}

/// Bad requests, whatever the state of the instances they name.
fn bad_requests() -> Vec<BadRequest> {
    let long_id = "a".repeat(257);
    let start_double = |query: &str| Call::post(&format!("orchestrators/double{query}"));
    vec![
        bad(
            "a body that is not JSON",
            "JSON",
            start_double("").json_text("{oops"),
        ),
        bad(
            "an input of the wrong type",
            "double",
            start_double("").json(&json!("ten")),
        ),
        bad(
            "a body that is not UTF-8",
            "UTF-8",
            start_double("").body(vec![0xff, 0xfe]),
        ),
        bad(
            "an unknown orchestrator",
            "nope",
            Call::post("orchestrators/nope"),
        ),
        bad(
            "an id starting with @",
            "@",
            start_double("/%40x").json(&json!(1)),
        ),
        bad("an id with #", "#", start_double("/a%23b").json(&json!(1))),
        bad("an id with ?", "?", start_double("/a%3Fb").json(&json!(1))),
        bad(
            "an id with a backslash",
            "\\",
            start_double("/a%5Cb").json(&json!(1)),
        ),
        bad(
            "an id with a control character",
            "control",
            start_double("/a%01b").json(&json!(1)),
        ),
        bad(
            "an id of 257 bytes",
            "257",
            start_double(&format!("/{long_id}")).json(&json!(1)),
        ),
        bad(
            "the status of an id with @",
            "@",
            Call::get("instances/%40x"),
        ),
        bad(
            "the status of a long id",
            "257",
            Call::get(&format!("instances/{long_id}")),
        ),
        bad(
            "a terminate of an id with @",
            "@",
            Call::post("instances/%40x/terminate"),
        ),
        bad(
            "showHistory=maybe",
            "showHistory",
            Call::get("instances/x?showHistory=maybe"),
        ),
        bad(
            "showInput=1",
            "showInput",
            Call::get("instances/x?showInput=1"),
        ),
        bad("top=0", "top", Call::get("instances?top=0")),
        bad("top=abc", "top", Call::get("instances?top=abc")),
        bad("top=-5", "top", Call::get("instances?top=-5")),
        bad("top=10001", "top", Call::get("instances?top=10001")),
        bad(
            "runtimeStatus=Bogus",
            "Bogus",
            Call::get("instances?runtimeStatus=Bogus"),
        ),
        bad(
            "a list with one bad status",
            "Bogus",
            Call::get("instances?runtimeStatus=Running,Bogus"),
        ),
        bad(
            "createdTimeFrom=yesterday",
            "createdTimeFrom",
            Call::get("instances?createdTimeFrom=yesterday"),
        ),
        bad(
            "createdTimeTo=2026-13-01",
            "createdTimeTo",
            Call::get("instances?createdTimeTo=2026-13-01"),
        ),
        bad(
            "timeout=-1",
            "timeout",
            start_double("?timeout=-1").json(&json!(1)),
        ),
        bad(
            "timeout=NaN",
            "timeout",
            start_double("?timeout=NaN&pollingInterval=1").json(&json!(1)),
        ),
        bad(
            "pollingInterval=soon",
            "pollingInterval",
            start_double("?timeout=1&pollingInterval=soon"),
        ),
        bad(
            "restartWithNewInstanceId=maybe",
            "restartWithNewInstanceId",
            Call::post("instances/x/restart?restartWithNewInstanceId=maybe"),
        ),
        bad(
            "a purge from 30 February",
            "createdTimeFrom",
            Call::delete("instances?createdTimeFrom=2026-02-30"),
        ),
    ]
}

/// A `400` problem whose detail contains `names`.
#[track_caller]
fn assert_bad_request(reply: &Reply, names: &str, what: &str) {
    assert_problem(reply, 400, what);
    let detail = reply.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains(names),
        "{what}: the detail does not name `{names}`: {detail}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_400_problem_never_a_500() {
    let harness = Harness::start().await;
    let client = harness.client();
    for api in harness.transports() {
        for request in bad_requests() {
            let reply = api.send(request.call).await;
            let what = format!("{}: {}", api.name(), request.what);
            assert_bad_request(&reply, request.names, &what);
        }
    }
    let stored = client
        .list(&durable::InstanceQuery::default(), 10, None)
        .await
        .expect("list");
    assert!(
        stored.instances.is_empty(),
        "a refused request started {:?}",
        stored.instances
    );

    for api in harness.transports() {
        let id = format!("{}-busy", api.name());
        let path = format!("orchestrators/approval/{id}");
        api.send(Call::post(&path).json(&json!("first")))
            .await
            .expect(202);
        let again = api.send(Call::post(&path).json(&json!("second"))).await;
        assert_problem(&again, 409, "the id of a running instance");
        let status = wait_for_status(&client, &id).await;
        assert_eq!(
            status.input.as_str(),
            "\"first\"",
            "the second start changed the input"
        );
    }
    harness.stop().await;
}

/// With `pollingInterval` and no `timeout`, a bad interval is named as such.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_polling_interval_alone_is_named_in_the_problem() {
    let harness = Harness::start().await;
    for api in harness.transports() {
        let reply = api
            .send(Call::post("orchestrators/double?pollingInterval=soon").json(&json!(1)))
            .await;
        assert_bad_request(
            &reply,
            "pollingInterval",
            "pollingInterval=soon without timeout",
        );
    }
    harness.stop().await;
}

/// Durable Functions sends `x-ms-continuation-token` only when more results exist; a
/// full last page must not send clients after an empty one.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_last_page_carries_no_continuation_token() {
    let harness = Harness::start().await;
    let client = harness.client();
    for n in 0..3 {
        client
            .start_with_id(double, format!("last-page-{n}"), n)
            .await
            .expect("started");
    }
    client
        .entity::<Counter>("only")
        .signal()
        .add(1)
        .await
        .expect("signalled");
    eventually("the entity has a state", async || {
        let state = client.entity_state::<Counter>("only").await.expect("state");
        state.map(|_| ())
    })
    .await;
    for api in harness.transports() {
        let instances = api.send(Call::get("instances?top=3")).await.expect(200);
        assert_eq!(ids_of(&instances.json()).len(), 3);
        assert_eq!(
            instances.header(CONTINUATION),
            None,
            "{}: instances",
            api.name()
        );
        let entities = api.send(Call::get("entities?top=1")).await.expect(200);
        assert_eq!(entities.json().as_array().map(Vec::len), Some(1));
        assert_eq!(
            entities.header(CONTINUATION),
            None,
            "{}: entities",
            api.name()
        );
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let harness = Harness::start().await;
    for api in harness.transports() {
        let unknown = [
            Call::get("nothing-here"),
            Call::get("instances/x/history"),
            Call::post("instances/x/raiseEvent"),
            Call::get("orchestrators"),
        ];
        for call in unknown {
            let what = format!("{} {}", call.method, call.target);
            assert_problem(&api.send(call).await, 404, &what);
        }
        let wrong_method = [
            Call::to("PUT", api_path("instances/x")),
            Call::to("PATCH", api_path("instances")),
            Call::get("orchestrators/double"),
            Call::delete("orchestrators/double/x"),
            Call::get("instances/x/terminate"),
            Call::post("instances"),
            Call::to("PUT", api_path("entities/Counter/k")),
        ];
        for call in wrong_method {
            let what = format!("{} {}", call.method, call.target);
            assert_problem(&api.send(call).await, 405, &what);
        }
    }
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------
// Management URLs from routes of your own

/// A route of a user's own app that starts `double` and answers like the API does.
async fn start_double_route(
    State(client): State<Client>,
) -> Result<CheckStatusResponse, (axum::http::StatusCode, String)> {
    let handle = client.start(double, 21).await.map_err(|error| {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            error.to_string(),
        )
    })?;
    Ok(create_check_status_response(&client, handle.id()))
}

fn user_app(client: Client) -> axum::Router {
    axum::Router::new()
        .route("/start-double", axum::routing::post(start_double_route))
        .route(
            "/start-double-behind-proxy",
            axum::routing::post(async |state: State<Client>| {
                start_double_route(state)
                    .await
                    .map(|response| response.base_url("https://api.example.com/durable/"))
            }),
        )
        .route(
            "/start-double-for-request",
            axum::routing::post(
                async |state: State<Client>, headers: axum::http::HeaderMap| {
                    start_double_route(state)
                        .await
                        .map(|response| response.for_request(&headers))
                },
            ),
        )
        .with_state(client)
}

/// `user_app`'s `/start-double` in an app whose management API `server` serves: the
/// URLs start with the server's base.
fn user_app_served_by(client: Client, server: &Server) -> axum::Router {
    let api_base = server.base_url();
    axum::Router::new()
        .route(
            "/start-double",
            axum::routing::post(move |state: State<Client>| {
                let api_base = api_base.clone();
                async move {
                    start_double_route(state)
                        .await
                        .map(|response| response.base_url(api_base))
                }
            }),
        )
        .with_state(client)
}

#[tokio::test(flavor = "multi_thread")]
async fn check_status_response_in_a_route_of_your_own() {
    let runtime = start_runtime().await;
    let client = runtime.client();
    let app = Api {
        transport: Transport::Router(user_app(client.clone())),
        key: None,
    };

    // Without a base, the URLs are paths under the API's.
    let reply = app.send(Call::to("POST", "/start-double")).await;
    let id = assert_check_status_at(BASE_PATH, &reply, None);
    assert_eq!(
        wait_for_end(&client, &id).await.output_as::<u64>().ok(),
        Some(Some(42))
    );

    let proxied = app
        .send(Call::to("POST", "/start-double-behind-proxy"))
        .await;
    assert_check_status_at("https://api.example.com/durable", &proxied, None);

    // From the request: its Host, and https when a proxy says so.
    let direct = app
        .send(Call::to("POST", "/start-double-for-request"))
        .await;
    assert_check_status_at(&format!("http://{}{BASE_PATH}", app.host()), &direct, None);
    let forwarded = app
        .send(Call::to("POST", "/start-double-for-request").header("X-Forwarded-Proto", "https"))
        .await;
    assert_check_status_at(
        &format!("https://{}{BASE_PATH}", app.host()),
        &forwarded,
        None,
    );

    // Serving the API elsewhere changes nothing in the runtime: still paths.
    let server = http::serve(client.clone(), ([127, 0, 0, 1], 0), Options::with_key(KEY))
        .await
        .expect("served");
    let reply = app.send(Call::to("POST", "/start-double")).await;
    assert_check_status_at(BASE_PATH, &reply, None);

    // With the server's base, they are absolute URLs of the server, and they work.
    let socket = Api {
        transport: Transport::Socket(server.local_addr()),
        key: Some(KEY.to_owned()),
    };
    let served = Api {
        transport: Transport::Router(user_app_served_by(client.clone(), &server)),
        key: None,
    };
    let reply = served.send(Call::to("POST", "/start-double")).await;
    let id = assert_check_status_at(&socket.base_url(), &reply, None);
    let status_url = reply.json()["statusQueryGetUri"]
        .as_str()
        .expect("statusQueryGetUri")
        .to_owned();
    let done = eventually("the instance completes", async || {
        let reply = socket
            .send(Call::to("GET", socket.path_of(&status_url)))
            .await;
        (reply.status == 200).then(|| reply.json())
    })
    .await;
    assert_eq!(done["instanceId"], id.as_str());
    assert_eq!(done["output"], 42);
    let instance = durable::InstanceId::new(&id).expect("an instance id");
    assert_eq!(
        server
            .check_status_response(&instance)
            .status_query_get_uri(),
        status_url
    );

    server.shutdown().await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn public_base_url_starts_every_management_url() {
    let public = "https://api.example.com";
    let options = Options::with_key(KEY).public_base_url(format!("{public}/"));
    let harness = Harness::with_options(options, Some(KEY)).await;
    let base = format!("{public}{BASE_PATH}");
    for api in harness.transports() {
        let started = api
            .send(Call::post("orchestrators/approval").json(&json!("x")))
            .await;
        let id = assert_check_status_at(&base, &started, None);
        let running = api
            .send(Call::get(&format!("instances/{id}")))
            .await
            .expect(202);
        assert_eq!(
            running.header("location"),
            Some(format!("{base}/instances/{id}").as_str())
        );
    }
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------
// The two transports

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
async fn send_over_socket(addr: SocketAddr, host: &str, call: &Call) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {addr}: {error}"));
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        call.method,
        call.target,
        call.body.len()
    );
    for (name, value) in &call.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(&call.body);
    stream
        .write_all(&request)
        .await
        .expect("the request is sent");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("the response is read");
    parse_response(&response)
}

/// Status line, headers and body (by `Content-Length`, chunked, or up to the end).
fn parse_response(response: &[u8]) -> Reply {
    let head_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(response)
            )
        });
    let head = std::str::from_utf8(&response[..head_end]).expect("headers are text");
    let rest = &response[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {status_line}"));
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header: {line}"));
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(found, _)| found == name)
            .map(|(_, value)| value.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        decode_chunked(rest)
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().expect("a numeric Content-Length");
        assert_eq!(
            rest.len(),
            length,
            "the body is as long as Content-Length says"
        );
        rest.to_vec()
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn decode_chunked(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .expect("a chunk size line");
        let size_text = std::str::from_utf8(&rest[..line_end]).expect("a chunk size");
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).expect("a hexadecimal chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The same request through the router, without a socket.
async fn send_to_router(router: &axum::Router, call: &Call) -> Reply {
    let mut request = axum::http::Request::builder()
        .method(call.method)
        .uri(call.target.as_str())
        .header("host", ROUTER_HOST)
        .header("content-length", call.body.len());
    for (name, value) in &call.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(axum::body::Body::from(call.body.clone()))
        .unwrap_or_else(|error| panic!("not a valid request {call:?}: {error}"));
    let response = router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("the body is read");
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or_default().to_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    Reply {
        status: parts.status.as_u16(),
        headers,
        body: body.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_not_supported_says_so() {
    let harness = Harness::start().await;
    let client = harness.client();
    client
        .start_with_id(double, "rewound", 1)
        .await
        .expect("started");
    wait_for_end(&client, "rewound").await;
    for api in harness.transports() {
        let reply = api.send(Call::post("instances/rewound/rewind")).await;
        assert_problem(&reply, 501, "rewind");
        assert!(reply.text().contains("restart"), "{}", reply.text());
        for filter in ["lastOperationTimeFrom", "lastOperationTimeTo"] {
            let reply = api
                .send(Call::get(&format!(
                    "entities?{filter}=2020-01-01T00:00:00Z"
                )))
                .await;
            assert_problem(&reply, 400, filter);
        }
    }
    harness.stop().await;
}
