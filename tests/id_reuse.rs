//! Starting an id that an instance already has, under each `IdReuse` policy, through the
//! client: against an absent, running, pending (scheduled), suspended, completed, failed
//! and terminated instance. Each case checks the answer, what is stored afterwards (the
//! status, the execution, the output) and how often each execution's work ran: a refused
//! start leaves the existing instance as it was and runs nothing, a replacing start runs
//! its execution once and never re-runs the replaced one.

use durable::client::{Error as ClientError, IdReuse, StartOptions};
use durable::prelude::*;
use durable::{InstanceStatus, Json};
use durable_testkit::eventually;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(60);

/// How often the work of each tag ran.
static RUNS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

fn runs(tag: &str) -> u32 {
    RUNS.lock().unwrap().get(tag).copied().unwrap_or(0)
}

/// The work of an execution, counted per tag.
#[activity]
async fn work(_ctx: ActivityContext, tag: String) -> Result<String, Error> {
    *RUNS.lock().unwrap().entry(tag.clone()).or_default() += 1;
    Ok(tag)
}

/// What an execution does after its work.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Then {
    Complete,
    Fail,
    /// Wait for the event `finish`.
    Wait,
}

#[orchestrator]
async fn job(ctx: OrchestrationContext, plan: (String, Then)) -> Result<String, Error> {
    let (tag, then) = plan;
    let tag = ctx.call_activity(work, tag).await?;
    match then {
        Then::Complete => Ok(tag),
        Then::Fail => Err(Error::msg(format!("{tag} failed"))),
        Then::Wait => {
            ctx.wait_for_event::<()>("finish").await?;
            Ok(tag)
        }
    }
}

/// Where the existing instance stands when the start arrives.
#[derive(Clone, Copy, Debug)]
enum Existing {
    Absent,
    Running,
    Pending,
    Suspended,
    Completed,
    Failed,
    Terminated,
}

const EXISTING: [Existing; 7] = [
    Existing::Absent,
    Existing::Running,
    Existing::Pending,
    Existing::Suspended,
    Existing::Completed,
    Existing::Failed,
    Existing::Terminated,
];

/// Puts an instance `id` (its work tagged `old:id`) where `existing` says, and returns its
/// status.
async fn prepare(client: &Client, id: &str, existing: Existing) -> Option<InstanceStatus> {
    let tag = format!("old:{id}");
    let then = match existing {
        Existing::Absent => return None,
        Existing::Completed => Then::Complete,
        Existing::Failed => Then::Fail,
        _ => Then::Wait,
    };
    let mut options = StartOptions::new().instance_id(id);
    if let Existing::Pending = existing {
        options = options.at(SystemTime::now() + Duration::from_secs(24 * 3600));
    }
    client
        .start_with(job, (tag.clone(), then), options)
        .await
        .unwrap();
    if !matches!(existing, Existing::Pending) {
        eventually("the existing instance's work", async || runs(&tag) == 1).await;
    }
    match existing {
        Existing::Completed | Existing::Failed => {
            client.wait_for_completion(id, WAIT).await.unwrap();
        }
        Existing::Suspended => client.suspend(id, "held").await.unwrap(),
        Existing::Terminated => {
            client.terminate(id, "stopped").await.unwrap();
            client.wait_for_completion(id, WAIT).await.unwrap();
        }
        _ => {}
    }
    let status = client.status(id).await.unwrap().unwrap();
    let expected = match existing {
        Existing::Running => RuntimeStatus::Running,
        Existing::Pending => RuntimeStatus::Pending,
        Existing::Suspended => RuntimeStatus::Suspended,
        Existing::Completed => RuntimeStatus::Completed,
        Existing::Failed => RuntimeStatus::Failed,
        Existing::Terminated => RuntimeStatus::Terminated,
        Existing::Absent => unreachable!(),
    };
    assert_eq!(status.runtime_status, expected, "{id}");
    Some(status)
}

/// Whether `reuse` lets a start replace an instance standing where `existing` says.
fn replaces(reuse: IdReuse, existing: Existing) -> bool {
    let ended = matches!(
        existing,
        Existing::Completed | Existing::Failed | Existing::Terminated
    );
    match reuse {
        IdReuse::Never => false,
        IdReuse::IfEnded => ended,
        _ => true,
    }
}

/// Starts `id` under `reuse` over an instance standing where `existing` says, and checks
/// the answer and what is stored.
async fn start_over(client: &Client, reuse: IdReuse, existing: Existing) {
    let id = format!("{reuse:?}-{existing:?}").to_lowercase();
    let before = prepare(client, &id, existing).await;
    let new_tag = format!("new:{id}");
    let options = StartOptions::new().instance_id(&id).reuse(reuse);
    let started = client
        .start_with(job, (new_tag.clone(), Then::Complete), options)
        .await;
    let case = format!("{reuse:?} over {existing:?}");
    match &before {
        Some(before) if !replaces(reuse, existing) => {
            refused(client, started.map(|_| ()), before, &case).await;
            assert_eq!(runs(&new_tag), 0, "{case}: the refused start ran");
        }
        _ => {
            let status = started.unwrap().wait(WAIT).await;
            assert_eq!(status.unwrap(), new_tag, "{case}");
            assert_eq!(runs(&new_tag), 1, "{case}: the new execution's work");
            let after = client.status(&id).await.unwrap().unwrap();
            if let Some(before) = &before {
                assert!(
                    after.execution > before.execution,
                    "{case}: a new execution"
                );
            }
        }
    }
    let old_runs = match existing {
        Existing::Absent | Existing::Pending => 0,
        _ => 1,
    };
    assert_eq!(runs(&format!("old:{id}")), old_runs, "{case}: the old work");
}

/// Checks that a start was refused with `AlreadyExists` and left the instance as it was,
/// and that an instance that had not ended still ends as it would have.
async fn refused(
    client: &Client,
    started: Result<(), ClientError>,
    before: &InstanceStatus,
    case: &str,
) {
    match started {
        Err(ClientError::AlreadyExists { status, .. }) => {
            assert_eq!(status, before.runtime_status, "{case}");
        }
        other => panic!("{case}: expected AlreadyExists, got {other:?}"),
    }
    let id = before.instance_id.as_str();
    let after = client.status(id).await.unwrap().unwrap();
    assert_eq!(after.execution, before.execution, "{case}");
    assert_eq!(after.runtime_status, before.runtime_status, "{case}");
    assert_eq!(after.output, before.output, "{case}");
    if before.runtime_status == RuntimeStatus::Suspended {
        client.resume(id, "go on").await.unwrap();
    }
    if !before.runtime_status.is_terminal() && before.runtime_status != RuntimeStatus::Pending {
        client.raise_event(id, "finish", ()).await.unwrap();
        let ended = client.wait_for_completion(id, WAIT).await.unwrap();
        assert_eq!(ended.runtime_status, RuntimeStatus::Completed, "{case}");
        let old_tag = Json::encode(&format!("old:{id}")).unwrap();
        assert_eq!(
            ended.output,
            Some(old_tag),
            "{case}: the existing one went on"
        );
    }
}

async fn runtime() -> Runtime {
    durable_testkit::test_store(Runtime::builder())
        .register(job)
        .register(work)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_ended_replaces_only_an_ended_instance() {
    let runtime = runtime().await;
    for existing in EXISTING {
        start_over(&runtime.client(), IdReuse::IfEnded, existing).await;
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_starts_only_an_absent_id_and_leaves_what_exists() {
    let runtime = runtime().await;
    for existing in EXISTING {
        start_over(&runtime.client(), IdReuse::Never, existing).await;
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_running_replaces_whatever_exists() {
    let runtime = runtime().await;
    for existing in EXISTING {
        start_over(&runtime.client(), IdReuse::TerminateRunning, existing).await;
    }
    runtime.shutdown().await;
}

/// The default is Durable Functions': `start_with_id` replaces an ended instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_is_if_ended() {
    assert_eq!(StartOptions::new().reuse, IdReuse::IfEnded);
    let runtime = runtime().await;
    let client = runtime.client();
    let plan = |tag: &str| (tag.to_owned(), Then::Complete);
    let first = client.start_with_id(job, "default", plan("default-1"));
    assert_eq!(first.await.unwrap().wait(WAIT).await.unwrap(), "default-1");
    let second = client.start_with_id(job, "default", plan("default-2"));
    assert_eq!(second.await.unwrap().wait(WAIT).await.unwrap(), "default-2");
    runtime.shutdown().await;
}

/// Many starts of one id at once, each with `Never`: exactly one starts, and its work
/// runs once; the others hear `AlreadyExists`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_starts_with_never_start_exactly_one() {
    let runtime = runtime().await;
    let client = runtime.client();
    let starts: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let options = StartOptions::new()
                    .instance_id("raced")
                    .reuse(IdReuse::Never);
                let plan = (format!("raced-{i}"), Then::Complete);
                client.start_with(job, plan, options).await.map(|_| i)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for start in starts {
        match start.await.unwrap() {
            Ok(i) => winners.push(i),
            Err(ClientError::AlreadyExists { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = format!("raced-{}", winners[0]);
    let status = client.wait_for_completion("raced", WAIT).await.unwrap();
    assert_eq!(status.output, Some(Json::encode(&winner).unwrap()));
    for i in 0..16 {
        let expected = u32::from(format!("raced-{i}") == winner);
        assert_eq!(runs(&format!("raced-{i}")), expected, "raced-{i}");
    }
    runtime.shutdown().await;
}

/// A start that replaces a running sub-orchestration tells its parent that the child was
/// terminated, as a terminate would.
#[orchestrator]
async fn parent_of_waiting(ctx: OrchestrationContext) -> Result<String, Error> {
    let child = ("child-work".to_owned(), Then::Wait);
    match ctx
        .call_sub_orchestrator_with_id(job, "waiting-child", child)
        .await
    {
        Ok(tag) => Ok(format!("child completed: {tag}")),
        Err(error) => Ok(format!("child failed: {error}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_running_child_tells_its_parent() {
    let runtime = durable_testkit::test_store(Runtime::builder())
        .register(job)
        .register(work)
        .register(parent_of_waiting)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let parent = client
        .start_with_id(parent_of_waiting, "parent", ())
        .await
        .unwrap();
    eventually("the child's work", async || runs("child-work") == 1).await;
    let options = StartOptions::new()
        .instance_id("waiting-child")
        .reuse(IdReuse::TerminateRunning);
    let plan = ("replacement".to_owned(), Then::Complete);
    let child = client.start_with(job, plan, options).await.unwrap();
    assert_eq!(child.wait(WAIT).await.unwrap(), "replacement");
    let told = parent.wait(WAIT).await.unwrap();
    assert!(told.starts_with("child failed"), "{told}");
    assert!(told.contains("TerminateRunning"), "{told}");
    runtime.shutdown().await;
}
