//! The runtime over a store that fails: `durable_store::faults::FaultyStore` around a real
//! fjall store fails chosen commits and reads. The runtime must never acknowledge a commit
//! that failed, must stop writing after one (the next calls are `Poisoned`, with advice),
//! must retry reads that failed, and after a restart over the same directory every
//! acknowledged start must be there and finish with the right output, with nothing half
//! written. Also: a read-only store directory at open is a clear, typed error.

use durable::Clock;
use durable::client::Error as ClientError;
use durable::prelude::*;
use durable::store::{Durability, FjallStore, InstanceQuery, Store};
use durable_store::faults::{Fault, Faults, FaultyStore, Read};
use durable_testkit::poll_once;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

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
async fn approval(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
    let approved: u64 = ctx.wait_for_event("approve").await?;
    Ok(x + approved)
}

#[orchestrator]
async fn nap(ctx: OrchestrationContext, millis: u64) -> Result<u64, Error> {
    ctx.sleep(Duration::from_millis(millis)).await?;
    Ok(millis)
}

async fn start_over(store: Arc<dyn Store>) -> Result<Runtime, durable::runtime::Error> {
    start_with_clock(store, Clock::system()).await
}

async fn start_with_clock(
    store: Arc<dyn Store>,
    clock: Clock,
) -> Result<Runtime, durable::runtime::Error> {
    Runtime::builder()
        .store(store)
        .clock(clock)
        .register(add_one)
        .register(chain)
        .register(approval)
        .register(nap)
        .start()
        .await
}

fn fjall(dir: &Path) -> Arc<dyn Store> {
    Arc::new(FjallStore::open(dir, Durability::Fsync).unwrap())
}

/// A fjall store in `dir` behind a fault plan.
fn faulty(dir: &Path, seed: u64) -> (Arc<dyn Store>, Faults) {
    let faults = Faults::new(seed);
    let store = FaultyStore::new(fjall(dir), faults.clone());
    (Arc::new(store), faults)
}

/// A fjall store in `dir` behind a fault plan, and the fjall store itself (to check what
/// really is there while the runtime runs; drop it before opening the directory again).
fn faulty_and_inner(dir: &Path, seed: u64) -> (Arc<dyn Store>, Faults, Arc<dyn Store>) {
    let faults = Faults::new(seed);
    let inner = fjall(dir);
    let store = FaultyStore::new(Arc::clone(&inner), faults.clone());
    (Arc::new(store), faults, inner)
}

async fn output(client: &Client, id: &str) -> Option<(RuntimeStatus, Option<u64>)> {
    let status = client.status(id).await.unwrap()?;
    Some((status.runtime_status, status.output_as::<u64>().unwrap()))
}

/// Three completed chains and three approvals waiting for their event.
async fn settled_workload(client: &Client) {
    for i in 0..3u64 {
        let done = client
            .start_with_id(chain, format!("done-{i}"), i)
            .await
            .unwrap();
        assert_eq!(done.wait(WAIT).await.unwrap(), i + 2);
        client
            .start_with_id(approval, format!("wait-{i}"), 10 * i)
            .await
            .unwrap();
    }
}

/// Checks, over a clean store, that the settled workload survived and still works.
async fn settled_workload_is_intact(client: &Client) {
    for i in 0..3u64 {
        assert_eq!(
            output(client, &format!("done-{i}")).await,
            Some((RuntimeStatus::Completed, Some(i + 2)))
        );
        let id = format!("wait-{i}");
        assert_eq!(
            output(client, &id).await,
            Some((RuntimeStatus::Running, None))
        );
        client.raise_event(&id, "approve", 5u64).await.unwrap();
        let status = client.wait_for_completion(&id, WAIT).await.unwrap();
        assert_eq!(status.output_as::<u64>().unwrap(), Some(10 * i + 5));
    }
}

/// Every instance in the store is consistent: its history has as many events as its
/// record says, and nothing is left to run for an instance that ended.
fn nothing_half_written(store: &dyn Store) {
    let records = store
        .list_instances(&InstanceQuery::default(), None, 10_000)
        .unwrap();
    for record in &records {
        let history = store.history(&record.id, record.execution).unwrap();
        assert_eq!(
            history.len() as u64,
            record.history_len,
            "`{}`: the record and the history disagree",
            record.id
        );
    }
    let ended = |id: &durable::store::InstanceId| {
        records
            .iter()
            .any(|record| &record.id == id && record.status.is_terminal())
    };
    for item in store.scan_activities(None, 10_000).unwrap() {
        assert!(
            !ended(&item.instance),
            "work left for ended `{}`",
            item.instance
        );
    }
    for timer in store.scan_timers(None, 10_000).unwrap() {
        assert!(
            !ended(&timer.instance),
            "timer left for ended `{}`",
            timer.instance
        );
    }
}

/// One failed commit: the request in it hears the failure, later requests hear
/// `Poisoned`, the runtime writes nothing more, and a restart finds what was acknowledged.
async fn one_failed_commit(fault: Fault, applied: bool) -> ClientError {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty(dir.path(), 1);
    let runtime = start_over(store).await.unwrap();
    let client = runtime.client();
    settled_workload(&client).await;

    // The runtime is idle: the next commit is the start's.
    faults.add(fault);
    let error = match client.start_with_id(chain, "doomed", 100).await {
        Ok(_) => panic!("a start whose commit failed was acknowledged"),
        Err(error) => error,
    };
    assert_eq!(faults.injected(), 1);
    assert!(
        matches!(&error, ClientError::Store(inner) if inner.to_string().contains("injected fault")),
        "{error:?}"
    );
    let writes = faults.writes();

    // Every later call is refused, saying why and what to do.
    let refused = [
        client.start_with_id(chain, "after", 1).await.map(|_| ()),
        client.raise_event("wait-0", "approve", 1u64).await,
        client.terminate("wait-1", "stop").await,
        client.status("done-0").await.map(|_| ()),
    ];
    for outcome in refused {
        let error = outcome.unwrap_err();
        assert!(matches!(error, ClientError::Poisoned), "{error:?}");
        assert!(error.to_string().contains("restart the process"), "{error}");
    }
    // Not even the shutdown, which flushes what the shards hold, commits again.
    runtime.shutdown().await;
    assert_eq!(
        faults.writes(),
        writes,
        "the runtime committed after a failed commit"
    );

    // A restart over the same directory, without faults.
    let store = fjall(dir.path());
    let runtime = start_over(Arc::clone(&store)).await.unwrap();
    let client = runtime.client();
    assert_eq!(output(&client, "after").await, None);
    match output(&client, "doomed").await {
        None => assert!(!applied, "the start was written, then lost"),
        Some(_) => {
            assert!(
                applied,
                "a start that failed before writing is in the store"
            );
            let status = client.wait_for_completion("doomed", WAIT).await.unwrap();
            assert_eq!(status.output_as::<u64>().unwrap(), Some(102));
        }
    }
    settled_workload_is_intact(&client).await;
    runtime.shutdown().await;
    nothing_half_written(&*store);
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_before_writing_is_refused_and_stops_the_writes() {
    one_failed_commit(Fault::commit(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_fsync_fails_after_writing_is_refused_and_stops_the_writes() {
    // The batch reached the store but the caller cannot know it will survive: the runtime
    // must treat it as failed (and may find it after the restart).
    one_failed_commit(Fault::commit().after_write(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_commit_is_a_clear_error_and_leaves_nothing() {
    let fault = Fault::commit().kind(std::io::ErrorKind::StorageFull);
    let error = one_failed_commit(fault, false).await;
    let ClientError::Store(inner) = &error else {
        panic!("{error:?}")
    };
    assert!(
        matches!(**inner, durable::store::Error::StorageFull(_)),
        "{inner:?}"
    );
    assert!(
        error.to_string().contains("disk holding the store is full"),
        "{error}"
    );
}

/// A client waiting (up to `wait`) for an instance whose completing commit fails; what
/// it heard, within [`WAIT`].
async fn waiting_through_a_failed_commit(wait: Duration) -> Result<InstanceStatus, ClientError> {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty(dir.path(), 2);
    let runtime = start_over(store).await.unwrap();
    let client = runtime.client();
    client.start_with_id(approval, "w", 1).await.unwrap();
    let mut waiter = Box::pin({
        let client = client.clone();
        async move { client.wait_for_completion("w", wait).await }
    });
    // Its first poll registers it as a waiter, before the commit fails.
    assert!(poll_once(&mut waiter).await.is_pending());
    let waiter = tokio::spawn(waiter);
    faults.add(Fault::commit());
    // This event completes the orchestration, in a commit that fails.
    assert!(client.raise_event("w", "approve", 1u64).await.is_err());
    let waited = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("the waiter heard nothing of the failed commit")
        .unwrap();
    runtime.shutdown().await;

    // It did not complete: after a restart it still waits, and then completes.
    let runtime = start_over(fjall(dir.path())).await.unwrap();
    let client = runtime.client();
    assert_eq!(
        output(&client, "w").await,
        Some((RuntimeStatus::Running, None))
    );
    client.raise_event("w", "approve", 2u64).await.unwrap();
    let status = client.wait_for_completion("w", WAIT).await.unwrap();
    assert_eq!(status.output_as::<u64>().unwrap(), Some(3));
    runtime.shutdown().await;
    waited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_never_reports_a_completion_that_did_not_commit() {
    let waited = waiting_through_a_failed_commit(Duration::from_millis(500)).await;
    assert!(
        matches!(
            waited,
            Err(ClientError::Poisoned | ClientError::Timeout { .. })
        ),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_hears_poisoned_as_soon_as_a_commit_fails() {
    // A wait of an hour ends within WAIT, with `Poisoned`: it was woken by the failure,
    // not by its timeout.
    let waited = waiting_through_a_failed_commit(Duration::from_secs(3600)).await;
    assert!(matches!(waited, Err(ClientError::Poisoned)), "{waited:?}");
}

/// Three approvals waiting, in a store in `dir`, after a clean shutdown.
async fn three_waiting(dir: &Path) {
    let runtime = start_over(fjall(dir)).await.unwrap();
    let client = runtime.client();
    for i in 0..3u64 {
        client
            .start_with_id(approval, format!("wait-{i}"), 10 * i)
            .await
            .unwrap();
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reads_are_retried_and_never_fail_an_instance() {
    let dir = tempfile::tempdir().unwrap();
    three_waiting(dir.path()).await;

    // After the restart nothing is hot: each event needs the instance record and a replay
    // of the history, and the first reads of both fail.
    let (store, faults) = faulty(dir.path(), 3);
    let runtime = start_over(store).await.unwrap();
    let client = runtime.client();
    for n in 1..=2 {
        faults.add(Fault::read(Read::Instance).nth(n));
        faults.add(Fault::read(Read::History).nth(n));
    }
    for i in 0..3u64 {
        client
            .raise_event(format!("wait-{i}"), "approve", 1u64)
            .await
            .unwrap();
    }
    for i in 0..3u64 {
        let status = client
            .wait_for_completion(format!("wait-{i}"), WAIT)
            .await
            .unwrap();
        assert_eq!(
            (status.runtime_status, status.output_as::<u64>().unwrap()),
            (RuntimeStatus::Completed, Some(10 * i + 1)),
            "a failed read failed the instance: {:?}",
            status.failure
        );
    }
    assert_eq!(faults.injected(), 4, "{:?}", faults.log());

    // A client read that fails is an error for that call only.
    faults.add(Fault::read(Read::Instance));
    let error = client.status("wait-0").await.unwrap_err();
    assert!(error.to_string().contains("injected fault"), "{error}");
    assert!(client.status("wait-0").await.unwrap().is_some());
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_at_start_up_is_a_typed_error_and_the_next_start_works() {
    let dir = tempfile::tempdir().unwrap();
    three_waiting(dir.path()).await;
    for read in [Read::ScanInbox, Read::ScanActivities, Read::ExecutionFloor] {
        let (store, faults) = faulty(dir.path(), 4);
        faults.add(Fault::read(read));
        let Err(error) = start_over(store).await else {
            panic!("started although {read:?} failed");
        };
        assert!(
            matches!(&error, durable::runtime::Error::Store(inner) if inner.to_string().contains("injected fault")),
            "{error:?}"
        );
    }
    let runtime = start_over(fjall(dir.path())).await.unwrap();
    let client = runtime.client();
    client.raise_event("wait-2", "approve", 1u64).await.unwrap();
    let status = client.wait_for_completion("wait-2", WAIT).await.unwrap();
    assert_eq!(status.output_as::<u64>().unwrap(), Some(21));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_timer_read_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty(dir.path(), 5);
    // The timer service's first read of the store fails; it tries again a second later.
    faults.add(Fault::read(Read::ScanTimers));
    let clock = Clock::manual(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let runtime = start_with_clock(store, clock.clone()).await.unwrap();
    let client = runtime.client();
    // Its timer is stored when `start` returns, and due once the clock moves.
    let napping = client.start_with_id(nap, "nap", 10).await.unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(napping.wait(WAIT).await.unwrap(), 10);
    assert_eq!(faults.injected(), 1);
    runtime.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Seeded random faults over many restarts.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What the workload expects of one instance.
struct Expected {
    id: String,
    waits: bool,
    input: u64,
    /// The start was acknowledged.
    started: bool,
    /// Its event was acknowledged.
    approved: bool,
}

impl Expected {
    fn output(&self) -> u64 {
        if self.waits {
            self.input + 7
        } else {
            self.input + 2
        }
    }
}

/// Runs one life of the runtime: starts and approves what is not yet acknowledged, until
/// the store fails (the runtime is poisoned) or everything is acknowledged. Returns
/// whether a fault stopped it.
async fn one_life(client: &Client, work: &mut [Expected]) -> bool {
    for item in work.iter_mut() {
        if !item.started {
            let started = if item.waits {
                client
                    .start_with_id(approval, &item.id, item.input)
                    .await
                    .map(|_| ())
            } else {
                client
                    .start_with_id(chain, &item.id, item.input)
                    .await
                    .map(|_| ())
            };
            match started {
                Ok(()) => item.started = true,
                // Written by a commit whose acknowledgement failed, found after a restart.
                Err(ClientError::AlreadyExists { .. }) => item.started = true,
                Err(ClientError::Poisoned) => return true,
                Err(ClientError::Store(error)) => {
                    assert!(error.to_string().contains("injected fault"), "{error}");
                }
                Err(error) => panic!("{}: {error:?}", item.id),
            }
        }
    }
    for item in work.iter_mut().filter(|item| item.waits && item.started) {
        if !item.approved {
            match client.raise_event(&item.id, "approve", 7u64).await {
                Ok(()) => item.approved = true,
                Err(ClientError::NotRunning { .. }) => item.approved = true,
                Err(ClientError::Poisoned) => return true,
                Err(ClientError::Store(error)) => {
                    assert!(error.to_string().contains("injected fault"), "{error}");
                }
                Err(error) => panic!("{}: {error:?}", item.id),
            }
        }
    }
    false
}

/// What one campaign of random faults did.
#[derive(Debug, Default)]
struct Campaign {
    lives: u64,
    refused_starts: u64,
    injected: u64,
    commit_faults: u64,
}

/// One campaign: 60 instances (chains, and approvals that wait for an event) are started and
/// approved through runtimes whose commits and reads fail at random, each runtime replaced
/// by a new one over the same directory once a failed commit stops it, until everything
/// is acknowledged; then every instance must complete with the right output.
async fn random_campaign(seed: u64) -> Campaign {
    let mut rng = Rng(seed.max(1));
    let dir = tempfile::tempdir().unwrap();
    let mut work: Vec<Expected> = (0..60u64)
        .map(|n| Expected {
            id: format!("job-{n}"),
            waits: n % 3 == 0,
            input: 100 * n,
            started: false,
            approved: false,
        })
        .collect();
    let mut campaign = Campaign::default();
    loop {
        campaign.lives += 1;
        assert!(
            campaign.lives < 100,
            "seed {seed:#x}: the workload does not finish under faults"
        );
        let (store, faults, inner) = faulty_and_inner(dir.path(), rng.next());
        // Every acknowledged start is in the store.
        for item in work.iter().filter(|item| item.started) {
            let found = inner.instance(&item.id.parse().unwrap()).unwrap();
            assert!(found.is_some(), "acknowledged `{}` is missing", item.id);
        }
        drop(inner);
        let kind = [
            std::io::ErrorKind::Other,
            std::io::ErrorKind::StorageFull,
            std::io::ErrorKind::TimedOut,
        ][(rng.next() % 3) as usize];
        let fault = Fault::commit().with_probability(0.12).kind(kind);
        faults.add(if rng.next().is_multiple_of(2) {
            fault.after_write()
        } else {
            fault
        });
        faults.add(Fault::any_read().with_probability(0.03));
        let runtime = match start_over(store).await {
            Ok(runtime) => runtime,
            Err(error) => {
                // A recovery read failed: a typed error, and the next start tries again.
                assert!(error.to_string().contains("injected fault"), "{error}");
                campaign.refused_starts += 1;
                campaign.injected += faults.injected();
                continue;
            }
        };
        let client = runtime.client();
        let stopped = one_life(&client, &mut work).await;
        // Let what was acknowledged run to its end, or to the next fault.
        if !stopped {
            for item in &work {
                if client.wait_for_completion(&item.id, WAIT).await.is_err() {
                    break;
                }
            }
        }
        let struck = faults
            .log()
            .iter()
            .filter(|line| line.contains("commit"))
            .count();
        campaign.commit_faults += struck as u64;
        campaign.injected += faults.injected();
        runtime.shutdown().await;
        let finished = !stopped && struck == 0;
        if finished
            && work
                .iter()
                .all(|item| item.started && (!item.waits || item.approved))
        {
            break;
        }
    }

    let store = fjall(dir.path());
    let runtime = start_over(Arc::clone(&store)).await.unwrap();
    let client = runtime.client();
    for item in &work {
        let status = client.wait_for_completion(&item.id, WAIT).await.unwrap();
        assert_eq!(
            (status.runtime_status, status.output_as::<u64>().unwrap()),
            (RuntimeStatus::Completed, Some(item.output())),
            "`{}` (seed {seed:#x}): {:?}",
            item.id,
            status.failure
        );
    }
    runtime.shutdown().await;
    nothing_half_written(&*store);
    campaign
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_over_restarts_lose_nothing_acknowledged() {
    let base = std::env::var("DURABLE_FAULT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x00dd_5eed_u64);
    let campaigns = std::env::var("DURABLE_FAULT_CAMPAIGNS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(8u64);
    let mut total = Campaign::default();
    for seed in base..base + campaigns {
        let campaign = random_campaign(seed).await;
        println!("seed {seed:#x}: {campaign:?}");
        assert!(
            campaign.commit_faults >= 3,
            "seed {seed:#x}: too few faults: {campaign:?}"
        );
        total.lives += campaign.lives;
        total.refused_starts += campaign.refused_starts;
        total.injected += campaign.injected;
        total.commit_faults += campaign.commit_faults;
    }
    println!(
        "random faults (seeds {base:#x}..{:#x}, DURABLE_FAULT_SEED / DURABLE_FAULT_CAMPAIGNS to \
         change): {} runtime lives ({} refused to start on a failed recovery read), {} faults \
         injected ({} on commits); every instance completed with the right output, every \
         acknowledged start was found after each restart, nothing half written",
        base + campaigns,
        total.lives,
        total.refused_starts,
        total.injected,
        total.commit_faults
    );
}

// ---------------------------------------------------------------------------------------
// A read-only store directory.

/// Makes `dir` unwritable, if this process can be refused anything: `chmod` for a normal
/// user; `chattr +i` (immutable) for root, whom permissions do not stop. Returns how, or
/// `None` when neither works here.
fn make_read_only(dir: &Path) -> Option<&'static str> {
    let probe = |dir: &Path| std::fs::write(dir.join("probe"), b"x").is_err();
    let _ = std::process::Command::new("chmod")
        .arg("-R")
        .arg("a-w")
        .arg(dir)
        .status();
    if probe(dir) {
        return Some("chmod a-w");
    }
    let immutable = std::process::Command::new("chattr")
        .arg("-R")
        .arg("+i")
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    let _ = std::fs::remove_file(dir.join("probe"));
    if immutable && probe(dir) {
        return Some("chattr +i");
    }
    None
}

fn make_writable(dir: &Path) {
    let _ = std::process::Command::new("chattr")
        .arg("-R")
        .arg("-i")
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status();
    let _ = std::process::Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(dir)
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_directory_is_a_clear_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("existing");
    three_waiting(&existing).await;
    let Some(how) = make_read_only(dir.path()) else {
        make_writable(dir.path());
        println!(
            "skipped: this process can write to any directory (root without chattr), so a \
             read-only directory cannot be made here"
        );
        return;
    };
    let mut outcomes = Vec::new();
    for path in [existing.clone(), dir.path().join("new")] {
        let opened = Runtime::builder()
            .store_path(&path)
            .register(approval)
            .start()
            .await;
        outcomes.push((path, opened.map(drop)));
    }
    make_writable(dir.path());
    println!("read-only by {how}: {outcomes:?}");
    for (path, outcome) in outcomes {
        let error = match outcome {
            Ok(()) => panic!("opened a store in read-only {}", path.display()),
            Err(error) => error,
        };
        assert!(
            matches!(
                &error,
                durable::runtime::Error::Store(durable::store::Error::ReadOnly { .. })
            ),
            "{}: {error:?}",
            path.display()
        );
        assert!(error.to_string().contains("read-only"), "{error}");
    }
    // Writable again, the store opens and its instances still wait.
    let runtime = start_over(fjall(&existing)).await.unwrap();
    let client = runtime.client();
    client.raise_event("wait-1", "approve", 1u64).await.unwrap();
    let status = client.wait_for_completion("wait-1", WAIT).await.unwrap();
    assert_eq!(status.output_as::<u64>().unwrap(), Some(11));
    runtime.shutdown().await;
}
