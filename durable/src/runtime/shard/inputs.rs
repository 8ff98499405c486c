//! What a shard does with the inputs of one instance in a round: each goes into the turn,
//! waits (stored durably) until the instance can take it, starts or schedules an
//! execution, is refused, or is dropped as stale — per the table in `routing.rs`.

use super::turns::Replay;
use super::{Input, Round, Shard, Slot, Source, consume};
use crate::client;
use crate::core::Engine;
use crate::runtime::metrics::Metrics;
use crate::runtime::routing::{
    Decision, Kind, Mode, Refusal, SCHEDULED_START_TASK, decide, next_mode,
};
use crate::runtime::writer::Dispatch;
use durable_store::{
    Failure, FailureKind, HistoryEvent, InboxMessage, InstanceId, InstanceRecord, Json, ParentRef,
    RuntimeStatus, TimerRecord, Timestamp,
};

/// The inputs of one turn, as routing sorts them.
#[derive(Default)]
struct Routed {
    live: Vec<HistoryEvent>,
    consumed: Vec<Source>,
    deferred: Vec<Input>,
    /// The instance's mode after the inputs routed so far (a start makes it running).
    mode: Option<Mode>,
}

/// Whether an instance's code can run this round.
enum Readiness {
    /// Yes (its engine is hot, or it needs none).
    Ready,
    /// Not now: a store read failed or an earlier commit is still in flight. Its inputs wait
    /// for a later round.
    Later,
    /// Never: its history cannot be replayed or its orchestrator is not registered. It can
    /// still be terminated (or fail, with this reason).
    Blocked(Failure),
    /// Its record cannot be decoded: nothing can be done with it. Requests to it are
    /// refused with the error, which names it; what is stored for it stays in the store.
    Damaged(durable_store::Error),
}

impl Shard {
    /// Runs one turn of `instance` over the inputs it has received.
    pub(super) fn run_instance(&mut self, instance: &InstanceId, round: &mut Round) {
        let now = self.shared.clock.turn_timestamp();
        if let Some(slot) = self.slots.get_mut(instance) {
            slot.touched = self.round;
            slot.queued = false;
        }
        let blocked = match self.prepare(instance) {
            Readiness::Ready => None,
            Readiness::Later => {
                self.retry.push(instance.clone());
                return;
            }
            Readiness::Blocked(failure) => Some(failure),
            Readiness::Damaged(error) => {
                tracing::error!(
                    %instance, %error,
                    "the instance's record is damaged: requests to it are refused, what is stored for it stays"
                );
                let error = client::Error::from(error);
                if let Some(slot) = self.slots.get_mut(instance) {
                    for input in std::mem::take(&mut slot.inputs) {
                        if let Source::Client(reply) = input.source {
                            round.after.push(Dispatch::Refuse(reply, error.clone()));
                        }
                    }
                    // Read it again next time: it may have been repaired.
                    slot.record = None;
                }
                return;
            }
        };
        if let Some(failure) = self
            .slots
            .get_mut(instance)
            .and_then(|slot| slot.poisoned.take())
        {
            if self
                .slots
                .get(instance)
                .is_some_and(|slot| !matches!(slot.mode(), Mode::Absent | Mode::Ended(_)))
            {
                self.fail_execution(instance, now, failure, round);
            }
            // Its inputs meet the ended instance next round.
            if self
                .slots
                .get(instance)
                .is_some_and(|slot| !slot.inputs.is_empty())
            {
                self.retry.push(instance.clone());
            }
            return;
        }
        let Some(slot) = self.slots.get_mut(instance) else {
            return;
        };
        let mut inputs = std::mem::take(&mut slot.inputs);
        order(&mut inputs, slot.mode());
        let mut routed = Routed::default();
        for input in inputs {
            self.route(instance, input, now, &mut routed, round);
        }
        let Routed {
            live,
            consumed,
            deferred,
            ..
        } = routed;
        if let Some(slot) = self.slots.get_mut(instance) {
            slot.inputs = deferred;
        }
        if !live.is_empty() {
            match blocked {
                None => self.turn(instance, now, live, round),
                Some(failure) => {
                    if !self.run_blocked(instance, now, live, failure.clone(), round) {
                        // Nothing is consumed: the stored inputs wait in the store for a
                        // runtime that can run them; clients hear why now.
                        let error = client::Error::Failed {
                            instance: instance.clone(),
                            failure,
                        };
                        for source in consumed {
                            if let Source::Client(reply) = source {
                                round.after.push(Dispatch::Refuse(reply, error.clone()));
                            }
                        }
                        return;
                    }
                }
            }
        }
        for source in consumed {
            consume(instance, source, round);
        }
        // Inputs that waited for a start or a resume go in the next round, now that the
        // instance can take them (or, if it ended, be dropped).
        if let Some(slot) = self.slots.get(instance)
            && !slot.inputs.is_empty()
            && matches!(slot.mode(), Mode::Running | Mode::Ended(_) | Mode::Absent)
        {
            self.queue(instance.clone());
        }
    }

    /// Loads the record and, for a running instance with history, replays its engine.
    fn prepare(&mut self, instance: &InstanceId) -> Readiness {
        let slot = self.slots.entry(instance.clone()).or_default();
        if slot.stale {
            if slot.inflight > 0 {
                return Readiness::Later; // `committed` queues it again
            }
            // Forget what memory held; the store is up to date now.
            slot.record = None;
            slot.engine = None;
            slot.stale = false;
        }
        if let Err(error) = self.load(instance) {
            if matches!(error, durable_store::Error::Corrupt { .. }) {
                return Readiness::Damaged(error);
            }
            tracing::warn!(%instance, %error, "cannot read the instance record; retrying");
            return Readiness::Later;
        }
        let Some(slot) = self.slots.get(instance) else {
            return Readiness::Later;
        };
        if slot.poisoned.is_some() {
            return Readiness::Ready; // failed without replaying
        }
        let needs_replay = slot.engine.is_none()
            && slot
                .record()
                .is_some_and(|record| !record.status.is_terminal() && record.history_len > 0);
        if !needs_replay {
            return Readiness::Ready;
        }
        match self.hot_engine(instance) {
            Ok(_) => Readiness::Ready,
            Err(Replay::Transient(error)) => {
                tracing::warn!(%instance, %error, "cannot read the history; retrying");
                Readiness::Later
            }
            Err(Replay::Failed(failure)) => Readiness::Blocked(failure),
        }
    }

    /// Handles a turn whose code cannot run: a terminate ends it all the same; otherwise an
    /// unregistered orchestrator leaves its inputs stored (for a runtime that has it), and
    /// a history that cannot be replayed fails the execution. Returns whether the inputs
    /// were consumed.
    fn run_blocked(
        &mut self,
        instance: &InstanceId,
        now: Timestamp,
        live: Vec<HistoryEvent>,
        failure: Failure,
        round: &mut Round,
    ) -> bool {
        let terminate = live.into_iter().find_map(|event| match event {
            HistoryEvent::ExecutionTerminated { reason } => Some(reason),
            _ => None,
        });
        if let Some(reason) = terminate {
            self.terminate_without_code(instance, now, reason, round);
            return true;
        }
        if failure.kind != FailureKind::NotRegistered {
            self.fail_execution(instance, now, failure, round);
            return true;
        }
        tracing::error!(%instance, %failure, "cannot run the instance; its inputs stay stored");
        false
    }

    /// Applies the decision table to one input.
    fn route(
        &mut self,
        instance: &InstanceId,
        input: Input,
        now: Timestamp,
        routed: &mut Routed,
        round: &mut Round,
    ) {
        let Some(slot) = self.slots.get(instance) else {
            return;
        };
        let mode = routed.mode.unwrap_or_else(|| slot.mode());
        let current_execution = slot.record().map(|record| record.execution);
        let scheduled = input.start_at.is_some_and(|at| at > now);
        let kind = Kind::of(&input.event, input.execution.is_some(), scheduled);
        let current = input.execution.is_none_or(|e| Some(e) == current_execution);
        match decide(mode, kind, current) {
            Decision::Begin => {
                self.begin(instance, input, now, routed, round);
                routed.mode = self.slots.get(instance).map(Slot::mode);
            }
            Decision::Schedule => {
                self.schedule(instance, input, now, round);
                routed.mode = Some(Mode::Scheduled);
            }
            Decision::Live => {
                self.go_live(instance, input, kind, routed);
                routed.mode = Some(next_mode(mode, kind));
            }
            Decision::Defer => {
                let parked = self.park(instance, input, round);
                routed.deferred.push(parked);
            }
            Decision::Ack | Decision::Drop => {
                self.release_stale_grant(instance, &input, round);
                routed.consumed.push(input.source);
            }
            Decision::Refuse(refusal) => {
                self.release_stale_grant(instance, &input, round);
                self.refuse(instance, input, refusal, round);
            }
        }
    }

    fn go_live(
        &mut self,
        instance: &InstanceId,
        mut input: Input,
        kind: Kind,
        routed: &mut Routed,
    ) {
        let Some(slot) = self.slots.get_mut(instance) else {
            return;
        };
        let Some(record) = slot.record_mut() else {
            return;
        };
        match kind {
            Kind::ScheduledStartFired => {
                // The scheduled start came due: the execution starts now.
                record.status = RuntimeStatus::Running;
                record.scheduled_start = None;
                input.event = HistoryEvent::ExecutionStarted {
                    name: record.name.clone(),
                    input: record.input.clone(),
                    parent: record.parent.clone(),
                };
            }
            Kind::Suspend => record.status = RuntimeStatus::Suspended,
            Kind::Resume => record.status = RuntimeStatus::Running,
            _ => {}
        }
        routed.live.push(input.event);
        routed.consumed.push(input.source);
    }

    /// Starts a new execution of an absent or ended instance.
    fn begin(
        &mut self,
        instance: &InstanceId,
        input: Input,
        now: Timestamp,
        routed: &mut Routed,
        round: &mut Round,
    ) {
        let HistoryEvent::ExecutionStarted {
            name,
            input: start_input,
            parent,
        } = &input.event
        else {
            return;
        };
        let Some(entry) = self.shared.registry.orchestrator(name) else {
            let name = name.clone();
            self.refuse_unregistered(instance, &name, input, round);
            return;
        };
        let record = self.new_record(
            instance,
            name.clone(),
            start_input.clone(),
            parent.clone(),
            now,
            round,
        );
        let execution = record.execution;
        if let Some(slot) = self.slots.get_mut(instance) {
            slot.record = Some(Some(record));
            slot.engine = Some(Engine::new(instance.clone(), execution, entry.run));
        }
        Metrics::add(&self.shared.metrics.instances_started, 1);
        routed.live.push(input.event);
        routed.consumed.push(input.source);
    }

    /// Records a scheduled start: a pending instance, and the timer that starts it.
    fn schedule(&mut self, instance: &InstanceId, input: Input, now: Timestamp, round: &mut Round) {
        let (
            HistoryEvent::ExecutionStarted {
                name,
                input: start_input,
                parent,
            },
            Some(start_at),
        ) = (&input.event, input.start_at)
        else {
            return;
        };
        if !self.shared.registry.has_orchestrator(name) {
            let name = name.clone();
            self.refuse_unregistered(instance, &name, input, round);
            return;
        }
        let mut record = self.new_record(
            instance,
            name.clone(),
            start_input.clone(),
            parent.clone(),
            now,
            round,
        );
        record.status = RuntimeStatus::Pending;
        record.scheduled_start = Some(start_at);
        let timer = TimerRecord {
            fire_at: start_at,
            instance: instance.clone(),
            execution: record.execution,
            task: SCHEDULED_START_TASK,
        };
        round.batch.put_timer(timer.clone());
        round.after.push(Dispatch::Timer(timer));
        round.batch.put_instance(record.clone());
        if let Some(slot) = self.slots.get_mut(instance) {
            slot.record = Some(Some(record));
            slot.engine = None;
        }
        consume(instance, input.source, round);
    }

    /// The record of a new execution of `instance`, replacing the history of an ended one.
    fn new_record(
        &self,
        instance: &InstanceId,
        name: String,
        input: Json,
        parent: Option<ParentRef>,
        now: Timestamp,
        round: &mut Round,
    ) -> InstanceRecord {
        if let Some(old) = self.slots.get(instance).and_then(Slot::record) {
            // Starting an ended id again replaces its history with the new execution's.
            round
                .batch
                .delete_history(instance.clone(), old.execution, old.history_len);
        }
        let execution = self.new_execution(round);
        InstanceRecord {
            id: instance.clone(),
            name,
            execution,
            status: RuntimeStatus::Running,
            input,
            output: None,
            failure: None,
            custom_status: None,
            created_at: now,
            last_updated_at: now,
            history_len: 0,
            parent,
            scheduled_start: None,
        }
    }

    /// A lock grant for an execution that is gone (ended, or older) holds locks nobody will
    /// release: release them.
    fn release_stale_grant(&mut self, instance: &InstanceId, input: &Input, round: &mut Round) {
        if let (HistoryEvent::LocksGranted { id, entities }, Some(execution)) =
            (&input.event, input.execution)
        {
            let entities = entities.clone();
            self.release_locks(instance, execution, *id, &entities, round);
        }
    }

    /// Makes an input durable (if it is not yet) so it can wait: an activity result or a
    /// timer firing becomes an inbox message in this round's commit; a client request is
    /// answered once it is stored.
    pub(super) fn park(&mut self, instance: &InstanceId, input: Input, round: &mut Round) -> Input {
        if matches!(input.source, Source::Inbox(_)) {
            return input;
        }
        let key = self.shared.next_inbox_key(instance);
        let message = InboxMessage {
            target: instance.clone(),
            execution: input.execution,
            event: input.event.clone(),
        };
        round.batch.put_inbox(key.clone(), message);
        consume(instance, input.source, round);
        Input {
            source: Source::Inbox(key),
            ..input
        }
    }

    fn refuse(&mut self, instance: &InstanceId, input: Input, refusal: Refusal, round: &mut Round) {
        let status = self
            .slots
            .get(instance)
            .and_then(Slot::record)
            .map(|record| record.status);
        let error = match (refusal, status) {
            (Refusal::AlreadyExists, Some(status)) => client::Error::AlreadyExists {
                instance: instance.clone(),
                status,
            },
            (Refusal::NotRunning, Some(status)) => client::Error::NotRunning {
                instance: instance.clone(),
                status,
            },
            _ => client::Error::NotFound {
                instance: instance.clone(),
            },
        };
        self.refuse_with(instance, input, error, round);
    }

    fn refuse_unregistered(
        &mut self,
        instance: &InstanceId,
        name: &str,
        input: Input,
        round: &mut Round,
    ) {
        let failure = Failure::new(
            FailureKind::NotRegistered,
            format!(
                "cannot start instance `{instance}`: orchestrator `{name}` is not registered with this runtime"
            ),
        );
        let error = client::Error::Failed {
            instance: instance.clone(),
            failure,
        };
        self.refuse_with(instance, input, error, round);
    }

    /// Answers a client with `error`; a parent's start is answered with a failed
    /// sub-orchestration; anything else stored is consumed.
    fn refuse_with(
        &mut self,
        instance: &InstanceId,
        input: Input,
        error: client::Error,
        round: &mut Round,
    ) {
        match input.source {
            // Answered once the round commits: the state the answer describes is durable.
            Source::Client(reply) => round.after.push(Dispatch::Refuse(reply, error)),
            source => {
                consume(instance, source, round);
                if let HistoryEvent::ExecutionStarted {
                    parent: Some(parent),
                    ..
                } = input.event
                {
                    let failure = match error {
                        client::Error::Failed { failure, .. } => failure,
                        other => Failure::new(FailureKind::Application, other.to_string()),
                    };
                    let event = HistoryEvent::SubOrchestrationFailed {
                        id: parent.task,
                        failure,
                    };
                    self.send_message(parent.instance, Some(parent.execution), event, round);
                }
            }
        }
    }
}

/// Puts first what the other inputs waited for, keeping arrival order otherwise: the start
/// of an execution that already exists (created by `continue_as_new` or a scheduled
/// start), and the resume of a suspended instance.
fn order(inputs: &mut [Input], mode: Mode) {
    inputs.sort_by_key(|input| match &input.event {
        HistoryEvent::ExecutionStarted { .. } if input.execution.is_some() => 0,
        HistoryEvent::TimerFired { id } if *id == SCHEDULED_START_TASK => 0,
        HistoryEvent::ExecutionResumed { .. } if mode == Mode::Suspended => 1,
        _ => 2,
    });
}
