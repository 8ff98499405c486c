//! Runs the store conformance suite against both embedded stores, plus the checks that
//! need raw access to an engine: corrupt records, format versions and the directory lock.

use durable_store::codec::Space;
use durable_store::{
    Durability, Error, ExecutionId, FORMAT_VERSION, FjallStore, HistoryEvent, InstanceId, Json,
    KvEngine, KvOp, KvStore, MemoryEngine, MemoryStore, Store, Timestamp, WriteBatch, conformance,
};
use std::sync::Arc;

#[test]
fn memory_store_conforms() {
    conformance::run_all(&mut || Arc::new(MemoryStore::new()) as Arc<dyn Store>);
}

#[test]
fn fjall_store_conforms() {
    let mut dirs = Vec::new();
    conformance::run_all(&mut || {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
        dirs.push(dir);
        Arc::new(store) as Arc<dyn Store>
    });
}

#[test]
fn fjall_buffered_store_conforms() {
    let mut dirs = Vec::new();
    conformance::run_all(&mut || {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path(), Durability::Buffered).unwrap();
        dirs.push(dir);
        Arc::new(store) as Arc<dyn Store>
    });
}

#[test]
fn fjall_store_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_persistence(&mut || {
        Arc::new(FjallStore::open(dir.path(), Durability::Fsync).unwrap()) as Arc<dyn Store>
    });
}

#[test]
fn second_open_of_a_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
    let Err(error) = FjallStore::open(dir.path(), Durability::Fsync) else {
        panic!("second open succeeded")
    };
    assert!(matches!(error, Error::Locked { .. }), "{error:?}");
    assert!(
        error.to_string().contains("in use by another process"),
        "{error}"
    );
}

#[test]
fn lock_is_released_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    drop(FjallStore::open(dir.path(), Durability::Fsync).unwrap());
    FjallStore::open(dir.path(), Durability::Fsync).unwrap();
}

#[test]
fn other_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
        store
            .engine()
            .write(vec![KvOp::Put(
                Space::Meta,
                b"format_version".to_vec(),
                99u32.to_be_bytes().to_vec(),
            )])
            .unwrap();
    }
    let Err(error) = FjallStore::open(dir.path(), Durability::Fsync) else {
        panic!("opened a store of format 99")
    };
    assert!(
        matches!(
            error,
            Error::IncompatibleFormat {
                found: 99,
                expected: durable_store::FORMAT_VERSION,
                ..
            }
        ),
        "{error:?}"
    );
}

/// Stores written by earlier formats, checked in: version 2 (entity messages as history
/// events, scheduled starts as timers of task `u64::MAX`) and version 3 (no retry attempts,
/// generations or cancelled activities). This build refuses each with a message that says
/// what to do, and leaves it as it was.
#[test]
fn a_store_of_a_previous_format_is_refused_with_advice() {
    for found in [2, 3] {
        refuses_the_fixture_of_format(found);
    }
}

fn refuses_the_fixture_of_format(found: u32) {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/format-{found}"));
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    let before = read_dir_bytes(dir.path());
    let Err(error) = FjallStore::open(dir.path(), Durability::Fsync) else {
        panic!("opened a store of format {found}")
    };
    assert!(
        matches!(
            error,
            Error::IncompatibleFormat { found: f, expected: FORMAT_VERSION, .. } if f == found
        ),
        "{error:?}"
    );
    let message = error.to_string();
    for advice in [
        &format!("format version {found}"),
        &format!("reads version {FORMAT_VERSION}"),
        "let its instances finish",
        "empty directory",
    ] {
        assert!(message.contains(advice), "{message}");
    }
    // fjall tidies its own manifest files and preallocates its journal when it opens a
    // directory; what holds the data (the journal's records, the tables, the commit mark)
    // is left as it was.
    let after = read_dir_bytes(dir.path());
    let data = |bytes: &[u8]| {
        let end = bytes
            .iter()
            .rposition(|byte| *byte != 0)
            .map_or(0, |last| last + 1);
        bytes[..end].to_vec()
    };
    for (path, bytes) in &before {
        let holds_data = path.starts_with("0.jnl")
            || path.starts_with("durable-commit-mark")
            || path.components().any(|part| part.as_os_str() == "tables");
        if holds_data {
            let unchanged = after.get(path).map(|now| data(now)) == Some(data(bytes));
            assert!(unchanged, "{} changed", path.display());
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn read_dir_bytes(
    dir: &std::path::Path,
) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if !path.ends_with("lock") {
                files.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    files
}

#[test]
fn data_without_a_version_is_refused() {
    let engine = MemoryEngine::default();
    engine
        .write(vec![KvOp::Put(
            Space::Instances,
            b"x".to_vec(),
            b"y".to_vec(),
        )])
        .unwrap();
    let Err(error) = KvStore::with_engine(engine, std::path::Path::new("mem")) else {
        panic!("accepted unversioned data")
    };
    assert!(
        matches!(error, Error::IncompatibleFormat { found: 0, .. }),
        "{error:?}"
    );
}

#[test]
fn corrupt_history_names_the_instance_and_spares_others() {
    let store = MemoryStore::new();
    let good = InstanceId::new("good").unwrap();
    let bad = InstanceId::new("bad").unwrap();
    let event = HistoryEvent::OrchestratorStarted { at: Timestamp(1) };
    let mut batch = WriteBatch::new();
    batch.append_history(good.clone(), ExecutionId::FIRST, 0, event.clone());
    batch.append_history(bad.clone(), ExecutionId::FIRST, 0, event.clone());
    store.commit(&batch).unwrap();
    store
        .engine()
        .write(vec![KvOp::Put(
            Space::History,
            durable_store::codec::history_key(&bad, ExecutionId::FIRST, 0),
            vec![0xff, 0xff, 0xff],
        )])
        .unwrap();
    let error = store.history(&bad, ExecutionId::FIRST).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt { instance: Some(id), .. } if id == "bad"),
        "{error:?}"
    );
    assert!(error.to_string().contains("`bad`"), "{error}");
    assert_eq!(
        store.history(&good, ExecutionId::FIRST).unwrap(),
        vec![event]
    );
}

#[test]
fn history_gap_is_reported() {
    let store = MemoryStore::new();
    let id = InstanceId::new("gap").unwrap();
    let mut batch = WriteBatch::new();
    batch.append_history(
        id.clone(),
        ExecutionId::FIRST,
        0,
        HistoryEvent::TimerFired {
            id: durable_store::TaskId(0),
        },
    );
    batch.append_history(
        id.clone(),
        ExecutionId::FIRST,
        2,
        HistoryEvent::TimerFired {
            id: durable_store::TaskId(1),
        },
    );
    store.commit(&batch).unwrap();
    let error = store.history(&id, ExecutionId::FIRST).unwrap_err();
    assert!(error.to_string().contains("gap at event 1"), "{error}");
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    // A small deterministic generator: the decoder must turn any bytes into a typed error
    // (or, rarely, a valid record), never a panic or a huge allocation.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = durable_store::codec::decode_value::<HistoryEvent>(Space::History, None, &bytes);
        let _ = durable_store::codec::decode_value::<durable_store::InstanceRecord>(
            Space::Instances,
            None,
            &bytes,
        );
    }
    // A length prefix claiming 2^60 bytes is refused without allocating it.
    let mut huge = vec![2u8]; // TaskScheduled
    huge.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]);
    assert!(
        durable_store::codec::decode_value::<HistoryEvent>(Space::History, None, &huge).is_err()
    );
    let _ = Json::null();
}
