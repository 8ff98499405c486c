//! Table-driven tests of the shard's steps: inputs in, writes out, no threads. Each step's
//! writes are rendered one line per write (the batch first, then what happens after the
//! commit) and compared with the expected lines; the batch is then committed to a memory
//! store, as the writer would, so the next step reads what the last one wrote.

#![allow(clippy::unwrap_used)]

use super::entity::DELETE_OPERATION;
use super::input::{Content, Input, Source, StartTerms};
use super::purge::{Purge, purge};
use super::slot::Slot;
use super::writes::{Env, Next, Writes};
use super::{entity, orchestration};
use crate::client::IdReuse;
use crate::prelude::*;
use crate::registry::Registry;
use crate::runtime::Config;
use crate::runtime::handle::Rejection;
use crate::runtime::ids::Ids;
use crate::runtime::metrics::Metrics;
use crate::runtime::writer::Dispatch;
use durable_store::{MemoryStore, Op, Store};
use durable_types::{
    EntityCaller, EntityMessage, ExecutionId, HistoryEvent, InboxKey, InstanceId, Json, Message,
    TaskId, TimerKey, TimerPurpose, Timestamp,
};
use std::collections::HashMap;

#[activity]
async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let a = ctx.call_activity(add_one, x).await?;
    ctx.call_activity(add_one, a).await
}

#[orchestrator]
async fn approval(ctx: OrchestrationContext) -> Result<String, Error> {
    ctx.wait_for_event::<String>("go").await
}

#[orchestrator]
async fn countdown(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> {
    if n == 0 {
        return Ok(0);
    }
    let _ = ctx.wait_for_event::<()>("tick").await;
    ctx.continue_as_new(countdown, n - 1).await
}

#[orchestrator]
async fn parent(ctx: OrchestrationContext) -> Result<u64, Error> {
    ctx.call_sub_orchestrator_with_id(chain, "child", 1).await
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: i64) {
        self.value += amount;
    }
    fn explode(&mut self) -> Result<(), Error> {
        self.value = -1_000;
        Err(Error::msg("boom"))
    }
    fn get(&self) -> i64 {
        self.value
    }
}

/// What the steps run against: a memory store, the registry, and the slots they keep.
struct Harness {
    store: MemoryStore,
    registry: Registry,
    config: Config,
    ids: Ids,
    metrics: Metrics,
    now: Timestamp,
    slots: HashMap<InstanceId, Slot>,
}

impl Harness {
    fn new() -> Harness {
        let mut registry = Registry::new();
        registry.add_orchestrator::<chain>();
        registry.add_orchestrator::<approval>();
        registry.add_orchestrator::<countdown>();
        registry.add_orchestrator::<parent>();
        registry.add_activity::<add_one>();
        registry.add_entity::<Counter>();
        Harness {
            store: MemoryStore::new(),
            registry,
            config: Config::default(),
            ids: Ids::new(100, ExecutionId(0)),
            metrics: Metrics::default(),
            now: Timestamp(1_000),
            slots: HashMap::new(),
        }
    }

    fn env(&self) -> Env<'_> {
        Env {
            now: self.now,
            registry: &self.registry,
            config: &self.config,
            store: &self.store,
            ids: &self.ids,
            metrics: &self.metrics,
        }
    }

    /// Gives `inputs` to `instance`, runs its step, commits the writes and describes them.
    fn step(&mut self, instance: &str, inputs: Vec<Input>) -> (Vec<String>, Next) {
        let id = InstanceId::from_stored(instance).unwrap();
        let mut slot = self.slots.remove(&id).unwrap_or_else(|| Slot::new(&id));
        slot.inputs.extend(inputs);
        let step = if id.is_entity() {
            entity::step(&mut slot, &id, &self.env())
        } else {
            orchestration::step(&mut slot, &id, &self.env())
        };
        self.slots.insert(id, slot);
        (self.commit(step.writes), step.next)
    }

    fn commit(&self, writes: Writes) -> Vec<String> {
        self.store.commit(&writes.batch).unwrap();
        describe(&writes)
    }

    /// Purges `instance` (`busy`: it has writes in this round).
    fn purge(&mut self, instance: &str, busy: bool) -> Purge {
        let id = InstanceId::new(instance).unwrap();
        let mut slot = self.slots.remove(&id).unwrap_or_else(|| Slot::new(&id));
        let outcome = purge(&mut slot, &id, busy, &self.env());
        self.slots.insert(id, slot);
        outcome
    }

    /// The slot of `instance`, as the step left it.
    fn slot(&mut self, instance: &str) -> &mut Slot {
        let id = InstanceId::from_stored(instance).unwrap();
        self.slots.get_mut(&id).unwrap()
    }
}

/// One line per write: what the batch stores or deletes, then what happens after it.
fn describe(writes: &Writes) -> Vec<String> {
    let ops = writes.batch.ops().iter().map(|op| match op {
        Op::PutInstance(r) => format!(
            "instance {} {} execution {} events {}",
            r.id, r.status, r.execution, r.history_len
        ),
        Op::DeleteInstance(id) => format!("delete instance {id}"),
        Op::AppendHistory {
            instance,
            seq,
            event,
            ..
        } => {
            format!("history {instance} #{seq} {}", describe_event(event))
        }
        Op::DeleteHistory {
            instance,
            execution,
            len,
        } => {
            format!("delete history {instance} execution {execution} ({len} events)")
        }
        Op::PutInbox(key, message) => {
            format!("store message #{} {}", key.seq, describe_message(message))
        }
        Op::DeleteInbox(key) => format!("consume message #{} of {}", key.seq, key.instance),
        Op::PutActivity(item) => format!("store activity {} task {}", item.name, item.task),
        Op::DeleteActivity(key) => format!("delete activity task {} of {}", key.task, key.instance),
        Op::PutTimer(timer) => format!("store timer {:?} at {}", timer.purpose, timer.fire_at.0),
        Op::DeleteTimer(key) => format!("delete timer {:?} at {}", key.purpose, key.fire_at.0),
        Op::PutEntity(record) => format!(
            "entity {} state {} lock {}",
            record.id,
            record
                .state
                .as_ref()
                .map_or("none".into(), ToString::to_string),
            record
                .lock
                .as_ref()
                .map_or("none".into(), |lock| lock.instance.to_string())
        ),
        Op::DeleteEntity(id) => format!("delete entity {id}"),
        Op::SetExecutionFloor(execution) => format!("execution floor {execution}"),
        Op::SetStoppedGracefully(stopped) => format!("stopped gracefully {stopped}"),
    });
    let after = writes.after.iter().map(|dispatch| match dispatch {
        Dispatch::Activity(item) => format!("→ run activity {} task {}", item.name, item.task),
        Dispatch::Timer(timer) => format!("→ arm timer {:?}", timer.purpose),
        Dispatch::CancelTimer(key) => format!("→ disarm timer {:?}", key.purpose),
        Dispatch::CancelActivity(key) => format!("→ cancel activity task {}", key.task),
        Dispatch::Deliver(key, _) => format!("→ deliver #{}", key.seq),
        Dispatch::Reply(_) => "→ reply ok".to_owned(),
        Dispatch::Refuse(_, rejection) => format!("→ refuse {}", describe_rejection(rejection)),
        Dispatch::Committed { .. } => "→ committed".to_owned(),
        Dispatch::Ended(instance) => format!("→ ended {instance}"),
        Dispatch::Barrier(_) => "→ barrier".to_owned(),
    });
    ops.chain(after).collect()
}

fn describe_event(event: &HistoryEvent) -> String {
    match event {
        HistoryEvent::ExecutionStarted { name, input, .. } => {
            format!("ExecutionStarted {name}({input})")
        }
        HistoryEvent::TaskScheduled {
            id, name, input, ..
        } => {
            format!("TaskScheduled {id} {name}({input})")
        }
        HistoryEvent::TaskCompleted { id, output } => format!("TaskCompleted {id} = {output}"),
        HistoryEvent::EventRaised { name, input } => format!("EventRaised {name} = {input}"),
        HistoryEvent::ExecutionCompleted { output } => format!("ExecutionCompleted = {output}"),
        HistoryEvent::ExecutionTerminated { reason } => format!("ExecutionTerminated ({reason})"),
        HistoryEvent::ContinuedAsNew { input } => format!("ContinuedAsNew {input}"),
        HistoryEvent::ExecutionFailed { failure } => {
            format!("ExecutionFailed ({})", failure.message)
        }
        other => other.kind().to_owned(),
    }
}

fn describe_message(message: &durable_types::InboxMessage) -> String {
    let what = match &message.body {
        Message::Event { execution, event } => match execution {
            Some(execution) => format!("{} for execution {execution}", describe_event(event)),
            None => describe_event(event),
        },
        Message::Entity(EntityMessage::Operation {
            operation,
            input,
            caller,
            ..
        }) => match caller {
            Some(caller) => format!("{operation}({input}) from {}", caller.instance),
            None => format!("{operation}({input})"),
        },
        Message::Entity(other) => other.kind().to_owned(),
    };
    format!("to {}: {what}", message.target)
}

fn describe_rejection(rejection: &Rejection) -> String {
    match rejection {
        Rejection::CannotRun(failure) => format!("CannotRun ({})", failure.message),
        other => format!("{other:?}"),
    }
}

fn json<T: serde::Serialize>(value: T) -> Json {
    Json::encode(&value).unwrap()
}

/// A client's command, its reply dropped (the tests read the writes instead).
fn from_client(content: Content) -> Input {
    let (reply, _) = tokio::sync::oneshot::channel();
    let reply = crate::runtime::handle::ReplySender::Local(reply);
    Input {
        content,
        source: Source::Client(reply),
        terms: StartTerms::default(),
    }
}

fn from_inbox(instance: &str, seq: u64, content: Content) -> Input {
    Input {
        content,
        source: Source::Inbox(InboxKey {
            instance: InstanceId::from_stored(instance).unwrap(),
            seq,
        }),
        terms: StartTerms::default(),
    }
}

fn event(event: HistoryEvent) -> Content {
    Content::Event {
        execution: None,
        event,
    }
}

fn start(name: &str, input: Json) -> Content {
    event(HistoryEvent::ExecutionStarted {
        name: name.to_owned(),
        input,
        parent: None,
        generation: 1,
    })
}

fn raise(name: &str, input: Json) -> Content {
    event(HistoryEvent::EventRaised {
        name: name.to_owned(),
        input,
    })
}

fn activity_done(instance: &str, execution: u64, task: u64, output: Json) -> Input {
    Input {
        content: Content::Event {
            execution: Some(ExecutionId(execution)),
            event: HistoryEvent::TaskCompleted {
                id: TaskId(task),
                output,
            },
        },
        source: Source::Activity(durable_types::ActivityKey {
            instance: InstanceId::new(instance).unwrap(),
            execution: ExecutionId(execution),
            task: TaskId(task),
        }),
        terms: StartTerms::default(),
    }
}

fn operation(name: &str, input: Json, caller: Option<EntityCaller>) -> Content {
    Content::Entity(EntityMessage::Operation {
        operation: name.to_owned(),
        reply: caller.is_some(),
        input,
        caller,
    })
}

fn caller(instance: &str, task: u64) -> EntityCaller {
    EntityCaller {
        instance: InstanceId::new(instance).unwrap(),
        execution: ExecutionId(7),
        task: TaskId(task),
    }
}

#[test]
fn a_start_runs_the_first_turn_and_answers_after_the_commit() {
    let mut shard = Harness::new();
    let (writes, next) = shard.step("o-1", vec![from_client(start("chain", json(1)))]);
    assert_eq!(
        writes,
        [
            "history o-1 #0 OrchestratorStarted",
            "history o-1 #1 ExecutionStarted chain(1)",
            "history o-1 #2 TaskScheduled 0 add_one(1)",
            "store activity add_one task 0",
            "instance o-1 Running execution 1 events 3",
            "→ run activity add_one task 0",
            "→ reply ok",
        ]
    );
    assert_eq!(next, Next::Wait);
    // The activity's result: the next step, one commit for "done" and "next scheduled".
    let (writes, _) = shard.step("o-1", vec![activity_done("o-1", 1, 0, json(2))]);
    assert_eq!(
        writes,
        [
            "history o-1 #3 OrchestratorStarted",
            "history o-1 #4 TaskCompleted 0 = 2",
            "history o-1 #5 TaskScheduled 1 add_one(2)",
            "store activity add_one task 1",
            "instance o-1 Running execution 1 events 6",
            "delete activity task 0 of o-1",
            "→ run activity add_one task 1",
        ]
    );
    let (writes, _) = shard.step("o-1", vec![activity_done("o-1", 1, 1, json(3))]);
    assert_eq!(
        writes,
        [
            "history o-1 #6 OrchestratorStarted",
            "history o-1 #7 TaskCompleted 1 = 3",
            "history o-1 #8 ExecutionCompleted = 3",
            "instance o-1 Completed execution 1 events 9",
            "delete activity task 1 of o-1",
            "→ ended o-1",
        ]
    );
}

#[test]
fn commands_the_instance_cannot_take_are_refused_and_stale_results_dropped() {
    let mut shard = Harness::new();
    let table: Vec<(&str, Input, Vec<&str>)> = vec![
        (
            "an event for an instance that does not exist",
            from_client(raise("go", json(true))),
            vec!["→ refuse NotFound"],
        ),
        (
            "the start of an orchestrator that is not registered",
            from_client(start("nope", json(1))),
            vec![
                "→ refuse CannotRun (cannot start instance `o-2`: orchestrator `nope` is not registered with this runtime; add `.register(nope)` to the runtime builder)",
            ],
        ),
    ];
    for (case, input, expected) in table {
        let (writes, _) = shard.step("o-2", vec![input]);
        assert_eq!(writes, expected, "{case}");
    }
    shard.step("o-2", vec![from_client(start("approval", Json::null()))]);
    let table: Vec<(&str, Input, Vec<&str>)> = vec![
        (
            "a second start of a running id",
            from_client(start("approval", Json::null())),
            vec!["→ refuse AlreadyExists { status: Running }"],
        ),
        (
            "a result for an older execution, consumed and not recorded",
            activity_done("o-2", 99, 0, json(1)),
            vec!["delete activity task 0 of o-2"],
        ),
        (
            "an event, which ends it",
            from_client(raise("go", json("yes"))),
            vec![
                "history o-2 #2 OrchestratorStarted",
                "history o-2 #3 EventRaised go = \"yes\"",
                "history o-2 #4 ExecutionCompleted = \"yes\"",
                "instance o-2 Completed execution 1 events 5",
                "→ ended o-2",
                "→ reply ok",
            ],
        ),
        (
            "an event after the end",
            from_client(raise("go", json("again"))),
            vec!["→ refuse NotRunning { status: Completed }"],
        ),
    ];
    for (case, input, expected) in table {
        let (writes, _) = shard.step("o-2", vec![input]);
        assert_eq!(writes, expected, "{case}");
    }
}

#[test]
fn a_scheduled_start_waits_on_a_timer_and_parks_what_comes_before_it() {
    let mut shard = Harness::new();
    let mut later = from_client(start("approval", Json::null()));
    later.terms.at = Some(Timestamp(5_000));
    let (writes, _) = shard.step("s-1", vec![later]);
    assert_eq!(
        writes,
        [
            "store timer ScheduledStart at 5000",
            "instance s-1 Pending execution 1 events 0",
            "→ arm timer ScheduledStart",
            "→ reply ok",
        ]
    );
    // An event before the start waits for it, stored.
    let (writes, next) = shard.step("s-1", vec![from_client(raise("go", json("early")))]);
    assert_eq!(
        writes,
        [
            "store message #100 to s-1: EventRaised go = \"early\"",
            "→ reply ok"
        ]
    );
    assert_eq!(next, Next::Wait);
    shard.now = Timestamp(5_000);
    let due = Input {
        content: Content::ScheduledStartDue {
            execution: ExecutionId(1),
        },
        source: Source::Timer(TimerKey {
            fire_at: Timestamp(5_000),
            instance: InstanceId::new("s-1").unwrap(),
            execution: ExecutionId(1),
            purpose: TimerPurpose::ScheduledStart,
        }),
        terms: StartTerms::default(),
    };
    // The start goes first, then what waited for it, in one turn.
    let (writes, next) = shard.step("s-1", vec![due]);
    assert_eq!(
        writes,
        [
            "history s-1 #0 OrchestratorStarted",
            "history s-1 #1 ExecutionStarted approval(null)",
            "history s-1 #2 EventRaised go = \"early\"",
            "history s-1 #3 ExecutionCompleted = \"early\"",
            "instance s-1 Completed execution 1 events 4",
            "delete timer ScheduledStart at 5000",
            "consume message #100 of s-1",
            "→ ended s-1",
        ]
    );
    assert_eq!(next, Next::Wait);
}

#[test]
fn suspension_parks_inputs_until_the_resume() {
    let mut shard = Harness::new();
    shard.step("p-1", vec![from_client(start("approval", Json::null()))]);
    let suspend = event(HistoryEvent::ExecutionSuspended {
        reason: "hold".into(),
    });
    let (writes, _) = shard.step("p-1", vec![from_client(suspend)]);
    assert_eq!(
        writes,
        [
            "history p-1 #2 OrchestratorStarted",
            "history p-1 #3 ExecutionSuspended",
            "instance p-1 Suspended execution 1 events 4",
            "→ reply ok",
        ]
    );
    let (writes, _) = shard.step("p-1", vec![from_client(raise("go", json("x")))]);
    assert_eq!(
        writes,
        [
            "store message #100 to p-1: EventRaised go = \"x\"",
            "→ reply ok"
        ]
    );
    let resume = event(HistoryEvent::ExecutionResumed {
        reason: "go on".into(),
    });
    // The resume goes first, then the parked event, in one turn.
    let (writes, _) = shard.step("p-1", vec![from_client(resume)]);
    assert_eq!(
        writes,
        [
            "history p-1 #4 OrchestratorStarted",
            "history p-1 #5 ExecutionResumed",
            "history p-1 #6 EventRaised go = \"x\"",
            "history p-1 #7 ExecutionCompleted = \"x\"",
            "instance p-1 Completed execution 1 events 8",
            "consume message #100 of p-1",
            "→ ended p-1",
            "→ reply ok",
        ]
    );
}

#[test]
fn continue_as_new_starts_the_next_execution_from_a_stored_message() {
    let mut shard = Harness::new();
    shard.step("c-1", vec![from_client(start("countdown", json(1)))]);
    // Two ticks in one turn: the first continues as new, the second waits for the next
    // execution.
    let ticks = vec![
        from_client(raise("tick", Json::null())),
        from_client(raise("tick", Json::null())),
    ];
    let (writes, _) = shard.step("c-1", ticks);
    assert_eq!(
        writes,
        [
            "history c-1 #2 OrchestratorStarted",
            "history c-1 #3 EventRaised tick = null",
            "history c-1 #4 ContinuedAsNew 0",
            "delete history c-1 execution 1 (5 events)",
            "store message #100 to c-1: ExecutionStarted countdown(0) for execution 2",
            "store message #101 to c-1: EventRaised tick = null for execution 2",
            "instance c-1 Running execution 2 events 0",
            "→ deliver #100",
            "→ deliver #101",
            "→ reply ok",
            "→ reply ok",
        ]
    );
    let start = from_inbox(
        "c-1",
        100,
        Content::Event {
            execution: Some(ExecutionId(2)),
            event: HistoryEvent::ExecutionStarted {
                name: "countdown".into(),
                input: json(0),
                parent: None,
                generation: 1,
            },
        },
    );
    let (writes, _) = shard.step("c-1", vec![start]);
    assert_eq!(
        writes,
        [
            "history c-1 #0 OrchestratorStarted",
            "history c-1 #1 ExecutionStarted countdown(0)",
            "history c-1 #2 ExecutionCompleted = 0",
            "instance c-1 Completed execution 2 events 3",
            "consume message #100 of c-1",
            "→ ended c-1",
        ]
    );
}

#[test]
fn a_sub_orchestration_that_cannot_start_fails_back_to_its_parent() {
    let mut shard = Harness::new();
    shard.registry = Registry::new();
    shard.registry.add_orchestrator::<parent>();
    let (writes, _) = shard.step("parent-1", vec![from_client(start("parent", Json::null()))]);
    assert_eq!(
        writes[3..5],
        [
            "store message #100 to child: ExecutionStarted chain(1)",
            "instance parent-1 Running execution 1 events 3"
        ]
    );
    let child_start = from_inbox(
        "child",
        100,
        Content::Event {
            execution: None,
            event: HistoryEvent::ExecutionStarted {
                name: "chain".into(),
                input: json(1),
                parent: Some(durable_types::ParentRef {
                    instance: InstanceId::new("parent-1").unwrap(),
                    execution: ExecutionId(1),
                    task: TaskId(0),
                }),
                generation: 1,
            },
        },
    );
    let (writes, _) = shard.step("child", vec![child_start]);
    assert_eq!(
        writes,
        [
            "consume message #100 of child",
            "store message #101 to parent-1: SubOrchestrationFailed for execution 1",
            "→ deliver #101",
        ]
    );
}

#[test]
fn terminate_ends_the_execution_and_cancels_its_work() {
    let mut shard = Harness::new();
    shard.step("t-1", vec![from_client(start("chain", json(1)))]);
    let terminate = event(HistoryEvent::ExecutionTerminated {
        reason: "stop".into(),
    });
    let (writes, _) = shard.step("t-1", vec![from_client(terminate)]);
    assert_eq!(
        writes,
        [
            "history t-1 #3 OrchestratorStarted",
            "history t-1 #4 ExecutionTerminated (stop)",
            "delete activity task 0 of t-1",
            "instance t-1 Terminated execution 1 events 5",
            "→ cancel activity task 0",
            "→ ended t-1",
            "→ reply ok",
        ]
    );
}

#[test]
fn a_damaged_record_refuses_commands_and_keeps_what_is_stored() {
    use durable_store::codec::Space;
    use durable_store::{KvEngine, KvOp};
    let mut shard = Harness::new();
    let garbage = KvOp::Put(Space::Instances, b"d-1".to_vec(), vec![0xff; 3]);
    shard.store.engine().write(vec![garbage]).unwrap();
    let inputs = vec![
        from_client(raise("go", json(1))),
        from_inbox("d-1", 7, raise("go", json(2))),
    ];
    let (writes, next) = shard.step("d-1", inputs);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].starts_with("→ refuse Store("), "{writes:?}");
    assert!(
        writes[0].contains("d-1"),
        "the error names the instance: {writes:?}"
    );
    assert_eq!(next, Next::Wait);
    assert!(
        shard.slot("d-1").inputs.is_empty(),
        "what is stored stays in the store, not in memory"
    );
}

#[test]
fn an_entity_runs_operations_in_order_and_writes_its_state_once() {
    let mut shard = Harness::new();
    let inputs = vec![
        from_client(operation("add", json(2), None)),
        from_inbox(
            "@counter@k",
            5,
            operation("add", json(3), Some(caller("o-7", 4))),
        ),
        from_inbox(
            "@counter@k",
            6,
            operation("get", Json::null(), Some(caller("o-7", 5))),
        ),
    ];
    let (writes, _) = shard.step("@counter@k", inputs);
    assert_eq!(
        writes,
        [
            "store message #100 to o-7: EntityCompleted for execution 7",
            "consume message #5 of @counter@k",
            "store message #101 to o-7: EntityCompleted for execution 7",
            "consume message #6 of @counter@k",
            "entity @counter@k state {\"value\":5} lock none",
            "→ reply ok",
            "→ deliver #100",
            "→ deliver #101",
        ]
    );
}

#[test]
fn a_failed_operation_is_undone_and_its_caller_told() {
    let mut shard = Harness::new();
    shard.step(
        "@counter@u",
        vec![from_client(operation("add", json(5), None))],
    );
    let inputs = vec![
        from_inbox(
            "@counter@u",
            9,
            operation("explode", Json::null(), Some(caller("o-8", 1))),
        ),
        from_client(operation("add", json(1), None)),
    ];
    let (writes, _) = shard.step("@counter@u", inputs);
    assert_eq!(
        writes,
        [
            "store message #100 to o-8: EntityFailed for execution 7",
            "consume message #9 of @counter@u",
            "entity @counter@u state {\"value\":6} lock none",
            "→ deliver #100",
            "→ reply ok",
        ]
    );
}

#[test]
fn a_locked_entity_parks_others_then_spills_beyond_its_queue() {
    let mut shard = Harness::new();
    shard.config.max_entity_queue = 1;
    let holder = caller("o-1", 0);
    let request = Content::Entity(EntityMessage::LockRequest {
        holder: holder.clone(),
        entities: vec![durable_types::EntityId::new("Counter", "l").unwrap()],
        position: 0,
    });
    let (writes, _) = shard.step("@counter@l", vec![from_inbox("@counter@l", 1, request)]);
    assert_eq!(
        writes,
        [
            "store message #100 to o-1: LocksGranted for execution 7",
            "consume message #1 of @counter@l",
            "entity @counter@l state none lock o-1",
            "→ deliver #100",
        ]
    );
    let others = vec![
        from_client(operation("add", json(1), None)),
        from_client(operation("add", json(10), None)),
        from_inbox(
            "@counter@l",
            2,
            operation("add", json(100), Some(holder.clone())),
        ),
    ];
    let (writes, _) = shard.step("@counter@l", others);
    assert_eq!(
        writes,
        [
            "store message #101 to @counter@l: add(1)",
            "store message #102 to @counter@l: add(10)",
            "store message #103 to o-1: EntityCompleted for execution 7",
            "consume message #2 of @counter@l",
            "entity @counter@l state {\"value\":100} lock o-1",
            "→ reply ok",
            "→ reply ok",
            "→ deliver #103",
        ],
        "one parked in memory, one spilled; the holder's call runs"
    );
    assert_eq!(shard.slot("@counter@l").inputs.len(), 1);
    let release = Content::Entity(EntityMessage::LockRelease { holder });
    let (writes, next) = shard.step("@counter@l", vec![from_inbox("@counter@l", 3, release)]);
    assert_eq!(
        writes,
        [
            "consume message #3 of @counter@l",
            "consume message #101 of @counter@l",
            "entity @counter@l state {\"value\":101} lock none",
        ],
        "the parked one runs after the release"
    );
    assert_eq!(next, Next::Again, "the spilled one is read back next round");
    let (writes, next) = shard.step("@counter@l", vec![]);
    assert_eq!(
        writes,
        [
            "consume message #102 of @counter@l",
            "entity @counter@l state {\"value\":111} lock none",
        ]
    );
    assert_eq!(next, Next::Wait);
}

#[test]
fn an_entity_type_that_is_not_registered_fails_calls_and_keeps_signals() {
    let mut shard = Harness::new();
    let inputs = vec![
        from_client(operation("add", json(1), None)),
        from_inbox(
            "@Gone@g",
            4,
            operation("add", json(1), Some(caller("o-3", 2))),
        ),
        from_inbox("@Gone@g", 5, operation("add", json(1), None)),
    ];
    let (writes, _) = shard.step("@Gone@g", inputs);
    assert_eq!(
        writes,
        [
            "store message #100 to o-3: EntityFailed for execution 7",
            "consume message #4 of @Gone@g",
            "→ refuse EntityNotRegistered { name: \"Gone\" }",
            "→ deliver #100",
        ]
    );
}

#[test]
fn deleting_an_entity_waits_its_turn() {
    let mut shard = Harness::new();
    let inputs = vec![
        from_client(operation("add", json(4), None)),
        from_client(operation(DELETE_OPERATION, Json::null(), None)),
    ];
    let (writes, _) = shard.step("@counter@del", inputs);
    assert_eq!(
        writes,
        ["delete entity @counter@del", "→ reply ok", "→ reply ok"]
    );
}

#[test]
fn purging_waits_for_the_end_then_deletes_everything() {
    let mut shard = Harness::new();
    shard.step("g-1", vec![from_client(start("approval", Json::null()))]);
    let id = InstanceId::new("g-1").unwrap();
    let refused = |outcome: Purge| match outcome {
        Purge::Refused(rejection) => describe_rejection(&rejection),
        Purge::Later => "later".into(),
        Purge::Purged(writes) => describe(&writes).join(", "),
    };
    let busy = shard.purge("g-1", true);
    assert_eq!(refused(busy), "later");
    let running = shard.purge("g-1", false);
    assert_eq!(refused(running), "NotEnded { status: Running }");
    shard.step("g-1", vec![from_client(raise("go", json("ok")))]);
    // A grant left in the inbox holds locks nobody will release.
    let mut leftovers = durable_store::WriteBatch::new();
    leftovers.put_inbox(
        InboxKey {
            instance: id.clone(),
            seq: 42,
        },
        durable_types::InboxMessage {
            target: id.clone(),
            body: Message::Event {
                execution: Some(ExecutionId(1)),
                event: HistoryEvent::LocksGranted {
                    id: TaskId(3),
                    entities: vec![durable_types::EntityId::new("Counter", "x").unwrap()],
                },
            },
        },
    );
    shard.store.commit(&leftovers).unwrap();
    let purged = shard.purge("g-1", false);
    assert_eq!(
        refused(purged),
        "delete history g-1 execution 1 (5 events), delete instance g-1, \
         store message #100 to @counter@x: LockRelease, consume message #42 of g-1, → deliver #100"
    );
    let mut absent = Slot::new(&InstanceId::new("nobody").unwrap());
    let nobody = purge(
        &mut absent,
        &InstanceId::new("nobody").unwrap(),
        false,
        &shard.env(),
    );
    assert_eq!(refused(nobody), "NotFound");
}

#[test]
fn a_start_that_may_terminate_replaces_a_running_execution_in_one_commit() {
    let mut shard = Harness::new();
    shard.step("r-1", vec![from_client(start("approval", Json::null()))]);
    let mut replacement = from_client(start("chain", json(1)));
    replacement.terms.reuse = IdReuse::TerminateRunning;
    let event = from_client(raise("go", json("too late")));
    let (writes, next) = shard.step("r-1", vec![replacement, event]);
    assert_eq!(
        writes,
        [
            // The old execution ends as terminated (its parent, timers, activities and
            // locks are dealt with as for any end) ...
            "history r-1 #2 OrchestratorStarted",
            "history r-1 #3 ExecutionTerminated (replaced by a new start of its id (IdReuse::TerminateRunning))",
            "instance r-1 Terminated execution 1 events 4",
            // ... and the new one replaces it in the same commit.
            "delete history r-1 execution 1 (4 events)",
            "history r-1 #0 OrchestratorStarted",
            "history r-1 #1 ExecutionStarted chain(1)",
            "history r-1 #2 TaskScheduled 0 add_one(1)",
            // What arrived after the start is the new execution's.
            "history r-1 #3 EventRaised go = \"too late\"",
            "store activity add_one task 0",
            "instance r-1 Running execution 2 events 4",
            "→ ended r-1",
            "→ run activity add_one task 0",
            "→ reply ok",
            "→ reply ok",
        ]
    );
    assert_eq!(next, Next::Wait);
    // A start that may not replace anything is refused even by an ended instance.
    let mut once = from_client(start("chain", json(1)));
    once.terms.reuse = IdReuse::Never;
    let (writes, _) = shard.step("r-1", vec![once]);
    assert_eq!(writes, ["→ refuse AlreadyExists { status: Running }"]);
    shard.step("r-1", vec![activity_done("r-1", 2, 0, json(2))]);
    shard.step("r-1", vec![activity_done("r-1", 2, 1, json(3))]);
    let mut once = from_client(start("chain", json(1)));
    once.terms.reuse = IdReuse::Never;
    let (writes, _) = shard.step("r-1", vec![once]);
    assert_eq!(writes, ["→ refuse AlreadyExists { status: Completed }"]);
}

/// Past `slow_turn_warning` every turn and every entity operation is counted (and
/// logged); below it none is. (The thresholds, an hour and zero, keep time out of it.)
#[test]
fn turns_and_operations_past_the_slow_turn_warning_are_counted() {
    let mut shard = Harness::new();
    shard.config.slow_turn_warning = std::time::Duration::from_secs(3600);
    shard.step("fast", vec![from_client(start("chain", json(1)))]);
    shard.step(
        "@counter@fast",
        vec![from_client(operation("add", json(1), None))],
    );
    let slow = |metrics: &Metrics| metrics.snapshot().slow_turns;
    let slow_operations = |metrics: &Metrics| metrics.snapshot().slow_entity_operations;
    assert_eq!(
        (slow(&shard.metrics), slow_operations(&shard.metrics)),
        (0, 0)
    );
    shard.config.slow_turn_warning = std::time::Duration::ZERO;
    shard.step("slow", vec![from_client(start("chain", json(1)))]);
    shard.step("slow", vec![activity_done("slow", 2, 0, json(2))]);
    let signals = vec![
        from_client(operation("add", json(1), None)),
        from_client(operation("get", Json::null(), None)),
    ];
    shard.step("@counter@slow", signals);
    assert_eq!(
        (slow(&shard.metrics), slow_operations(&shard.metrics)),
        (2, 2)
    );
}
