//! The [`Registry`]: the orchestrators, activities and entity types a runtime can run,
//! by registered name, each as a type-erased entry point (JSON in, JSON out), and how a
//! runtime holds an entity's state without knowing its type.

use durable_core::{Activity, Orchestrator, check_input, run_activity, run_orchestrator};
use durable_core::{
    ActivityFn, Entity, EntityContext, Error, ErrorKind, InputCheck, OrchestratorFn, panic_message,
};
use durable_types::Json;
use std::collections::HashMap;

/// Something a [`Registry`] can hold: an activity or an orchestrator. `#[activity]` and
/// `#[orchestrator]` implement it; entity types are registered with
/// [`RuntimeBuilder::register_entity`](crate::RuntimeBuilder::register_entity).
pub trait Registrable {
    /// Adds this function to `registry`.
    fn register(self, registry: &mut Registry);
}

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

    /// The check that a JSON input decodes as orchestrator `name`'s input type.
    pub(crate) fn orchestrator_input_check(&self, name: &str) -> Option<InputCheck> {
        self.orchestrators.get(name).map(|entry| entry.check_input)
    }

    pub(crate) fn orchestrator(&self, name: &str) -> Option<OrchestratorEntry> {
        self.orchestrators.get(name).copied()
    }

    pub(crate) fn activity(&self, name: &str) -> Option<ActivityEntry> {
        self.activities.get(name).copied()
    }
}

/// A type-erased entity state, as the shards hold it.
pub(crate) trait ErasedEntity {
    fn dispatch(
        &mut self,
        ctx: &EntityContext,
        operation: &str,
        input: &Json,
    ) -> Result<Json, Error>;
    fn is_read_only(&self, operation: &str) -> bool;
    fn save(&self) -> Result<Json, Error>;
}

impl<E: Entity> ErasedEntity for E {
    fn dispatch(
        &mut self,
        ctx: &EntityContext,
        operation: &str,
        input: &Json,
    ) -> Result<Json, Error> {
        Entity::dispatch(self, ctx, operation, input)
    }

    fn is_read_only(&self, operation: &str) -> bool {
        E::is_read_only(operation)
    }

    fn save(&self) -> Result<Json, Error> {
        unwind_safe("serializing the state", E::NAME, || {
            Json::encode(self).map_err(|error| {
                Error::new(
                    ErrorKind::Serialization,
                    format!(
                        "the state of entity type `{}` cannot be serialized: {error}",
                        E::NAME
                    ),
                )
            })
        })
    }
}

/// Runs user code that is not an operation (`Default`, `Serialize`, `Deserialize` of the
/// state) with a panic turned into an error, as for operations.
fn unwind_safe<T>(
    what: &str,
    entity: &str,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(Error::new(
            ErrorKind::Panic,
            format!(
                "{what} of entity type `{entity}` panicked: {}",
                panic_message(&*panic)
            ),
        ))
    })
}

/// Registry entry of an entity type: how to make its state.
#[derive(Clone, Copy)]
pub(crate) struct EntityEntry {
    pub(crate) new: fn() -> Result<Box<dyn ErasedEntity>, Error>,
    pub(crate) load: fn(&Json) -> Result<Box<dyn ErasedEntity>, Error>,
}

impl EntityEntry {
    pub(crate) fn of<E: Entity>() -> EntityEntry {
        EntityEntry {
            new: || {
                unwind_safe("`Default`", E::NAME, || {
                    Ok(Box::new(E::default()) as Box<dyn ErasedEntity>)
                })
            },
            load: |json| {
                unwind_safe("decoding the stored state", E::NAME, || {
                    json.decode::<E>()
                        .map(|state| Box::new(state) as Box<dyn ErasedEntity>)
                        .map_err(|error| {
                            Error::new(
                                ErrorKind::Serialization,
                                format!(
                                    "the stored state of entity type `{}` does not decode: {error}",
                                    E::NAME
                                ),
                            )
                        })
                })
            },
        }
    }
}
