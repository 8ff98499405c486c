//! The [`Registry`]: the orchestrators, activities and entity types a runtime can run,
//! by registered name, each as a type-erased entry point (JSON in, JSON out), and how a
//! runtime holds an entity's state without knowing its type.
//!
//! A name means one function of its kind: two functions under one name are a
//! [`Duplicate`], which the runtime refuses at start, naming both by their Rust paths;
//! swapping one in on purpose is `replace`. The entry points run the user's code as such
//! (see `panics`), so that a panic the runtime catches is logged, not printed as a crash.

use crate::panics::{UserCode, UserFuture};
use durable_core::{Activity, Orchestrator, check_input, run_activity, run_orchestrator};
use durable_core::{
    ActivityContext, ActivityFn, BoxFuture, Entity, EntityContext, Error, ErrorKind, InputCheck,
    LocalBoxFuture, OperationError, OrchestrationContext, OrchestratorFn, panic_message,
};
use durable_types::Json;
use std::any::TypeId;
use std::collections::HashMap;

/// Something a [`Registry`] can hold: an activity or an orchestrator. `#[activity]` and
/// `#[orchestrator]` implement it; entity types are registered with
/// [`RuntimeBuilder::register_entity`](crate::RuntimeBuilder::register_entity).
pub trait Registrable {
    /// Adds this function to `registry`.
    fn register(self, registry: &mut Registry);

    /// Adds this function to `registry` in place of whatever function of its kind has its
    /// name, before or after (a test double for the real one).
    fn replace(self, registry: &mut Registry);
}

/// What a registered name names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// An `#[orchestrator]` function.
    Orchestrator,
    /// An `#[activity]` function.
    Activity,
    /// An entity type (`#[entity]`).
    Entity,
}

impl Kind {
    /// How a user writes this kind's name option: `#[activity(name = "...")]`.
    fn attribute(self) -> &'static str {
        match self {
            Kind::Orchestrator => "#[orchestrator(name = \"...\")]",
            Kind::Activity => "#[activity(name = \"...\")]",
            Kind::Entity => "#[entity(name = \"...\")]",
        }
    }

    /// The builder call that replaces one on purpose.
    fn replace_call(self) -> &'static str {
        match self {
            Kind::Orchestrator | Kind::Activity => "`.replace(..)` instead of `.register(..)`",
            Kind::Entity => "`.replace_entity::<T>()` instead of `.register_entity::<T>()`",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Orchestrator => "orchestrator",
            Kind::Activity => "activity",
            Kind::Entity => "entity type",
        })
    }
}

/// Several functions (or entity types) of one kind registered under one name: which one a
/// name runs would depend on the order of registration, so
/// [`RuntimeBuilder::start`](crate::RuntimeBuilder::start) refuses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// What the name names.
    pub kind: Kind,
    /// The name.
    pub name: &'static str,
    /// Where each one is written (`my_app::email::send`), in the order registered.
    pub rust_paths: Vec<&'static str>,
}

impl std::fmt::Display for Duplicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<String> = self
            .rust_paths
            .iter()
            .map(|path| format!("`{path}`"))
            .collect();
        let (last, others) = paths.split_last().map_or(("", &[][..]), |(l, o)| (l, o));
        write!(
            f,
            "{} `{}` is registered by {} and {last}: give one another name with `{}` (the name is stored with running instances: keep the one they use), or, to run one in place of the other on purpose (a test double), add it with {}",
            self.kind,
            self.name,
            others.join(", "),
            self.kind.attribute(),
            self.kind.replace_call(),
        )
    }
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

/// How a function comes into the registry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Adding {
    /// As itself: a second function of its name is a duplicate.
    Register,
    /// In place of any other of its name.
    Replace,
}

/// A registered function: its entry point, which function it is, and who else claimed
/// its name.
#[derive(Clone)]
struct Registered<T> {
    entry: T,
    function: TypeId,
    rust_path: &'static str,
    /// Registered with [`Adding::Replace`]: it wins over registrations of its name.
    replaced: bool,
    /// Other functions registered under the same name.
    others: Vec<(TypeId, &'static str)>,
}

/// The functions of one kind, by name.
#[derive(Clone)]
struct Names<T> {
    kind: Kind,
    by_name: HashMap<&'static str, Registered<T>>,
}

impl<T: Copy> Names<T> {
    fn new(kind: Kind) -> Names<T> {
        Names {
            kind,
            by_name: HashMap::new(),
        }
    }

    /// Adds `entry` for `function` under `name`. The same function again changes nothing
    /// (but may make it a replacement); a replacement takes the name from any other, and
    /// anything else that claims a taken name is remembered as a duplicate.
    fn add(&mut self, name: &'static str, entry: T, function: (TypeId, &'static str), how: Adding) {
        let (id, rust_path) = function;
        let fresh = Registered {
            entry,
            function: id,
            rust_path,
            replaced: how == Adding::Replace,
            others: Vec::new(),
        };
        let Some(current) = self.by_name.get_mut(name) else {
            self.by_name.insert(name, fresh);
            return;
        };
        let claimed = |others: &[(TypeId, &str)]| others.iter().any(|(other, _)| *other == id);
        match (how, current.replaced) {
            _ if current.function == id => current.replaced |= how == Adding::Replace,
            (Adding::Register, true) => {}
            (Adding::Replace, false) => *current = fresh,
            (Adding::Register, false) | (Adding::Replace, true) => {
                if !claimed(&current.others) {
                    current.others.push(function);
                }
            }
        }
    }

    fn get(&self, name: &str) -> Option<T> {
        self.by_name.get(name).map(|registered| registered.entry)
    }

    /// The names registered, sorted.
    fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.by_name.keys().copied().collect();
        names.sort_unstable();
        names
    }

    fn duplicates(&self) -> impl Iterator<Item = Duplicate> + '_ {
        self.by_name
            .iter()
            .filter(|(_, registered)| !registered.others.is_empty())
            .map(|(name, registered)| Duplicate {
                kind: self.kind,
                name,
                rust_paths: std::iter::once(registered.rust_path)
                    .chain(registered.others.iter().map(|(_, path)| *path))
                    .collect(),
            })
    }

    fn sorted_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.by_name.keys().copied().collect();
        names.sort_unstable();
        names
    }
}

/// The functions a runtime can run, by name: one function of each kind per name.
///
/// Registering the same function twice changes nothing. Registering two functions of one
/// kind under one name (two modules' `send`, or a `name = "..."` that clashes) is a
/// [`Duplicate`], which [`RuntimeBuilder::start`](crate::RuntimeBuilder::start) refuses;
/// to swap one function for another on purpose, `replace` it.
#[derive(Clone)]
pub struct Registry {
    orchestrators: Names<OrchestratorEntry>,
    activities: Names<ActivityEntry>,
    entities: Names<EntityEntry>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            orchestrators: Names::new(Kind::Orchestrator),
            activities: Names::new(Kind::Activity),
            entities: Names::new(Kind::Entity),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("orchestrators", &self.orchestrators.sorted_names())
            .field("activities", &self.activities.sorted_names())
            .field("entities", &self.entities.sorted_names())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds an activity. The same activity again changes nothing; another of its name is
    /// a [`Duplicate`].
    pub fn add_activity<A: Activity>(&mut self) {
        self.put_activity::<A>(Adding::Register);
    }

    /// Adds an activity in place of any other of its name, registered before or after.
    pub fn replace_activity<A: Activity>(&mut self) {
        self.put_activity::<A>(Adding::Replace);
    }

    fn put_activity<A: Activity>(&mut self, how: Adding) {
        let entry = ActivityEntry {
            run: run_user_activity::<A>,
        };
        let function = (TypeId::of::<A>(), A::rust_path());
        self.activities.add(A::NAME, entry, function, how);
    }

    /// Adds an orchestrator. The same orchestrator again changes nothing; another of its
    /// name is a [`Duplicate`].
    pub fn add_orchestrator<O: Orchestrator>(&mut self) {
        self.put_orchestrator::<O>(Adding::Register);
    }

    /// Adds an orchestrator in place of any other of its name, registered before or after.
    pub fn replace_orchestrator<O: Orchestrator>(&mut self) {
        self.put_orchestrator::<O>(Adding::Replace);
    }

    fn put_orchestrator<O: Orchestrator>(&mut self, how: Adding) {
        let entry = OrchestratorEntry {
            run: run_user_orchestrator::<O>,
            check_input: check_input::<O::Input>,
        };
        let function = (TypeId::of::<O>(), O::rust_path());
        self.orchestrators.add(O::NAME, entry, function, how);
    }

    /// Adds an entity type. The same type again changes nothing; another of its name is a
    /// [`Duplicate`].
    pub fn add_entity<E: Entity>(&mut self) {
        let function = (TypeId::of::<E>(), E::rust_path());
        let entry = EntityEntry::of::<E>();
        self.entities
            .add(E::NAME, entry, function, Adding::Register);
    }

    /// Adds an entity type in place of any other of its name, registered before or after.
    pub fn replace_entity<E: Entity>(&mut self) {
        let function = (TypeId::of::<E>(), E::rust_path());
        let entry = EntityEntry::of::<E>();
        self.entities.add(E::NAME, entry, function, Adding::Replace);
    }

    /// The names that more than one function claims, by kind and name.
    pub fn duplicates(&self) -> Vec<Duplicate> {
        let mut duplicates: Vec<Duplicate> = self
            .orchestrators
            .duplicates()
            .chain(self.activities.duplicates())
            .chain(self.entities.duplicates())
            .collect();
        duplicates.sort_by(|a, b| (a.kind, a.name).cmp(&(b.kind, b.name)));
        duplicates
    }

    /// Whether an entity type of this name is registered.
    pub fn has_entity(&self, name: &str) -> bool {
        self.entities.get(name).is_some()
    }

    pub(crate) fn entity(&self, name: &str) -> Option<EntityEntry> {
        self.entities.get(name)
    }

    /// The names of the orchestrators registered, sorted.
    pub fn orchestrator_names(&self) -> Vec<&'static str> {
        self.orchestrators.names()
    }

    /// The names of the entity types registered, sorted.
    pub fn entity_names(&self) -> Vec<&'static str> {
        self.entities.names()
    }

    /// Whether an orchestrator of this name is registered.
    pub fn has_orchestrator(&self, name: &str) -> bool {
        self.orchestrators.get(name).is_some()
    }

    /// Whether an activity of this name is registered.
    pub fn has_activity(&self, name: &str) -> bool {
        self.activities.get(name).is_some()
    }

    /// The check that a JSON input decodes as orchestrator `name`'s input type.
    pub(crate) fn orchestrator_input_check(&self, name: &str) -> Option<InputCheck> {
        self.orchestrators.get(name).map(|entry| entry.check_input)
    }

    pub(crate) fn orchestrator(&self, name: &str) -> Option<OrchestratorEntry> {
        self.orchestrators.get(name)
    }

    pub(crate) fn activity(&self, name: &str) -> Option<ActivityEntry> {
        self.activities.get(name)
    }
}

/// The entry point of activity `A`, whose panics are the user's (see `panics`).
fn run_user_activity<A: Activity>(
    ctx: ActivityContext,
    input: Json,
) -> BoxFuture<'static, Result<Json, Error>> {
    let code = UserCode::new("activity", A::NAME);
    Box::pin(UserFuture::new(code, run_activity::<A>(ctx, input)))
}

/// The entry point of orchestrator `O`, whose panics are the user's (see `panics`).
fn run_user_orchestrator<O: Orchestrator>(
    ctx: OrchestrationContext,
    input: Json,
) -> LocalBoxFuture<'static, Result<Json, Error>> {
    let code = UserCode::new("orchestrator", O::NAME);
    Box::pin(UserFuture::new(code, run_orchestrator::<O>(ctx, input)))
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
        UserCode::new("entity operation", E::NAME)
            .run(|| Entity::dispatch(self, ctx, operation, input))
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
    entity: &'static str,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let code = UserCode::new("entity type", entity);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| code.run(f)));
    caught.unwrap_or_else(|panic| {
        crate::panics::log_caught(None, None);
        Err(Error::new(
            ErrorKind::Panic,
            format!(
                "{what} of entity type `{entity}` panicked: {}",
                panic_message(&*panic)
            ),
        ))
    })
}

/// Registry entry of an entity type: how to make its state, and how to check a signal
/// before it is sent.
#[derive(Clone, Copy)]
pub(crate) struct EntityEntry {
    pub(crate) new: fn() -> Result<Box<dyn ErasedEntity>, Error>,
    pub(crate) load: fn(&Json) -> Result<Box<dyn ErasedEntity>, Error>,
    /// [`Entity::check_operation`].
    pub(crate) check_operation: fn(&str, &Json) -> Result<(), OperationError>,
    /// [`Entity::operations`].
    pub(crate) operations: fn() -> &'static [&'static str],
}

impl EntityEntry {
    pub(crate) fn of<E: Entity>() -> EntityEntry {
        EntityEntry {
            check_operation: E::check_operation,
            operations: E::operations,
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
