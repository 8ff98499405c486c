//! The typed function traits that `#[activity]` and `#[orchestrator]` implement, and their
//! type-erased forms (JSON in, JSON out) that a runtime keeps by name.
//!
//! A function is a zero-sized value that carries its name and its input and output
//! types, so `ctx.call_activity(add_one, "x")` fails to compile when `add_one` takes a
//! `u64`.

use crate::activity::ActivityContext;
use crate::context::OrchestrationContext;
use crate::error::{Error, ErrorKind};
use durable_types::Json;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::pin::Pin;

/// A boxed future that can move between threads (activities run on the tokio runtime).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed future that stays on its thread (orchestrators run on the runtime's
/// orchestration threads and need not be `Send`).
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// An activity function: does the real work (I/O, side effects), runs at least once.
///
/// Implemented by `#[activity]`; implement it by hand only for functions the macro cannot
/// express.
pub trait Activity: Copy + Send + Sync + 'static {
    /// The input type.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// The output type.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The registered name; stored in history, so renaming breaks running instances.
    const NAME: &'static str;
    /// Where the function is written (`my_app::email::send`): what tells two functions
    /// registered under one name apart in the error. `#[activity]` writes it from
    /// `module_path!()`; the default is the type's name as the compiler spells it.
    fn rust_path() -> &'static str {
        std::any::type_name::<Self>()
    }
    /// Runs the activity.
    fn run(
        ctx: ActivityContext,
        input: Self::Input,
    ) -> BoxFuture<'static, Result<Self::Output, Error>>;
}

/// An orchestrator function: deterministic code that is replayed from its history.
///
/// Implemented by `#[orchestrator]`, which also checks the body for APIs that break replay.
pub trait Orchestrator: Copy + 'static {
    /// The input type.
    type Input: Serialize + DeserializeOwned + 'static;
    /// The output type.
    type Output: Serialize + DeserializeOwned + 'static;
    /// The registered name; stored in history and instance records.
    const NAME: &'static str;
    /// Where the function is written (`my_app::billing::checkout`): what tells two
    /// functions registered under one name apart in the error. `#[orchestrator]` writes it
    /// from `module_path!()`; the default is the type's name as the compiler spells it.
    fn rust_path() -> &'static str {
        std::any::type_name::<Self>()
    }
    /// Runs the orchestrator.
    fn run(
        ctx: OrchestrationContext,
        input: Self::Input,
    ) -> LocalBoxFuture<'static, Result<Self::Output, Error>>;
}

/// A type-erased orchestrator entry point: JSON input in, JSON output out.
pub type OrchestratorFn =
    fn(OrchestrationContext, Json) -> LocalBoxFuture<'static, Result<Json, Error>>;

/// A type-erased activity entry point.
pub type ActivityFn = fn(ActivityContext, Json) -> BoxFuture<'static, Result<Json, Error>>;

/// Checks that a JSON document decodes as a function's input type.
pub type InputCheck = fn(&Json) -> Result<(), String>;

/// The [`InputCheck`] of input type `T`: whether the document is `T` as it is (strictly,
/// without the second decoding of [`Json::decode`] that a body encoded twice gets).
pub fn check_input<T: DeserializeOwned>(input: &Json) -> Result<(), String> {
    serde_json::from_str::<T>(input.as_str())
        .map(drop)
        .map_err(|error| error.to_string())
}

/// The type-erased entry point of orchestrator `O`: decodes its input, runs it, encodes
/// its output.
pub fn run_orchestrator<O: Orchestrator>(
    ctx: OrchestrationContext,
    input: Json,
) -> LocalBoxFuture<'static, Result<Json, Error>> {
    Box::pin(async move {
        let input: O::Input = input.decode().map_err(|error| {
            Error::new(
                ErrorKind::Serialization,
                format!(
                    "the input of orchestrator `{}` does not decode as its input type: {error}",
                    O::NAME
                ),
            )
        })?;
        let output = O::run(ctx, input).await?;
        encode_output(O::NAME, "orchestrator", &output)
    })
}

/// The type-erased entry point of activity `A`.
pub fn run_activity<A: Activity>(
    ctx: ActivityContext,
    input: Json,
) -> BoxFuture<'static, Result<Json, Error>> {
    Box::pin(async move {
        let input: A::Input = input.decode().map_err(|error| {
            Error::new(
                ErrorKind::Serialization,
                format!(
                    "the input of activity `{}` does not decode as its input type: {error}",
                    A::NAME
                ),
            )
        })?;
        let output = A::run(ctx, input).await?;
        encode_output(A::NAME, "activity", &output)
    })
}

fn encode_output<T: Serialize>(name: &str, what: &str, output: &T) -> Result<Json, Error> {
    Json::encode(output).map_err(|error| {
        Error::new(
            ErrorKind::Serialization,
            format!("the output of {what} `{name}` cannot be serialized to JSON: {error}"),
        )
    })
}
