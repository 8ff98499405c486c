//! The runtime: the thin shell around the deterministic core. It owns the store, the
//! orchestration shards (threads that run turns), the writer (the thread that commits),
//! the activity workers (tokio tasks) and the timer service (one tokio task).
//!
//! A work item flows like this: an input (a client start, an activity result, a timer
//! firing, a message from another instance) reaches the instance's shard in memory; the
//! shard runs one turn of the engine; the turn's writes (new history, new work, consumed
//! inputs, the instance record) go to the writer, which commits the writes of every turn
//! waiting at that moment in one batch; after the commit the writer starts the new
//! activities, arms the new timers and delivers the new messages. The store is read only
//! at start-up (to recover) and when an instance is not in memory.

pub(crate) mod activities;
mod clock;
#[cfg(feature = "postgres")]
pub(crate) mod cluster;
mod handle;
mod ids;
pub(crate) mod metrics;
mod ownership;
mod recovery;
mod room;
mod scan;
pub(crate) mod shard;
pub(crate) mod timers;
pub(crate) mod writer;

pub use clock::Clock;
pub use metrics::MetricsSnapshot;

use crate::client::Client;
use crate::registry::{Duplicate, Registrable, Registry};
use durable_core::Limits;
use durable_store::{Durability, FjallStore, MemoryStore, Store};
use durable_types::{ExecutionId, InstanceId};
use handle::RuntimeHandle;
use metrics::Metrics;
use shard::ShardMsg;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use timers::TimerHandle;
use tokio::sync::{Notify, Semaphore};

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No store was chosen.
    #[error(
        "choose where the runtime keeps its state: `.store_path(\"./durable-data\")` for the embedded fjall store, or `.in_memory()` for tests"
    )]
    NoStore,
    /// `start` was called outside a tokio runtime.
    #[error(
        "Runtime::start must be called from within a tokio runtime (for example under #[tokio::main])"
    )]
    NoTokioRuntime,
    /// The tokio runtime has no time driver, which durable timers need.
    #[error(
        "the tokio runtime has timers disabled; build it with `enable_all()` (or `enable_time()`), as #[tokio::main] does"
    )]
    NoTimeDriver,
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] durable_store::Error),
    /// A thread could not be started.
    #[error("cannot start a runtime thread: {0}")]
    Thread(#[source] std::io::Error),
    /// Several functions (or entity types) of one kind were registered under one name;
    /// each [`Duplicate`] names them all.
    #[error("{}", duplicates_text(.0))]
    DuplicateNames(Vec<Duplicate>),
}

fn duplicates_text(duplicates: &[Duplicate]) -> String {
    let lines: Vec<String> = duplicates.iter().map(Duplicate::to_string).collect();
    lines.join("; ")
}

/// Tuning knobs; the defaults suit most applications.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) orchestration_threads: usize,
    pub(crate) max_cached_instances: usize,
    pub(crate) max_concurrent_activities: usize,
    pub(crate) timers_in_memory: usize,
    pub(crate) max_entity_queue: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) limits: Limits,
    pub(crate) max_turn_attempts: u32,
    pub(crate) max_activity_restarts: u32,
    /// How many commit requests may wait for the writer before a shard waits for it.
    pub(crate) writer_queue: usize,
    /// How many messages from clients, activities, timers and start-up may wait in one
    /// shard's mailbox; beyond it they wait for room (see `shard::Mailbox`).
    pub(crate) shard_mailbox: usize,
    /// How long one orchestrator turn or entity operation may hold its shard's thread
    /// before it is logged and counted as slow.
    pub(crate) slow_turn_warning: Duration,
    /// How long a partition lease lasts unrenewed (workers sharing a schema).
    pub(crate) lease_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            orchestration_threads: 1,
            max_cached_instances: 10_000,
            max_concurrent_activities: 1_000,
            timers_in_memory: 10_000,
            max_entity_queue: 10_000,
            shutdown_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            max_turn_attempts: 3,
            max_activity_restarts: 10,
            writer_queue: 64,
            shard_mailbox: 16_384,
            // Temporal's Go SDK calls a workflow task that holds its thread for 1 s a
            // deadlock; turns here take microseconds, and a replay of a long history or
            // a huge fan-out stays well below it, so what passes it is blocking code.
            slow_turn_warning: Duration::from_secs(1),
            // A worker that dies is replaced within about this much (plus a quarter of
            // it): long enough that a busy machine renews in time, short enough to fail
            // over in under two seconds.
            lease_ttl: Duration::from_millis(1500),
        }
    }
}

enum StoreChoice {
    Unset,
    Path(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres {
        url: String,
        schema: String,
    },
    Memory,
    Custom(Arc<dyn Store>),
}

/// Configures and starts a [`Runtime`].
///
/// ```
/// # use durable::prelude::*;
/// # #[activity]
/// # async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> { Ok(x + 1) }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = durable::Runtime::builder()
///     .in_memory()
///     .register(add_one)
///     .start()
///     .await?;
/// runtime.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct RuntimeBuilder {
    store: StoreChoice,
    durability: Durability,
    registry: Registry,
    clock: Clock,
    config: Config,
}

impl RuntimeBuilder {
    /// Keeps state in the embedded fjall store in directory `path` (created if missing).
    pub fn store_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.store = StoreChoice::Path(path.into());
        self
    }

    /// Keeps state in memory: nothing survives the process. For tests.
    pub fn in_memory(mut self) -> Self {
        self.store = StoreChoice::Memory;
        self
    }

    /// Keeps state in PostgreSQL (feature `postgres`): in schema `durable` of the database
    /// `url` names (`postgres://app@db/orders`, or libpq's `host=… dbname=…`), created if
    /// needed. [`RuntimeBuilder::postgres_schema`] picks another schema, so that several
    /// applications (task hubs) share one database.
    ///
    /// Every replica of a service runs the same code against the same schema: the
    /// runtimes share the work as *workers*. The schema's instances fall into 64
    /// partitions; each worker runs the partitions it holds a lease on, a fair share of
    /// them, and takes over those of a worker that stops or dies (within about
    /// [`RuntimeBuilder::lease_ttl`]). Clients of any worker reach every instance.
    ///
    /// ```no_run
    /// # use durable::prelude::*;
    /// # #[activity]
    /// # async fn work(_ctx: ActivityContext, x: u64) -> Result<u64, Error> { Ok(x) }
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder()
    ///     .postgres("postgres://app@db/orders")
    ///     .register(work)
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn postgres(self, url: impl Into<String>) -> Self {
        self.postgres_schema(url, "durable")
    }

    /// [`RuntimeBuilder::postgres`] in schema `schema` (lowercase letters, digits, `_`).
    #[cfg(feature = "postgres")]
    pub fn postgres_schema(mut self, url: impl Into<String>, schema: impl Into<String>) -> Self {
        self.store = StoreChoice::Postgres {
            url: url.into(),
            schema: schema.into(),
        };
        self
    }

    /// The store the environment names, for a program that runs on fjall on a laptop and
    /// on PostgreSQL in production unchanged: `DURABLE_POSTGRES` (a connection string;
    /// feature `postgres`), in schema `DURABLE_POSTGRES_SCHEMA` (default `durable`), as a
    /// worker ([`RuntimeBuilder::postgres`]); otherwise fjall in the directory
    /// `DURABLE_DATA`, or `default_dir`.
    ///
    /// ```no_run
    /// # use durable::prelude::*;
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder().store_from_env("./durable-data").start().await?;
    /// # Ok(()) }
    /// ```
    pub fn store_from_env(self, default_dir: impl Into<PathBuf>) -> Self {
        #[cfg(feature = "postgres")]
        if let Ok(url) = std::env::var("DURABLE_POSTGRES") {
            let schema =
                std::env::var("DURABLE_POSTGRES_SCHEMA").unwrap_or_else(|_| "durable".to_owned());
            return self.postgres_schema(url, schema);
        }
        match std::env::var_os("DURABLE_DATA") {
            Some(dir) => self.store_path(dir),
            None => self.store_path(default_dir),
        }
    }

    /// How long a worker sharing a PostgreSQL schema holds a partition without renewing
    /// its lease (default 1.5 s; renewed every quarter of it). A worker that dies is
    /// replaced after about this long; one that stalls longer (a pause, a cut network)
    /// loses its partitions, and its commits there apply nothing.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.config.lease_ttl = ttl.max(Duration::from_millis(100));
        self
    }

    /// Uses a store of your own.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = StoreChoice::Custom(store);
        self
    }

    /// When a commit counts as done, for [`RuntimeBuilder::store_path`]:
    /// [`Durability::Fsync`] (the default) acknowledges only what is on disk;
    /// [`Durability::Buffered`] acknowledges what is in the operating system's buffers,
    /// which survives a crash of the process but not of the machine.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Registers an orchestrator or activity (a function marked `#[orchestrator]` or
    /// `#[activity]`) under its name. Registering the same function again changes nothing;
    /// another function of the same kind and name makes [`RuntimeBuilder::start`] fail
    /// with [`Error::DuplicateNames`], naming both.
    pub fn register(mut self, function: impl Registrable) -> Self {
        function.register(&mut self.registry);
        self
    }

    /// Registers `function` in place of the function of the same kind and name, whether
    /// that is registered before or after: a test double for the real thing. Two different
    /// replacements of one name are a duplicate.
    ///
    /// ```
    /// # use durable::prelude::*;
    /// mod mail {
    ///     # use durable::prelude::*;
    ///     #[activity]
    ///     pub async fn send(_ctx: ActivityContext, to: String) -> Result<String, Error> {
    ///         Ok(format!("mailed {to}")) // the real thing
    ///     }
    /// }
    /// mod fake {
    ///     # use durable::prelude::*;
    ///     #[activity(name = "send")]
    ///     pub async fn send(_ctx: ActivityContext, to: String) -> Result<String, Error> {
    ///         Ok(format!("pretended to mail {to}"))
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::builder()
    ///     .in_memory()
    ///     .register(mail::send) // what the application registers
    ///     .replace(fake::send) // what the test runs instead
    ///     .start()
    ///     .await?;
    /// # runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn replace(mut self, function: impl Registrable) -> Self {
        function.replace(&mut self.registry);
        self
    }

    /// Registers an entity type (a type with an `#[entity]` impl block) under its name.
    /// The same type again changes nothing; another type of the same name makes
    /// [`RuntimeBuilder::start`] fail with [`Error::DuplicateNames`].
    pub fn register_entity<E: durable_core::Entity>(mut self) -> Self {
        self.registry.add_entity::<E>();
        self
    }

    /// Registers entity type `E` in place of the entity type of the same name, registered
    /// before or after (a test double), as [`RuntimeBuilder::replace`] does for functions.
    pub fn replace_entity<E: durable_core::Entity>(mut self) -> Self {
        self.registry.replace_entity::<E>();
        self
    }

    /// Uses `clock` for the time of turns and timers (for tests: [`Clock::manual`]).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The number of threads that run orchestrator turns (default 1; turns are short, and
    /// one thread runs tens of thousands per second).
    pub fn orchestration_threads(mut self, threads: usize) -> Self {
        self.config.orchestration_threads = threads.max(1);
        self
    }

    /// How many instances a shard keeps in memory between turns (default 10,000). Beyond
    /// that the least recently used idle ones are dropped and replayed when next needed.
    pub fn max_cached_instances(mut self, instances: usize) -> Self {
        self.config.max_cached_instances = instances.max(1);
        self
    }

    /// How many activities run at once (default 1,000); the rest wait their turn.
    pub fn max_concurrent_activities(mut self, activities: usize) -> Self {
        self.config.max_concurrent_activities = activities.max(1);
        self
    }

    /// How many pending timers the timer service keeps in memory (default 10,000); the
    /// later ones wait on disk.
    pub fn timers_in_memory(mut self, timers: usize) -> Self {
        self.config.timers_in_memory = timers.max(2);
        self
    }

    /// How many waiting operations an entity keeps in memory while it is locked (default
    /// 10,000). Client signals beyond it are stored and read back later, never dropped.
    pub fn max_entity_queue(mut self, operations: usize) -> Self {
        self.config.max_entity_queue = operations.max(1);
        self
    }

    /// The largest JSON payload accepted, in bytes (default 16 MiB): an orchestration's
    /// input or output, an external event, an activity's input or output, an entity
    /// operation's input, an entity's state. Beyond it the client gets
    /// [`client::Error::PayloadTooLarge`](crate::client::Error::PayloadTooLarge), an
    /// orchestrator turn fails its instance, an activity fails its call, and an entity
    /// operation fails (its state unchanged) — each with
    /// [`FailureKind::LimitExceeded`](durable_types::FailureKind::LimitExceeded) and what to
    /// do instead: keep large data elsewhere and pass a reference.
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.config.limits.max_payload_bytes = bytes.max(64);
        self
    }

    /// The most actions one orchestrator turn may schedule (default 100,000): activities,
    /// timers, sub-orchestrations and entity messages started before the next `await`. A
    /// turn above it fails its instance with
    /// [`FailureKind::LimitExceeded`](durable_types::FailureKind::LimitExceeded); fan out in
    /// batches, or through sub-orchestrations.
    pub fn max_actions_per_turn(mut self, actions: usize) -> Self {
        self.config.limits.max_actions_per_turn = actions.max(1);
        self
    }

    /// The longest instance id a client may start, in characters (default and most: 256). Ids
    /// are keys in the store and segments of the HTTP API's URLs; a lower limit keeps what
    /// callers send short. A longer one is refused with
    /// [`client::Error::InstanceIdTooLong`](crate::client::Error::InstanceIdTooLong)
    /// (`400` over HTTP). Sub-orchestrations are held only to the store's 256 characters, as
    /// their derived ids grow with their parent's. Which characters are allowed is fixed:
    /// see [`InstanceId`].
    pub fn max_instance_id_len(mut self, characters: usize) -> Self {
        self.config.limits.max_instance_id_len =
            characters.clamp(1, durable_types::INSTANCE_ID_MAX_LEN);
        self
    }

    /// The history length (in events) at which an instance logs a warning advising
    /// `continue_as_new` (default 10,000). Long histories cost replay time after a restart
    /// and disk until purged; the count of instances warned is in
    /// [`MetricsSnapshot::long_histories`](crate::MetricsSnapshot::long_histories).
    pub fn history_warning_events(mut self, events: u64) -> Self {
        self.config.limits.history_warning_events = events.max(1);
        self
    }

    /// How many times an orchestration's turn may fail with an internal error of the
    /// runtime (a bug, or a store that panics) before the instance is marked `Failed` with
    /// the reason instead of being retried (default 3). Errors and panics in orchestrator
    /// code are not retried: they fail the instance at once.
    pub fn max_turn_attempts(mut self, attempts: u32) -> Self {
        self.config.max_turn_attempts = attempts.max(1);
        self
    }

    /// How many abrupt ends of the process (a crash, a kill) an activity may be blamed for
    /// before it fails (its orchestrator gets `Err`, kind `Internal`) instead of running
    /// again (default 10): an activity that crashes the process (an abort, a segfault,
    /// running out of memory) must not crash it at every start forever.
    ///
    /// The runtime tells as well as it can: a graceful [`Runtime::shutdown`] is never
    /// counted, and once an activity has been unfinished at two abrupt ends it runs
    /// isolated from other such activities, so that only the one running when the process
    /// dies is blamed. What it cannot tell is an activity that happened to be running each
    /// time something else killed the process — a deploy that does not shut the runtime
    /// down gracefully, an OOM killer — from one that kills it. Shut down gracefully on
    /// `SIGTERM` ([`Runtime::shutdown_on_signal`]), and raise this if your process is killed often while long activities
    /// run (`u32::MAX` turns the guard off).
    pub fn max_activity_restarts(mut self, restarts: u32) -> Self {
        self.config.max_activity_restarts = restarts;
        self
    }

    /// How long one orchestrator turn (a replay included) or one entity operation may run
    /// before the runtime logs a warning naming it (default 1 s) and counts it in
    /// [`MetricsSnapshot::slow_turns`] or
    /// [`MetricsSnapshot::slow_entity_operations`].
    ///
    /// Orchestrator code and entity operations run on the runtime's orchestration threads,
    /// each thread running many instances one turn at a time: a turn that blocks (a
    /// `std::thread::sleep` or blocking I/O in a helper function, where `#[orchestrator]`
    /// cannot see it, or a long computation) stalls every instance on its thread for as
    /// long. The runtime cannot interrupt it; it can say which instance did it. Blocking
    /// work belongs in an activity. Measuring costs two clock reads per turn and per
    /// operation.
    pub fn slow_turn_warning(mut self, threshold: Duration) -> Self {
        self.config.slow_turn_warning = threshold;
        self
    }

    /// How long [`Runtime::shutdown`] waits for running activities (default 10 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Opens the store, recovers committed work and starts the runtime.
    ///
    /// # Errors
    /// [`Error::NoStore`] if no store was chosen, [`Error::NoTokioRuntime`] outside tokio,
    /// [`Error::Store`] if the store cannot be opened (for example
    /// [`durable_store::Error::Locked`] when another process uses the directory),
    /// [`Error::DuplicateNames`] if two functions of one kind share a name.
    pub async fn start(self) -> Result<Runtime, Error> {
        let duplicates = self.registry.duplicates();
        if !duplicates.is_empty() {
            return Err(Error::DuplicateNames(duplicates));
        }
        crate::panics::install_hook();
        let tokio = tokio::runtime::Handle::try_current().map_err(|_| Error::NoTokioRuntime)?;
        // Without tokio's time driver every durable timer would panic later, inside a task;
        // find out now. (Creating a sleep panics at once when the driver is missing.)
        if std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_err() {
            return Err(Error::NoTimeDriver);
        }
        #[cfg(feature = "postgres")]
        if let StoreChoice::Postgres { url, schema } = self.store {
            let opened = tokio::task::spawn_blocking(move || {
                let engine = durable_store::PostgresEngine::connect_shared(&url, &schema)?;
                let place = PathBuf::from(format!("postgres schema {schema}"));
                durable_store::KvStore::with_engine(engine, &place)
            })
            .await
            .map_err(|join| Error::Thread(std::io::Error::other(join.to_string())))??;
            let opened = Arc::new(opened);
            let cluster = Arc::new(cluster::Cluster::new(
                Arc::clone(&opened),
                self.config.lease_ttl,
            ));
            let store: Arc<dyn Store> = opened;
            return Runtime::launch(
                store,
                self.registry,
                self.clock,
                self.config,
                tokio,
                Some(cluster),
            )
            .await;
        }
        let store: Arc<dyn Store> = match self.store {
            StoreChoice::Unset => return Err(Error::NoStore),
            StoreChoice::Memory => Arc::new(MemoryStore::new()),
            StoreChoice::Custom(store) => store,
            #[cfg(feature = "postgres")]
            StoreChoice::Postgres { .. } => unreachable!("started above"),
            StoreChoice::Path(path) => {
                let durability = self.durability;
                let opened =
                    tokio::task::spawn_blocking(move || FjallStore::open(path, durability))
                        .await
                        .map_err(|join| Error::Thread(std::io::Error::other(join.to_string())))??;
                Arc::new(opened)
            }
        };
        Runtime::launch(
            store,
            self.registry,
            self.clock,
            self.config,
            tokio,
            #[cfg(feature = "postgres")]
            None,
        )
        .await
    }
}

/// Counts running tasks so that shutdown can wait for them.
#[derive(Default)]
pub(crate) struct TaskCounter {
    count: AtomicUsize,
    idle: Notify,
}

/// Holds one count of a [`TaskCounter`] until dropped.
pub(crate) struct TaskGuard(Arc<TaskCounter>);

impl TaskCounter {
    pub(crate) fn start(self: &Arc<Self>) -> TaskGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        TaskGuard(Arc::clone(self))
    }

    /// Waits until no task runs; false if `timeout` passed first.
    async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Clients waiting for instances to end.
#[derive(Default)]
pub(crate) struct Watchers {
    waiting: Mutex<HashMap<InstanceId, Arc<Notify>>>,
}

impl Watchers {
    /// The notification for `instance`'s end; hand it back with [`Watchers::release`].
    pub(crate) fn watch(&self, instance: &InstanceId) -> Arc<Notify> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(waiting.entry(instance.clone()).or_default())
    }

    pub(crate) fn release(&self, instance: &InstanceId, notify: Arc<Notify>) {
        drop(notify);
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting
            .get(instance)
            .is_some_and(|notify| Arc::strong_count(notify) == 1)
        {
            waiting.remove(instance);
        }
    }

    pub(crate) fn notify(&self, instance: &InstanceId) {
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(notify) = waiting.get(instance) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter (at shutdown: they find the runtime gone and return).
    fn notify_all(&self) {
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        for notify in waiting.values() {
            notify.notify_waiters();
        }
    }
}

const RUNNING: u8 = 0;
const STOPPING: u8 = 1;
const POISONED: u8 = 2;

/// What every part of the runtime shares.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) clock: Clock,
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    /// The writer's queue: bounded, so a shard waits when the writer is that many commit
    /// requests behind (the writer itself never waits on a shard).
    pub(crate) writer: writer::Queue,
    shards: Vec<shard::Mailbox>,
    pub(crate) timers: TimerHandle,
    pub(crate) tokio: tokio::runtime::Handle,
    pub(crate) activity_slots: Arc<Semaphore>,
    /// Activities waiting for a slot (see `activities::spawn`).
    pub(crate) activity_backlog: tokio::sync::mpsc::UnboundedSender<(
        durable_types::ActivityWorkItem,
        durable_core::Cancellation,
    )>,
    /// Every activity run not finished, to cancel.
    pub(crate) activity_runs: Arc<activities::Runs>,
    pub(crate) running_activities: Arc<TaskCounter>,
    pub(crate) watchers: Watchers,
    pub(crate) ids: ids::Ids,
    /// The execution floor stored when the runtime started.
    pub(crate) initial_execution_floor: ExecutionId,
    /// The instances this runtime runs (all of them, unless workers share the store).
    pub(crate) ownership: ownership::Ownership,
    /// This worker's part in a schema that workers share.
    #[cfg(feature = "postgres")]
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
    state: AtomicU8,
}

impl Shared {
    /// The shard that runs `instance`.
    pub(crate) fn shard_of(&self, instance: &InstanceId) -> usize {
        if self.shards.len() == 1 {
            return 0;
        }
        // DefaultHasher::new() has fixed keys: the same id maps to the same shard.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        instance.hash(&mut hasher);
        (hasher.finish() % self.shards.len() as u64) as usize
    }

    /// The mailbox of the shard that runs `instance`.
    pub(crate) fn mailbox(&self, instance: &InstanceId) -> &shard::Mailbox {
        &self.shards[self.shard_of(instance)]
    }

    /// The mailbox of shard `index`.
    pub(crate) fn mailbox_at(&self, index: usize) -> Option<&shard::Mailbox> {
        self.shards.get(index)
    }

    /// This worker's part in a shared schema, if it has one.
    #[cfg(feature = "postgres")]
    pub(crate) fn cluster(&self) -> Option<&cluster::Cluster> {
        self.cluster.as_deref()
    }

    /// Never a part: without feature `postgres` no store is shared.
    #[cfg(not(feature = "postgres"))]
    pub(crate) fn cluster(&self) -> Option<&std::convert::Infallible> {
        None
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.state.load(Ordering::Acquire) != RUNNING
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.state.load(Ordering::Acquire) == POISONED
    }

    pub(crate) fn poison(&self) {
        self.state.store(POISONED, Ordering::Release);
        // Waiters hear it now (as `Poisoned`), not at their timeout.
        self.watchers.notify_all();
    }
}

/// A running durable runtime: orchestrations, activities and timers over a store.
///
/// Start one with [`Runtime::builder`]; talk to it through [`Runtime::client`]; stop it
/// with [`Runtime::shutdown`]. Everything committed survives a crash: the next runtime
/// over the same store resumes every instance where it stopped.
pub struct Runtime {
    shared: Option<Arc<Shared>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The lease and message threads of a worker sharing a schema.
    cluster_threads: Vec<std::thread::JoinHandle<()>>,
    timer_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// A builder for a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            store: StoreChoice::Unset,
            durability: Durability::Fsync,
            registry: Registry::new(),
            clock: Clock::system(),
            config: Config::default(),
        }
    }

    /// A client for starting, querying and managing instances. Clients are cheap to clone
    /// and stop working (with [`client::Error::ShuttingDown`](crate::client::Error)) once
    /// the runtime shuts down.
    pub fn client(&self) -> Client {
        Client::new(Arc::new(RuntimeHandle::new(self.shared.as_ref())))
    }

    /// The runtime's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared
            .as_ref()
            .map(|shared| shared.metrics.snapshot())
            .unwrap_or_default()
    }

    /// The name of the store in use (`"fjall"`, `"memory"`, ...) and its durability.
    pub fn store_description(&self) -> (&'static str, Durability) {
        match &self.shared {
            Some(shared) => (shared.store.name(), shared.store.durability()),
            None => ("closed", Durability::Fsync),
        }
    }

    async fn launch(
        store: Arc<dyn Store>,
        registry: Registry,
        clock: Clock,
        config: Config,
        tokio: tokio::runtime::Handle,
        #[cfg(feature = "postgres")] cluster: Option<Arc<cluster::Cluster>>,
    ) -> Result<Runtime, Error> {
        #[cfg(not(feature = "postgres"))]
        let cluster: Option<std::convert::Infallible> = None;
        // A worker sharing a schema reads the partitions it takes, when it takes them.
        let recovery = if cluster.is_some() {
            recovery::Recovery::empty()
        } else {
            let store = Arc::clone(&store);
            let max_restarts = config.max_activity_restarts;
            tokio::task::spawn_blocking(move || recovery::recover(&*store, max_restarts))
                .await
                .map_err(|join| Error::Thread(std::io::Error::other(join.to_string())))??
        };
        let (writer, writer_queue) = writer::Queue::new(config.writer_queue);
        let (shards, shard_queues): (Vec<_>, Vec<_>) = (0..config.orchestration_threads)
            .map(|_| shard::Mailbox::new(config.shard_mailbox))
            .unzip();
        let (timers, armed) = TimerHandle::new();
        let (activity_backlog, backlog) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            store,
            registry: Arc::new(registry),
            clock,
            activity_slots: Arc::new(Semaphore::new(config.max_concurrent_activities)),
            activity_backlog,
            config,
            metrics: Arc::new(Metrics::default()),
            writer,
            shards,
            timers,
            tokio: tokio.clone(),
            running_activities: Arc::new(TaskCounter::default()),
            activity_runs: Arc::default(),
            watchers: Watchers::default(),
            ids: ids::Ids::new(recovery.next_inbox_seq, recovery.execution_floor),
            initial_execution_floor: recovery.execution_floor,
            ownership: if cluster.is_some() {
                ownership::Ownership::none()
            } else {
                ownership::Ownership::all()
            },
            #[cfg(feature = "postgres")]
            cluster,
            state: AtomicU8::new(RUNNING),
        });
        let mut runtime = Runtime {
            shared: Some(Arc::clone(&shared)),
            threads: Vec::new(),
            cluster_threads: Vec::new(),
            timer_task: None,
        };
        runtime.start_threads(&shared, writer_queue, shard_queues)?;
        runtime.timer_task = Some(tokio.spawn(timers::run(Arc::clone(&shared), armed)));
        tokio.spawn(activities::run_backlog(Arc::downgrade(&shared), backlog));
        recovery.resume(&shared).await;
        #[cfg(feature = "postgres")]
        runtime.join_cluster(&shared).await?;
        Ok(runtime)
    }

    /// A worker sharing a schema takes its first share of the partitions, then starts its
    /// lease and message threads.
    #[cfg(feature = "postgres")]
    async fn join_cluster(&mut self, shared: &Arc<Shared>) -> Result<(), Error> {
        let Some(cluster) = &shared.cluster else {
            return Ok(());
        };
        let (first, partner) = (Arc::clone(shared), Arc::clone(cluster));
        tokio::task::spawn_blocking(move || cluster::first_round(&first, &partner))
            .await
            .map_err(|join| Error::Thread(std::io::Error::other(join.to_string())))?;
        self.cluster_threads
            .push(cluster::spawn_membership(shared, cluster).map_err(Error::Thread)?);
        self.cluster_threads
            .push(cluster::spawn_poller(shared, cluster).map_err(Error::Thread)?);
        Ok(())
    }

    /// Starts the writer thread (first: `stop` joins it last) and the shard threads.
    fn start_threads(
        &mut self,
        shared: &Arc<Shared>,
        writer_queue: writer::Inbox,
        shard_queues: Vec<mpsc::Receiver<shard::Envelope>>,
    ) -> Result<(), Error> {
        let writer_shared = Arc::clone(shared);
        self.threads.push(
            std::thread::Builder::new()
                .name("durable-writer".into())
                .spawn(move || writer::run(writer_shared, writer_queue))
                .map_err(Error::Thread)?,
        );
        for (index, queue) in shard_queues.into_iter().enumerate() {
            let shard_shared = Arc::clone(shared);
            self.threads.push(
                std::thread::Builder::new()
                    .name(format!("durable-orchestration-{index}"))
                    .spawn(move || shard::run(index, shard_shared, queue))
                    .map_err(Error::Thread)?,
            );
        }
        Ok(())
    }

    /// Stops the runtime gracefully: stops taking work, lets running activities finish
    /// (up to the shutdown timeout), commits what finished, and closes the store. Work in
    /// flight resumes at the next start.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    /// Runs until the process is asked to stop — `SIGTERM` (what systemd, Kubernetes and
    /// most deploy tools send) or Ctrl-C — then [shuts down](Runtime::shutdown)
    /// gracefully. A graceful stop is not counted against the activities it interrupts
    /// (see [`RuntimeBuilder::max_activity_restarts`]), so a service that restarts often
    /// should end this way.
    ///
    /// ```no_run
    /// # use durable::prelude::*;
    /// # #[activity]
    /// # async fn work(_ctx: ActivityContext, x: u64) -> Result<u64, Error> { Ok(x) }
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let runtime = Runtime::builder()
    ///         .store_path("./durable-data")
    ///         .register(work)
    ///         .start()
    ///         .await?;
    ///     // ... serve clients ...
    ///     runtime.shutdown_on_signal().await?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// When the signal handlers cannot be installed; the runtime is then shut down at once.
    pub async fn shutdown_on_signal(self) -> std::io::Result<()> {
        let waited = stop_signal().await;
        self.shutdown().await;
        waited
    }

    async fn stop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let _ =
            shared
                .state
                .compare_exchange(RUNNING, STOPPING, Ordering::AcqRel, Ordering::Acquire);
        shared.watchers.notify_all();
        if let Some(task) = self.timer_task.take() {
            task.abort();
            let _ = task.await;
        }
        #[cfg(feature = "postgres")]
        if let Some(cluster) = &shared.cluster {
            cluster.stop();
        }
        // The message thread ends now; the lease thread renews until the last commit.
        let mut cluster_threads = std::mem::take(&mut self.cluster_threads);
        let poller = cluster_threads.pop();
        let _ =
            tokio::task::spawn_blocking(move || poller.map(std::thread::JoinHandle::join)).await;
        // Activities that watch their cancellation stop early; they run again after the
        // next start (a success is still committed).
        shared.activity_runs.cancel_all();
        if !shared
            .running_activities
            .wait_idle(shared.config.shutdown_timeout)
            .await
        {
            tracing::warn!(
                "activities still running after the shutdown timeout; they will run again at the next start"
            );
        }
        shared.activity_slots.close();
        for shard in &shared.shards {
            shard.post_now(ShardMsg::Stop);
        }
        let threads = std::mem::take(&mut self.threads);
        let writer = Arc::clone(&shared);
        // A poisoned runtime writes nothing more, not even this mark.
        let store = (!shared.is_poisoned()).then(|| Arc::clone(&shared.store));
        drop(shared);
        // Shards first (they flush their last turns to the writer), then the writer; then,
        // with nothing else writing, what is left unfinished is marked as left by a graceful
        // stop, which the poison-activity guard does not count.
        let _ = tokio::task::spawn_blocking(move || {
            Runtime::join_threads(threads, cluster_threads, writer, store);
        })
        .await;
    }

    /// The end of a graceful stop, on a thread that may block: joins the shards, then the
    /// writer, then leaves the mark of a graceful stop (or, for a worker sharing a schema,
    /// hands its partitions over).
    fn join_threads(
        threads: Vec<std::thread::JoinHandle<()>>,
        lease_thread: Vec<std::thread::JoinHandle<()>>,
        writer: Arc<Shared>,
        store: Option<Arc<dyn Store>>,
    ) {
        let mut threads = threads.into_iter();
        let writer_thread = threads.next();
        for thread in threads {
            let _ = thread.join();
        }
        // Nothing takes from the shards' mailboxes any more: release whoever waits.
        for shard in &writer.shards {
            shard.close();
        }
        writer.writer.stop();
        #[cfg(feature = "postgres")]
        let cluster = writer.cluster.clone();
        drop(writer);
        if let Some(thread) = writer_thread {
            let _ = thread.join();
        }
        #[cfg(feature = "postgres")]
        if let Some(cluster) = cluster {
            // Everything is committed: the partitions go to the other workers now (no
            // renewal may extend a lease once released).
            cluster.stop_renewing();
            for thread in lease_thread {
                let _ = thread.join();
            }
            if store.is_some() {
                cluster::leave(&cluster);
            }
            return;
        }
        drop(lease_thread);
        let marked = store.map_or(Ok(()), |store| recovery::mark_stopped_gracefully(&*store));
        if let Err(error) = marked {
            tracing::warn!(
                %error,
                "could not mark the unfinished activities as left by a graceful stop; the next start counts this stop against them"
            );
        }
    }
}

/// Resolves at the first `SIGTERM` or Ctrl-C (`SIGINT`): what a service waits for before
/// it shuts down gracefully, when it has more to stop than the runtime (an HTTP server
/// first). [`Runtime::shutdown_on_signal`] is the same wait for a runtime alone.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Without `shutdown`, stop the threads without waiting for them.
        if let Some(shared) = self.shared.take() {
            shared.state.store(STOPPING, Ordering::Release);
            shared.watchers.notify_all();
            if let Some(task) = self.timer_task.take() {
                task.abort();
            }
            for shard in &shared.shards {
                shard.post_now(ShardMsg::Stop);
                shard.close();
            }
            shared.writer.stop();
            #[cfg(feature = "postgres")]
            if let Some(cluster) = &shared.cluster {
                cluster.stop_renewing();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::prelude::*;
    use std::time::Duration;

    #[activity]
    async fn double(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
        Ok(2 * x)
    }

    #[orchestrator]
    async fn fan(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> {
        let tasks: Vec<_> = (0..n).map(|i| ctx.call_activity(double, i)).collect();
        let sum: u64 = ctx.join_all(tasks).await?.into_iter().sum();
        ctx.sleep(Duration::from_millis(1)).await?;
        Ok(sum)
    }

    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Tally {
        count: u64,
    }

    #[entity]
    impl Tally {
        fn add(&mut self, n: u64) {
            self.count += n;
        }
    }

    /// With room for two messages per shard and one commit request at the writer, every
    /// producer waits most of the time: fan-outs, entity signals and timers still all
    /// arrive, nothing deadlocks, nothing is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tiny_queues_slow_producers_down_and_lose_nothing() {
        let mut builder = Runtime::builder()
            .in_memory()
            .orchestration_threads(2)
            .register(fan)
            .register(double)
            .register_entity::<Tally>();
        builder.config.shard_mailbox = 2;
        builder.config.writer_queue = 1;
        let runtime = builder.start().await.unwrap();
        let client = runtime.client();
        let mut fans = Vec::new();
        for i in 0..8 {
            fans.push(
                client
                    .start_with_id(fan, format!("fan-{i}"), 300)
                    .await
                    .unwrap(),
            );
        }
        let signals: Vec<_> = (0..4)
            .map(|sender| {
                let client = client.clone();
                tokio::spawn(async move {
                    for _ in 0..250 {
                        let tally = client.entity::<Tally>(format!("t-{sender}"));
                        tally.signal().add(1).await.unwrap();
                    }
                })
            })
            .collect();
        for signal in signals {
            signal.await.unwrap();
        }
        for handle in fans {
            assert_eq!(
                handle.wait(Duration::from_secs(120)).await.unwrap(),
                300 * 299
            );
        }
        for sender in 0..4 {
            let key = format!("t-{sender}");
            let counted = async || {
                client
                    .entity_state::<Tally>(&key)
                    .await
                    .unwrap()
                    .map(|t| t.count)
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while counted().await != Some(250) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "signals to {key} were lost"
                );
                tokio::task::yield_now().await;
            }
        }
        runtime.shutdown().await;
    }
}
