//! The store under injected faults: every conformance check with each single engine call
//! failed in turn, a seeded random schedule of commits and reads with faults compared
//! against a fault-free model, and fjall's journal cut short mid-batch. A fault must come
//! out as an error that says it was injected — never as a short or wrong answer — and a
//! commit that failed must leave all of its batch or none of it.

use durable_store::codec::Space;
use durable_store::faults::{Call, Fault, Faults, FaultyEngine, FaultyStore};
use durable_store::{
    ActivityWorkItem, Durability, EntityId, EntityRecord, Error, ExecutionId, FjallStore,
    HistoryEvent, InboxKey, InboxMessage, InstanceId, InstanceQuery, InstanceRecord, Json,
    KvEngine, KvOp, KvStore, MemoryEngine, MemoryStore, RuntimeStatus, Scan, Store, TaskId,
    TimerKey, TimerRecord, Timestamp, WriteBatch, conformance,
};
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Once};

type FaultyKv = KvStore<FaultyEngine<MemoryEngine>>;

fn faulty_kv(faults: &Faults) -> FaultyKv {
    KvStore::with_engine(
        FaultyEngine::new(MemoryEngine::default(), faults.clone()),
        std::path::Path::new("faulty"),
    )
    .unwrap()
}

/// Panics that carry an injected fault are expected by the hundred here: keep them out of
/// the output, and let every other panic through.
fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !panic_text(info.payload()).contains("injected fault") {
                default(info);
            }
        }));
    });
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// How each run of a check under one fault ended.
#[derive(Default, Debug)]
struct Tally {
    runs: u64,
    injected: u64,
    passed_untouched: u64,
}

/// Runs `check` with the `n`th engine call failing as `fault` says; the check must fail
/// because of the injected error (it unwraps every result) or pass untouched.
fn run_with_fault(name: &str, check: fn(&dyn Store), fault: Fault, tally: &mut Tally) {
    let faults = Faults::new(1);
    let store = faulty_kv(&faults);
    faults.add(fault.clone());
    let outcome = catch_unwind(AssertUnwindSafe(|| check(&store)));
    tally.runs += 1;
    match outcome {
        Ok(()) => {
            assert_eq!(
                faults.injected(),
                0,
                "`{name}` passed although {:?} was injected: an error was swallowed",
                faults.log()
            );
            tally.passed_untouched += 1;
        }
        Err(panic) => {
            let text = panic_text(&*panic);
            assert!(
                faults.injected() > 0 && text.contains("injected fault"),
                "`{name}` under {fault:?} failed for another reason than the injected fault \
                 (wrong data?): {text}"
            );
            tally.injected += faults.injected();
        }
    }
}

#[test]
fn conformance_checks_under_every_single_engine_fault() {
    quiet_injected_panics();
    let mut tally = Tally::default();
    for (name, check) in conformance::checks() {
        // A dry run counts the engine calls the check makes.
        let faults = Faults::new(1);
        let store = faulty_kv(&faults);
        let before = faults.calls();
        check(&store);
        let calls = faults.calls() - before;
        for n in 1..=calls {
            run_with_fault(name, check, Fault::any_call().nth(n), &mut tally);
            run_with_fault(
                name,
                check,
                Fault::any_call().nth(n).after_write(),
                &mut tally,
            );
            for entries in [1, 3] {
                let scan_midway = Fault::any_read()
                    .matching(|call| {
                        matches!(call, Call::Read(durable_store::faults::Read::Scan(_)))
                    })
                    .nth(n)
                    .after_entries(entries);
                run_with_fault(name, check, scan_midway, &mut tally);
            }
        }
    }
    println!("conformance under faults: {tally:?}");
    assert!(tally.injected > 100, "{tally:?}");
}

#[test]
fn store_level_faults_surface_as_injected_errors() {
    quiet_injected_panics();
    let mut injected = 0;
    for (name, check) in conformance::checks() {
        for n in 1..=4 {
            let faults = Faults::new(n);
            let store = FaultyStore::new(Arc::new(MemoryStore::new()), faults.clone());
            faults.add(Fault::any_call().nth(n));
            match catch_unwind(AssertUnwindSafe(|| check(&store))) {
                Ok(()) => assert_eq!(faults.injected(), 0, "`{name}` swallowed a fault"),
                Err(panic) => {
                    assert!(panic_text(&*panic).contains("injected fault"), "`{name}`");
                    injected += faults.injected();
                }
            }
        }
    }
    assert!(injected >= 12, "{injected}");
}

#[test]
fn injected_errors_are_typed_by_kind() {
    let faults = Faults::new(3);
    let store = FaultyStore::new(Arc::new(MemoryStore::new()), faults.clone());
    let id = InstanceId::new("typed").unwrap();
    faults.add(Fault::commit().kind(std::io::ErrorKind::StorageFull));
    let error = store.commit(&WriteBatch::new()).unwrap_err();
    assert!(matches!(error, Error::StorageFull(_)), "{error:?}");
    assert!(error.to_string().contains("disk holding the store is full"));
    faults.add(
        Fault::read(durable_store::faults::Read::Instance)
            .kind(std::io::ErrorKind::ReadOnlyFilesystem),
    );
    let error = store.instance(&id).unwrap_err();
    assert!(matches!(error, Error::ReadOnly { .. }), "{error:?}");
    faults.add(Fault::any_read());
    let error = store.history(&id, ExecutionId::FIRST).unwrap_err();
    assert!(matches!(error, Error::Io(_)), "{error:?}");
    assert!(error.to_string().contains("injected fault #3"), "{error}");
    assert_eq!(faults.injected(), 3);
    // A fault that names the instance whose commit must fail.
    let target = id.clone();
    faults.add(Fault::commit().always().matching(move |call| match call {
        Call::Commit(batch) => {
            batch.ops().iter().any(
                |op| matches!(op, durable_store::Op::PutInstance(record) if record.id == target),
            )
        }
        _ => false,
    }));
    store.commit(&WriteBatch::new()).unwrap();
    let mut batch = WriteBatch::new();
    batch.put_instance(record(&id, 1, RuntimeStatus::Running));
    assert!(store.commit(&batch).is_err());
    assert_eq!(
        store.inner().instance(&id).unwrap(),
        None,
        "failed before writing"
    );
    faults.clear();
    store.commit(&batch).unwrap();
    assert!(store.instance(&id).unwrap().is_some());
}

#[test]
fn a_full_disk_when_a_store_is_first_written_is_a_typed_error() {
    // Opening an empty store writes its format version: that write failing must fail the
    // open with a clear error, not a panic, and leave nothing behind.
    let faults = Faults::new(5);
    faults.add(Fault::commit().kind(std::io::ErrorKind::StorageFull));
    let engine = FaultyEngine::new(MemoryEngine::default(), faults.clone());
    let Err(error) = KvStore::with_engine(engine, std::path::Path::new("full")) else {
        panic!("opened on a full disk");
    };
    assert!(matches!(error, Error::StorageFull(_)), "{error:?}");
    // A read failing at open is an error too.
    let faults = Faults::new(6);
    faults.add(Fault::any_read());
    let engine = FaultyEngine::new(MemoryEngine::default(), faults.clone());
    assert!(KvStore::with_engine(engine, std::path::Path::new("unreadable")).is_err());
}

// ---------------------------------------------------------------------------------------
// A seeded random schedule against a fault-free model.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const IDS: u64 = 12;

fn nth_id(n: u64) -> InstanceId {
    InstanceId::new(format!("inst-{}", n % IDS)).unwrap()
}

fn record(id: &InstanceId, n: u64, status: RuntimeStatus) -> InstanceRecord {
    InstanceRecord {
        id: id.clone(),
        name: format!("orch-{}", n % 3),
        execution: ExecutionId(1 + n % 2),
        status,
        input: Json::encode(&n).unwrap(),
        output: None,
        failure: None,
        custom_status: None,
        created_at: Timestamp(n % 50),
        last_updated_at: Timestamp(n % 70),
        history_len: n % 5,
        parent: None,
        scheduled_start: None,
        generation: 1,
    }
}

fn random_batch(rng: &mut Rng) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for _ in 0..1 + rng.below(12) {
        let n = rng.next();
        let id = nth_id(rng.below(IDS));
        let execution = ExecutionId(1 + rng.below(2));
        match rng.below(13) {
            0 => batch.put_instance(record(&id, n, RuntimeStatus::ALL[(n % 6) as usize])),
            1 => batch.delete_instance(id),
            2 | 3 => batch.append_history(
                id,
                execution,
                rng.below(4),
                HistoryEvent::TimerFired { id: TaskId(n % 9) },
            ),
            4 => batch.delete_history(id, execution, rng.below(5)),
            5 => batch.put_inbox(
                InboxKey {
                    instance: id.clone(),
                    seq: rng.below(20),
                },
                InboxMessage {
                    target: id,
                    body: durable_store::Message::Event {
                        execution: None,
                        event: HistoryEvent::EventRaised {
                            name: format!("e{n}"),
                            input: Json::null(),
                        },
                    },
                },
            ),
            6 => batch.delete_inbox(InboxKey {
                instance: id,
                seq: rng.below(20),
            }),
            7 => batch.put_activity(ActivityWorkItem {
                instance: id,
                execution,
                task: TaskId(rng.below(6)),
                name: "work".into(),
                input: Json::encode(&n).unwrap(),
                restarts: 0,
                isolated: false,
                retry: None,
            }),
            8 => batch.delete_activity(durable_store::ActivityKey {
                instance: id,
                execution,
                task: TaskId(rng.below(6)),
            }),
            9 => batch.put_timer(TimerRecord {
                fire_at: Timestamp(rng.below(30)),
                instance: id,
                execution,
                purpose: durable_store::TimerPurpose::Task(TaskId(rng.below(4))),
            }),
            10 => batch.delete_timer(TimerKey {
                fire_at: Timestamp(rng.below(30)),
                instance: id,
                execution,
                purpose: durable_store::TimerPurpose::Task(TaskId(rng.below(4))),
            }),
            11 => batch.put_entity(EntityRecord {
                id: EntityId::new(
                    ["Counter", "Account"][(n % 2) as usize],
                    format!("k{}", n % 7),
                )
                .unwrap(),
                state: Some(Json::encode(&n).unwrap()),
                lock: None,
                last_modified: Timestamp(n % 100),
            }),
            _ => batch.set_execution_floor(ExecutionId(rng.below(100))),
        }
    }
    batch
}

/// Every key and value of an engine, keyspace by keyspace.
fn dump(engine: &impl KvEngine) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    Space::ALL
        .iter()
        .map(|space| {
            let mut entries = Vec::new();
            engine
                .scan(
                    *space,
                    Bound::Unbounded,
                    Bound::Unbounded,
                    &mut |key, value| {
                        entries.push((key.to_vec(), value.to_vec()));
                        Ok(Scan::Continue)
                    },
                )
                .unwrap();
            entries
        })
        .collect()
}

/// A memory store holding exactly `entries`.
fn restore(entries: &[Vec<(Vec<u8>, Vec<u8>)>]) -> MemoryStore {
    let engine = MemoryEngine::default();
    let ops: Vec<KvOp> = Space::ALL
        .iter()
        .zip(entries)
        .flat_map(|(space, entries)| {
            entries
                .iter()
                .map(|(key, value)| KvOp::Put(*space, key.clone(), value.clone()))
        })
        .collect();
    engine.write(ops).unwrap();
    KvStore::with_engine(engine, std::path::Path::new("model")).unwrap()
}

/// One random read, run against a store, as comparable text.
fn random_read(rng: &mut Rng) -> impl Fn(&dyn Store) -> Result<String, Error> {
    let id = nth_id(rng.below(IDS));
    let pick = rng.below(11);
    let after_seq = rng.below(20);
    let limit = 1 + rng.below(8) as usize;
    let execution = ExecutionId(1 + rng.below(2));
    let status = RuntimeStatus::ALL[rng.below(6) as usize];
    move |store: &dyn Store| {
        Ok(match pick {
            0 => format!("{:?}", store.instance(&id)?),
            1 => format!("{:?}", store.history(&id, execution)?),
            2 => format!("{:?}", store.inbox(&id)?),
            3 => format!("{:?}", store.inbox_page(&id, Some(after_seq), limit)?),
            4 => format!("{:?}", store.scan_inbox(None, limit)?),
            5 => format!(
                "{:?}",
                store.scan_activities(
                    Some(&durable_store::ActivityKey {
                        instance: id.clone(),
                        execution,
                        task: TaskId(1),
                    }),
                    limit
                )?
            ),
            6 => format!("{:?}", store.scan_timers(None, limit)?),
            7 => format!(
                "{:?}",
                store.entity(&EntityId::new("Counter", format!("k{after_seq}")).unwrap())?
            ),
            8 => format!("{:?}", store.list_entities(Some("Counter"), None, limit)?),
            9 => {
                let query = InstanceQuery {
                    statuses: Some(vec![status]),
                    ..InstanceQuery::default()
                };
                format!("{:?}", store.list_instances(&query, Some(&id), limit)?)
            }
            _ => format!("{:?}", store.execution_floor()?),
        })
    }
}

#[test]
fn random_faults_never_give_wrong_data_or_part_of_a_batch() {
    let seed = std::env::var("DURABLE_FAULT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0xfa17_5eed_u64);
    let steps = 6_000;
    let mut rng = Rng(seed);
    let faults = Faults::new(seed);
    let store = faulty_kv(&faults);
    let mut model = MemoryStore::new();
    faults.add(Fault::commit().with_probability(0.08));
    faults.add(Fault::commit().after_write().with_probability(0.08));
    faults.add(Fault::any_read().with_probability(0.05));
    faults.add(
        Fault::any_read()
            .matching(|call| matches!(call, Call::Read(durable_store::faults::Read::Scan(_))))
            .with_probability(0.05)
            .after_entries(1),
    );
    let (mut commits_failed, mut reads_failed, mut whole, mut none) = (0, 0, 0, 0);
    for step in 0..steps {
        if rng.below(2) == 0 {
            let batch = random_batch(&mut rng);
            match store.commit(&batch) {
                Ok(()) => model.commit(&batch).unwrap(),
                Err(error) => {
                    assert!(error.to_string().contains("injected fault"), "{error}");
                    commits_failed += 1;
                    // All of the batch or none of it, never a part.
                    let before = dump(model.engine());
                    model.commit(&batch).unwrap();
                    let after = dump(model.engine());
                    let found = dump(store.engine().inner());
                    if found == after {
                        whole += 1;
                    } else {
                        assert_eq!(
                            found, before,
                            "step {step} (seed {seed:#x}): part of a batch"
                        );
                        none += 1;
                        model = restore(&before);
                    }
                }
            }
        } else {
            let read = random_read(&mut rng);
            let expected = read(&model);
            match read(&store) {
                Err(error) if error.to_string().contains("injected fault") => reads_failed += 1,
                found => assert_eq!(
                    format!("{found:?}"),
                    format!("{expected:?}"),
                    "step {step} (seed {seed:#x}): a read under faults differs from the model"
                ),
            }
        }
    }
    assert_eq!(dump(store.engine().inner()), dump(model.engine()));
    println!(
        "random faults (seed {seed:#x}): {steps} steps, {} faults injected: {commits_failed} \
         commits failed ({whole} whole, {none} not applied, 0 partial), {reads_failed} reads \
         failed, no wrong answer",
        faults.injected()
    );
    assert!(commits_failed > 100 && reads_failed > 100);
}

// ---------------------------------------------------------------------------------------
// fjall's journal, cut short.

/// The journal file of a fjall store directory and its written bytes (the file is
/// preallocated with zeros, which are left out).
fn journal(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "jnl"))
        .expect("a journal file");
    let mut bytes = std::fs::read(&path).unwrap();
    let used = bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |at| at + 1);
    bytes.truncate(used);
    (path, bytes)
}

/// Copies a store directory whose journal holds `written`, keeping only the first `keep`
/// bytes of it (the rest of the file zeros, as if they never reached the disk).
fn copy_with_torn_journal(
    from: &std::path::Path,
    to: &std::path::Path,
    journal_path: &std::path::Path,
    written: &[u8],
    keep: usize,
) {
    for entry in walk(from) {
        let target = to.join(entry.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        if entry == journal_path {
            let length = std::fs::metadata(&entry).unwrap().len();
            let file = std::fs::File::create(&target).unwrap();
            file.set_len(length).unwrap();
            use std::io::Write;
            (&file).write_all(&written[..keep]).unwrap();
        } else {
            std::fs::copy(&entry, &target).unwrap();
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn instances(store: &dyn Store) -> Vec<String> {
    store
        .list_instances(&InstanceQuery::default(), None, 1000)
        .unwrap()
        .into_iter()
        .map(|record| record.id.to_string())
        .collect()
}

#[test]
fn a_journal_cut_mid_batch_recovers_without_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (before_last, used) = {
        let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
        for n in 0..3u64 {
            let mut batch = WriteBatch::new();
            for i in 0..4 {
                let id = InstanceId::new(format!("b{n}-{i}")).unwrap();
                batch.put_instance(record(&id, n, RuntimeStatus::Running));
                batch.append_history(
                    id,
                    ExecutionId::FIRST,
                    0,
                    HistoryEvent::TimerFired { id: TaskId(i) },
                );
            }
            store.commit(&batch).unwrap();
        }
        let before_last = journal(dir.path()).1.len();
        let mut batch = WriteBatch::new();
        for i in 0..4 {
            let id = InstanceId::new(format!("last-{i}")).unwrap();
            batch.put_instance(record(&id, 9, RuntimeStatus::Running));
        }
        store.commit(&batch).unwrap();
        (before_last, journal(dir.path()).1.len())
    };
    assert!(used > before_last);
    let (journal_path, written) = journal(dir.path());
    let mut outcomes = std::collections::BTreeMap::<&str, u32>::new();
    // Cut at every byte of the last batch (and at its end, which keeps it).
    for keep in before_last..=used {
        let copy = tempfile::tempdir().unwrap();
        copy_with_torn_journal(dir.path(), copy.path(), &journal_path, &written, keep);
        let store = match FjallStore::open(copy.path(), Durability::Fsync) {
            Ok(store) => store,
            Err(error) => {
                // Refusing to open is safe, if typed; silently losing earlier batches is not.
                assert!(
                    matches!(error, Error::Damaged { .. }),
                    "cut at {keep}: {error:?}"
                );
                *outcomes.entry("refused to open (Damaged)").or_default() += 1;
                continue;
            }
        };
        let found = instances(&store);
        let earlier = found.iter().filter(|id| id.starts_with('b')).count();
        let last = found.iter().filter(|id| id.starts_with("last")).count();
        assert_eq!(earlier, 12, "cut at {keep}: an earlier batch was lost");
        assert!(
            last == 0 || last == 4,
            "cut at {keep}: {last} of 4 records of the torn batch"
        );
        *outcomes
            .entry(if last == 4 {
                "last batch whole"
            } else {
                "last batch dropped"
            })
            .or_default() += 1;
    }
    println!(
        "journal cut at each of {} positions in the last batch: {outcomes:?}",
        used - before_last + 1
    );
    assert_eq!(
        outcomes.get("last batch whole"),
        Some(&1),
        "only the whole journal keeps it"
    );
}
