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
pub(crate) mod metrics;
mod routing;
mod scan;
pub(crate) mod shard;
pub(crate) mod timers;
pub(crate) mod writer;

pub use clock::Clock;
pub use metrics::MetricsSnapshot;

use crate::client::Client;
use crate::function::{Registrable, Registry};
use durable_store::{
    Durability, ExecutionId, FjallStore, InboxKey, InstanceId, MemoryStore, Store,
};
use metrics::Metrics;
use shard::ShardMsg;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use timers::TimerHandle;
use tokio::sync::{Notify, Semaphore};
use writer::WriterMsg;

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
}

/// Bounds on what one instance may hold or do, so that a runaway orchestration or an
/// oversized payload gets a clear error instead of exhausting memory or disk. Set with
/// [`RuntimeBuilder::max_payload_bytes`], [`RuntimeBuilder::max_actions_per_turn`] and
/// [`RuntimeBuilder::history_warning_events`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The largest JSON payload: an input, an output, an event, an entity operation's
    /// input or an entity's state.
    pub(crate) max_payload_bytes: usize,
    /// The most actions (activities, timers, sub-orchestrations, entity messages) one
    /// orchestrator turn may schedule.
    pub(crate) max_actions_per_turn: usize,
    /// The history length at which a warning advises `continue_as_new`.
    pub(crate) history_warning_events: u64,
    /// The longest instance id accepted, in bytes (at most
    /// [`INSTANCE_ID_MAX_LEN`](durable_store::INSTANCE_ID_MAX_LEN)).
    pub(crate) max_instance_id_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 16 * 1024 * 1024,
            max_actions_per_turn: 100_000,
            history_warning_events: 10_000,
            max_instance_id_len: durable_store::INSTANCE_ID_MAX_LEN,
        }
    }
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
        }
    }
}

enum StoreChoice {
    Unset,
    Path(PathBuf),
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
    /// `#[activity]`).
    pub fn register(mut self, function: impl Registrable) -> Self {
        function.register(&mut self.registry);
        self
    }

    /// Registers an entity type (a type with an `#[entity]` impl block).
    pub fn register_entity<E: crate::Entity>(mut self) -> Self {
        self.registry.add_entity::<E>();
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
    /// [`FailureKind::LimitExceeded`](durable_store::FailureKind::LimitExceeded) and what to
    /// do instead: keep large data elsewhere and pass a reference.
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.config.limits.max_payload_bytes = bytes.max(64);
        self
    }

    /// The most actions one orchestrator turn may schedule (default 100,000): activities,
    /// timers, sub-orchestrations and entity messages started before the next `await`. A
    /// turn above it fails its instance with
    /// [`FailureKind::LimitExceeded`](durable_store::FailureKind::LimitExceeded); fan out in
    /// batches, or through sub-orchestrations.
    pub fn max_actions_per_turn(mut self, actions: usize) -> Self {
        self.config.limits.max_actions_per_turn = actions.max(1);
        self
    }

    /// The longest instance id a client may start, in bytes (default and most: 256). Ids
    /// are keys in the store and segments of the HTTP API's URLs; a lower limit keeps what
    /// callers send short. A longer one is refused with
    /// [`client::Error::InstanceIdTooLong`](crate::client::Error::InstanceIdTooLong)
    /// (`400` over HTTP). Sub-orchestrations are held only to the store's 256 bytes, as
    /// their derived ids grow with their parent's. Which characters are allowed is fixed:
    /// see [`InstanceId`].
    pub fn max_instance_id_len(mut self, bytes: usize) -> Self {
        self.config.limits.max_instance_id_len = bytes.clamp(1, durable_store::INSTANCE_ID_MAX_LEN);
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

    /// How many start-ups in a row may find an activity unfinished and run it again
    /// (default 10). Past that the activity fails (its orchestrator gets `Err`, kind
    /// `Internal`) instead of running: an activity that crashes the process (an abort, a
    /// segfault, running out of memory) must not crash it at every start forever. Raise it
    /// if your process restarts often while long activities run.
    pub fn max_activity_restarts(mut self, restarts: u32) -> Self {
        self.config.max_activity_restarts = restarts;
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
    /// [`durable_store::Error::Locked`] when another process uses the directory).
    pub async fn start(self) -> Result<Runtime, Error> {
        let tokio = tokio::runtime::Handle::try_current().map_err(|_| Error::NoTokioRuntime)?;
        // Without tokio's time driver every durable timer would panic later, inside a task;
        // find out now. (Creating a sleep panics at once when the driver is missing.)
        if std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_err() {
            return Err(Error::NoTimeDriver);
        }
        let store: Arc<dyn Store> = match self.store {
            StoreChoice::Unset => return Err(Error::NoStore),
            StoreChoice::Memory => Arc::new(MemoryStore::new()),
            StoreChoice::Custom(store) => store,
            StoreChoice::Path(path) => {
                let durability = self.durability;
                let opened =
                    tokio::task::spawn_blocking(move || FjallStore::open(path, durability))
                        .await
                        .map_err(|join| Error::Thread(std::io::Error::other(join.to_string())))??;
                Arc::new(opened)
            }
        };
        Runtime::launch(store, self.registry, self.clock, self.config, tokio).await
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
    pub(crate) registry: Registry,
    pub(crate) clock: Clock,
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) writer: mpsc::Sender<WriterMsg>,
    shards: Vec<mpsc::Sender<ShardMsg>>,
    pub(crate) timers: TimerHandle,
    pub(crate) tokio: tokio::runtime::Handle,
    pub(crate) activity_slots: Arc<Semaphore>,
    pub(crate) running_activities: Arc<TaskCounter>,
    pub(crate) watchers: Watchers,
    inbox_seq: AtomicU64,
    /// The next execution id to hand out.
    executions: AtomicU64,
    /// The execution floor stored when the runtime started.
    pub(crate) initial_execution_floor: ExecutionId,
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

    pub(crate) fn send_to_shard(&self, shard: usize, message: ShardMsg) {
        if let Some(sender) = self.shards.get(shard) {
            // A closed shard means the runtime stopped; durable inputs come back at restart.
            let _ = sender.send(message);
        }
    }

    pub(crate) fn shard_sender(&self, instance: &InstanceId) -> mpsc::Sender<ShardMsg> {
        self.shards[self.shard_of(instance)].clone()
    }

    /// A new key for a message to `instance`, later than every stored one.
    pub(crate) fn next_inbox_key(&self, instance: &InstanceId) -> InboxKey {
        InboxKey {
            instance: instance.clone(),
            seq: self.inbox_seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A new execution id, never handed out before in this store.
    pub(crate) fn new_execution(&self) -> ExecutionId {
        ExecutionId(self.executions.fetch_add(1, Ordering::Relaxed))
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
        match &self.shared {
            Some(shared) => Client::new(Arc::downgrade(shared)),
            None => Client::new(std::sync::Weak::new()),
        }
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
    ) -> Result<Runtime, Error> {
        let recovery = {
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || recover(&*store))
                .await
                .map_err(|join| Error::Thread(std::io::Error::other(join.to_string())))??
        };
        let (writer_tx, writer_rx) = mpsc::channel();
        let mut shard_receivers = Vec::new();
        let mut shards = Vec::new();
        for _ in 0..config.orchestration_threads {
            let (tx, rx) = mpsc::channel();
            shards.push(tx);
            shard_receivers.push(rx);
        }
        let (timers, armed) = TimerHandle::new();
        let shared = Arc::new(Shared {
            store,
            registry,
            clock,
            activity_slots: Arc::new(Semaphore::new(config.max_concurrent_activities)),
            config,
            metrics: Arc::new(Metrics::default()),
            writer: writer_tx,
            shards,
            timers,
            tokio: tokio.clone(),
            running_activities: Arc::new(TaskCounter::default()),
            watchers: Watchers::default(),
            inbox_seq: AtomicU64::new(recovery.next_inbox_seq),
            executions: AtomicU64::new(recovery.execution_floor.0 + 1),
            initial_execution_floor: recovery.execution_floor,
            state: AtomicU8::new(RUNNING),
        });
        let mut runtime = Runtime {
            shared: Some(Arc::clone(&shared)),
            threads: Vec::new(),
            timer_task: None,
        };
        let writer_shared = Arc::clone(&shared);
        runtime.threads.push(
            std::thread::Builder::new()
                .name("durable-writer".into())
                .spawn(move || writer::run(writer_shared, writer_rx))
                .map_err(Error::Thread)?,
        );
        for (index, receiver) in shard_receivers.into_iter().enumerate() {
            let shard_shared = Arc::clone(&shared);
            runtime.threads.push(
                std::thread::Builder::new()
                    .name(format!("durable-orchestration-{index}"))
                    .spawn(move || shard::run(index, shard_shared, receiver))
                    .map_err(Error::Thread)?,
            );
        }
        runtime.timer_task = Some(tokio.spawn(timers::run(Arc::clone(&shared), armed)));
        for (key, message) in recovery.inbox {
            let shard = shared.shard_of(&message.target);
            shared.send_to_shard(shard, ShardMsg::Inbox { key, message });
        }
        let max_restarts = shared.config.max_activity_restarts;
        for item in recovery.activities {
            if item.restarts <= max_restarts {
                activities::spawn(&shared, item);
                continue;
            }
            tracing::error!(
                instance = %item.instance, activity = %item.name, restarts = item.restarts,
                "an activity was unfinished at {} start-ups in a row; it fails instead of running again",
                item.restarts
            );
            let failure = durable_store::Failure::new(
                durable_store::FailureKind::Internal,
                format!(
                    "activity `{}` was found unfinished by {} start-ups of the runtime in a row (max_activity_restarts = {max_restarts}); it may be crashing the process, so it is not run again",
                    item.name, item.restarts
                ),
            );
            shared.send_to_shard(
                shared.shard_of(&item.instance),
                ShardMsg::ActivityDone {
                    key: item.key(),
                    outcome: Err(failure),
                },
            );
        }
        for (key, error) in recovery.damaged_messages {
            tracing::error!(
                instance = %key.instance, %error,
                "a stored message of this instance is damaged and cannot be delivered"
            );
            let failure = durable_store::Failure::new(
                durable_store::FailureKind::Internal,
                format!(
                    "a message stored for this instance is damaged and cannot be delivered, so it cannot go on correctly (restore the store from a backup to recover it): {error}"
                ),
            );
            shared.send_to_shard(
                shared.shard_of(&key.instance),
                ShardMsg::Damaged {
                    instance: key.instance,
                    failure,
                },
            );
        }
        for (key, error) in recovery.damaged_activities {
            tracing::error!(
                instance = %key.instance, %error,
                "an activity's stored work item is damaged; the activity fails instead of running"
            );
            let failure = durable_store::Failure::new(
                durable_store::FailureKind::Internal,
                format!(
                    "the stored work item of this activity is damaged and cannot be run: {error}"
                ),
            );
            shared.send_to_shard(
                shared.shard_of(&key.instance),
                ShardMsg::ActivityDone {
                    key,
                    outcome: Err(failure),
                },
            );
        }
        Ok(runtime)
    }

    /// Stops the runtime gracefully: stops taking work, lets running activities finish
    /// (up to the shutdown timeout), commits what finished, and closes the store. Work in
    /// flight resumes at the next start.
    pub async fn shutdown(mut self) {
        self.stop().await;
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
            let _ = shard.send(ShardMsg::Stop);
        }
        let threads = std::mem::take(&mut self.threads);
        let writer = Arc::clone(&shared);
        drop(shared);
        // Shards first (they flush their last turns to the writer), then the writer.
        let _ = tokio::task::spawn_blocking(move || {
            let mut threads = threads.into_iter();
            let writer_thread = threads.next();
            for thread in threads {
                let _ = thread.join();
            }
            let _ = writer.writer.send(WriterMsg::Stop);
            drop(writer);
            if let Some(thread) = writer_thread {
                let _ = thread.join();
            }
        })
        .await;
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
                let _ = shard.send(ShardMsg::Stop);
            }
            let _ = shared.writer.send(WriterMsg::Stop);
        }
    }
}

/// What start-up found in the store.
struct Recovery {
    inbox: Vec<(InboxKey, durable_store::InboxMessage)>,
    activities: Vec<durable_store::ActivityWorkItem>,
    /// Work items whose value cannot be decoded: their activities fail, naming the damage.
    damaged_activities: Vec<(durable_store::ActivityKey, durable_store::Error)>,
    /// Inbox messages whose value cannot be decoded: their orchestrations fail, naming
    /// the damage (what the message said is lost).
    damaged_messages: Vec<(InboxKey, String)>,
    next_inbox_seq: u64,
    execution_floor: ExecutionId,
}

/// Reads every committed, unconsumed message and activity. Timers are read by the timer
/// service itself. A damaged record is logged with the instance it belongs to and stepped
/// over; the others are recovered.
fn recover(store: &dyn Store) -> Result<Recovery, durable_store::Error> {
    use durable_store::{Error as StoreError, RecordKey};
    const PAGE: usize = 4096;
    let mut inbox = Vec::new();
    let mut damaged_messages = Vec::new();
    let mut after = None;
    loop {
        let page = scan::scan_tolerant(
            after,
            PAGE,
            |after, limit| store.scan_inbox(after, limit),
            |(key, _)| key.clone(),
            |error| match error {
                StoreError::Corrupt {
                    key: Some(RecordKey::Inbox(key)),
                    ..
                } => Some(key.clone()),
                _ => None,
            },
        )?;
        damaged_messages.extend(
            page.damaged
                .iter()
                .map(|(key, error)| (key.clone(), error.to_string())),
        );
        inbox.extend(page.records.iter().cloned());
        if !page.is_full(PAGE) {
            break;
        }
        after = page.last;
    }
    let mut activities: Vec<durable_store::ActivityWorkItem> = Vec::new();
    let mut damaged_activities = Vec::new();
    let mut after = None;
    loop {
        let page = scan::scan_tolerant(
            after,
            PAGE,
            |after, limit| store.scan_activities(after, limit),
            durable_store::ActivityWorkItem::key,
            |error| match error {
                StoreError::Corrupt {
                    key: Some(RecordKey::Activity(key)),
                    ..
                } => Some(key.clone()),
                _ => None,
            },
        )?;
        let full = page.is_full(PAGE);
        after = page.last;
        // This start-up found them unfinished: count it, durably, before any runs again.
        let mut counted = durable_store::WriteBatch::new();
        for mut item in page.records {
            item.restarts = item.restarts.saturating_add(1);
            counted.put_activity(item.clone());
            activities.push(item);
        }
        if !counted.is_empty() {
            store.commit(&counted)?;
        }
        damaged_activities.extend(page.damaged);
        if !full {
            break;
        }
    }
    let next_inbox_seq = inbox
        .iter()
        .map(|(key, _)| key.seq)
        .max()
        .map_or(1, |max| max + 1);
    // Deliver in arrival order across instances, as they were sent.
    inbox.sort_by_key(|(key, _)| key.seq);
    Ok(Recovery {
        inbox,
        activities,
        damaged_activities,
        damaged_messages,
        next_inbox_seq,
        execution_floor: store.execution_floor()?,
    })
}
