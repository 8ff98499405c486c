//! The typed function traits that `#[activity]` and `#[orchestrator]` implement, and the
//! [`Registry`] that maps registered names to type-erased entry points.
//!
//! A function is a zero-sized value that carries its name and its input and output
//! types, so `ctx.call_activity(add_one, "x")` fails to compile when `add_one` takes a
//! `u64`.

use crate::activity::ActivityContext;
use crate::context::OrchestrationContext;
use crate::entity::{Entity, EntityEntry};
use crate::error::{Error, ErrorKind};
use durable_store::Json;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
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
    /// Runs the orchestrator.
    fn run(
        ctx: OrchestrationContext,
        input: Self::Input,
    ) -> LocalBoxFuture<'static, Result<Self::Output, Error>>;
}

/// Something a [`Registry`] can hold: an activity, an orchestrator, or (later) an entity.
/// `#[activity]` and `#[orchestrator]` implement it.
pub trait Registrable {
    /// Adds this function to `registry`.
    fn register(self, registry: &mut Registry);
}

/// A type-erased orchestrator entry point: JSON input in, JSON output out.
pub(crate) type OrchestratorFn =
    fn(OrchestrationContext, Json) -> LocalBoxFuture<'static, Result<Json, Error>>;

/// A type-erased activity entry point.
pub(crate) type ActivityFn = fn(ActivityContext, Json) -> BoxFuture<'static, Result<Json, Error>>;

/// Checks that a JSON document decodes as a function's input type.
pub(crate) type InputCheck = fn(&Json) -> Result<(), String>;

#[derive(Clone, Copy)]
pub(crate) struct OrchestratorEntry {
    pub(crate) run: OrchestratorFn,
    pub(crate) check_input: InputCheck,
}

#[derive(Clone, Copy)]
pub(crate) struct ActivityEntry {
    pub(crate) run: ActivityFn,
}

/// The functions a runtime can run, by name.
#[derive(Clone, Default)]
pub struct Registry {
    orchestrators: HashMap<&'static str, OrchestratorEntry>,
    activities: HashMap<&'static str, ActivityEntry>,
    entities: HashMap<&'static str, EntityEntry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut orchestrators: Vec<_> = self.orchestrators.keys().collect();
        let mut activities: Vec<_> = self.activities.keys().collect();
        let mut entities: Vec<_> = self.entities.keys().collect();
        orchestrators.sort();
        activities.sort();
        entities.sort();
        f.debug_struct("Registry")
            .field("orchestrators", &orchestrators)
            .field("activities", &activities)
            .field("entities", &entities)
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds an activity. A second activity of the same name replaces the first.
    pub fn add_activity<A: Activity>(&mut self) {
        self.activities.insert(
            A::NAME,
            ActivityEntry {
                run: run_activity::<A>,
            },
        );
    }

    /// Adds an orchestrator. A second orchestrator of the same name replaces the first.
    pub fn add_orchestrator<O: Orchestrator>(&mut self) {
        self.orchestrators.insert(
            O::NAME,
            OrchestratorEntry {
                run: run_orchestrator::<O>,
                check_input: check_input::<O::Input>,
            },
        );
    }

    /// Adds an entity type. A second entity of the same name replaces the first.
    pub fn add_entity<E: Entity>(&mut self) {
        self.entities.insert(E::NAME, EntityEntry::of::<E>());
    }

    /// Whether an entity type of this name is registered.
    pub fn has_entity(&self, name: &str) -> bool {
        self.entities.contains_key(name)
    }

    pub(crate) fn entity(&self, name: &str) -> Option<EntityEntry> {
        self.entities.get(name).copied()
    }

    /// Whether an orchestrator of this name is registered.
    pub fn has_orchestrator(&self, name: &str) -> bool {
        self.orchestrators.contains_key(name)
    }

    /// Whether an activity of this name is registered.
    pub fn has_activity(&self, name: &str) -> bool {
        self.activities.contains_key(name)
    }

    pub(crate) fn orchestrator(&self, name: &str) -> Option<OrchestratorEntry> {
        self.orchestrators.get(name).copied()
    }

    pub(crate) fn activity(&self, name: &str) -> Option<ActivityEntry> {
        self.activities.get(name).copied()
    }
}

fn check_input<T: DeserializeOwned>(input: &Json) -> Result<(), String> {
    input
        .decode::<T>()
        .map(drop)
        .map_err(|error| error.to_string())
}

fn run_orchestrator<O: Orchestrator>(
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

fn run_activity<A: Activity>(
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
