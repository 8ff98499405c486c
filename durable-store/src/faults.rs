//! Fault injection for tests (feature `testing`): [`FaultyStore`] wraps any [`Store`] and
//! [`FaultyEngine`] any [`KvEngine`]; both ask a shared [`Faults`] plan before every call
//! and fail the ones it picks — a chosen commit, the Nth read of a kind, the calls a
//! predicate accepts, or each call with a seeded probability.
//!
//! A commit can fail in two ways, because the embedded stores write and `fdatasync` in one
//! call ([`KvEngine::write`]): *before writing* (nothing applied: a write error, a full
//! disk) or *after writing* ([`Fault::after_write`]: the batch is applied, then the call
//! fails — a lost fsync acknowledgement, where the caller cannot know whether the data will
//! survive). A torn batch, half applied, is not modelled: both engines apply a batch whole
//! or not at all, and fjall's journal recovery drops a batch whose tail is missing.
//!
//! Every injected error says `injected fault` in its message, so a test can tell an
//! injected failure from a real one.
//!
//! ```
//! use durable_store::faults::{Fault, Faults, FaultyStore};
//! use durable_store::{MemoryStore, Store, WriteBatch};
//! use std::sync::Arc;
//!
//! let faults = Faults::new(7);
//! let store = FaultyStore::new(Arc::new(MemoryStore::new()), faults.clone());
//! faults.add(Fault::commit().nth(2).kind(std::io::ErrorKind::StorageFull));
//! assert!(store.commit(&WriteBatch::new()).is_ok());
//! let error = store.commit(&WriteBatch::new()).unwrap_err();
//! assert!(matches!(error, durable_store::Error::StorageFull(_)));
//! assert!(error.to_string().contains("injected fault"));
//! assert_eq!(faults.injected(), 1);
//! ```

use crate::batch::WriteBatch;
use crate::codec::Space;
use crate::error::Error;
use crate::kv::{KvEngine, KvOp, Visitor};
use crate::store::{Durability, Store};
use durable_types::{
    ActivityKey, ActivityWorkItem, EntityId, EntityRecord, HistoryEvent, InboxKey, InboxMessage,
    InstanceQuery, InstanceRecord, TimerKey, TimerRecord,
};
use durable_types::{ExecutionId, InstanceId};
use std::fmt;
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A read a fault can target: a [`Store`] method, or an engine's `get` or `scan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Read {
    /// [`Store::execution_floor`].
    ExecutionFloor,
    /// [`Store::stopped_gracefully`].
    StoppedGracefully,
    /// [`Store::instance`].
    Instance,
    /// [`Store::history`].
    History,
    /// [`Store::inbox`].
    Inbox,
    /// [`Store::inbox_page`].
    InboxPage,
    /// [`Store::scan_inbox`].
    ScanInbox,
    /// [`Store::activity`].
    Activity,
    /// [`Store::scan_activities`].
    ScanActivities,
    /// [`Store::scan_timers`].
    ScanTimers,
    /// [`Store::entity`].
    Entity,
    /// [`Store::list_entities`].
    ListEntities,
    /// [`Store::list_instances`].
    ListInstances,
    /// [`KvEngine::get`] in a keyspace.
    Get(Space),
    /// [`KvEngine::scan`] of a keyspace.
    Scan(Space),
}

/// The call a [`Faults`] plan is asked about.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Call<'a> {
    /// [`Store::commit`] of this batch.
    Commit(&'a WriteBatch),
    /// [`KvEngine::write`] of these changes.
    Write(&'a [KvOp]),
    /// A read.
    Read(Read),
}

impl Call<'_> {
    fn is_write(&self) -> bool {
        matches!(self, Call::Commit(_) | Call::Write(_))
    }
}

impl fmt::Display for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Commit(batch) => write!(f, "commit of {} operations", batch.len()),
            Call::Write(ops) => write!(f, "write of {} changes", ops.len()),
            Call::Read(read) => write!(f, "read {read:?}"),
        }
    }
}

/// Which calls a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Writes,
    AnyRead,
    Read(Read),
    Any,
}

impl Target {
    fn covers(self, call: &Call<'_>) -> bool {
        match (self, call) {
            (Target::Any, _) => true,
            (Target::Writes, call) => call.is_write(),
            (Target::AnyRead, Call::Read(_)) => true,
            (Target::Read(wanted), Call::Read(read)) => wanted == *read,
            _ => false,
        }
    }
}

/// Which of the calls it applies to a fault strikes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Trigger {
    /// The Nth (from 1) since the fault was added, once.
    Nth(u64),
    /// Every one from the Nth on.
    From(u64),
    /// Each with this probability, drawn from the plan's seeded generator.
    Chance(f64),
}

/// What a fault does when it strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moment {
    /// Fail before the call does anything.
    Before,
    /// For writes: apply the changes, then fail. For engine scans: visit this many
    /// entries, then fail.
    After(usize),
}

/// A fault to inject: which calls it applies to, which of them it strikes and how.
///
/// Build one with [`Fault::commit`], [`Fault::read`], [`Fault::any_read`] or
/// [`Fault::any_call`], then narrow it down.
#[derive(Clone)]
#[must_use = "a fault does nothing until it is added to a plan"]
pub struct Fault {
    target: Target,
    trigger: Trigger,
    moment: Moment,
    kind: io::ErrorKind,
    predicate: Option<Predicate>,
}

/// Which calls a fault applies to, beyond its target.
type Predicate = Arc<dyn Fn(&Call<'_>) -> bool + Send + Sync>;

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("target", &self.target)
            .field("trigger", &self.trigger)
            .field("moment", &self.moment)
            .field("kind", &self.kind)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

impl Fault {
    fn new(target: Target) -> Fault {
        Fault {
            target,
            trigger: Trigger::Nth(1),
            moment: Moment::Before,
            kind: io::ErrorKind::Other,
            predicate: None,
        }
    }

    /// Fails the next commit (a [`Store::commit`] or a [`KvEngine::write`]).
    pub fn commit() -> Fault {
        Fault::new(Target::Writes)
    }

    /// Fails the next read of this kind.
    pub fn read(read: Read) -> Fault {
        Fault::new(Target::Read(read))
    }

    /// Fails the next read of any kind.
    pub fn any_read() -> Fault {
        Fault::new(Target::AnyRead)
    }

    /// Fails the next call of any kind.
    pub fn any_call() -> Fault {
        Fault::new(Target::Any)
    }

    /// Strikes the `n`th (from 1) of the calls it applies to, counted from when it is added,
    /// and no other.
    pub fn nth(mut self, n: u64) -> Fault {
        self.trigger = Trigger::Nth(n.max(1));
        self
    }

    /// Strikes every call it applies to from the `n`th on.
    pub fn from_nth(mut self, n: u64) -> Fault {
        self.trigger = Trigger::From(n.max(1));
        self
    }

    /// Strikes every call it applies to.
    pub fn always(self) -> Fault {
        self.from_nth(1)
    }

    /// Strikes each call it applies to with probability `p`, drawn from the plan's seeded
    /// generator.
    pub fn with_probability(mut self, p: f64) -> Fault {
        self.trigger = Trigger::Chance(p.clamp(0.0, 1.0));
        self
    }

    /// Applies only to the calls `predicate` accepts (they alone are counted by
    /// [`Fault::nth`]).
    pub fn matching(
        mut self,
        predicate: impl Fn(&Call<'_>) -> bool + Send + Sync + 'static,
    ) -> Fault {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// The kind of the injected I/O error (default [`io::ErrorKind::Other`]): `StorageFull`
    /// gives [`Error::StorageFull`], `ReadOnlyFilesystem` and `PermissionDenied`
    /// [`Error::ReadOnly`], the others [`Error::Io`].
    pub fn kind(mut self, kind: io::ErrorKind) -> Fault {
        self.kind = kind;
        self
    }

    /// For commits: applies the batch, then fails — the write reached the store but the
    /// caller hears it failed, as when `fdatasync` fails after the write.
    pub fn after_write(mut self) -> Fault {
        self.moment = Moment::After(0);
        self
    }

    /// For [`FaultyEngine`] scans: lets the scan visit `entries` entries, then fails it.
    pub fn after_entries(mut self, entries: usize) -> Fault {
        self.moment = Moment::After(entries);
        self
    }

    fn applies_to(&self, call: &Call<'_>) -> bool {
        self.target.covers(call) && self.predicate.as_ref().is_none_or(|accept| accept(call))
    }
}

/// A fault in a plan, with how many calls it has seen.
struct Armed {
    fault: Fault,
    seen: u64,
}

struct Plan {
    armed: Vec<Armed>,
    random: u64,
    calls: u64,
    writes: u64,
    injected: Vec<String>,
}

impl Plan {
    /// splitmix64: small, seedable, good enough to pick faults.
    fn next_random(&mut self) -> u64 {
        self.random = self.random.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The fault that strikes `call`, if any. Every fault that applies counts the call.
    fn strike(&mut self, call: &Call<'_>) -> Option<(Moment, io::ErrorKind)> {
        self.calls += 1;
        if call.is_write() {
            self.writes += 1;
        }
        let mut struck = None;
        for index in 0..self.armed.len() {
            if !self.armed[index].fault.applies_to(call) {
                continue;
            }
            self.armed[index].seen += 1;
            let seen = self.armed[index].seen;
            let fires = match self.armed[index].fault.trigger {
                Trigger::Nth(n) => seen == n,
                Trigger::From(n) => seen >= n,
                // 53 random bits make a uniform float in [0, 1).
                Trigger::Chance(p) => ((self.next_random() >> 11) as f64 / (1u64 << 53) as f64) < p,
            };
            if fires && struck.is_none() {
                let fault = &self.armed[index].fault;
                struck = Some((fault.moment, fault.kind));
            }
        }
        struck
    }
}

/// A fault-injection plan, shared by the wrappers that consult it; cloning gives another
/// handle on the same plan. Faults can be added and cleared while the store is in use.
#[derive(Clone)]
pub struct Faults {
    plan: Arc<Mutex<Plan>>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plan = self.lock();
        f.debug_struct("Faults")
            .field("armed", &plan.armed.len())
            .field("calls", &plan.calls)
            .field("injected", &plan.injected.len())
            .finish()
    }
}

impl Faults {
    /// An empty plan whose random choices follow `seed`.
    pub fn new(seed: u64) -> Faults {
        Faults {
            plan: Arc::new(Mutex::new(Plan {
                armed: Vec::new(),
                random: seed,
                calls: 0,
                writes: 0,
                injected: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Plan> {
        // A test that panicked while holding the plan leaves it consistent: each update is
        // a few plain assignments.
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a fault; it counts calls from now on.
    pub fn add(&self, fault: Fault) {
        self.lock().armed.push(Armed { fault, seen: 0 });
    }

    /// Removes every fault; calls succeed again (counts are kept).
    pub fn clear(&self) {
        self.lock().armed.clear();
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected.len() as u64
    }

    /// One line per injected fault, in order: which call, and how it failed.
    pub fn log(&self) -> Vec<String> {
        self.lock().injected.clone()
    }

    /// How many calls (reads and writes) the plan was asked about.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// How many commits (or engine writes) the plan was asked about.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Asks the plan about `call`: `None` to go ahead, or when and how to fail.
    fn strike(&self, call: &Call<'_>) -> Option<(Moment, io::ErrorKind)> {
        self.lock().strike(call)
    }

    /// Records an injection into `call` (described) and builds its error.
    fn inject(&self, call: &Call<'_>, moment: Moment, kind: io::ErrorKind) -> Error {
        self.inject_into(&call.to_string(), call.is_write(), moment, kind)
    }

    fn inject_into(&self, call: &str, write: bool, moment: Moment, kind: io::ErrorKind) -> Error {
        let mut plan = self.lock();
        let number = plan.injected.len() + 1;
        let when = match (moment, write) {
            (Moment::Before, true) => "before writing".to_owned(),
            (Moment::Before, false) => "before reading".to_owned(),
            (Moment::After(_), true) => "after writing (the outcome is unknown)".to_owned(),
            (Moment::After(entries), false) => format!("after {entries} entries"),
        };
        let message = format!("injected fault #{number}: {call} failed {when} ({kind:?})");
        plan.injected.push(message.clone());
        Error::from_io(
            std::path::Path::new("(injected fault)"),
            io::Error::new(kind, message),
        )
    }

    /// Runs a read unless a fault strikes it first.
    fn read<T>(&self, read: Read, run: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let call = Call::Read(read);
        match self.strike(&call) {
            None => run(),
            Some((moment, kind)) => Err(self.inject(&call, moment, kind)),
        }
    }

    /// Runs a write, failing it before or after as a fault says.
    fn write(&self, call: &Call<'_>, run: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
        match self.strike(call) {
            None => run(),
            Some((Moment::Before, kind)) => Err(self.inject(call, Moment::Before, kind)),
            Some((moment @ Moment::After(_), kind)) => {
                run()?;
                Err(self.inject(call, moment, kind))
            }
        }
    }
}

/// A [`Store`] that fails the calls its [`Faults`] plan picks and passes the others to the
/// store it wraps.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Faults,
}

impl FaultyStore {
    /// Wraps `inner`; `faults` decides which calls fail.
    pub fn new(inner: Arc<dyn Store>, faults: Faults) -> FaultyStore {
        FaultyStore { inner, faults }
    }

    /// The store underneath, to read what really is there.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// The plan.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl Store for FaultyStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn durability(&self) -> Durability {
        self.inner.durability()
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), Error> {
        self.faults
            .write(&Call::Commit(batch), || self.inner.commit(batch))
    }

    fn execution_floor(&self) -> Result<ExecutionId, Error> {
        self.faults
            .read(Read::ExecutionFloor, || self.inner.execution_floor())
    }

    fn instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>, Error> {
        self.faults.read(Read::Instance, || self.inner.instance(id))
    }

    fn history(&self, id: &InstanceId, execution: ExecutionId) -> Result<Vec<HistoryEvent>, Error> {
        self.faults
            .read(Read::History, || self.inner.history(id, execution))
    }

    fn inbox(&self, id: &InstanceId) -> Result<Vec<(InboxKey, InboxMessage)>, Error> {
        self.faults.read(Read::Inbox, || self.inner.inbox(id))
    }

    fn inbox_page(
        &self,
        id: &InstanceId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, InboxMessage)>, Error> {
        self.faults
            .read(Read::InboxPage, || self.inner.inbox_page(id, after, limit))
    }

    fn scan_inbox(
        &self,
        after: Option<&InboxKey>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, InboxMessage)>, Error> {
        self.faults
            .read(Read::ScanInbox, || self.inner.scan_inbox(after, limit))
    }

    fn stopped_gracefully(&self) -> Result<bool, Error> {
        self.faults
            .read(Read::StoppedGracefully, || self.inner.stopped_gracefully())
    }

    fn activity(&self, key: &ActivityKey) -> Result<Option<ActivityWorkItem>, Error> {
        self.faults
            .read(Read::Activity, || self.inner.activity(key))
    }

    fn scan_activities(
        &self,
        after: Option<&ActivityKey>,
        limit: usize,
    ) -> Result<Vec<ActivityWorkItem>, Error> {
        self.faults.read(Read::ScanActivities, || {
            self.inner.scan_activities(after, limit)
        })
    }

    fn scan_timers(
        &self,
        after: Option<&TimerKey>,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, Error> {
        self.faults
            .read(Read::ScanTimers, || self.inner.scan_timers(after, limit))
    }

    fn entity(&self, id: &EntityId) -> Result<Option<EntityRecord>, Error> {
        self.faults.read(Read::Entity, || self.inner.entity(id))
    }

    fn list_entities(
        &self,
        name: Option<&str>,
        after: Option<&EntityId>,
        limit: usize,
    ) -> Result<Vec<EntityRecord>, Error> {
        self.faults.read(Read::ListEntities, || {
            self.inner.list_entities(name, after, limit)
        })
    }

    fn list_instances(
        &self,
        query: &InstanceQuery,
        after: Option<&InstanceId>,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, Error> {
        self.faults.read(Read::ListInstances, || {
            self.inner.list_instances(query, after, limit)
        })
    }
}

/// A [`KvEngine`] that fails the calls its [`Faults`] plan picks — including a scan
/// partway through ([`Fault::after_entries`]) — and passes the others to the engine it
/// wraps. Under a [`crate::KvStore`] it tests the store's own logic: a failure anywhere
/// below must come out as an error, never as a short or wrong answer.
pub struct FaultyEngine<E: KvEngine> {
    inner: E,
    faults: Faults,
}

impl<E: KvEngine> FaultyEngine<E> {
    /// Wraps `inner`; `faults` decides which calls fail.
    pub fn new(inner: E, faults: Faults) -> FaultyEngine<E> {
        FaultyEngine { inner, faults }
    }

    /// The engine underneath, to read what really is there.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The plan.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl<E: KvEngine> KvEngine for FaultyEngine<E> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn durability(&self) -> Durability {
        self.inner.durability()
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.faults
            .read(Read::Get(space), || self.inner.get(space, key))
    }

    fn scan(
        &self,
        space: Space,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), Error> {
        let call = Call::Read(Read::Scan(space));
        let fail_at = match self.faults.strike(&call) {
            None => None,
            Some((Moment::Before, kind)) => {
                return Err(self.faults.inject(&call, Moment::Before, kind));
            }
            Some((Moment::After(entries), kind)) => Some((entries, kind)),
        };
        let mut visited = 0usize;
        self.inner.scan(space, lower, upper, &mut |key, value| {
            if let Some((entries, kind)) = fail_at
                && visited == entries
            {
                return Err(self.faults.inject(&call, Moment::After(entries), kind));
            }
            visited += 1;
            visit(key, value)
        })
    }

    fn write(&self, ops: Vec<KvOp>) -> Result<(), Error> {
        let call = Call::Write(&ops);
        let Some((moment, kind)) = self.faults.strike(&call) else {
            return self.inner.write(ops);
        };
        // The engine takes the changes by value: describe the call first.
        let described = call.to_string();
        if moment != Moment::Before {
            self.inner.write(ops)?;
        }
        Err(self.faults.inject_into(&described, true, moment, kind))
    }
}
