//! Configured limits give clear errors instead of exhausting memory or disk: payload sizes
//! (inputs, outputs, events, entity operations and states), the actions of one turn, and
//! the history length at which a warning advises `continue_as_new`.

use durable::client::Error as ClientError;
use durable::prelude::*;
use durable_store::HistoryEvent;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Payloads above this many bytes are refused in these tests.
const LIMIT: usize = 1024;
const WAIT: Duration = Duration::from_secs(10);

fn text(bytes: usize) -> String {
    "x".repeat(bytes)
}

#[activity]
async fn echo(_ctx: ActivityContext, input: String) -> Result<String, Error> {
    Ok(input)
}

#[activity]
async fn inflate(_ctx: ActivityContext, bytes: usize) -> Result<String, Error> {
    Ok(text(bytes))
}

/// Returns a string of the asked length.
#[orchestrator]
async fn produce(_ctx: OrchestrationContext, bytes: usize) -> Result<String, Error> {
    Ok(text(bytes))
}

/// Sends an activity an input of the asked length.
#[orchestrator]
async fn send_big(ctx: OrchestrationContext, bytes: usize) -> Result<String, Error> {
    ctx.call_activity(echo, text(bytes)).await
}

/// Asks an activity for an output of the asked length, and reports how that went.
#[orchestrator]
async fn receive_big(ctx: OrchestrationContext, bytes: usize) -> Result<String, Error> {
    match ctx.call_activity(inflate, bytes).await {
        Ok(output) => Ok(format!("got {} bytes", output.len())),
        Err(error) => Ok(format!("{:?}: {}", error.root_cause().kind(), error)),
    }
}

/// Schedules `n` activities in one turn.
#[orchestrator]
async fn fan_out(ctx: OrchestrationContext, n: usize) -> Result<usize, Error> {
    let tasks: Vec<_> = (0..n)
        .map(|i| ctx.call_activity(echo, i.to_string()))
        .collect();
    Ok(ctx.join_all(tasks).await?.len())
}

/// Runs `n` activities one after the other: about 3 history events each.
#[orchestrator]
async fn long_chain(ctx: OrchestrationContext, n: usize) -> Result<usize, Error> {
    for i in 0..n {
        ctx.call_activity(echo, i.to_string()).await?;
    }
    Ok(n)
}

#[orchestrator]
async fn wait_event(ctx: OrchestrationContext, _input: ()) -> Result<String, Error> {
    ctx.wait_for_event::<String>("data").await
}

#[derive(Default, Serialize, Deserialize)]
struct Notes {
    text: String,
}

#[entity]
impl Notes {
    fn append(&mut self, more: String) {
        self.text.push_str(&more);
    }

    fn length(&self) -> usize {
        self.text.len()
    }
}

/// Appends to a note through a call, and reports the call's outcome.
#[orchestrator]
async fn append_note(ctx: OrchestrationContext, bytes: usize) -> Result<String, Error> {
    let notes = ctx.entity::<Notes>("n");
    match notes.append(text(bytes)).await {
        Ok(()) => Ok("appended".to_owned()),
        Err(error) => Ok(format!("{:?}: {}", error.root_cause().kind(), error)),
    }
}

async fn runtime() -> Runtime {
    Runtime::builder()
        .in_memory()
        .max_payload_bytes(LIMIT)
        .max_actions_per_turn(100)
        .history_warning_events(50)
        .register(echo)
        .register(inflate)
        .register(produce)
        .register(send_big)
        .register(receive_big)
        .register(fan_out)
        .register(long_chain)
        .register(wait_event)
        .register(append_note)
        .register_entity::<Notes>()
        .start()
        .await
        .unwrap()
}

/// The current history of `instance`.
async fn history(client: &Client, id: &durable_store::InstanceId) -> Vec<HistoryEvent> {
    let status = client.status_with_history(id).await.unwrap().unwrap();
    status.history.unwrap()
}

/// Asserts that `instance` never scheduled an activity.
async fn scheduled_nothing(client: &Client, id: &durable_store::InstanceId) {
    let history = history(client, id).await;
    assert!(
        !history.iter().any(|event| event.kind() == "TaskScheduled"),
        "{history:?}"
    );
}

async fn failure_of(client: &Client, id: &durable_store::InstanceId) -> durable_store::Failure {
    let status = client.wait_for_completion(id, WAIT).await.unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Failed, "{status:?}");
    status.failure.expect("a failed instance has its failure")
}

#[tokio::test]
async fn the_client_refuses_oversized_payloads_and_says_which() {
    let runtime = runtime().await;
    let client = runtime.client();

    // An input of LIMIT bytes as JSON text is LIMIT + 2 bytes (the quotes).
    let error = client
        .start_by_name("send_big", Some("big"), &format!("\"{}\"", text(LIMIT)))
        .await
        .unwrap_err();
    let ClientError::PayloadTooLarge { what, bytes, limit } = &error else {
        panic!("expected PayloadTooLarge, got {error:?}");
    };
    assert_eq!((*bytes, *limit), (LIMIT + 2, LIMIT));
    assert!(what.contains("send_big"), "{what}");
    assert!(error.to_string().contains("pass a reference"), "{error}");
    assert!(
        client.status("big").await.unwrap().is_none(),
        "a refused start leaves nothing behind"
    );

    let waiting = client.start(wait_event, ()).await.unwrap();
    let error = client
        .raise_event(waiting.id(), "data", text(LIMIT))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::PayloadTooLarge { what, .. } if what.contains("`data`")),
        "{error:?}"
    );
    client
        .raise_event(waiting.id(), "data", "small".to_owned())
        .await
        .unwrap();
    assert_eq!(waiting.wait(WAIT).await.unwrap(), "small");

    let error = client
        .entity::<Notes>("n")
        .signal()
        .append(text(LIMIT))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::PayloadTooLarge { what, .. } if what.contains("`append`")),
        "{error:?}"
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_oversized_output_or_activity_input_fails_the_instance() {
    let runtime = runtime().await;
    let client = runtime.client();

    let fine = client.start(produce, LIMIT - 2).await.unwrap();
    assert_eq!(fine.wait(WAIT).await.unwrap().len(), LIMIT - 2);

    let big = client.start(produce, LIMIT).await.unwrap();
    let failure = failure_of(&client, big.id()).await;
    assert_eq!(failure.kind, ErrorKind::LimitExceeded, "{failure}");
    assert!(failure.message.contains("output"), "{failure}");
    assert!(failure.message.contains("max_payload_bytes"), "{failure}");

    let big_input = client.start(send_big, LIMIT).await.unwrap();
    let failure = failure_of(&client, big_input.id()).await;
    assert_eq!(failure.kind, ErrorKind::LimitExceeded, "{failure}");
    assert!(failure.message.contains("activity `echo`"), "{failure}");
    // The refused turn scheduled nothing: the activity never ran.
    scheduled_nothing(&client, big_input.id()).await;
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_oversized_activity_output_fails_the_call_not_the_runtime() {
    let runtime = runtime().await;
    let client = runtime.client();
    let small = client.start(receive_big, 10).await.unwrap();
    assert_eq!(small.wait(WAIT).await.unwrap(), "got 10 bytes");
    let big = client.start(receive_big, LIMIT).await.unwrap();
    let outcome = big.wait(WAIT).await.unwrap();
    assert!(outcome.starts_with("LimitExceeded"), "{outcome}");
    assert!(
        outcome.contains("output of activity `inflate`"),
        "{outcome}"
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn too_many_actions_in_one_turn_fail_the_instance() {
    let runtime = runtime().await;
    let client = runtime.client();
    let within = client.start(fan_out, 100).await.unwrap();
    assert_eq!(within.wait(WAIT).await.unwrap(), 100);

    let over = client.start(fan_out, 101).await.unwrap();
    let failure = failure_of(&client, over.id()).await;
    assert_eq!(failure.kind, ErrorKind::LimitExceeded, "{failure}");
    assert!(failure.message.contains("101 tasks"), "{failure}");
    assert!(
        failure.message.contains("max_actions_per_turn"),
        "{failure}"
    );
    // None of the refused turn's activities run: none was scheduled, and after a later
    // instance's activity has run, only that one has started.
    scheduled_nothing(&client, over.id()).await;
    let started_before = runtime.metrics().activities_started;
    let later = client.start(fan_out, 1).await.unwrap();
    assert_eq!(later.wait(WAIT).await.unwrap(), 1);
    assert_eq!(
        runtime.metrics().activities_started,
        started_before + 1,
        "none of the refused turn's activities run"
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_oversized_entity_state_fails_the_operation_and_keeps_the_state() {
    let runtime = runtime().await;
    let client = runtime.client();
    let first = client.start(append_note, 600).await.unwrap();
    assert_eq!(first.wait(WAIT).await.unwrap(), "appended");
    // 1,200 bytes of text no longer fit.
    let second = client.start(append_note, 600).await.unwrap();
    let outcome = second.wait(WAIT).await.unwrap();
    assert!(outcome.contains("LimitExceeded"), "{outcome}");
    assert!(outcome.contains("state is unchanged"), "{outcome}");
    let state = client.entity_state::<Notes>("n").await.unwrap().unwrap();
    assert_eq!(state.text.len(), 600);
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_long_history_is_warned_about_once() {
    let runtime = runtime().await;
    let client = runtime.client();
    let short = client.start(long_chain, 5).await.unwrap();
    short.wait(WAIT).await.unwrap();
    assert_eq!(runtime.metrics().long_histories, 0);
    let long = client.start(long_chain, 60).await.unwrap();
    assert_eq!(long.wait(WAIT).await.unwrap(), 60);
    let events = history(&client, long.id()).await.len();
    assert!(events > 100, "{events} events");
    assert_eq!(runtime.metrics().long_histories, 1);
    runtime.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_through_http_are_413() {
    use tower::ServiceExt;
    let runtime = runtime().await;
    let app = durable::http::router(runtime.client(), durable::http::Options::anonymous());
    let request = axum::http::Request::post("/runtime/webhooks/durabletask/orchestrators/send_big")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(format!("\"{}\"", text(LIMIT))))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 413);
    runtime.shutdown().await;
}

/// Starts a sub-orchestration under the id it is given.
#[orchestrator]
async fn parent_with_child_id(
    ctx: OrchestrationContext,
    child_id: String,
) -> Result<String, Error> {
    ctx.call_sub_orchestrator_with_id(produce, child_id, 3)
        .await
}

#[tokio::test]
async fn instance_ids_longer_than_configured_are_refused() {
    let runtime = Runtime::builder()
        .in_memory()
        .max_instance_id_len(16)
        .register(produce)
        .register(parent_with_child_id)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let fits = "sixteen-bytes-id";
    assert_eq!(fits.len(), 16);
    let handle = client.start_with_id(produce, fits, 2).await.unwrap();
    assert_eq!(handle.wait(WAIT).await.unwrap(), "xx");

    let error = client
        .start_with_id(produce, "seventeen-bytes-i", 2)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ClientError::InstanceIdTooLong {
                len: 17,
                limit: 16,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("max_instance_id_len"), "{error}");
    assert!(client.status("seventeen-bytes-i").await.unwrap().is_none());
    let error = client
        .start_by_name("produce", Some("seventeen-bytes-i"), "1")
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::InstanceIdTooLong { .. }),
        "{error:?}"
    );

    // Sub-orchestrations are held to the store's limit only: derived ids grow with
    // their parent's.
    let parent = client
        .start_with_id(
            parent_with_child_id,
            "parent",
            "a-child-id-longer-than-16".to_owned(),
        )
        .await
        .unwrap();
    assert_eq!(parent.wait(WAIT).await.unwrap(), "xxx");
    runtime.shutdown().await;
}
