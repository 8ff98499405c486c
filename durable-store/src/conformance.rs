//! The conformance suite: the checks every [`Store`] must pass. The in-memory and fjall
//! stores run it in this crate's tests; another store proves itself by calling
//! [`run_all`] (and, if it persists, [`run_persistence`]) from its own tests.
//!
//! ```
//! use durable_store::{conformance, MemoryStore, Store};
//! use std::sync::Arc;
//! conformance::run_all(&mut || Arc::new(MemoryStore::new()) as Arc<dyn Store>);
//! ```

#![allow(clippy::unwrap_used)] // a failed check is a panic with a message

use crate::{
    ActivityKey, ActivityWorkItem, EntityId, EntityRecord, ExecutionId, HistoryEvent, InboxKey,
    InboxMessage, InstanceId, InstanceQuery, InstanceRecord, Json, Message, RuntimeStatus, Store,
    TaskId, TimerKey, TimerPurpose, TimerRecord, Timestamp, WriteBatch,
};
use std::sync::Arc;

/// Makes a fresh, empty store for one check.
pub type Factory<'a> = dyn FnMut() -> Arc<dyn Store> + 'a;

/// One check: its name and a function of a fresh store that panics when the store fails it.
pub type Check = (&'static str, fn(&dyn Store));

/// Every check that needs only a fresh store, by name (for running them one at a time, as
/// the fault-injection tests do).
pub fn checks() -> Vec<Check> {
    vec![
        ("empty_store_reads_nothing", empty_store_reads_nothing),
        ("instance_records_roundtrip", instance_records_roundtrip),
        (
            "instance_records_read_together_in_order",
            instance_records_read_together_in_order,
        ),
        (
            "history_is_per_execution_and_ordered",
            history_is_per_execution_and_ordered,
        ),
        (
            "history_of_one_id_excludes_longer_ids",
            history_of_one_id_excludes_longer_ids,
        ),
        ("inbox_orders_by_arrival", inbox_orders_by_arrival),
        (
            "partition_scans_read_one_partitions_instances",
            partition_scans_read_one_partitions_instances,
        ),
        (
            "activity_scan_pages_in_key_order",
            activity_scan_pages_in_key_order,
        ),
        ("timers_scan_earliest_first", timers_scan_earliest_first),
        ("later_op_on_a_key_wins", later_op_on_a_key_wins),
        (
            "list_instances_filters_and_pages",
            list_instances_filters_and_pages,
        ),
        ("large_batch_commits_whole", large_batch_commits_whole),
        ("execution_floor_roundtrips", execution_floor_roundtrips),
        (
            "stopped_gracefully_roundtrips",
            stopped_gracefully_roundtrips,
        ),
        (
            "entities_roundtrip_and_list_by_name",
            entities_roundtrip_and_list_by_name,
        ),
    ]
}

/// Runs every check that needs only a fresh store; panics naming the first check that fails.
pub fn run_all(factory: &mut Factory<'_>) {
    for (name, check) in checks() {
        let store = factory();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&*store)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "store conformance check `{name}` failed on `{}`: {message}",
                store.name()
            );
        }
    }
}

/// Checks that committed data survives closing and reopening the store. `open` must open
/// the same location each time; the suite drops each store before opening the next.
pub fn run_persistence(open: &mut Factory<'_>) {
    let id = instance_id("persist");
    {
        let store = open();
        let mut batch = WriteBatch::new();
        batch.put_instance(record(&id, "orch", RuntimeStatus::Running, 7));
        batch.append_history(id.clone(), ExecutionId::FIRST, 0, started("orch"));
        batch.put_timer(timer(&id, 99, 0));
        batch.set_execution_floor(ExecutionId(7));
        store.commit(&batch).unwrap();
    }
    let store = open();
    assert_eq!(store.execution_floor().unwrap(), ExecutionId(7));
    assert_eq!(
        store.instance(&id).unwrap().unwrap().created_at,
        Timestamp(7)
    );
    assert_eq!(
        store.history(&id, ExecutionId::FIRST).unwrap(),
        vec![started("orch")]
    );
    assert_eq!(
        store.scan_timers(None, 10).unwrap(),
        vec![timer(&id, 99, 0)]
    );
}

/// A valid instance id (panics on an invalid one; for tests).
pub fn instance_id(id: &str) -> InstanceId {
    InstanceId::new(id).unwrap()
}

fn record(id: &InstanceId, name: &str, status: RuntimeStatus, created: u64) -> InstanceRecord {
    InstanceRecord {
        id: id.clone(),
        name: name.to_owned(),
        execution: ExecutionId::FIRST,
        status,
        input: Json::encode(&created).unwrap(),
        output: None,
        failure: None,
        custom_status: None,
        created_at: Timestamp(created),
        last_updated_at: Timestamp(created),
        history_len: 0,
        parent: None,
        scheduled_start: None,
        generation: 1,
    }
}

fn started(name: &str) -> HistoryEvent {
    HistoryEvent::ExecutionStarted {
        name: name.to_owned(),
        input: Json::null(),
        parent: None,
        generation: 1,
    }
}

fn activity(id: &InstanceId, task: u64) -> ActivityWorkItem {
    ActivityWorkItem {
        instance: id.clone(),
        execution: ExecutionId::FIRST,
        task: TaskId(task),
        name: "work".to_owned(),
        input: Json::encode(&task).unwrap(),
        restarts: 0,
        isolated: false,
        retry: None,
    }
}

fn timer(id: &InstanceId, fire_at: u64, task: u64) -> TimerRecord {
    TimerRecord {
        fire_at: Timestamp(fire_at),
        instance: id.clone(),
        execution: ExecutionId::FIRST,
        purpose: TimerPurpose::Task(TaskId(task)),
    }
}

fn message(id: &InstanceId, name: &str) -> InboxMessage {
    InboxMessage {
        target: id.clone(),
        body: Message::Event {
            execution: None,
            event: HistoryEvent::EventRaised {
                name: name.to_owned(),
                input: Json::null(),
            },
        },
    }
}

fn empty_store_reads_nothing(store: &dyn Store) {
    let id = instance_id("nothing");
    assert_eq!(store.instance(&id).unwrap(), None);
    assert!(store.history(&id, ExecutionId::FIRST).unwrap().is_empty());
    assert!(store.inbox(&id).unwrap().is_empty());
    assert!(store.scan_inbox(None, 10).unwrap().is_empty());
    assert!(store.scan_activities(None, 10).unwrap().is_empty());
    assert!(store.scan_timers(None, 10).unwrap().is_empty());
    let all = InstanceQuery::default();
    assert!(store.list_instances(&all, None, 10).unwrap().is_empty());
    store.commit(&WriteBatch::new()).unwrap();
}

fn instance_records_roundtrip(store: &dyn Store) {
    let id = instance_id("rec");
    let mut first = record(&id, "orch", RuntimeStatus::Running, 1);
    let mut batch = WriteBatch::new();
    batch.put_instance(first.clone());
    store.commit(&batch).unwrap();
    assert_eq!(store.instance(&id).unwrap().as_ref(), Some(&first));

    first.status = RuntimeStatus::Completed;
    first.output = Some(Json::encode("done").unwrap());
    let mut batch = WriteBatch::new();
    batch.put_instance(first.clone());
    store.commit(&batch).unwrap();
    assert_eq!(store.instance(&id).unwrap().as_ref(), Some(&first));

    let mut batch = WriteBatch::new();
    batch.delete_instance(id.clone());
    store.commit(&batch).unwrap();
    assert_eq!(store.instance(&id).unwrap(), None);
}

/// Several records read at once come back in the order asked, absent ones as `None`,
/// whatever the order they were written in, and a repeated id twice.
fn instance_records_read_together_in_order(store: &dyn Store) {
    let ids: Vec<InstanceId> = ["many-c", "many-a", "many-b"]
        .into_iter()
        .map(instance_id)
        .collect();
    let mut batch = WriteBatch::new();
    for (created, id) in (1..).zip(&ids) {
        batch.put_instance(record(id, "orch", RuntimeStatus::Running, created));
    }
    store.commit(&batch).unwrap();
    let asked = vec![
        ids[1].clone(),
        instance_id("many-missing"),
        ids[0].clone(),
        ids[2].clone(),
        ids[1].clone(),
    ];
    let read: Vec<Option<u64>> = store
        .instances(&asked)
        .unwrap()
        .into_iter()
        .map(|record| record.unwrap().map(|record| record.created_at.0))
        .collect();
    assert_eq!(read, vec![Some(2), None, Some(1), Some(3), Some(2)]);
    assert!(store.instances(&[]).unwrap().is_empty());
}

fn history_is_per_execution_and_ordered(store: &dyn Store) {
    let id = instance_id("hist");
    let events: Vec<HistoryEvent> = (0..300u64)
        .map(|at| HistoryEvent::OrchestratorStarted { at: Timestamp(at) })
        .collect();
    let mut batch = WriteBatch::new();
    for (seq, event) in events.iter().enumerate() {
        batch.append_history(id.clone(), ExecutionId::FIRST, seq as u64, event.clone());
    }
    batch.append_history(id.clone(), ExecutionId(2), 0, started("next"));
    store.commit(&batch).unwrap();
    assert_eq!(store.history(&id, ExecutionId::FIRST).unwrap(), events);
    assert_eq!(
        store.history(&id, ExecutionId(2)).unwrap(),
        vec![started("next")]
    );

    let mut batch = WriteBatch::new();
    batch.delete_history(id.clone(), ExecutionId::FIRST, 300);
    store.commit(&batch).unwrap();
    assert!(store.history(&id, ExecutionId::FIRST).unwrap().is_empty());
    assert_eq!(store.history(&id, ExecutionId(2)).unwrap().len(), 1);
}

fn history_of_one_id_excludes_longer_ids(store: &dyn Store) {
    let short = instance_id("a");
    let long = instance_id("ab");
    let mut batch = WriteBatch::new();
    batch.append_history(short.clone(), ExecutionId::FIRST, 0, started("short"));
    batch.append_history(long.clone(), ExecutionId::FIRST, 0, started("long"));
    batch.put_inbox(
        InboxKey {
            instance: long.clone(),
            seq: 1,
        },
        message(&long, "x"),
    );
    store.commit(&batch).unwrap();
    assert_eq!(
        store.history(&short, ExecutionId::FIRST).unwrap(),
        vec![started("short")]
    );
    assert!(store.inbox(&short).unwrap().is_empty());
    assert_eq!(store.inbox(&long).unwrap().len(), 1);
}

/// Ids of instances in partition `partition`, `count` of them, in key order.
fn ids_in_partition(partition: u16, count: usize) -> Vec<InstanceId> {
    let mut ids: Vec<InstanceId> = (0..)
        .map(|n| instance_id(&format!("part-{n}")))
        .filter(|id| crate::partition_of(id.as_str()) == partition)
        .take(count)
        .collect();
    ids.sort_by_key(crate::codec::instance_prefix);
    ids
}

/// The inbox and activity scans of one partition return its instances' records and no
/// others, in key order, page by page.
fn partition_scans_read_one_partitions_instances(store: &dyn Store) {
    let ours = ids_in_partition(5, 3);
    let theirs = ids_in_partition(6, 2);
    let mut batch = WriteBatch::new();
    for (n, id) in (0..).zip(ours.iter().chain(&theirs)) {
        for seq in [n + 1, n + 100] {
            let key = InboxKey {
                instance: id.clone(),
                seq,
            };
            batch.put_inbox(key, message(id, "scoped"));
        }
        batch.put_activity(activity(id, 1));
        batch.put_activity(activity(id, 2));
    }
    store.commit(&batch).unwrap();
    let inbox: Vec<(String, u64)> = store
        .scan_inbox_in(5, None, 100)
        .unwrap()
        .into_iter()
        .map(|(key, _)| (key.instance.to_string(), key.seq))
        .collect();
    let expected: Vec<(String, u64)> = (0..)
        .zip(&ours)
        .flat_map(|(n, id)| [(id.to_string(), n + 1), (id.to_string(), n + 100)])
        .collect();
    assert_eq!(inbox, expected);
    // Page by page: two at a time, after the last one read.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.scan_activities_in(5, after.as_ref(), 2).unwrap();
        after = page.last().map(ActivityWorkItem::key);
        paged.extend(
            page.iter()
                .map(|item| (item.instance.to_string(), item.task.0)),
        );
        if page.len() < 2 {
            break;
        }
    }
    let expected: Vec<(String, u64)> = ours
        .iter()
        .flat_map(|id| [(id.to_string(), 1), (id.to_string(), 2)])
        .collect();
    assert_eq!(paged, expected);
    assert_eq!(store.scan_activities_in(6, None, 100).unwrap().len(), 4);
    assert!(store.scan_inbox_in(7, None, 100).unwrap().is_empty());
}

fn inbox_orders_by_arrival(store: &dyn Store) {
    let a = instance_id("inbox-a");
    let b = instance_id("inbox-b");
    let mut batch = WriteBatch::new();
    for (seq, target, name) in [
        (3, &a, "third"),
        (1, &a, "first"),
        (2, &b, "b"),
        (300, &a, "last"),
    ] {
        batch.put_inbox(
            InboxKey {
                instance: target.clone(),
                seq,
            },
            message(target, name),
        );
    }
    store.commit(&batch).unwrap();
    let inbox_a: Vec<u64> = store
        .inbox(&a)
        .unwrap()
        .iter()
        .map(|(k, _)| k.seq)
        .collect();
    assert_eq!(inbox_a, vec![1, 3, 300]);
    let all = store.scan_inbox(None, 100).unwrap();
    assert_eq!(all.len(), 4);
    let first_page = store.scan_inbox(None, 2).unwrap();
    let rest = store.scan_inbox(Some(&first_page[1].0), 100).unwrap();
    assert_eq!(first_page.len() + rest.len(), 4);
    assert_eq!(
        rest.last().map(|(k, _)| k.seq),
        Some(2),
        "ordered by instance, then seq"
    );

    let page: Vec<u64> = store
        .inbox_page(&a, Some(1), 1)
        .unwrap()
        .iter()
        .map(|(key, _)| key.seq)
        .collect();
    assert_eq!(
        page,
        vec![3],
        "a page starts after the given sequence number"
    );
    assert!(store.inbox_page(&a, Some(300), 10).unwrap().is_empty());

    let mut batch = WriteBatch::new();
    batch.delete_inbox(InboxKey {
        instance: a.clone(),
        seq: 1,
    });
    store.commit(&batch).unwrap();
    assert_eq!(store.inbox(&a).unwrap().len(), 2);
}

fn activity_scan_pages_in_key_order(store: &dyn Store) {
    let ids: Vec<InstanceId> = (0..5).map(|i| instance_id(&format!("act-{i}"))).collect();
    let mut batch = WriteBatch::new();
    let mut expected = Vec::new();
    for id in &ids {
        for task in [2u64, 0, 1] {
            batch.put_activity(activity(id, task));
        }
        for task in 0..3 {
            expected.push(activity(id, task));
        }
    }
    store.commit(&batch).unwrap();
    let mut seen = Vec::new();
    let mut after: Option<ActivityKey> = None;
    loop {
        let page = store.scan_activities(after.as_ref(), 4).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        after = page.last().map(ActivityWorkItem::key);
        seen.extend(page);
    }
    assert_eq!(seen, expected);
    assert_eq!(
        store.activity(&expected[4].key()).unwrap().as_ref(),
        Some(&expected[4])
    );

    let mut batch = WriteBatch::new();
    batch.delete_activity(expected[0].key());
    store.commit(&batch).unwrap();
    assert_eq!(
        store.scan_activities(None, 100).unwrap().len(),
        expected.len() - 1
    );
    assert_eq!(store.activity(&expected[0].key()).unwrap(), None);
}

fn timers_scan_earliest_first(store: &dyn Store) {
    let a = instance_id("zzz-late-name");
    let b = instance_id("aaa-early-name");
    let timers = [
        timer(&a, 10, 0),
        timer(&b, 30, 0),
        timer(&a, 20, 1),
        timer(&b, 1, 1),
    ];
    let mut batch = WriteBatch::new();
    for t in &timers {
        batch.put_timer(t.clone());
    }
    store.commit(&batch).unwrap();
    let due: Vec<u64> = store
        .scan_timers(None, 10)
        .unwrap()
        .iter()
        .map(|t| t.fire_at.0)
        .collect();
    assert_eq!(due, vec![1, 10, 20, 30]);
    let first_two = store.scan_timers(None, 2).unwrap();
    let after: TimerKey = first_two[1].key();
    let rest: Vec<u64> = store
        .scan_timers(Some(&after), 10)
        .unwrap()
        .iter()
        .map(|t| t.fire_at.0)
        .collect();
    assert_eq!(rest, vec![20, 30]);

    let mut batch = WriteBatch::new();
    batch.delete_timer(timers[0].key());
    store.commit(&batch).unwrap();
    assert_eq!(store.scan_timers(None, 10).unwrap().len(), 3);
}

fn later_op_on_a_key_wins(store: &dyn Store) {
    let id = instance_id("lww");
    let mut batch = WriteBatch::new();
    batch.put_instance(record(&id, "first", RuntimeStatus::Running, 1));
    batch.put_instance(record(&id, "second", RuntimeStatus::Running, 1));
    batch.put_timer(timer(&id, 5, 0));
    batch.delete_timer(timer(&id, 5, 0).key());
    batch.delete_activity(activity(&id, 0).key());
    batch.put_activity(activity(&id, 0));
    store.commit(&batch).unwrap();
    assert_eq!(store.instance(&id).unwrap().unwrap().name, "second");
    assert!(store.scan_timers(None, 10).unwrap().is_empty());
    assert_eq!(
        store.scan_activities(None, 10).unwrap(),
        vec![activity(&id, 0)]
    );
}

fn list_instances_filters_and_pages(store: &dyn Store) {
    let mut batch = WriteBatch::new();
    for i in 0..120u64 {
        let status = if i % 3 == 0 {
            RuntimeStatus::Completed
        } else {
            RuntimeStatus::Running
        };
        let name = if i % 2 == 0 { "even" } else { "odd" };
        batch.put_instance(record(
            &instance_id(&format!("job-{i:03}")),
            name,
            status,
            i,
        ));
    }
    batch.put_instance(record(
        &instance_id("other"),
        "even",
        RuntimeStatus::Running,
        500,
    ));
    store.commit(&batch).unwrap();

    let all = InstanceQuery::default();
    let mut seen = Vec::new();
    let mut after: Option<InstanceId> = None;
    loop {
        let page = store.list_instances(&all, after.as_ref(), 50).unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.id.clone());
        seen.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(seen.len(), 121);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages are in id order without duplicates");

    let completed = InstanceQuery {
        statuses: Some(vec![RuntimeStatus::Completed]),
        ..InstanceQuery::default()
    };
    assert_eq!(
        store.list_instances(&completed, None, 1000).unwrap().len(),
        40
    );

    let odd_running = InstanceQuery {
        statuses: Some(vec![RuntimeStatus::Running]),
        name: Some("odd".to_owned()),
        ..InstanceQuery::default()
    };
    let found = store.list_instances(&odd_running, None, 1000).unwrap();
    assert!(
        found
            .iter()
            .all(|r| r.name == "odd" && r.status == RuntimeStatus::Running)
    );
    assert_eq!(found.len(), 40);

    let window = InstanceQuery {
        created_from: Some(Timestamp(10)),
        created_to: Some(Timestamp(19)),
        ..InstanceQuery::default()
    };
    assert_eq!(store.list_instances(&window, None, 1000).unwrap().len(), 10);

    let ended_early = InstanceQuery {
        ended_before: Some(Timestamp(30)),
        ..InstanceQuery::default()
    };
    let found = store.list_instances(&ended_early, None, 1000).unwrap();
    assert_eq!(
        found.len(),
        10,
        "completed (every third) with created = updated < 30"
    );
    assert!(found.iter().all(|r| r.status == RuntimeStatus::Completed));

    let prefixed = InstanceQuery {
        id_prefix: Some("job-1".to_owned()),
        ..InstanceQuery::default()
    };
    let found = store.list_instances(&prefixed, None, 1000).unwrap();
    assert_eq!(found.len(), 20, "job-100 .. job-119");
    let page = store.list_instances(&prefixed, None, 5).unwrap();
    let next = store
        .list_instances(&prefixed, Some(&page[4].id), 1000)
        .unwrap();
    assert_eq!(page.len() + next.len(), 20);
    assert_eq!(store.list_instances(&all, None, 0).unwrap().len(), 0);
    // A continuation past the prefix's range reads nothing (and does not fail).
    let beyond = instance_id("job-2");
    assert!(
        store
            .list_instances(&prefixed, Some(&beyond), 10)
            .unwrap()
            .is_empty()
    );
}

fn large_batch_commits_whole(store: &dyn Store) {
    let id = instance_id("large");
    let mut batch = WriteBatch::new();
    for task in 0..10_000u64 {
        batch.put_activity(activity(&id, task));
    }
    batch.put_instance(record(&id, "fan", RuntimeStatus::Running, 3));
    store.commit(&batch).unwrap();
    assert_eq!(store.scan_activities(None, 20_000).unwrap().len(), 10_000);
    assert!(store.instance(&id).unwrap().is_some());
}

fn stopped_gracefully_roundtrips(store: &dyn Store) {
    assert!(!store.stopped_gracefully().unwrap());
    let mut batch = WriteBatch::new();
    batch.set_stopped_gracefully(true);
    store.commit(&batch).unwrap();
    assert!(store.stopped_gracefully().unwrap());
    let mut batch = WriteBatch::new();
    batch.set_stopped_gracefully(false);
    store.commit(&batch).unwrap();
    assert!(!store.stopped_gracefully().unwrap());
}

fn execution_floor_roundtrips(store: &dyn Store) {
    assert_eq!(store.execution_floor().unwrap(), ExecutionId(0));
    let mut batch = WriteBatch::new();
    batch.set_execution_floor(ExecutionId(41));
    batch.set_execution_floor(ExecutionId(42));
    store.commit(&batch).unwrap();
    assert_eq!(store.execution_floor().unwrap(), ExecutionId(42));
}

fn entity(name: &str, key: &str, value: i64) -> EntityRecord {
    EntityRecord {
        id: EntityId::new(name, key).unwrap(),
        state: Some(Json::encode(&value).unwrap()),
        lock: None,
        last_modified: Timestamp(value as u64),
    }
}

fn entities_roundtrip_and_list_by_name(store: &dyn Store) {
    let mut batch = WriteBatch::new();
    for key in 0..30 {
        batch.put_entity(entity("counter", &format!("c{key:02}"), key));
        batch.put_entity(entity("account", &format!("a{key:02}"), key));
    }
    // A name that is a prefix of another must not list the other's entities.
    batch.put_entity(entity("count", "x", 1));
    store.commit(&batch).unwrap();

    let id = EntityId::new("counter", "c07").unwrap();
    assert_eq!(
        store.entity(&id).unwrap(),
        Some(entity("counter", "c07", 7))
    );
    let counters = store.list_entities(Some("counter"), None, 100).unwrap();
    assert_eq!(counters.len(), 30);
    assert!(counters.iter().all(|r| r.id.name() == "counter"));
    let first = store.list_entities(Some("counter"), None, 10).unwrap();
    let rest = store
        .list_entities(Some("counter"), Some(&first[9].id), 100)
        .unwrap();
    assert_eq!(first.len() + rest.len(), 30);
    assert_eq!(store.list_entities(None, None, 1000).unwrap().len(), 61);

    let mut batch = WriteBatch::new();
    batch.delete_entity(id.clone());
    store.commit(&batch).unwrap();
    assert_eq!(store.entity(&id).unwrap(), None);
}
