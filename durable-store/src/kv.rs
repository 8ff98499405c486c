//! [`KvStore`]: the [`Store`] of the embedded stores, over any ordered key-value engine
//! with atomic multi-keyspace batches ([`KvEngine`]). fjall and the in-memory store are
//! two engines under the same codec and logic.

use crate::batch::{Op, WriteBatch};
use crate::codec::{self, Space};
use crate::error::{Error, RecordKey};
use crate::store::{Durability, Store};
use durable_types::{
    ActivityKey, ActivityWorkItem, EntityId, EntityRecord, HistoryEvent, InboxKey, InboxMessage,
    InstanceQuery, InstanceRecord, TimerKey, TimerRecord,
};
use durable_types::{ExecutionId, InstanceId};
use std::ops::Bound;

/// The version of the on-disk format this build reads and writes. Version 4: an
/// activity's work item and `TaskScheduled` say which attempt of a retried call it is,
/// `ExecutionStarted` and the instance record carry the execution's generation, and
/// history may hold `TaskCancelled`. (Version 3: inbox messages carry an event or an
/// entity message, and a timer's key says what it is for.)
pub const FORMAT_VERSION: u32 = 4;

const FORMAT_VERSION_KEY: &[u8] = codec::FORMAT_VERSION_KEY.as_bytes();
const EXECUTION_FLOOR_KEY: &[u8] = codec::EXECUTION_FLOOR_KEY.as_bytes();
const STOPPED_GRACEFULLY_KEY: &[u8] = codec::STOPPED_GRACEFULLY_KEY.as_bytes();

/// One change to a key-value engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Insert or replace a value.
    Put(Space, Vec<u8>, Vec<u8>),
    /// Delete a key.
    Delete(Space, Vec<u8>),
}

impl KvOp {
    /// The keyspace and key this change touches.
    pub fn target(&self) -> (Space, &[u8]) {
        match self {
            KvOp::Put(space, key, _) | KvOp::Delete(space, key) => (*space, key),
        }
    }
}

/// What a scan visitor wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// Give me the next entry.
    Continue,
    /// Stop the scan.
    Stop,
}

/// The visitor of [`KvEngine::scan`]: sees each key and value, says whether to go on.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<Scan, Error> + 'a;

/// An ordered key-value engine with the keyspaces of [`Space`].
pub trait KvEngine: Send + Sync + 'static {
    /// A short name of the engine, such as `"fjall"`.
    fn name(&self) -> &'static str;

    /// The durability of [`KvEngine::write`].
    fn durability(&self) -> Durability;

    /// Reads one value.
    ///
    /// # Errors
    /// Read errors.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;

    /// Reads several values of one keyspace, in the order of `keys`: for an engine that
    /// reads across a network, one round trip instead of one each.
    ///
    /// # Errors
    /// Read errors.
    fn get_many(&self, space: Space, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        keys.iter().map(|key| self.get(space, key)).collect()
    }

    /// Visits the entries of `space` within the bounds in key order until `visit` says stop.
    ///
    /// # Errors
    /// Read errors, and the visitor's errors.
    fn scan(
        &self,
        space: Space,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), Error>;

    /// [`KvEngine::scan`] of the entries of `space` whose instance is in `partition`
    /// ([`codec::key_partition`]). This filters a scan of the whole keyspace; an engine
    /// shared by workers reads only the partition's entries.
    ///
    /// # Errors
    /// Read errors, and the visitor's errors.
    fn scan_partition(
        &self,
        space: Space,
        partition: u16,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), Error> {
        self.scan(space, lower, upper, &mut |key, value| {
            if codec::key_partition(space, key) == Some(partition) {
                visit(key, value)
            } else {
                Ok(Scan::Continue)
            }
        })
    }

    /// Applies `ops` atomically and as durably as [`KvEngine::durability`] says; of two
    /// operations on one key the later wins.
    ///
    /// # Errors
    /// Write errors; nothing was applied.
    fn write(&self, ops: Vec<KvOp>) -> Result<(), Error>;
}

/// A [`Store`] over a [`KvEngine`], using this crate's codec.
pub struct KvStore<E: KvEngine> {
    engine: E,
}

impl<E: KvEngine> KvStore<E> {
    /// Wraps an engine, checking (or, for an empty engine, writing) the format version.
    ///
    /// # Errors
    /// [`Error::IncompatibleFormat`] for data of another version; read and write errors.
    pub fn with_engine(engine: E, path: &std::path::Path) -> Result<KvStore<E>, Error> {
        check_format_version(&engine, path)?;
        Ok(KvStore { engine })
    }

    /// The engine underneath.
    pub fn engine(&self) -> &E {
        &self.engine
    }
}

fn check_format_version<E: KvEngine>(engine: &E, path: &std::path::Path) -> Result<(), Error> {
    let incompatible = |found| Error::IncompatibleFormat {
        path: path.to_owned(),
        found,
        expected: FORMAT_VERSION,
    };
    match engine.get(Space::Meta, FORMAT_VERSION_KEY)? {
        Some(bytes) => {
            let found = <[u8; 4]>::try_from(bytes.as_slice())
                .map(u32::from_be_bytes)
                .unwrap_or(0);
            if found == FORMAT_VERSION {
                Ok(())
            } else {
                Err(incompatible(found))
            }
        }
        None => {
            for space in Space::ALL {
                if has_data(engine, space)? {
                    return Err(incompatible(0));
                }
            }
            engine.write(vec![KvOp::Put(
                Space::Meta,
                FORMAT_VERSION_KEY.to_vec(),
                FORMAT_VERSION.to_be_bytes().to_vec(),
            )])
        }
    }
}

fn has_data<E: KvEngine>(engine: &E, space: Space) -> Result<bool, Error> {
    let mut found = false;
    engine.scan(space, Bound::Unbounded, Bound::Unbounded, &mut |_, _| {
        found = true;
        Ok(Scan::Stop)
    })?;
    Ok(found)
}

/// Turns a batch into key-value changes.
pub fn encode_batch(batch: &WriteBatch) -> Vec<KvOp> {
    let mut ops = Vec::with_capacity(batch.len());
    for op in batch.ops() {
        encode_op(op, &mut ops);
    }
    ops
}

fn encode_op(op: &Op, out: &mut Vec<KvOp>) {
    match op {
        Op::PutInstance(record) => out.push(KvOp::Put(
            Space::Instances,
            codec::instance_key(&record.id),
            codec::encode_value(record),
        )),
        Op::DeleteInstance(id) => out.push(KvOp::Delete(Space::Instances, codec::instance_key(id))),
        Op::AppendHistory {
            instance,
            execution,
            seq,
            event,
        } => out.push(KvOp::Put(
            Space::History,
            codec::history_key(instance, *execution, *seq),
            codec::encode_value(event),
        )),
        Op::DeleteHistory {
            instance,
            execution,
            len,
        } => out.extend((0..*len).map(|seq| {
            KvOp::Delete(
                Space::History,
                codec::history_key(instance, *execution, seq),
            )
        })),
        Op::PutInbox(key, message) => out.push(KvOp::Put(
            Space::Inbox,
            codec::inbox_key(key),
            codec::encode_value(message),
        )),
        Op::DeleteInbox(key) => out.push(KvOp::Delete(Space::Inbox, codec::inbox_key(key))),
        Op::PutActivity(item) => out.push(KvOp::Put(
            Space::Activities,
            codec::activity_key(&item.key()),
            codec::encode_value(item),
        )),
        Op::DeleteActivity(key) => {
            out.push(KvOp::Delete(Space::Activities, codec::activity_key(key)));
        }
        Op::PutTimer(timer) => out.push(KvOp::Put(
            Space::Timers,
            codec::timer_key(&timer.key()),
            codec::encode_value(timer),
        )),
        Op::DeleteTimer(key) => out.push(KvOp::Delete(Space::Timers, codec::timer_key(key))),
        Op::PutEntity(record) => out.push(KvOp::Put(
            Space::Entities,
            codec::entity_key(&record.id),
            codec::encode_value(record),
        )),
        Op::DeleteEntity(id) => out.push(KvOp::Delete(Space::Entities, codec::entity_key(id))),
        Op::SetExecutionFloor(execution) => out.push(KvOp::Put(
            Space::Meta,
            EXECUTION_FLOOR_KEY.to_vec(),
            execution.0.to_be_bytes().to_vec(),
        )),
        Op::SetStoppedGracefully(true) => out.push(KvOp::Put(
            Space::Meta,
            STOPPED_GRACEFULLY_KEY.to_vec(),
            Vec::new(),
        )),
        Op::SetStoppedGracefully(false) => {
            out.push(KvOp::Delete(Space::Meta, STOPPED_GRACEFULLY_KEY.to_vec()))
        }
    }
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when there
/// is none (a prefix of all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn upper_bound(end: &Option<Vec<u8>>) -> Bound<&[u8]> {
    match end {
        Some(end) => Bound::Excluded(end.as_slice()),
        None => Bound::Unbounded,
    }
}

fn lower_after(after: &Option<Vec<u8>>) -> Bound<&[u8]> {
    match after {
        Some(key) => Bound::Excluded(key.as_slice()),
        None => Bound::Unbounded,
    }
}

impl<E: KvEngine> Store for KvStore<E> {
    fn name(&self) -> &'static str {
        self.engine.name()
    }

    fn durability(&self) -> Durability {
        self.engine.durability()
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        self.engine.write(encode_batch(batch))
    }

    fn execution_floor(&self) -> Result<ExecutionId, Error> {
        let Some(bytes) = self.engine.get(Space::Meta, EXECUTION_FLOOR_KEY)? else {
            return Ok(ExecutionId(0));
        };
        let bytes = <[u8; 8]>::try_from(bytes.as_slice()).map_err(|_| Error::Corrupt {
            keyspace: Space::Meta.name(),
            instance: None,
            detail: format!("the execution floor is {} bytes, not 8", bytes.len()),
            key: Some(RecordKey::Meta(codec::EXECUTION_FLOOR_KEY)),
        })?;
        Ok(ExecutionId(u64::from_be_bytes(bytes)))
    }

    fn stopped_gracefully(&self) -> Result<bool, Error> {
        Ok(self
            .engine
            .get(Space::Meta, STOPPED_GRACEFULLY_KEY)?
            .is_some())
    }

    fn instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>, Error> {
        let key = codec::instance_key(id);
        let Some(bytes) = self.engine.get(Space::Instances, &key)? else {
            return Ok(None);
        };
        let record: InstanceRecord = codec::decode_value(Space::Instances, Some(id), &bytes)
            .map_err(|error| locate(error, Space::Instances, &key))?;
        codec::check_instance(&key, &record)?;
        Ok(Some(record))
    }

    fn instances(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<Result<Option<InstanceRecord>, Error>>, Error> {
        let keys: Vec<Vec<u8>> = ids.iter().map(codec::instance_key).collect();
        let wanted: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let values = self.engine.get_many(Space::Instances, &wanted)?;
        Ok(ids
            .iter()
            .zip(&keys)
            .zip(values)
            .map(|((id, key), value)| {
                let Some(bytes) = value else {
                    return Ok(None);
                };
                let record: InstanceRecord =
                    codec::decode_value(Space::Instances, Some(id), &bytes)
                        .map_err(|error| locate(error, Space::Instances, key))?;
                codec::check_instance(key, &record)?;
                Ok(Some(record))
            })
            .collect())
    }

    fn history(&self, id: &InstanceId, execution: ExecutionId) -> Result<Vec<HistoryEvent>, Error> {
        let prefix = codec::history_prefix(id, execution);
        let end = prefix_end(&prefix);
        let mut events = Vec::new();
        self.engine.scan(
            Space::History,
            Bound::Included(&prefix),
            upper_bound(&end),
            &mut |key, value| {
                // Sequence numbers are dense from 0: a gap means lost or foreign data.
                let seq = u64::try_from(events.len()).unwrap_or(u64::MAX);
                if key != codec::history_key(id, execution, seq).as_slice() {
                    return Err(Error::Corrupt {
                        keyspace: Space::History.name(),
                        instance: Some(id.to_string()),
                        detail: format!(
                            "history of execution {execution} has a gap at event {seq}"
                        ),
                        key: codec::record_key(Space::History, key),
                    });
                }
                let event = codec::decode_event(id, value)
                    .map_err(|error| locate(error, Space::History, key))?;
                events.push(event);
                Ok(Scan::Continue)
            },
        )?;
        Ok(events)
    }

    fn inbox(&self, id: &InstanceId) -> Result<Vec<(InboxKey, InboxMessage)>, Error> {
        let prefix = codec::instance_prefix(id);
        let end = prefix_end(&prefix);
        let mut messages = Vec::new();
        self.engine.scan(
            Space::Inbox,
            Bound::Included(&prefix),
            upper_bound(&end),
            &mut |key, value| {
                messages.push(decode_inbox(key, value, Some(id))?);
                Ok(Scan::Continue)
            },
        )?;
        Ok(messages)
    }

    fn inbox_page(
        &self,
        id: &InstanceId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, InboxMessage)>, Error> {
        let prefix = codec::instance_prefix(id);
        let end = prefix_end(&prefix);
        let start = after.map(|seq| {
            codec::inbox_key(&InboxKey {
                instance: id.clone(),
                seq,
            })
        });
        let lower = match &start {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => Bound::Included(prefix.as_slice()),
        };
        let mut messages = Vec::new();
        if limit == 0 {
            return Ok(messages);
        }
        self.engine
            .scan(Space::Inbox, lower, upper_bound(&end), &mut |key, value| {
                messages.push(decode_inbox(key, value, Some(id))?);
                Ok(if messages.len() >= limit {
                    Scan::Stop
                } else {
                    Scan::Continue
                })
            })?;
        Ok(messages)
    }

    fn scan_inbox(
        &self,
        after: Option<&InboxKey>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, InboxMessage)>, Error> {
        self.inbox_of(None, after, limit)
    }

    fn scan_inbox_in(
        &self,
        partition: u16,
        after: Option<&InboxKey>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, InboxMessage)>, Error> {
        self.inbox_of(Some(partition), after, limit)
    }

    fn activity(&self, key: &ActivityKey) -> Result<Option<ActivityWorkItem>, Error> {
        let key = codec::activity_key(key);
        let Some(bytes) = self.engine.get(Space::Activities, &key)? else {
            return Ok(None);
        };
        let item: ActivityWorkItem = codec::decode_value(Space::Activities, None, &bytes)
            .map_err(|error| locate(error, Space::Activities, &key))?;
        codec::check_activity(&key, &item)?;
        Ok(Some(item))
    }

    fn scan_activities(
        &self,
        after: Option<&ActivityKey>,
        limit: usize,
    ) -> Result<Vec<ActivityWorkItem>, Error> {
        self.activities_of(None, after, limit)
    }

    fn scan_activities_in(
        &self,
        partition: u16,
        after: Option<&ActivityKey>,
        limit: usize,
    ) -> Result<Vec<ActivityWorkItem>, Error> {
        self.activities_of(Some(partition), after, limit)
    }

    fn scan_timers(
        &self,
        after: Option<&TimerKey>,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, Error> {
        let after = after.map(codec::timer_key);
        let mut timers = Vec::new();
        scan_limited(
            &self.engine,
            Space::Timers,
            None,
            &after,
            limit,
            |key, value| {
                let timer: TimerRecord = codec::decode_value(Space::Timers, None, value)
                    .map_err(|error| locate(error, Space::Timers, key))?;
                codec::check_timer(key, &timer)?;
                timers.push(timer);
                Ok(())
            },
        )?;
        Ok(timers)
    }

    fn entity(&self, id: &EntityId) -> Result<Option<EntityRecord>, Error> {
        let key = codec::entity_key(id);
        let Some(bytes) = self.engine.get(Space::Entities, &key)? else {
            return Ok(None);
        };
        let record: EntityRecord = codec::decode_value(Space::Entities, None, &bytes)
            .map_err(|error| locate(error, Space::Entities, &key))?;
        codec::check_entity(&key, &record)?;
        Ok(Some(record))
    }

    fn list_entities(
        &self,
        name: Option<&str>,
        after: Option<&EntityId>,
        limit: usize,
    ) -> Result<Vec<EntityRecord>, Error> {
        let prefix = name
            .map(|name| format!("@{name}@").into_bytes())
            .unwrap_or_default();
        let end = if prefix.is_empty() {
            None
        } else {
            prefix_end(&prefix)
        };
        let start = match after.map(codec::entity_key) {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut records = Vec::new();
        if limit == 0 {
            return Ok(records);
        }
        self.engine.scan(
            Space::Entities,
            start.as_ref().map(Vec::as_slice),
            upper_bound(&end),
            &mut |key, value| {
                let record: EntityRecord = codec::decode_value(Space::Entities, None, value)
                    .map_err(|error| locate(error, Space::Entities, key))?;
                codec::check_entity(key, &record)?;
                records.push(record);
                Ok(if records.len() >= limit {
                    Scan::Stop
                } else {
                    Scan::Continue
                })
            },
        )?;
        Ok(records)
    }

    fn list_instances(
        &self,
        query: &InstanceQuery,
        after: Option<&InstanceId>,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, Error> {
        let prefix = query
            .id_prefix
            .as_ref()
            .map(|prefix| prefix.as_bytes().to_vec())
            .unwrap_or_default();
        let start = match after {
            Some(id) if codec::instance_key(id) >= prefix => {
                Bound::Excluded(codec::instance_key(id))
            }
            _ => Bound::Included(prefix.clone()),
        };
        let end = if prefix.is_empty() {
            None
        } else {
            prefix_end(&prefix)
        };
        let mut records = Vec::new();
        if limit == 0 {
            return Ok(records);
        }
        self.engine.scan(
            Space::Instances,
            start.as_ref().map(Vec::as_slice),
            upper_bound(&end),
            &mut |key, value| {
                let record: InstanceRecord = codec::decode_value(Space::Instances, None, value)
                    .map_err(|error| locate(error, Space::Instances, key))?;
                codec::check_instance(key, &record)?;
                if query.matches(&record) {
                    records.push(record);
                }
                Ok(if records.len() >= limit {
                    Scan::Stop
                } else {
                    Scan::Continue
                })
            },
        )?;
        Ok(records)
    }
}

/// Completes a decoding error with where the record is stored: its typed key and, when
/// the caller did not know it, the instance it belongs to.
fn locate(error: Error, space: Space, key: &[u8]) -> Error {
    match error {
        Error::Corrupt {
            keyspace,
            instance,
            detail,
            key: known,
        } => {
            let key = known.or_else(|| codec::record_key(space, key));
            let instance = instance.or_else(|| {
                key.as_ref()
                    .and_then(RecordKey::instance)
                    .map(|id| id.to_string())
            });
            Error::Corrupt {
                keyspace,
                instance,
                detail,
                key,
            }
        }
        other => other,
    }
}

fn decode_inbox(
    key: &[u8],
    value: &[u8],
    instance: Option<&InstanceId>,
) -> Result<(InboxKey, InboxMessage), Error> {
    let message: InboxMessage = codec::decode_value(Space::Inbox, instance, value)
        .map_err(|error| locate(error, Space::Inbox, key))?;
    let seq = codec::check_inbox(key, &message)?;
    let key = InboxKey {
        instance: message.target.clone(),
        seq,
    };
    Ok((key, message))
}

impl<E: KvEngine> KvStore<E> {
    /// Up to `limit` inbox messages after `after`, of `partition`'s instances if given.
    fn inbox_of(
        &self,
        partition: Option<u16>,
        after: Option<&InboxKey>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, InboxMessage)>, Error> {
        let after = after.map(codec::inbox_key);
        let mut messages = Vec::new();
        scan_limited(
            &self.engine,
            Space::Inbox,
            partition,
            &after,
            limit,
            |key, value| {
                messages.push(decode_inbox(key, value, None)?);
                Ok(())
            },
        )?;
        Ok(messages)
    }

    /// Up to `limit` activity work items after `after`, of `partition`'s instances if
    /// given.
    fn activities_of(
        &self,
        partition: Option<u16>,
        after: Option<&ActivityKey>,
        limit: usize,
    ) -> Result<Vec<ActivityWorkItem>, Error> {
        let after = after.map(codec::activity_key);
        let mut items = Vec::new();
        scan_limited(
            &self.engine,
            Space::Activities,
            partition,
            &after,
            limit,
            |key, value| {
                let item: ActivityWorkItem = codec::decode_value(Space::Activities, None, value)
                    .map_err(|error| locate(error, Space::Activities, key))?;
                codec::check_activity(key, &item)?;
                items.push(item);
                Ok(())
            },
        )?;
        Ok(items)
    }
}

/// Visits up to `limit` entries of `space` after `after`, of one partition's instances
/// when `partition` says so.
fn scan_limited<E: KvEngine>(
    engine: &E,
    space: Space,
    partition: Option<u16>,
    after: &Option<Vec<u8>>,
    limit: usize,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    if limit == 0 {
        return Ok(());
    }
    let mut seen = 0usize;
    let mut visit = |key: &[u8], value: &[u8]| {
        each(key, value)?;
        seen += 1;
        Ok(if seen >= limit {
            Scan::Stop
        } else {
            Scan::Continue
        })
    };
    let lower = lower_after(after);
    match partition {
        Some(partition) => {
            engine.scan_partition(space, partition, lower, Bound::Unbounded, &mut visit)
        }
        None => engine.scan(space, lower, Bound::Unbounded, &mut visit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
