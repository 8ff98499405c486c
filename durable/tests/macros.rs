//! What `#[activity]` and `#[orchestrator]` expand to, seen from a user's crate: the
//! registered names (and the `name = "..."` override), the `Input`/`Output` types, the
//! one-parameter forms, registration, running an activity directly, the conversion of the
//! user's error type into `durable::Error`, and the doc comments that end up on the struct.
//!
//! Compile-fail cases live in the workspace's ui-tests.

use durable::prelude::*;
use durable::{ExecutionId, InstanceId, Registrable, Registry, TaskId};
use std::time::Duration;

/// Adds one.
#[activity]
async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

#[activity(name = "F1")]
async fn renamed(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x * 10)
}

// The one-parameter form: the input is `()`.
#[activity]
async fn key(ctx: ActivityContext) -> Result<String, Error> {
    Ok(ctx.idempotency_key())
}

// A tuple pattern, an error type from std, and `Result` spelled with its path.
#[activity]
async fn concat(
    _ctx: ActivityContext,
    (a, b): (u64, String),
) -> std::result::Result<String, std::io::Error> {
    Ok(format!("{a}{b}"))
}

#[activity]
async fn fails_io(_ctx: ActivityContext, what: String) -> Result<u64, std::io::Error> {
    Err(std::io::Error::other(format!("disk full: {what}")))
}

#[activity]
async fn fails_string(_ctx: ActivityContext, x: u64) -> Result<u64, String> {
    Err(format!("{x} is odd"))
}

/// The activity error of a user's own type.
#[derive(Debug)]
struct Rejected(u64);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rejected {}", self.0)
    }
}

impl std::error::Error for Rejected {}

#[activity]
async fn fails_custom(_ctx: ActivityContext, x: u64) -> Result<u64, Rejected> {
    Err(Rejected(x))
}

// Attributes other than docs stay on the body: without this `allow`, `unused` would warn.
#[activity]
#[allow(unused_variables)]
async fn ignores_input(_ctx: ActivityContext, unused: u64) -> Result<(), Error> {
    Ok(())
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let a = ctx.call_activity(add_one, x).await?;
    ctx.call_activity(add_one, a).await
}

#[orchestrator(name = "O1")]
async fn renamed_orchestrator(ctx: OrchestrationContext, text: String) -> Result<String, Error> {
    let joined = ctx.call_activity(concat, (1, text)).await?;
    Ok(joined)
}

// The one-parameter form, and an orchestrator holding non-`Send` state across an await.
#[orchestrator]
async fn no_input(ctx: OrchestrationContext) -> Result<u64, Error> {
    let local = std::rc::Rc::new(41);
    let out = ctx.call_activity(add_one, *local).await?;
    Ok(out)
}

/// Items in a module: the body resolves names through the module's own `use` declarations,
/// and `missing_docs` is denied, so the doc comments must reach the public structs.
pub mod documented {
    #![deny(missing_docs)]

    use durable::prelude::*;
    use std::collections::BTreeMap;

    /// Counts the words of its input.
    #[activity]
    pub async fn count_words(_ctx: ActivityContext, text: String) -> Result<usize, Error> {
        let mut counts = BTreeMap::new();
        for word in text.split_whitespace() {
            *counts.entry(word).or_insert(0) += 1;
        }
        Ok(counts.len())
    }

    /// Counts words through an activity.
    #[orchestrator(name = "documented::count")]
    pub async fn count(ctx: OrchestrationContext, text: String) -> Result<usize, Error> {
        ctx.call_activity(count_words, text).await
    }
}

fn assert_activity<A: Activity<Input = I, Output = O>, I, O>(_: A) {}

fn assert_orchestrator<O: Orchestrator<Input = I, Output = T>, I, T>(_: O) {}

fn context(name: &str) -> Result<ActivityContext, Box<dyn std::error::Error>> {
    Ok(ActivityContext::new(
        InstanceId::new("instance-1")?,
        ExecutionId(1),
        TaskId(7),
        name,
    ))
}

#[test]
fn names_are_the_function_names_unless_overridden() {
    assert_eq!(<add_one as Activity>::NAME, "add_one");
    assert_eq!(<renamed as Activity>::NAME, "F1");
    assert_eq!(<key as Activity>::NAME, "key");
    assert_eq!(<chain as Orchestrator>::NAME, "chain");
    assert_eq!(<renamed_orchestrator as Orchestrator>::NAME, "O1");
    assert_eq!(
        <documented::count as Orchestrator>::NAME,
        "documented::count"
    );
    assert_eq!(<documented::count_words as Activity>::NAME, "count_words");
}

#[test]
fn input_and_output_types_come_from_the_signature() {
    assert_activity::<_, u64, u64>(add_one);
    assert_activity::<_, u64, u64>(renamed);
    assert_activity::<_, (u64, String), String>(concat);
    assert_activity::<_, String, u64>(fails_io);
    assert_activity::<_, u64, u64>(fails_string);
    assert_activity::<_, u64, u64>(fails_custom);
    assert_activity::<_, u64, ()>(ignores_input);
    assert_activity::<_, String, usize>(documented::count_words);
    assert_orchestrator::<_, u64, u64>(chain);
    assert_orchestrator::<_, String, String>(renamed_orchestrator);
    assert_orchestrator::<_, String, usize>(documented::count);
}

#[test]
fn the_one_parameter_forms_take_unit() {
    assert_activity::<_, (), String>(key);
    assert_orchestrator::<_, (), u64>(no_input);
}

#[test]
fn the_structs_are_plain_unit_values() {
    // Clone, Copy, Debug and Default are derived; the Debug form is the function's name.
    fn derives<T: Clone + Copy + std::fmt::Debug + Default>(_: T) {}
    derives(add_one);
    derives(chain);
    assert_eq!(format!("{add_one:?}"), "add_one");
    assert_eq!(std::mem::size_of::<chain>(), 0);
}

#[test]
fn registering_adds_under_the_registered_name() {
    let mut registry = Registry::new();
    Registrable::register(add_one, &mut registry);
    Registrable::register(renamed, &mut registry);
    Registrable::register(chain, &mut registry);
    Registrable::register(renamed_orchestrator, &mut registry);
    assert!(registry.has_activity("add_one"));
    assert!(registry.has_activity("F1"));
    assert!(!registry.has_activity("renamed"));
    assert!(registry.has_orchestrator("chain"));
    assert!(registry.has_orchestrator("O1"));
    assert!(!registry.has_orchestrator("renamed_orchestrator"));
    // Activities and orchestrators are separate namespaces.
    assert!(!registry.has_orchestrator("add_one"));
    assert!(!registry.has_activity("chain"));
}

#[tokio::test]
async fn an_activity_runs_when_called_directly() -> Result<(), Box<dyn std::error::Error>> {
    let out = <add_one as Activity>::run(context("add_one")?, 41).await;
    assert_eq!(out.map_err(|error| error.message().to_owned())?, 42);
    let out = <concat as Activity>::run(context("concat")?, (1, "x".to_owned())).await;
    assert_eq!(out.map_err(|error| error.message().to_owned())?, "1x");
    let out = <key as Activity>::run(context("key")?, ()).await;
    assert_eq!(
        out.map_err(|error| error.message().to_owned())?,
        "instance-1:1:7"
    );
    let out = <documented::count_words as Activity>::run(context("w")?, "a b a".to_owned()).await;
    assert_eq!(out.map_err(|error| error.message().to_owned())?, 2);
    Ok(())
}

#[tokio::test]
async fn the_users_error_converts_into_a_durable_error() -> Result<(), Box<dyn std::error::Error>> {
    let Err(error) = <fails_io as Activity>::run(context("fails_io")?, "/tmp".to_owned()).await
    else {
        return Err("fails_io succeeded".into());
    };
    assert_eq!(error.kind(), ErrorKind::Application);
    assert_eq!(error.message(), "disk full: /tmp");

    let Err(error) = <fails_string as Activity>::run(context("fails_string")?, 3).await else {
        return Err("fails_string succeeded".into());
    };
    assert_eq!(error.kind(), ErrorKind::Application);
    assert_eq!(error.message(), "3 is odd");

    let Err(error) = <fails_custom as Activity>::run(context("fails_custom")?, 5).await else {
        return Err("fails_custom succeeded".into());
    };
    assert_eq!(error.message(), "rejected 5");
    Ok(())
}

#[tokio::test]
async fn the_activity_future_is_send() -> Result<(), Box<dyn std::error::Error>> {
    // `tokio::spawn` requires `Send + 'static`: the `BoxFuture` of the trait guarantees it.
    let handle = tokio::spawn(<add_one as Activity>::run(context("add_one")?, 1));
    let out = handle.await?;
    assert_eq!(out.map_err(|error| error.message().to_owned())?, 2);
    Ok(())
}

#[tokio::test]
async fn orchestrators_run_on_the_runtime() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::builder()
        .in_memory()
        .register(chain)
        .register(renamed_orchestrator)
        .register(no_input)
        .register(add_one)
        .register(concat)
        .register(documented::count)
        .register(documented::count_words)
        .start()
        .await?;
    let client = runtime.client();
    let timeout = Duration::from_secs(10);

    let out: u64 = client.start(chain, 1).await?.wait(timeout).await?;
    assert_eq!(out, 3);
    let out: String = client
        .start(renamed_orchestrator, "!".to_owned())
        .await?
        .wait(timeout)
        .await?;
    assert_eq!(out, "1!");
    let out: u64 = client.start(no_input, ()).await?.wait(timeout).await?;
    assert_eq!(out, 42);
    let out: usize = client
        .start(documented::count, "to be or not to be".to_owned())
        .await?
        .wait(timeout)
        .await?;
    assert_eq!(out, 4);

    runtime.shutdown().await;
    Ok(())
}
