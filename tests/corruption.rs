//! A damaged store: a real fjall store is built by a runtime (instances completed, waiting
//! for an event, suspended with an event parked, waiting on an activity and on timers),
//! then one record is overwritten with garbage through the store's own engine — fjall's
//! checksums guard its files, not our records' meaning — and the runtime starts again.
//! Reading or replaying must name the damaged instance with a typed error, and the other
//! instances must keep working. Last, bytes are flipped in a copy of the files themselves,
//! to see what fjall makes of it.

use durable::Clock;
use durable::client::Error as ClientError;
use durable::prelude::*;
use durable::store::codec::{self, Space};
use durable::store::{
    Durability, Error as StoreError, ExecutionId, FjallStore, InstanceId, InstanceQuery, KvEngine,
    KvOp, RecordKey, Store,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(20);
const GARBAGE: [u8; 7] = [0xff, 0xfe, 0x00, 0x13, 0x37, 0xff, 0x80];

#[activity]
async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

/// Never returns in a test's lifetime: its work item stays stored.
#[activity]
async fn forever(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(x)
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let a = ctx.call_activity(add_one, x).await?;
    ctx.call_activity(add_one, a).await
}

#[orchestrator]
async fn approval(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let approved: u64 = ctx.wait_for_event("approve").await?;
    Ok(x + approved)
}

#[orchestrator]
async fn stuck(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    ctx.call_activity(forever, x).await
}

#[orchestrator]
async fn nap(ctx: OrchestrationContext, millis: u64) -> Result<u64, Error> {
    ctx.sleep(Duration::from_millis(millis)).await?;
    Ok(millis)
}

/// Every runtime of these tests reads a manual clock that starts here: the naps' timers
/// come due only when a test moves it.
fn clock() -> Clock {
    Clock::manual(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

async fn start(dir: &Path) -> Result<Runtime, durable::runtime::Error> {
    start_on(dir, clock()).await
}

async fn start_on(dir: &Path, clock: Clock) -> Result<Runtime, durable::runtime::Error> {
    Runtime::builder()
        .store_path(dir)
        .clock(clock)
        .register(add_one)
        .register(forever)
        .register(chain)
        .register(approval)
        .register(stuck)
        .register(nap)
        .shutdown_timeout(Duration::from_millis(50))
        .start()
        .await
}

/// How long the short nap sleeps: its timer comes due when a test moves the clock by that.
const SHORT_NAP_MS: u64 = 1_500;

/// Builds the store: `done-*` completed, `wait-*` waiting for "approve", `parked`
/// suspended with an event parked in its inbox, `stuck` waiting on an activity that never
/// returns (its work item stays stored), `nap-long` and `nap-short` sleeping.
async fn build(dir: &Path) {
    let runtime = start(dir).await.unwrap();
    let client = runtime.client();
    for i in 0..3u64 {
        let done = client
            .start_with_id(chain, format!("done-{i}"), i)
            .await
            .unwrap();
        assert_eq!(done.wait(WAIT).await.unwrap(), i + 2);
    }
    for i in 0..4u64 {
        client
            .start_with_id(approval, format!("wait-{i}"), 10 * i)
            .await
            .unwrap();
    }
    client.start_with_id(approval, "parked", 100).await.unwrap();
    client.suspend("parked", "hold").await.unwrap();
    client.raise_event("parked", "approve", 1u64).await.unwrap();
    client.start_with_id(stuck, "stuck", 7).await.unwrap();
    client
        .start_with_id(nap, "nap-long", 3_600_000)
        .await
        .unwrap();
    client
        .start_with_id(nap, "nap-short", SHORT_NAP_MS)
        .await
        .unwrap();
    runtime.shutdown().await;
}

fn id(text: &str) -> InstanceId {
    text.parse().unwrap()
}

/// Overwrites the value stored under `key` in `space` with garbage.
fn overwrite(dir: &Path, space: Space, key: Vec<u8>) {
    let store = FjallStore::open(dir, Durability::Fsync).unwrap();
    assert!(
        store.engine().get(space, &key).unwrap().is_some(),
        "nothing stored there to damage"
    );
    store
        .engine()
        .write(vec![KvOp::Put(space, key, GARBAGE.to_vec())])
        .unwrap();
}

fn current_execution(dir: &Path, instance: &str) -> (ExecutionId, u64) {
    let store = FjallStore::open(dir, Durability::Fsync).unwrap();
    let record = store.instance(&id(instance)).unwrap().unwrap();
    (record.execution, record.history_len)
}

/// Whether `error` is a store corruption error naming `instance`.
fn names(error: &ClientError, instance: &str) -> bool {
    matches!(error, ClientError::Store(inner)
        if matches!(&**inner, StoreError::Corrupt { instance: Some(found), .. } if found == instance))
        && error.to_string().contains(&format!("`{instance}`"))
}

/// A healthy waiting instance still takes its event and completes.
async fn healthy_instance_completes(client: &Client, instance: &str, expected: u64) {
    client.raise_event(instance, "approve", 5u64).await.unwrap();
    let status = client.wait_for_completion(instance, WAIT).await.unwrap();
    assert_eq!(
        (status.runtime_status, status.output_as::<u64>().unwrap()),
        (RuntimeStatus::Completed, Some(expected)),
        "{:?}",
        status.failure
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_history_fails_only_its_instance_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    let (execution, len) = current_execution(dir.path(), "wait-1");
    overwrite(
        dir.path(),
        Space::History,
        codec::history_key(&id("wait-1"), execution, len - 1),
    );

    let runtime = start(dir.path()).await.unwrap();
    let client = runtime.client();
    // Reading the history names the instance and the event.
    let error = client.status_with_history("wait-1").await.unwrap_err();
    assert!(names(&error, "wait-1"), "{error:?}");
    let ClientError::Store(inner) = &error else {
        unreachable!()
    };
    assert!(
        matches!(&**inner, StoreError::Corrupt { key: Some(RecordKey::History { seq, .. }), .. } if *seq == len - 1),
        "{inner:?}"
    );
    // Replaying it fails that instance alone, saying why.
    client.raise_event("wait-1", "approve", 5u64).await.unwrap();
    let status = client.wait_for_completion("wait-1", WAIT).await.unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap().to_string();
    assert!(
        failure.contains("corrupt") && failure.contains("`wait-1`"),
        "{failure}"
    );
    // The others keep working.
    healthy_instance_completes(&client, "wait-0", 5).await;
    healthy_instance_completes(&client, "wait-2", 25).await;
    let listed = client
        .list(&InstanceQuery::default(), 100, None)
        .await
        .unwrap();
    assert_eq!(listed.instances.len(), 11);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_instance_record_is_named_and_the_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    overwrite(
        dir.path(),
        Space::Instances,
        codec::instance_key(&id("wait-2")),
    );

    let runtime = start(dir.path()).await.unwrap();
    let client = runtime.client();
    let error = client.status("wait-2").await.unwrap_err();
    assert!(names(&error, "wait-2"), "{error:?}");
    assert!(
        error.to_string().contains("instance record `wait-2`"),
        "{error}"
    );
    // Listing meets the damaged record: it says which one.
    let error = client
        .list(&InstanceQuery::default(), 100, None)
        .await
        .unwrap_err();
    assert!(names(&error, "wait-2"), "{error:?}");
    healthy_instance_completes(&client, "wait-0", 5).await;
    healthy_instance_completes(&client, "wait-3", 35).await;
    assert_eq!(
        client
            .status("done-1")
            .await
            .unwrap()
            .unwrap()
            .runtime_status,
        RuntimeStatus::Completed
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_an_instance_with_a_corrupt_record_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    overwrite(
        dir.path(),
        Space::Instances,
        codec::instance_key(&id("wait-2")),
    );
    let runtime = start(dir.path()).await.unwrap();
    let client = runtime.client();
    let answer = tokio::time::timeout(WAIT, client.raise_event("wait-2", "approve", 5u64))
        .await
        .expect("the event was never answered");
    let error = answer.unwrap_err();
    assert!(names(&error, "wait-2"), "{error:?}");
    healthy_instance_completes(&client, "wait-0", 5).await;
    runtime.shutdown().await;
}

/// Damages the parked event's inbox message.
async fn damage_the_parked_event(dir: &Path) {
    let store = FjallStore::open(dir, Durability::Fsync).unwrap();
    let inbox = store.inbox(&id("parked")).unwrap();
    assert_eq!(inbox.len(), 1, "the event waits in the inbox");
    let key = codec::inbox_key(&inbox[0].0);
    drop(store);
    overwrite(dir, Space::Inbox, key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_stored_message_fails_its_instance_naming_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    damage_the_parked_event(dir.path()).await;
    let runtime = start(dir.path())
        .await
        .expect("one bad message stops every instance");
    let client = runtime.client();
    // What the message said is lost, so the instance cannot go on correctly: it fails,
    // and says why, instead of waiting forever for an event that was delivered.
    let status = client.wait_for_completion("parked", WAIT).await.unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Failed, "{status:?}");
    let failure = status.failure.unwrap();
    assert_eq!(failure.kind, durable::ErrorKind::Internal, "{failure}");
    assert!(
        failure
            .message
            .contains("message stored for this instance is damaged"),
        "{failure}"
    );
    assert!(failure.message.contains("inbox message"), "{failure}");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_stored_message_does_not_stop_the_other_instances() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    damage_the_parked_event(dir.path()).await;
    let runtime = start(dir.path())
        .await
        .expect("one bad message stops every instance");
    let client = runtime.client();
    healthy_instance_completes(&client, "wait-0", 5).await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_activity_work_item_does_not_stop_the_other_instances() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    let key = {
        let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
        let items = store.scan_activities(None, 100).unwrap();
        let item = items
            .iter()
            .find(|item| item.instance.as_str() == "stuck")
            .expect("the activity's work item is stored");
        codec::activity_key(&item.key())
    };
    overwrite(dir.path(), Space::Activities, key);
    let runtime = start(dir.path())
        .await
        .expect("one bad work item stops every instance");
    let client = runtime.client();
    healthy_instance_completes(&client, "wait-0", 5).await;
    // The damaged activity fails instead of running (what to run is lost), and says so.
    let status = client.wait_for_completion("stuck", WAIT).await.unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Failed, "{status:?}");
    let failure = status.failure.unwrap().to_string();
    assert!(
        failure.contains("work item of this activity is damaged"),
        "{failure}"
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_timer_does_not_stop_the_other_timers() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    let key = {
        let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
        let timers = store.scan_timers(None, 100).unwrap();
        let timer = timers
            .iter()
            .find(|timer| timer.instance.as_str() == "nap-long")
            .expect("the long nap's timer is stored");
        codec::timer_key(&timer.key())
    };
    overwrite(dir.path(), Space::Timers, key);
    let clock = clock();
    let runtime = start_on(dir.path(), clock.clone()).await.unwrap();
    let client = runtime.client();
    clock.advance(Duration::from_millis(SHORT_NAP_MS));
    let status = client
        .wait_for_completion("nap-short", WAIT)
        .await
        .expect("the short nap's timer never fired");
    assert_eq!(status.output_as::<u64>().unwrap(), Some(SHORT_NAP_MS));
    runtime.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Bytes flipped in the files.

/// Everything a store holds, as text, or the first error met reading it.
fn dump(store: &dyn Store) -> Result<String, StoreError> {
    let mut text = format!("floor {:?}\n", store.execution_floor()?);
    for record in store.list_instances(&InstanceQuery::default(), None, 10_000)? {
        let history = store.history(&record.id, record.execution)?;
        text += &format!("{record:?}\n{history:?}\n");
    }
    text += &format!("{:?}\n", store.scan_inbox(None, 10_000)?);
    text += &format!("{:?}\n", store.scan_activities(None, 10_000)?);
    text += &format!("{:?}\n", store.scan_timers(None, 10_000)?);
    text += &format!("{:?}\n", store.list_entities(None, None, 10_000)?);
    Ok(text)
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The bytes of a file worth flipping: all of a small file, the written part of a
/// preallocated journal.
fn written(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let used = bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |at| at + 1);
    bytes.truncate(used);
    bytes
}

/// A copy of the store directory at `dir`, as it is now.
fn copy_of(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    copy_with_flip(dir, copy.path(), Path::new("/nothing to flip"), 0);
    copy
}

/// Copies `from` to `to` with one byte of `target` (at `offset` of its written bytes)
/// flipped; files keep their length (a preallocated journal stays sparse).
fn copy_with_flip(from: &Path, to: &Path, target: &Path, offset: usize) {
    for file in walk(from) {
        let copy = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        let mut bytes = written(&file);
        if file == target {
            bytes[offset] ^= 0x5a;
        }
        let out = std::fs::File::create(&copy).unwrap();
        out.set_len(std::fs::metadata(&file).unwrap().len())
            .unwrap();
        use std::io::Write;
        (&out).write_all(&bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_in_the_files_are_detected_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    let original = dump(&FjallStore::open(dir.path(), Durability::Fsync).unwrap()).unwrap();
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    let mut silent = Vec::new();
    for file in walk(dir.path()) {
        let bytes = written(&file);
        if bytes.is_empty() {
            continue;
        }
        let name = file.strip_prefix(dir.path()).unwrap().display().to_string();
        // The journal holds every record: flip across it; elsewhere a few places.
        let step = if name.ends_with(".jnl") {
            (bytes.len() / 120).max(1)
        } else {
            (bytes.len() / 3).max(1)
        };
        for offset in (0..bytes.len()).step_by(step) {
            let copy = tempfile::tempdir().unwrap();
            copy_with_flip(dir.path(), copy.path(), &file, offset);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let store = FjallStore::open(copy.path(), Durability::Fsync)?;
                dump(&store)
            }));
            let kind = match outcome {
                Err(_) => panic!("flipping byte {offset} of {name} panicked a read"),
                Ok(Err(error)) => {
                    assert!(
                        !matches!(error, StoreError::Backend(_)),
                        "byte {offset} of {name}: an untyped error: {error}"
                    );
                    format!("error: {}", variant(&error))
                }
                Ok(Ok(found)) if found == original => "read back unchanged".to_owned(),
                Ok(Ok(found)) => {
                    let instances = |text: &str| text.matches("InstanceRecord").count();
                    silent.push(format!(
                        "{name}@{offset}: {} of {} instances",
                        instances(&found),
                        instances(&original)
                    ));
                    "read back DIFFERENT, no error".to_owned()
                }
            };
            *outcomes
                .entry(format!("{}: {kind}", kind_of(&name)))
                .or_default() += 1;
        }
    }
    println!("flipped one byte per copy of the store files: {outcomes:#?}");
    // fjall checksums its journal batches and table blocks, and the commit mark catches
    // a journal that recovered fewer commits than were acknowledged: nothing slips
    // through as different data.
    assert!(
        silent.is_empty(),
        "read back different without an error: {silent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_lost_acknowledged_commits_is_refused_until_the_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    // Damage the journal's first byte: fjall then recovers nothing, as if the store were
    // new, although every instance was acknowledged.
    let journal = walk(dir.path())
        .into_iter()
        .find(|file| file.to_string_lossy().ends_with(".jnl"))
        .expect("a journal file");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&journal, bytes).unwrap();
    let error = match FjallStore::open(dir.path(), Durability::Fsync) {
        Ok(_) => panic!("a journal that lost acknowledged commits opened"),
        Err(error) => error,
    };
    assert!(matches!(error, StoreError::Damaged { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("were acknowledged as durable"), "{text}");
    assert!(text.contains(durable::store::COMMIT_MARK_FILE), "{text}");
    // Deleting the mark is how to accept the loss and go on.
    std::fs::remove_file(dir.path().join(durable::store::COMMIT_MARK_FILE)).unwrap();
    FjallStore::open(dir.path(), Durability::Fsync).expect("opens once the loss is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_commits_lost_with_the_machine_are_no_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
        let mut batch = durable::store::WriteBatch::new();
        batch.set_execution_floor(ExecutionId(7));
        store.commit(&batch).unwrap();
    }
    // A buffered session's commits are not marked: losing them (as a power cut may) is
    // what buffered durability allows. Simulate it by keeping the journal from before.
    let before = copy_of(dir.path());
    {
        let store = FjallStore::open(dir.path(), Durability::Buffered).unwrap();
        let mut batch = durable::store::WriteBatch::new();
        batch.set_execution_floor(ExecutionId(9));
        store.commit(&batch).unwrap();
    }
    let mark = std::fs::read(dir.path().join(durable::store::COMMIT_MARK_FILE)).unwrap();
    std::fs::write(before.path().join(durable::store::COMMIT_MARK_FILE), mark).unwrap();
    let store = FjallStore::open(before.path(), Durability::Fsync).unwrap();
    assert_eq!(store.execution_floor().unwrap(), ExecutionId(7));
}

fn kind_of(name: &str) -> &'static str {
    if name.ends_with(".jnl") {
        "journal"
    } else if name.contains("tables") {
        "table"
    } else {
        "manifest/version/lock"
    }
}

fn variant(error: &StoreError) -> &'static str {
    match error {
        StoreError::Damaged { .. } => "Damaged",
        StoreError::Corrupt { .. } => "Corrupt",
        StoreError::Io(_) => "Io",
        StoreError::IncompatibleFormat { .. } => "IncompatibleFormat",
        StoreError::Locked { .. } => "Locked",
        StoreError::ReadOnly { .. } => "ReadOnly",
        _ => "other",
    }
}
