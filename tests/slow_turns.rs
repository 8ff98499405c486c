//! Blocking code in an orchestrator or an entity operation stalls every instance on its
//! orchestration thread: the runtime cannot interrupt it, but it logs a warning naming the
//! instance and counts it. The tests block on purpose, past a low threshold, and check the
//! count and the log line — not how long anything took.
//!
//! The log is captured by a subscriber of this file installed for the whole process (the
//! runtime logs from its own threads), which is why these tests have a binary of their own.

use durable::prelude::*;
use std::fmt::Write as _;
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

/// Well past the threshold of these tests, so that the block is slow on any machine.
const BLOCK: Duration = Duration::from_millis(200);
const THRESHOLD: Duration = Duration::from_millis(50);
const WAIT: Duration = Duration::from_secs(60);

/// Every event logged in this process, one line each: the level, then `field=value`s.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A subscriber that keeps every event in [`LOG`]; spans are not needed.
struct Capture;

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = event.metadata().level().to_string();
        event.record(&mut Fields(&mut line));
        LOG.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

fn capture_log() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| tracing::subscriber::set_global_default(Capture).unwrap());
}

/// What was logged so far. (A failed assertion elsewhere must not hide it.)
fn log() -> Vec<String> {
    LOG.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// The warnings logged so far that mention every one of `words`.
fn warnings_with(words: &[&str]) -> Vec<String> {
    log()
        .into_iter()
        .filter(|line| line.starts_with("WARN") && words.iter().all(|word| line.contains(word)))
        .collect()
}

#[orchestrator]
async fn blocking(_ctx: OrchestrationContext, millis: u64) -> Result<(), Error> {
    #[durable::allow_nondeterministic("the test needs a turn that blocks its thread")]
    std::thread::sleep(Duration::from_millis(millis));
    Ok(())
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Stalling {
    stalls: u32,
}

#[entity]
impl Stalling {
    fn stall(&mut self, millis: u64) {
        std::thread::sleep(Duration::from_millis(millis));
        self.stalls += 1;
    }
}

async fn runtime() -> Runtime {
    capture_log();
    Runtime::builder()
        .in_memory()
        .slow_turn_warning(THRESHOLD)
        .register(blocking)
        .register_entity::<Stalling>()
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_blocks_is_logged_with_its_instance_and_counted() {
    let runtime = runtime().await;
    let client = runtime.client();
    let millis = BLOCK.as_millis() as u64;
    let instance = client
        .start_with_id(blocking, "blocks-its-thread", millis)
        .await
        .unwrap();
    instance.wait(WAIT).await.unwrap();
    assert!(runtime.metrics().slow_turns >= 1, "{:?}", runtime.metrics());
    let warned = warnings_with(&["blocks-its-thread", "orchestrator=blocking", "elapsed_ms="]);
    assert_eq!(warned.len(), 1, "{:#?}", log());
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_operation_that_blocks_is_logged_with_its_entity_and_counted() {
    let runtime = runtime().await;
    let client = runtime.client();
    let stalling = client.entity::<Stalling>("slowpoke");
    stalling
        .signal()
        .stall(BLOCK.as_millis() as u64)
        .await
        .unwrap();
    durable_testkit::eventually("the operation ran", async || {
        let state = client.entity_state::<Stalling>("slowpoke").await.unwrap();
        state.is_some_and(|state| state.stalls == 1)
    })
    .await;
    let metrics = runtime.metrics();
    assert!(metrics.slow_entity_operations >= 1, "{metrics:?}");
    let warned = warnings_with(&["@stalling@slowpoke", "operation=stall", "elapsed_ms="]);
    assert_eq!(warned.len(), 1, "{:#?}", log());
    runtime.shutdown().await;
}
