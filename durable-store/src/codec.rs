//! The one codec of the store: record values are postcard, keys are big-endian byte
//! strings laid out so that byte order is the order the runtime scans in.
//!
//! Key layouts (`id` is an instance id, prefixed by its length as a big-endian `u16` so
//! that one id is never a prefix of another's keys):
//!
//! | keyspace     | key                                         | value              |
//! |--------------|---------------------------------------------|--------------------|
//! | `meta`       | ASCII name                                  | raw bytes          |
//! | `instances`  | id (plain UTF-8, so prefix scans work)      | [`InstanceRecord`] |
//! | `history`    | len, id, execution u64, seq u64             | [`HistoryEvent`]   |
//! | `inbox`      | len, id, seq u64                            | [`InboxMessage`]   |
//! | `activities` | len, id, execution u64, task u64            | [`ActivityWorkItem`] |
//! | `timers`     | fire_at u64, len, id, execution u64, purpose | [`TimerRecord`]   |
//! | `entities`   | `@name@key` (plain UTF-8)                   | [`EntityRecord`]   |
//!
//! A timer's purpose is `0x00` followed by its task (u64) for a timer task, or `0x01` alone
//! for the scheduled start of the execution, so a scheduled start sorts after the
//! execution's timer tasks of the same due time.

use crate::error::{Error, RecordKey};
use durable_types::{
    ActivityKey, ActivityWorkItem, EntityId, EntityRecord, HistoryEvent, InboxKey, InboxMessage,
    InstanceRecord, TimerKey, TimerPurpose, TimerRecord,
};
use durable_types::{ExecutionId, InstanceId, TaskId, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The keyspaces of the embedded stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Store-wide metadata such as the format version.
    Meta,
    /// One [`InstanceRecord`] per instance.
    Instances,
    /// History events by instance, execution and sequence number.
    History,
    /// Inbox messages by instance and arrival.
    Inbox,
    /// Pending activity work items.
    Activities,
    /// Pending timers, by due time.
    Timers,
    /// One [`EntityRecord`] per entity, by `@name@key`.
    Entities,
}

impl Space {
    /// Every keyspace.
    pub const ALL: [Space; 7] = [
        Space::Meta,
        Space::Instances,
        Space::History,
        Space::Inbox,
        Space::Activities,
        Space::Timers,
        Space::Entities,
    ];

    /// The keyspace's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Space::Meta => "meta",
            Space::Instances => "instances",
            Space::History => "history",
            Space::Inbox => "inbox",
            Space::Activities => "activities",
            Space::Timers => "timers",
            Space::Entities => "entities",
        }
    }

    /// Position in [`Space::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Encodes a record value.
pub fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own record types into a Vec cannot fail: they contain no maps with
    // non-string keys and postcard's Vec flavor has no size limit.
    postcard::to_allocvec(value).unwrap_or_else(|error| {
        unreachable!("postcard cannot fail to encode a record into a Vec: {error}")
    })
}

/// Decodes a record value read from `space`; `instance` names the instance for the error.
///
/// Decoding is bounded by the input: postcard checks every length prefix against the bytes
/// that remain before it allocates, and the one recursive record, a [`crate::Failure`]'s
/// chain of causes, is cut off at [`crate::FAILURE_CAUSES_MAX`] levels so that hostile
/// bytes cannot overflow the stack. Any bytes give a record or [`Error::Corrupt`], never a
/// panic.
///
/// # Errors
/// [`Error::Corrupt`] when the bytes are not a valid record.
pub fn decode_value<T: DeserializeOwned>(
    space: Space,
    instance: Option<&InstanceId>,
    bytes: &[u8],
) -> Result<T, Error> {
    let (decoded, too_deep) = durable_types::decoding_causes(|| postcard::from_bytes(bytes));
    decoded.map_err(|error| {
        let detail = if too_deep {
            format!(
                "undecodable record ({} bytes): a failure's causes nest deeper than {}",
                bytes.len(),
                crate::FAILURE_CAUSES_MAX
            )
        } else {
            format!("undecodable record ({} bytes): {error}", bytes.len())
        };
        Error::Corrupt {
            keyspace: space.name(),
            instance: instance.map(ToString::to_string),
            detail,
            key: None,
        }
    })
}

/// Reads a stored key back into its typed form; `None` when the bytes are not a key of
/// `space`.
pub fn record_key(space: Space, key: &[u8]) -> Option<RecordKey> {
    match space {
        Space::Meta => [
            FORMAT_VERSION_KEY,
            EXECUTION_FLOOR_KEY,
            COMMIT_SEQ_KEY,
            STOPPED_GRACEFULLY_KEY,
        ]
        .into_iter()
        .find(|name| name.as_bytes() == key)
        .map(RecordKey::Meta),
        Space::Instances => {
            let id = InstanceId::from_stored(std::str::from_utf8(key).ok()?).ok()?;
            Some(RecordKey::Instance(id))
        }
        Space::History => {
            let (instance, rest) = split_instance(key)?;
            let [execution, seq] = u64s(rest)?;
            Some(RecordKey::History {
                instance,
                execution: ExecutionId(execution),
                seq,
            })
        }
        Space::Inbox => {
            let (instance, rest) = split_instance(key)?;
            let [seq] = u64s(rest)?;
            Some(RecordKey::Inbox(InboxKey { instance, seq }))
        }
        Space::Activities => {
            let (instance, rest) = split_instance(key)?;
            let [execution, task] = u64s(rest)?;
            Some(RecordKey::Activity(ActivityKey {
                instance,
                execution: ExecutionId(execution),
                task: TaskId(task),
            }))
        }
        Space::Timers => {
            let (fire_at, rest) = key.split_first_chunk::<8>()?;
            let (instance, rest) = split_instance(rest)?;
            let (execution, purpose) = rest.split_first_chunk::<8>()?;
            Some(RecordKey::Timer(TimerKey {
                fire_at: Timestamp(u64::from_be_bytes(*fire_at)),
                instance,
                execution: ExecutionId(u64::from_be_bytes(*execution)),
                purpose: timer_purpose(purpose)?,
            }))
        }
        Space::Entities => {
            let text = std::str::from_utf8(key).ok()?;
            let (name, entity) = text.strip_prefix('@')?.split_once('@')?;
            Some(RecordKey::Entity(EntityId::new(name, entity).ok()?))
        }
    }
}

/// The names of the `meta` keyspace's keys.
pub(crate) const FORMAT_VERSION_KEY: &str = "format_version";
pub(crate) const EXECUTION_FLOOR_KEY: &str = "execution_floor";
pub(crate) const STOPPED_GRACEFULLY_KEY: &str = "stopped_gracefully";
/// The number of the last commit: every fjall commit writes it, so the store knows how far
/// its journal recovered (see `fjall_store::CommitMark`).
pub(crate) const COMMIT_SEQ_KEY: &str = "commit_seq";

/// Splits a length-prefixed instance id off the front of a key.
fn split_instance(key: &[u8]) -> Option<(InstanceId, &[u8])> {
    let (len, rest) = key.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let (id, rest) = rest.split_at_checked(len)?;
    let id = InstanceId::from_stored(std::str::from_utf8(id).ok()?).ok()?;
    Some((id, rest))
}

/// Reads exactly `N` big-endian `u64`s.
fn u64s<const N: usize>(bytes: &[u8]) -> Option<[u64; N]> {
    if bytes.len() != N * 8 {
        return None;
    }
    let mut out = [0; N];
    for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *value = u64::from_be_bytes(chunk.try_into().ok()?);
    }
    Some(out)
}

/// The key of an instance record.
pub fn instance_key(id: &InstanceId) -> Vec<u8> {
    id.as_str().as_bytes().to_vec()
}

/// The key of an entity record.
pub fn entity_key(id: &EntityId) -> Vec<u8> {
    id.to_string().into_bytes()
}

/// Checks that an entity record is stored under its own id.
pub(crate) fn check_entity(key: &[u8], record: &EntityRecord) -> Result<(), Error> {
    if key == entity_key(&record.id).as_slice() {
        Ok(())
    } else {
        Err(Error::Corrupt {
            keyspace: Space::Entities.name(),
            instance: Some(record.id.to_string()),
            detail: "record does not match the key it is stored under".to_owned(),
            key: record_key(Space::Entities, key),
        })
    }
}

/// The length-prefixed id that begins every per-instance key.
pub fn instance_prefix(id: &InstanceId) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + id.as_str().len() + 16);
    push_instance(&mut key, id);
    key
}

/// The partition of the instance a key of `space` belongs to, for the keyspaces a worker
/// taking a partition up reads (inbox, activities, timers); `None` for other keyspaces
/// and for a key too short to name an instance.
pub fn key_partition(space: Space, key: &[u8]) -> Option<u16> {
    let id_at = match space {
        Space::Inbox | Space::Activities => 0,
        Space::Timers => 8,
        _ => return None,
    };
    let len = key.get(id_at..id_at + 2)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let id = key.get(id_at + 2..id_at + 2 + len)?;
    Some(crate::partition::partition_of_bytes(id))
}

fn push_instance(key: &mut Vec<u8>, id: &InstanceId) {
    let bytes = id.as_str().as_bytes();
    // Instance ids are at most 256 characters, 1,024 bytes (checked by `InstanceId::new`).
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(bytes);
}

/// The prefix of all history keys of one execution.
pub fn history_prefix(id: &InstanceId, execution: ExecutionId) -> Vec<u8> {
    let mut key = instance_prefix(id);
    key.extend_from_slice(&execution.0.to_be_bytes());
    key
}

/// The key of one history event.
pub fn history_key(id: &InstanceId, execution: ExecutionId, seq: u64) -> Vec<u8> {
    let mut key = history_prefix(id, execution);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The key of an inbox message.
pub fn inbox_key(key: &InboxKey) -> Vec<u8> {
    let mut bytes = instance_prefix(&key.instance);
    bytes.extend_from_slice(&key.seq.to_be_bytes());
    bytes
}

/// Reads the sequence number back from an inbox key.
///
/// # Errors
/// [`Error::Corrupt`] when the key is too short.
pub fn inbox_seq(id: &InstanceId, key: &[u8]) -> Result<u64, Error> {
    read_u64_at_end(key).ok_or_else(|| Error::Corrupt {
        keyspace: Space::Inbox.name(),
        instance: Some(id.to_string()),
        detail: format!("inbox key of {} bytes has no sequence number", key.len()),
        key: None,
    })
}

fn read_u64_at_end(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    let tail: [u8; 8] = key.get(start..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// The key of an activity work item.
pub fn activity_key(key: &ActivityKey) -> Vec<u8> {
    let mut bytes = instance_prefix(&key.instance);
    bytes.extend_from_slice(&key.execution.0.to_be_bytes());
    bytes.extend_from_slice(&key.task.0.to_be_bytes());
    bytes
}

/// The key of a timer.
pub fn timer_key(key: &TimerKey) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + 2 + key.instance.as_str().len() + 17);
    bytes.extend_from_slice(&key.fire_at.0.to_be_bytes());
    push_instance(&mut bytes, &key.instance);
    bytes.extend_from_slice(&key.execution.0.to_be_bytes());
    push_timer_purpose(&mut bytes, key.purpose);
    bytes
}

const TIMER_TASK: u8 = 0;
const TIMER_SCHEDULED_START: u8 = 1;

fn push_timer_purpose(key: &mut Vec<u8>, purpose: TimerPurpose) {
    match purpose {
        TimerPurpose::Task(task) => {
            key.push(TIMER_TASK);
            key.extend_from_slice(&task.0.to_be_bytes());
        }
        TimerPurpose::ScheduledStart => key.push(TIMER_SCHEDULED_START),
    }
}

fn timer_purpose(bytes: &[u8]) -> Option<TimerPurpose> {
    match bytes.split_first()? {
        (&TIMER_TASK, task) => Some(TimerPurpose::Task(TaskId(u64s::<1>(task)?[0]))),
        (&TIMER_SCHEDULED_START, []) => Some(TimerPurpose::ScheduledStart),
        _ => None,
    }
}

/// Checks that a decoded activity work item belongs where it was found.
pub(crate) fn check_activity(key: &[u8], item: &ActivityWorkItem) -> Result<(), Error> {
    check_key(
        Space::Activities,
        &item.instance,
        key,
        &activity_key(&item.key()),
    )
}

/// Checks that a decoded timer belongs where it was found.
pub(crate) fn check_timer(key: &[u8], timer: &TimerRecord) -> Result<(), Error> {
    check_key(
        Space::Timers,
        &timer.instance,
        key,
        &timer_key(&timer.key()),
    )
}

/// Checks that a decoded inbox message belongs to the instance of its key.
pub(crate) fn check_inbox(key: &[u8], message: &InboxMessage) -> Result<u64, Error> {
    let seq = inbox_seq(&message.target, key)?;
    let expected = inbox_key(&InboxKey {
        instance: message.target.clone(),
        seq,
    });
    check_key(Space::Inbox, &message.target, key, &expected)?;
    Ok(seq)
}

/// Checks that an instance record is stored under its own id.
pub(crate) fn check_instance(key: &[u8], record: &InstanceRecord) -> Result<(), Error> {
    check_key(Space::Instances, &record.id, key, &instance_key(&record.id))
}

fn check_key(space: Space, id: &InstanceId, found: &[u8], expected: &[u8]) -> Result<(), Error> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::Corrupt {
            keyspace: space.name(),
            instance: Some(id.to_string()),
            detail: "record does not match the key it is stored under".to_owned(),
            key: record_key(space, found),
        })
    }
}

/// Decodes a history event of `id`.
pub(crate) fn decode_event(id: &InstanceId, bytes: &[u8]) -> Result<HistoryEvent, Error> {
    decode_value(Space::History, Some(id), bytes)
}

/// Test-only helpers for building keys from parts.
#[cfg(test)]
pub(crate) fn task_key_parts(key: &[u8]) -> Option<(u64, u64)> {
    let start = key.len().checked_sub(16)?;
    let execution = u64::from_be_bytes(key.get(start..start + 8)?.try_into().ok()?);
    let task = u64::from_be_bytes(key.get(start + 8..)?.try_into().ok()?);
    Some((execution, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_types::{Failure, FailureKind};
    use durable_types::{Json, TaskId, Timestamp};

    fn id(s: &str) -> InstanceId {
        InstanceId::new(s).unwrap()
    }

    #[test]
    fn one_id_is_never_a_prefix_of_anothers_keys() {
        let a = history_prefix(&id("a"), ExecutionId(1));
        let ab = history_key(&id("ab"), ExecutionId(1), 0);
        assert!(!ab.starts_with(&a));
    }

    #[test]
    fn timer_keys_order_by_due_time() {
        let early = timer_key(&TimerKey {
            fire_at: Timestamp(5),
            instance: id("zzz"),
            execution: ExecutionId(9),
            purpose: TimerPurpose::ScheduledStart,
        });
        let late = timer_key(&TimerKey {
            fire_at: Timestamp(6),
            instance: id("a"),
            execution: ExecutionId(1),
            purpose: TimerPurpose::Task(TaskId(0)),
        });
        assert!(early < late);
    }

    #[test]
    fn key_types_order_as_their_encodings() {
        let ids = ["a", "b", "aa", "ab", "z", "order-9", "order-10", "é"];
        let mut timers = Vec::new();
        let mut activities = Vec::new();
        let mut inbox = Vec::new();
        for (n, name) in ids.iter().enumerate() {
            for fire_at in [5, 6] {
                for purpose in [
                    TimerPurpose::Task(TaskId(n as u64)),
                    TimerPurpose::Task(TaskId(u64::MAX - n as u64)),
                    TimerPurpose::ScheduledStart,
                ] {
                    timers.push(TimerKey {
                        fire_at: Timestamp(fire_at),
                        instance: id(name),
                        execution: ExecutionId(1 + n as u64 % 2),
                        purpose,
                    });
                }
            }
            activities.push(ActivityKey {
                instance: id(name),
                execution: ExecutionId(2),
                task: TaskId(7),
            });
            inbox.push(InboxKey {
                instance: id(name),
                seq: 300 - n as u64,
            });
        }
        for a in &timers {
            assert_eq!(
                record_key(Space::Timers, &timer_key(a)),
                Some(RecordKey::Timer(a.clone()))
            );
            for b in &timers {
                assert_eq!(a.cmp(b), timer_key(a).cmp(&timer_key(b)), "{a:?} {b:?}");
            }
        }
        for a in &activities {
            for b in &activities {
                assert_eq!(
                    a.cmp(b),
                    activity_key(a).cmp(&activity_key(b)),
                    "{a:?} {b:?}"
                );
            }
        }
        for a in &inbox {
            for b in &inbox {
                assert_eq!(a.cmp(b), inbox_key(a).cmp(&inbox_key(b)), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn history_keys_order_by_sequence() {
        let keys: Vec<_> = [0u64, 1, 255, 256, 70_000]
            .iter()
            .map(|seq| history_key(&id("x"), ExecutionId(1), *seq))
            .collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(task_key_parts(&keys[4]), Some((1, 70_000)));
    }

    #[test]
    fn events_roundtrip() {
        let events = vec![
            HistoryEvent::ExecutionStarted {
                name: "chain".into(),
                input: Json::encode(&1).unwrap(),
                parent: None,
                generation: 1,
            },
            HistoryEvent::TaskFailed {
                id: TaskId(3),
                failure: Failure {
                    kind: FailureKind::ActivityFailed,
                    message: "boom".into(),
                    details: Some(Json::null()),
                    cause: Some(Box::new(Failure::new(FailureKind::Application, "inner"))),
                },
            },
        ];
        for event in events {
            let bytes = encode_value(&event);
            let back: HistoryEvent = decode_value(Space::History, None, &bytes).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn garbage_is_a_typed_error_naming_the_instance() {
        let error =
            decode_value::<HistoryEvent>(Space::History, Some(&id("x")), &[0xff; 3]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("history") && text.contains('x'), "{text}");
    }
}
