//! The HTTP management API against what the official Durable Functions clients send and
//! what hostile traffic tries: trailing slashes, bodies encoded twice, the error fields
//! the clients read, case-insensitive entity names, parameters checked before anything
//! is done, purges reported once, ids that cannot round-trip through a URL, query strings
//! and limits, and a server that times out slow clients and stops within a bound.
//!
//! Requests go through the router (`tower::ServiceExt::oneshot`), with exactly the bytes
//! the clients send; the timeouts and the shutdown need a real socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use durable::http::{self, BASE_PATH, Options};
use durable::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(30);

#[activity]
async fn double_it(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x * 2)
}

#[orchestrator]
async fn double(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ctx.call_activity(double_it, x).await
}

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    item: String,
    quantity: u32,
}

#[orchestrator]
async fn order(_ctx: OrchestrationContext, placed: Order) -> Result<String, Error> {
    Ok(format!("{} x {}", placed.quantity, placed.item))
}

#[orchestrator]
async fn echo(_ctx: OrchestrationContext, text: String) -> Result<String, Error> {
    Ok(text)
}

#[orchestrator]
async fn approval(ctx: OrchestrationContext, request: String) -> Result<String, Error> {
    let approved: bool = ctx.wait_for_event("Approval").await?;
    Ok(format!("{request}: {approved}"))
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
}

async fn runtime() -> Runtime {
    Runtime::builder()
        .in_memory()
        .register(double_it)
        .register(double)
        .register(order)
        .register(echo)
        .register(approval)
        .register_entity::<Counter>()
        .start()
        .await
        .expect("the runtime starts")
}

/// One request through the router: its status and body (JSON, or the text as a string).
async fn call(
    app: &axum::Router,
    method: &str,
    rest: &str,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{BASE_PATH}/{rest}"));
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    let request = request.body(Body::from(body.to_owned())).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

const JSON: Option<&str> = Some("application/json");

async fn output(client: &Client, id: &str) -> Value {
    let status = client
        .wait_for_completion(id, WAIT)
        .await
        .expect("the instance ends");
    assert_eq!(
        status.runtime_status,
        RuntimeStatus::Completed,
        "{status:?}"
    );
    serde_json::from_str(status.output.unwrap().as_str()).unwrap()
}

/// Durable Functions' clients list and purge at `instances/?…`: both must work, and a
/// purge by filter there must delete and count what it deleted (a 404 read as "0 deleted"
/// would purge nothing and report success).
#[tokio::test(flavor = "multi_thread")]
async fn a_trailing_slash_is_taken_where_durable_functions_takes_it() {
    let runtime = runtime().await;
    let client = runtime.client();
    let app = http::router(client.clone(), Options::anonymous());
    for n in 0..3u64 {
        let (status, _) = call(
            &app,
            "POST",
            &format!("orchestrators/double/slash-{n}"),
            JSON,
            &n.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        output(&client, &format!("slash-{n}")).await;
    }
    let (status, list) = call(&app, "GET", "instances/?instanceIdPrefix=slash-", None, "").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    let (status, one) = call(&app, "GET", "instances/slash-1/", None, "").await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["output"], 2);
    let (status, purged) = call(
        &app,
        "DELETE",
        "instances/?createdTimeFrom=2000-01-01T00:00:00Z&runtimeStatus=Completed",
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(purged["instancesDeleted"], 3);
    for n in 0..3 {
        assert!(client.status(format!("slash-{n}")).await.unwrap().is_none());
    }
    runtime.shutdown().await;
}

/// The Python client JSON-encodes bodies twice: a JSON string whose text is JSON. It is
/// decoded once more where the target is not a string; a string stays a string.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_encoded_twice_are_decoded_once_more_unless_the_target_is_a_string() {
    let runtime = runtime().await;
    let client = runtime.client();
    let app = http::router(client.clone(), Options::anonymous());
    // json.dumps(21), sent with aiohttp's json=: "\"21\"" on the wire.
    let (status, _) = call(
        &app,
        "POST",
        "orchestrators/double/twice-number",
        JSON,
        r#""21""#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(output(&client, "twice-number").await, 42);
    let twice = serde_json::to_string(&r#"{"item":"tea","quantity":3}"#).unwrap();
    let (status, _) = call(
        &app,
        "POST",
        "orchestrators/order/twice-object",
        JSON,
        &twice,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(output(&client, "twice-object").await, "3 x tea");
    // A string encoded twice is the string; one whose text is other JSON stays as it is.
    let (status, _) = call(
        &app,
        "POST",
        "orchestrators/echo/quoted",
        JSON,
        r#""\"laptop\"""#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(output(&client, "quoted").await, "laptop");
    // Stored as meant: the status shows the input once encoded.
    let (_, status) = call(&app, "GET", "instances/quoted", None, "").await;
    assert_eq!(status["input"], "laptop");
    let (_, status) = call(&app, "GET", "instances/twice-object", None, "").await;
    assert_eq!(status["input"]["quantity"], 3);
    // A string input that reads as JSON stays the string it is.
    let (status, _) = call(
        &app,
        "POST",
        "orchestrators/echo/plain",
        JSON,
        r#""{\"a\":1}""#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(output(&client, "plain").await, r#"{"a":1}"#);
    // An event and an entity operation encoded twice.
    let (status, _) = call(
        &app,
        "POST",
        "orchestrators/approval/twice-event",
        JSON,
        r#""laptop""#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = call(
        &app,
        "POST",
        "instances/twice-event/raiseEvent/Approval",
        JSON,
        r#""true""#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(output(&client, "twice-event").await, "laptop: true");
    let (status, body) = call(&app, "POST", "entities/counter/k?op=add", JSON, r#""5""#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let state = client.entity_state::<Counter>("k").await.unwrap();
    assert_eq!(state.map(|counter| counter.value), Some(5));
    runtime.shutdown().await;
}

/// The clients read `ExceptionMessage` (Python) and `Message` from an error body.
#[tokio::test(flavor = "multi_thread")]
async fn error_bodies_carry_the_fields_the_clients_read() {
    let runtime = runtime().await;
    let app = http::router(runtime.client(), Options::anonymous());
    let (status, body) = call(
        &app,
        "POST",
        "orchestrators/nothing-of-that-name",
        JSON,
        "1",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["detail"].as_str().unwrap();
    assert!(message.contains("nothing-of-that-name"), "{body}");
    assert_eq!(body["Message"], message);
    assert_eq!(body["ExceptionMessage"], message);
    runtime.shutdown().await;
}

/// Entity names are case-insensitive, as in Durable Functions; keys are not.
#[tokio::test(flavor = "multi_thread")]
async fn entity_names_are_case_insensitive_and_keys_are_not() {
    let runtime = runtime().await;
    let client = runtime.client();
    let app = http::router(client.clone(), Options::anonymous());
    for name in ["Counter", "counter", "COUNTER"] {
        let (status, body) = call(
            &app,
            "POST",
            &format!("entities/{name}/Key?op=add"),
            JSON,
            "1",
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{name}: {body}");
    }
    let (status, body) = call(&app, "POST", "entities/counter/key?op=add", JSON, "10").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let read = |key: &'static str| {
        let app = app.clone();
        async move {
            let (status, body) =
                call(&app, "GET", &format!("entities/CoUnTeR/{key}"), None, "").await;
            assert_eq!(status, StatusCode::OK, "{key}: {body}");
            body["value"].as_i64().unwrap()
        }
    };
    // Signals are stored before they answer, and run in order: a read may come first.
    let deadline = Instant::now() + WAIT;
    while read("Key").await != 3 || read("key").await != 10 {
        assert!(Instant::now() < deadline, "the signals did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(EntityId::new("Counter", "Key").unwrap().name(), "counter");
    runtime.shutdown().await;
}

/// A bad `returnInternalServerErrorOnFailure` is a 400 before anything starts, with or
/// without a wait.
#[tokio::test(flavor = "multi_thread")]
async fn parameters_are_checked_before_an_instance_starts() {
    let runtime = runtime().await;
    let client = runtime.client();
    let app = http::router(client.clone(), Options::anonymous());
    for (id, query) in [
        ("bad-flag", "returnInternalServerErrorOnFailure=perhaps"),
        (
            "bad-flag-wait",
            "returnInternalServerErrorOnFailure=perhaps&timeout=5&pollingInterval=1",
        ),
        ("bad-timeout", "timeout=-1&pollingInterval=1"),
    ] {
        let (status, body) = call(
            &app,
            "POST",
            &format!("orchestrators/double/{id}?{query}"),
            JSON,
            "1",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            client.status(id).await.unwrap().is_none(),
            "{query} started {id}"
        );
    }
    let (status, _) = call(&app, "POST", "orchestrators/double/to-restart", JSON, "1").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    output(&client, "to-restart").await;
    let (status, body) = call(&app, "POST", "instances/to-restart/restart?restartWithNewInstanceId=false&returnInternalServerErrorOnFailure=x", None, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let after = client.status("to-restart").await.unwrap().unwrap();
    assert_eq!(
        after.runtime_status,
        RuntimeStatus::Completed,
        "restarted anyway"
    );
    runtime.shutdown().await;
}

/// Concurrent purges of one instance: exactly one reports the deletion. Concurrent purges
/// by filter report, together, each deleted instance once.
#[tokio::test(flavor = "multi_thread")]
async fn each_deletion_is_reported_once_however_many_purges_race() {
    let runtime = runtime().await;
    let client = runtime.client();
    let app = http::router(client.clone(), Options::anonymous());
    client
        .start_with_id(double, "purged-once", 1)
        .await
        .unwrap();
    output(&client, "purged-once").await;
    let purges: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(
                async move { call(&app, "DELETE", "instances/purged-once", None, "").await },
            )
        })
        .collect();
    let mut deleted = 0;
    for purge in purges {
        let (status, body) = purge.await.unwrap();
        match status {
            StatusCode::OK => deleted += body["instancesDeleted"].as_u64().unwrap(),
            StatusCode::NOT_FOUND => {}
            other => panic!("a purge answered {other}: {body}"),
        }
    }
    assert_eq!(deleted, 1);
    for n in 0..20u64 {
        let id = format!("filtered-{n}");
        client.start_with_id(double, &id, n).await.unwrap();
        output(&client, &id).await;
    }
    let purges: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let query = durable::InstanceQuery {
                    id_prefix: Some("filtered-".to_owned()),
                    ..durable::InstanceQuery::default()
                };
                client.purge_where(&query).await.unwrap()
            })
        })
        .collect();
    let mut total = 0;
    for purge in purges {
        total += purge.await.unwrap();
    }
    assert_eq!(total, 20);
    runtime.shutdown().await;
}

/// `.` and `..` are dot segments that every URL client removes: not ids.
#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_are_not_ids() {
    let runtime = runtime().await;
    let client = runtime.client();
    for id in [".", ".."] {
        let error = client.start_with_id(double, id, 1).await.unwrap_err();
        assert!(error.to_string().contains("`.` and `..`"), "{error}");
        assert!(client.entity::<Counter>(id).signal().add(1).await.is_err());
    }
    client.start_with_id(double, "...", 1).await.unwrap();
    runtime.shutdown().await;
}

/// Query strings: bytes that are not UTF-8 are refused (as in paths), only a list
/// parameter may be repeated, and event names and reasons have limits.
#[tokio::test(flavor = "multi_thread")]
async fn query_strings_are_decoded_strictly_and_texts_have_limits() {
    let runtime = runtime().await;
    let client = runtime.client();
    let app = http::router(client.clone(), Options::anonymous());
    client
        .start_with_id(approval, "held", "x".to_owned())
        .await
        .unwrap();
    for query in [
        "reason=%FF",
        "reason=%zz",
        "reason=%+f",
        "reason=a&reason=b",
    ] {
        let target = format!("instances/held/terminate?{query}");
        let (status, body) = call(&app, "POST", &target, None, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    let (_, body) = call(
        &app,
        "POST",
        "instances/held/terminate?reason=a&reason=b",
        None,
        "",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("more than once"),
        "{body}"
    );
    let long = "r".repeat(durable::client::REASON_MAX_LEN + 1);
    let (status, body) = call(
        &app,
        "POST",
        &format!("instances/held/terminate?reason={long}"),
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let event = "e".repeat(durable::client::EVENT_NAME_MAX_LEN + 1);
    let (status, body) = call(
        &app,
        "POST",
        &format!("instances/held/raiseEvent/{event}"),
        JSON,
        "true",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let status_now = client.status("held").await.unwrap().unwrap();
    assert_eq!(
        status_now.runtime_status,
        RuntimeStatus::Running,
        "nothing was done"
    );
    // A list parameter may be repeated; a `+` is a space.
    let (status, body) = call(
        &app,
        "GET",
        "instances?runtimeStatus=Running&runtimeStatus=Completed",
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(
        &app,
        "POST",
        "instances/held/terminate?reason=two+words",
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    client.wait_for_completion("held", WAIT).await.unwrap();
    let (status, body) = call(&app, "GET", "instances/held", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["output"], "two words");
    runtime.shutdown().await;
}

/// Every input the client API takes is taken over HTTP: the body limit is above the
/// payload limit, and a 413 says the number. Every endpoint with a body takes JSON sent
/// with a JSON type or none, and refuses another type alike.
#[tokio::test(flavor = "multi_thread")]
async fn body_limits_and_types_agree_with_the_client_api() {
    let runtime = Runtime::builder()
        .in_memory()
        .max_payload_bytes(6 * 1024 * 1024)
        .register(echo)
        .register(approval)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let app = http::router(client.clone(), Options::anonymous());
    let big = serde_json::to_string(&"b".repeat(5 * 1024 * 1024)).unwrap();
    let (status, body) = call(&app, "POST", "orchestrators/echo/big", JSON, &big).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let small = http::router(client.clone(), Options::anonymous().max_body_bytes(1000));
    let (status, body) = call(
        &small,
        "POST",
        "orchestrators/echo/too-big",
        JSON,
        &"\"x\"".repeat(500),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        body["detail"].as_str().unwrap().contains("1000 bytes"),
        "{body}"
    );
    for (id, content_type, expected) in [
        ("typed", JSON, StatusCode::ACCEPTED),
        ("untyped", None, StatusCode::ACCEPTED),
        (
            "text",
            Some("text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let (status, body) = call(
            &app,
            "POST",
            &format!("orchestrators/approval/{id}"),
            content_type,
            r#""r""#,
        )
        .await;
        assert_eq!(status, expected, "start {id}: {body}");
    }
    for (content_type, expected) in [
        (Some("text/plain"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (None, StatusCode::ACCEPTED),
    ] {
        let (status, body) = call(
            &app,
            "POST",
            "instances/typed/raiseEvent/Approval",
            content_type,
            "true",
        )
        .await;
        assert_eq!(status, expected, "raise with {content_type:?}: {body}");
    }
    runtime.shutdown().await;
}

/// A request head or body that never finishes is cut off; a shutdown ends a request that
/// waits for its instance within the grace period.
#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_timed_out_and_shutdown_is_bounded() {
    let runtime = runtime().await;
    let options = Options::anonymous()
        .header_timeout(Duration::from_millis(500))
        .body_timeout(Duration::from_millis(500))
        .shutdown_grace(Duration::from_millis(500));
    let server = http::serve(runtime.client(), ([127, 0, 0, 1], 0), options)
        .await
        .unwrap();
    let addr = server.local_addr();
    // Half a head: the connection is closed.
    let mut head = tokio::net::TcpStream::connect(addr).await.unwrap();
    head.write_all(b"GET /runtime/webhooks/durabletask/instances HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, head.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a half-sent head was not timed out");
    // Half a body: 408.
    let mut body = tokio::net::TcpStream::connect(addr).await.unwrap();
    body.write_all(b"POST /runtime/webhooks/durabletask/orchestrators/double HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n12").await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, body.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // A start that waits a minute for an instance that never ends.
    let mut waiting = tokio::net::TcpStream::connect(addr).await.unwrap();
    waiting.write_all(b"POST /runtime/webhooks/durabletask/orchestrators/approval/stuck?timeout=60&pollingInterval=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n\"r\"").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("the shutdown is bounded");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    runtime.shutdown().await;
}
