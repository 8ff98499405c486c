//! The record decoder against hostile bytes: random bytes and mutations (bit flips,
//! truncations, extensions, splices, inflated length prefixes) of real encoded records of
//! every type. Every decode must give a record or a typed error — never a panic, a stack
//! overflow or an allocation sized by an untrusted length. Seeded: set `DURABLE_FUZZ_SEED`
//! to replay a run, `DURABLE_FUZZ_INPUTS` to try more inputs.

use durable_store::codec::{self, Space};
use durable_store::{
    ActivityWorkItem, EntityCaller, EntityId, EntityMessage, EntityRecord, ExecutionId,
    FAILURE_CAUSES_MAX, Failure, FailureKind, HistoryEvent, InboxMessage, InstanceId,
    InstanceRecord, Json, Message, ParentRef, RuntimeStatus, TaskId, TimerPurpose, TimerRecord,
    Timestamp,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// xorshift64*: tiny, seedable, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn id(text: &str) -> InstanceId {
    InstanceId::new(text).unwrap()
}

fn json(value: impl Serialize) -> Json {
    Json::encode(&value).unwrap()
}

fn entity(name: &str, key: &str) -> EntityId {
    EntityId::new(name, key).unwrap()
}

fn failure() -> Failure {
    Failure {
        kind: FailureKind::ActivityFailed,
        message: "activity `charge` failed".into(),
        details: Some(json(serde_json::json!({"code": 402}))),
        cause: Some(Box::new(Failure::new(
            FailureKind::Application,
            "card declined",
        ))),
    }
}

fn caller() -> EntityCaller {
    EntityCaller {
        instance: id("order-7"),
        execution: ExecutionId(3),
        task: TaskId(4),
    }
}

/// One event of every variant: the seeds of the mutations.
fn every_event() -> Vec<HistoryEvent> {
    let accounts = vec![entity("Account", "a"), entity("Account", "b")];
    vec![
        HistoryEvent::ExecutionStarted {
            name: "transfer".into(),
            input: json([1, 2, 3]),
            parent: Some(ParentRef {
                instance: id("parent"),
                execution: ExecutionId(9),
                task: TaskId(2),
            }),
            generation: 1,
        },
        HistoryEvent::OrchestratorStarted {
            at: Timestamp(1_700_000_000_000),
        },
        HistoryEvent::TaskScheduled {
            id: TaskId(0),
            name: "charge".into(),
            input: json("card"),
            retry: None,
        },
        HistoryEvent::TaskCompleted {
            id: TaskId(0),
            output: json(42),
        },
        HistoryEvent::TaskFailed {
            id: TaskId(1),
            failure: failure(),
        },
        HistoryEvent::TimerCreated {
            id: TaskId(2),
            fire_at: Timestamp(u64::MAX - 1),
        },
        HistoryEvent::TimerFired { id: TaskId(2) },
        HistoryEvent::SubOrchestrationCreated {
            id: TaskId(3),
            name: "child".into(),
            instance: id("child-1"),
            input: Json::null(),
        },
        HistoryEvent::SubOrchestrationCompleted {
            id: TaskId(3),
            output: json("done"),
        },
        HistoryEvent::SubOrchestrationFailed {
            id: TaskId(3),
            failure: failure(),
        },
        HistoryEvent::EventRaised {
            name: "approval".into(),
            input: json(true),
        },
        HistoryEvent::ExecutionCompleted { output: json("ok") },
        HistoryEvent::ExecutionFailed { failure: failure() },
        HistoryEvent::ContinuedAsNew { input: json(7) },
        HistoryEvent::ExecutionTerminated {
            reason: "operator".into(),
        },
        HistoryEvent::TimerCancelled { id: TaskId(5) },
        HistoryEvent::ExecutionSuspended {
            reason: "pause".into(),
        },
        HistoryEvent::ExecutionResumed {
            reason: "go".into(),
        },
        HistoryEvent::EntityCalled {
            id: TaskId(6),
            entity: entity("Counter", "c"),
            operation: "add".into(),
            input: json(5),
        },
        HistoryEvent::EntitySignaled {
            id: TaskId(7),
            entity: entity("Counter", "c"),
            operation: "reset".into(),
            input: Json::null(),
        },
        HistoryEvent::EntityCompleted {
            id: TaskId(6),
            output: json(5),
        },
        HistoryEvent::EntityFailed {
            id: TaskId(6),
            failure: failure(),
        },
        HistoryEvent::LocksRequested {
            id: TaskId(8),
            entities: accounts.clone(),
        },
        HistoryEvent::LocksGranted {
            id: TaskId(8),
            entities: accounts.clone(),
        },
        HistoryEvent::LocksReleased { id: TaskId(8) },
    ]
}

/// One message to an entity of every variant.
fn every_entity_message() -> Vec<EntityMessage> {
    vec![
        EntityMessage::Operation {
            operation: "add".into(),
            input: json(1),
            caller: Some(caller()),
            reply: true,
        },
        EntityMessage::LockRequest {
            holder: caller(),
            entities: vec![entity("Account", "a"), entity("Account", "b")],
            position: 1,
        },
        EntityMessage::LockRelease { holder: caller() },
    ]
}

/// Real encoded records of every record type.
fn corpus() -> Vec<Vec<u8>> {
    let mut corpus: Vec<Vec<u8>> = every_event().iter().map(codec::encode_value).collect();
    assert_eq!(corpus.len(), 25, "one seed per HistoryEvent variant");
    for status in RuntimeStatus::ALL {
        corpus.push(codec::encode_value(&InstanceRecord {
            id: id("order-42"),
            name: "transfer".into(),
            execution: ExecutionId(12),
            status,
            input: json(1),
            output: status.is_terminal().then(|| json("out")),
            failure: (status == RuntimeStatus::Failed).then(failure),
            custom_status: Some(json("half way")),
            created_at: Timestamp(5),
            last_updated_at: Timestamp(6),
            history_len: 300,
            parent: None,
            scheduled_start: Some(Timestamp(7)),
            generation: 1,
        }));
    }
    corpus.push(codec::encode_value(&InboxMessage {
        target: id("order-42"),
        body: Message::Event {
            execution: Some(ExecutionId(12)),
            event: every_event().swap_remove(23),
        },
    }));
    for message in every_entity_message() {
        corpus.push(codec::encode_value(&InboxMessage {
            target: entity("Account", "a").instance_id(),
            body: Message::Entity(message),
        }));
    }
    corpus.push(codec::encode_value(&ActivityWorkItem {
        instance: id("order-42"),
        execution: ExecutionId(12),
        task: TaskId(3),
        name: "charge".into(),
        input: json(vec![0u8; 40]),
        restarts: 0,
        isolated: false,
        retry: None,
    }));
    corpus.push(codec::encode_value(&TimerRecord {
        fire_at: Timestamp(99),
        instance: entity("Counter", "c").instance_id(),
        execution: ExecutionId(1),
        purpose: TimerPurpose::Task(TaskId(0)),
    }));
    corpus.push(codec::encode_value(&TimerRecord {
        fire_at: Timestamp(99),
        instance: id("order-42"),
        execution: ExecutionId(12),
        purpose: TimerPurpose::ScheduledStart,
    }));
    corpus.push(codec::encode_value(&EntityRecord {
        id: entity("Counter", "c"),
        state: Some(json(17)),
        lock: Some(caller()),
        last_modified: Timestamp(3),
    }));
    corpus
}

/// Huge unsigned varints: length prefixes that claim far more than the input holds.
const HUGE_VARINTS: [&[u8]; 4] = [
    &[0xff, 0xff, 0xff, 0xff, 0x0f],                         // u32::MAX
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10], // 2^60
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // u64::MAX
    &[0xff; 12],                                             // not a valid varint at all
];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = corpus[rng.below(corpus.len())].clone();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let at = rng.below(bytes.len() + 1);
        match rng.below(8) {
            // Flip one bit.
            0 if !bytes.is_empty() => {
                let at = at.min(bytes.len() - 1);
                bytes[at] ^= 1 << rng.below(8);
            }
            // Set a byte to a boundary value.
            1 if !bytes.is_empty() => {
                let at = at.min(bytes.len() - 1);
                bytes[at] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            2 => bytes.truncate(at),
            3 => {
                let len = 1 + rng.below(16);
                bytes.extend(rng.bytes(len));
            }
            // Inflate a length prefix: overwrite or insert a huge varint.
            4 | 5 => {
                let huge = HUGE_VARINTS[rng.below(HUGE_VARINTS.len())];
                if rng.below(2) == 0 {
                    let end = (at + huge.len()).min(bytes.len());
                    bytes.splice(at..end, huge.iter().copied());
                } else {
                    bytes.splice(at..at, huge.iter().copied());
                }
            }
            // Delete a run of bytes.
            6 => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                bytes.drain(at..end);
            }
            // Splice in the tail of another record.
            _ => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                bytes.truncate(at);
                bytes.extend_from_slice(&other[from..]);
            }
        }
    }
    bytes
}

/// Decodes `bytes` as `T`; a record that decodes must encode back to something that
/// decodes to the same record.
fn decode_as<T>(space: Space, bytes: &[u8]) -> bool
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    match codec::decode_value::<T>(space, None, bytes) {
        Ok(record) => {
            let again: T = codec::decode_value(space, None, &codec::encode_value(&record))
                .expect("a decoded record encodes to bytes that decode");
            assert_eq!(again, record, "a decoded record survives a roundtrip");
            true
        }
        Err(error) => {
            assert!(
                matches!(error, durable_store::Error::Corrupt { .. }),
                "{error:?}"
            );
            false
        }
    }
}

/// Every decoder the store has, over one input; returns how many accepted it.
fn decode_everything(bytes: &[u8]) -> usize {
    let mut accepted = [
        decode_as::<HistoryEvent>(Space::History, bytes),
        decode_as::<InstanceRecord>(Space::Instances, bytes),
        decode_as::<InboxMessage>(Space::Inbox, bytes),
        decode_as::<ActivityWorkItem>(Space::Activities, bytes),
        decode_as::<TimerRecord>(Space::Timers, bytes),
        decode_as::<EntityRecord>(Space::Entities, bytes),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count();
    // Keys are read back too (to name the record in errors).
    for space in Space::ALL {
        if let Some(key) = codec::record_key(space, bytes) {
            accepted += 1;
            assert!(
                format!("{key}").len() < 4 * bytes.len() + 200,
                "a key's description is bounded by the key"
            );
        }
    }
    accepted
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn hostile_bytes_give_records_or_typed_errors() {
    let seed = env_u64("DURABLE_FUZZ_SEED").unwrap_or(0x5eed_d0b1);
    let inputs = env_u64("DURABLE_FUZZ_INPUTS").unwrap_or(200_000);
    let corpus = corpus();
    for record in &corpus {
        assert!(decode_everything(record) >= 1, "every seed decodes");
    }
    let mut rng = Rng::new(seed);
    let mut accepted_inputs = 0u64;
    for n in 0..inputs {
        let bytes = if n % 4 == 0 {
            let len = rng.below(96);
            rng.bytes(len)
        } else {
            mutate(&mut rng, &corpus)
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| decode_everything(&bytes)));
        match outcome {
            Ok(accepted) => accepted_inputs += u64::from(accepted > 0),
            Err(_) => panic!(
                "input {n} of seed {seed:#x} panicked the decoder; bytes: {}",
                hex(&bytes)
            ),
        }
    }
    println!(
        "decoder fuzz: {inputs} inputs (seed {seed:#x}), each decoded as 6 record types and \
         7 key layouts; {accepted_inputs} were accepted by at least one decoder, every other \
         one was a typed error"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `TaskFailed` event whose failure has `depth` causes below it.
fn nested_failure_bytes(depth: usize) -> Vec<u8> {
    // Variant 4 (TaskFailed), task 0, then per level: kind 0, empty message, no details,
    // Some(cause); the last level has no cause.
    let mut bytes = vec![4, 0];
    for _ in 0..depth {
        bytes.extend([0, 0, 0, 1]);
    }
    bytes.extend([0, 0, 0, 0]);
    bytes
}

#[test]
fn deeply_nested_causes_are_refused_without_overflowing_the_stack() {
    // Run on a thread with a small stack: hostile nesting must not reach its end.
    let outcome = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(|| {
            let at_limit = nested_failure_bytes(FAILURE_CAUSES_MAX);
            let event: HistoryEvent = codec::decode_value(Space::History, None, &at_limit)
                .expect("a chain of the maximum length decodes");
            let HistoryEvent::TaskFailed { failure, .. } = event else {
                panic!("not TaskFailed");
            };
            assert_eq!(causes(&failure), FAILURE_CAUSES_MAX);

            for depth in [FAILURE_CAUSES_MAX + 1, 10_000, 1_000_000] {
                let error = codec::decode_value::<HistoryEvent>(
                    Space::History,
                    None,
                    &nested_failure_bytes(depth),
                )
                .unwrap_err();
                assert!(
                    error.to_string().contains("causes nest deeper than"),
                    "{error}"
                );
            }
        })
        .unwrap()
        .join();
    assert!(outcome.is_ok(), "nested causes panicked the decoder");
}

fn causes(failure: &Failure) -> usize {
    let mut count = 0;
    let mut cause = &failure.cause;
    while let Some(next) = cause {
        count += 1;
        cause = &next.cause;
    }
    count
}

#[test]
fn a_longer_chain_of_causes_is_stored_cut_at_the_maximum() {
    let mut failure = Failure::new(FailureKind::Application, "root");
    for level in 0..FAILURE_CAUSES_MAX + 50 {
        failure = Failure {
            kind: FailureKind::Application,
            message: format!("level {level}"),
            details: None,
            cause: Some(Box::new(failure)),
        };
    }
    let event = HistoryEvent::ExecutionFailed { failure };
    let bytes = codec::encode_value(&event);
    let back: HistoryEvent = codec::decode_value(Space::History, None, &bytes)
        .expect("what the encoder writes, the decoder reads");
    let HistoryEvent::ExecutionFailed { failure } = back else {
        panic!("not ExecutionFailed");
    };
    assert_eq!(causes(&failure), FAILURE_CAUSES_MAX);
    assert_eq!(
        failure.message,
        format!("level {}", FAILURE_CAUSES_MAX + 49),
        "the outermost levels are kept"
    );
}

/// A sequence that reports the size hint its deserializer gives, without allocating.
#[derive(Debug, PartialEq)]
struct SizeHint(Option<usize>);

impl<'de> serde::Deserialize<'de> for SizeHint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Probe;
        impl<'de> serde::de::Visitor<'de> for Probe {
            type Value = SizeHint;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<SizeHint, A::Error> {
                Ok(SizeHint(seq.size_hint()))
            }
        }
        deserializer.deserialize_seq(Probe)
    }
}

#[test]
fn length_prefixes_never_size_an_allocation_beyond_the_input() {
    // serde preallocates a `Vec` from the sequence's size hint; postcard gives none when
    // the claimed length exceeds the bytes left, so a hostile prefix allocates nothing.
    for huge in HUGE_VARINTS.iter().take(3) {
        let mut bytes = huge.to_vec();
        bytes.extend([0; 16]);
        let hint: SizeHint = codec::decode_value(Space::History, None, &bytes).unwrap();
        assert_eq!(hint, SizeHint(None), "prefix {}", hex(huge));
    }
    let hint: SizeHint = codec::decode_value(Space::History, None, &[3, 1, 2, 3]).unwrap();
    assert_eq!(hint, SizeHint(Some(3)), "an honest prefix is passed on");

    // And through the real records: a lock request claiming 2^60 entities, a name claiming
    // 2^60 bytes.
    for (variant, huge) in [(22u8, HUGE_VARINTS[1]), (2, HUGE_VARINTS[1])] {
        let mut bytes = vec![variant, 0];
        bytes.extend_from_slice(huge);
        bytes.extend([0; 8]);
        let started = std::time::Instant::now();
        let error = codec::decode_value::<HistoryEvent>(Space::History, None, &bytes).unwrap_err();
        assert!(matches!(error, durable_store::Error::Corrupt { .. }));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}

#[test]
fn keys_read_back_into_their_typed_form() {
    use durable_store::{InboxKey, RecordKey, TimerKey};
    let timer = TimerKey {
        fire_at: Timestamp(99),
        instance: id("t"),
        execution: ExecutionId(2),
        purpose: TimerPurpose::Task(TaskId(3)),
    };
    assert_eq!(
        codec::record_key(Space::Timers, &codec::timer_key(&timer)),
        Some(RecordKey::Timer(timer))
    );
    let inbox = InboxKey {
        instance: entity("Counter", "c").instance_id(),
        seq: 7,
    };
    assert_eq!(
        codec::record_key(Space::Inbox, &codec::inbox_key(&inbox)),
        Some(RecordKey::Inbox(inbox))
    );
    assert_eq!(
        codec::record_key(
            Space::History,
            &codec::history_key(&id("h"), ExecutionId(1), 5)
        ),
        Some(RecordKey::History {
            instance: id("h"),
            execution: ExecutionId(1),
            seq: 5
        })
    );
    assert_eq!(
        codec::record_key(Space::Entities, b"@Counter@c"),
        Some(RecordKey::Entity(entity("Counter", "c")))
    );
    assert_eq!(codec::record_key(Space::History, b"\x00\x05ab"), None);
    assert_eq!(codec::record_key(Space::Instances, b"a/b"), None);
}
