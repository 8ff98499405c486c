//! Bad input gets a clear, typed error: unknown names, malformed JSON, wrong input types,
//! invalid instance ids, a store directory already in use by another process, a runtime
//! without a store or outside tokio.

use durable::client::Error as ClientError;
use durable::prelude::*;
use durable_testkit::spawn_test_child;
use std::time::Duration;

#[activity]
async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ctx.call_activity(add_one, x).await
}

#[orchestrator]
async fn forgotten(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ctx.call_activity(unregistered_activity, x).await
}

#[activity]
async fn unregistered_activity(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x)
}

#[orchestrator]
async fn unregistered_child(_ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    Ok(x)
}

#[orchestrator]
async fn forgotten_child(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ctx.call_sub_orchestrator(unregistered_child, x).await
}

async fn runtime() -> Runtime {
    Runtime::builder()
        .in_memory()
        .register(add_one)
        .register(chain)
        .register(forgotten)
        .register(forgotten_child)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn unknown_orchestrator_name_is_not_registered() {
    let runtime = runtime().await;
    let error = runtime
        .client()
        .start_by_name("no_such_orchestrator", None, "1")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::NotRegistered { name, .. } if name == "no_such_orchestrator"),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains(".register(no_such_orchestrator)"),
        "{error}"
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn malformed_or_mistyped_json_input_is_invalid_input() {
    let runtime = runtime().await;
    let client = runtime.client();
    for (input, expect) in [
        ("{\"x\":", "not valid JSON"),
        ("\"seven\"", "invalid type"),
        ("-1", "invalid value"),
    ] {
        let error = client
            .start_by_name("chain", None, input)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidInput { .. }),
            "{input}: {error:?}"
        );
        assert!(error.to_string().contains(expect), "{input}: {error}");
    }
    // Well-formed input starts fine, and an empty body means null.
    let id = client
        .start_by_name("chain", Some("ok"), " 41 ")
        .await
        .unwrap();
    let status = client
        .wait_for_completion(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.output_as::<u64>().unwrap(), Some(42));
    runtime.shutdown().await;
}

#[tokio::test]
async fn invalid_instance_ids_are_rejected() {
    let runtime = runtime().await;
    let client = runtime.client();
    for bad in ["", "a/b", "@entity", "new\nline", &"x".repeat(300)] {
        let error = client.start_with_id(chain, bad, 1).await.unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidInstanceId(_)),
            "{bad:?}: {error:?}"
        );
        let error = client.status(bad).await.unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidInstanceId(_)),
            "{bad:?}: {error:?}"
        );
    }
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_unregistered_activity_fails_the_task_with_advice() {
    let runtime = runtime().await;
    let instance = runtime.client().start(forgotten, 1).await.unwrap();
    let error = instance.wait(Duration::from_secs(10)).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("`unregistered_activity` is not registered"),
        "{text}"
    );
    assert!(text.contains(".register(unregistered_activity)"), "{text}");
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_unregistered_sub_orchestrator_fails_the_call_with_the_same_advice() {
    let runtime = runtime().await;
    let instance = runtime.client().start(forgotten_child, 1).await.unwrap();
    let error = instance.wait(Duration::from_secs(10)).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("orchestrator `unregistered_child` is not registered"),
        "{text}"
    );
    assert!(text.contains(".register(unregistered_child)"), "{text}");
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_runtime_needs_a_store() {
    let error = Runtime::builder()
        .register(chain)
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(error, durable::runtime::Error::NoStore),
        "{error:?}"
    );
    assert!(error.to_string().contains(".store_path("), "{error}");
}

#[test]
fn a_runtime_needs_tokio() {
    // Poll `start` once without any tokio runtime: it must fail, not panic.
    let mut start = std::pin::pin!(Runtime::builder().in_memory().start());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match start.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(error)) => {
            assert!(
                matches!(error, durable::runtime::Error::NoTokioRuntime),
                "{error:?}"
            );
        }
        std::task::Poll::Ready(Ok(_)) => panic!("started without tokio"),
        std::task::Poll::Pending => panic!("start waited for something without tokio"),
    }
}

#[test]
fn a_runtime_needs_tokio_timers() {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let error = tokio
        .block_on(Runtime::builder().in_memory().start())
        .unwrap_err();
    assert!(
        matches!(error, durable::runtime::Error::NoTimeDriver),
        "{error:?}"
    );
    assert!(error.to_string().contains("enable_all()"), "{error}");
}

const HOLDER_DIR: &str = "DURABLE_LOCK_TEST_DIR";

/// Child process: opens the store directory and reports what happened on stdout.
#[test]
fn lock_child() {
    let Ok(dir) = std::env::var(HOLDER_DIR) else {
        return;
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = tokio.block_on(Runtime::builder().store_path(&dir).register(chain).start());
    match outcome {
        Ok(_) => std::process::exit(10),
        Err(error) => {
            eprintln!("second process: {error}");
            let locked = matches!(
                error,
                durable::runtime::Error::Store(durable::store::Error::Locked { .. })
            );
            std::process::exit(if locked { 20 } else { 30 });
        }
    }
}

#[tokio::test]
async fn a_second_process_cannot_open_a_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .store_path(dir.path())
        .register(chain)
        .register(add_one)
        .start()
        .await
        .unwrap();
    let child = spawn_test_child(
        "lock_child",
        &[(HOLDER_DIR, dir.path().display().to_string())],
    );
    let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap().status)
        .await
        .unwrap();
    assert_eq!(
        status.code(),
        Some(20),
        "the second process was not refused with Locked"
    );
    // The first runtime is unaffected.
    let instance = runtime.client().start(chain, 1).await.unwrap();
    assert_eq!(instance.wait(Duration::from_secs(10)).await.unwrap(), 2);
    runtime.shutdown().await;
}
