//! Entities across a real crash: a child process signals ledger entities from 50 client
//! tasks and runs locked transfers between accounts over a fjall store, with a small
//! in-memory entity queue so that signals also wait in the store; it is killed with
//! SIGKILL mid-run and a second child resumes over the same directory. Then:
//! - every signal whose `signal()` call returned before the kill was applied, exactly once;
//! - no signal was applied twice, and each task's signals were applied in the order sent;
//! - every transfer completed and the accounts hold exactly the balances the transfers
//!   imply (no withdrawal without its deposit, none applied twice), and no lock is left.

use durable::client::StartOptions;
use durable::prelude::*;
use durable::store::{Durability, EntityId, FjallStore, InboxKey, Store};
use durable_testkit::{
    SideEffectLog, block_on, child_env, expect_success, kill_when, spawn_test_child,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const DIR_VAR: &str = "DURABLE_ENTITY_CRASH_STORE";
const LOG_VAR: &str = "DURABLE_ENTITY_CRASH_LOG";
const RUN_VAR: &str = "DURABLE_ENTITY_CRASH_RUN";

const TASKS: u32 = 50;
const SIGNALS_PER_TASK: u32 = 200;
const LEDGERS: u32 = 4;
const ACCOUNTS: u32 = 4;
const TRANSFERS: u32 = 40;

/// Records which signals it applied: a bitmap of signal ids, and per sending task the last
/// sequence number seen, to catch duplicates and reordering.
#[derive(Default, Serialize, Deserialize)]
struct Ledger {
    applied: Vec<u64>,
    count: u64,
    duplicates: u64,
    out_of_order: u64,
    last_per_task: Vec<u32>,
}

#[entity]
impl Ledger {
    fn apply(&mut self, task: u32, seq: u32) {
        let id = (task * SIGNALS_PER_TASK * 2 + seq) as usize;
        let (word, bit) = (id / 64, id % 64);
        if self.applied.len() <= word {
            self.applied.resize(word + 1, 0);
        }
        if self.applied[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.applied[word] |= 1 << bit;
        self.count += 1;
        let task = task as usize;
        if self.last_per_task.len() <= task {
            self.last_per_task.resize(task + 1, 0);
        }
        // Sequence numbers start at 1; 0 means none seen.
        if seq <= self.last_per_task[task] {
            self.out_of_order += 1;
        }
        self.last_per_task[task] = seq;
    }

    fn count(&self) -> u64 {
        self.count
    }
}

impl Ledger {
    fn contains(&self, task: u32, seq: u32) -> bool {
        let id = (task * SIGNALS_PER_TASK * 2 + seq) as usize;
        self.applied
            .get(id / 64)
            .is_some_and(|word| word & (1 << (id % 64)) != 0)
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[entity]
impl Account {
    fn deposit(&mut self, amount: i64) {
        self.balance += amount;
    }

    fn withdraw(&mut self, amount: i64) {
        self.balance -= amount;
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Transfer {
    from: String,
    to: String,
    amount: i64,
}

/// Gives the kill a chance to land inside a critical section.
#[activity]
async fn pause(_ctx: ActivityContext, millis: u64) -> Result<(), Error> {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    Ok(())
}

#[orchestrator]
async fn transfer(ctx: OrchestrationContext, t: Transfer) -> Result<(), Error> {
    let from = ctx.entity_id::<Account>(&t.from)?;
    let to = ctx.entity_id::<Account>(&t.to)?;
    let _lock = ctx.lock_entities(&[from, to]).await?;
    ctx.entity::<Account>(&t.from).withdraw(t.amount).await?;
    ctx.call_activity(pause, 3).await?;
    ctx.entity::<Account>(&t.to).deposit(t.amount).await?;
    Ok(())
}

/// Calls every ledger: the calls arrive after every signal stored before them.
#[orchestrator]
async fn read_ledgers(ctx: OrchestrationContext, _input: ()) -> Result<u64, Error> {
    let mut total = 0;
    for ledger in 0..LEDGERS {
        total += ctx.entity::<Ledger>(ledger.to_string()).count().await?;
    }
    Ok(total)
}

fn transfers() -> Vec<(String, Transfer)> {
    (0..TRANSFERS)
        .map(|i| {
            let from = i % ACCOUNTS;
            let to = (i * 7 + 1) % ACCOUNTS;
            let to = if to == from { (to + 1) % ACCOUNTS } else { to };
            let details = Transfer {
                from: format!("acct-{from}"),
                to: format!("acct-{to}"),
                amount: i64::from(i + 1),
            };
            (format!("transfer-{i}"), details)
        })
        .collect()
}

/// The balances the transfers imply, whatever order they ran in.
fn expected_balances() -> Vec<i64> {
    let mut balances = vec![0; ACCOUNTS as usize];
    for (_, t) in transfers() {
        let index = |name: &str| name["acct-".len()..].parse::<usize>().unwrap();
        balances[index(&t.from)] -= t.amount;
        balances[index(&t.to)] += t.amount;
    }
    balances
}

/// The child: the first run signals and starts transfers until killed; the second run
/// starts what is missing, sends a few more signals and waits for everything.
#[test]
fn entity_crash_child() {
    let Some([dir, log, run]) = child_env([DIR_VAR, LOG_VAR, RUN_VAR]) else {
        return; // only meaningful as a child process
    };
    let log = SideEffectLog::new(log);
    block_on(async move {
        let runtime = Runtime::builder()
            .store_path(&dir)
            .max_entity_queue(16)
            .register_entity::<Ledger>()
            .register_entity::<Account>()
            .register(pause)
            .register(transfer)
            .register(read_ledgers)
            .start()
            .await
            .unwrap();
        let client = runtime.client();
        for (id, t) in transfers() {
            if client.status(&id).await.unwrap().is_none() {
                client
                    .start_with(transfer, t, StartOptions::new().instance_id(&id))
                    .await
                    .unwrap();
            }
        }
        // Run 1 sends sequence numbers 1..=200 per task; run 2 sends 201..=210, after
        // whatever run 1 got through.
        let range = if run == "1" {
            1..=SIGNALS_PER_TASK
        } else {
            SIGNALS_PER_TASK + 1..=SIGNALS_PER_TASK + 10
        };
        let mut senders = Vec::new();
        for task in 0..TASKS {
            let client = client.clone();
            let log = log.clone();
            let range = range.clone();
            senders.push(tokio::spawn(async move {
                let ledger = (task % LEDGERS).to_string();
                for seq in range {
                    client
                        .entity::<Ledger>(&ledger)
                        .signal()
                        .apply(task, seq)
                        .await
                        .unwrap();
                    log.append(&format!("{task}|{seq}"));
                }
            }));
        }
        for sender in senders {
            sender.await.unwrap();
        }
        if run != "1" {
            for (id, _) in transfers() {
                client
                    .wait_for_completion(&id, Duration::from_secs(60))
                    .await
                    .unwrap();
            }
            let reader = client.start(read_ledgers, ()).await.unwrap();
            reader.wait(Duration::from_secs(60)).await.unwrap();
        }
        runtime.shutdown().await;
    });
}

fn open(dir: &Path) -> FjallStore {
    FjallStore::open(dir, Durability::Fsync).unwrap()
}

fn acknowledged(log: &SideEffectLog) -> BTreeSet<(u32, u32)> {
    log.lines()
        .iter()
        .map(|line| {
            let (task, seq) = line.split_once('|').unwrap();
            (task.parse().unwrap(), seq.parse().unwrap())
        })
        .collect()
}

#[test]
fn sigkill_mid_run_applies_every_acknowledged_signal_exactly_once() {
    let temp = tempfile::tempdir().unwrap();
    let store_dir = temp.path().join("store");
    let log = SideEffectLog::new(temp.path().join("acknowledged.log"));
    let env = |run: &str| {
        vec![
            (DIR_VAR, store_dir.display().to_string()),
            (LOG_VAR, log.path().display().to_string()),
            (RUN_VAR, run.to_owned()),
        ]
    };

    let first = spawn_test_child("entity_crash_child", &env("1"));
    let progressed = kill_when(first, || log.lines().len() >= 2_000);
    assert!(progressed, "the first run made no progress before the kill");
    let acknowledged_before_kill = acknowledged(&log);
    let transfers_before_kill = {
        let store = open(&store_dir);
        transfers()
            .iter()
            .filter(|(id, _)| {
                store
                    .instance(&durable::InstanceId::new(id).unwrap())
                    .unwrap()
                    .is_some_and(|record| record.status == RuntimeStatus::Completed)
            })
            .count()
    };
    assert!(
        acknowledged_before_kill.len() < (TASKS * SIGNALS_PER_TASK) as usize,
        "the kill came after every signal: the test proves nothing"
    );

    expect_success(
        spawn_test_child("entity_crash_child", &env("2")),
        "the second run",
    );

    let store = open(&store_dir);
    let acknowledged = acknowledged(&log);
    let mut applied = 0;
    for ledger in 0..LEDGERS {
        let id = EntityId::new("Ledger", ledger.to_string()).unwrap();
        let record = store.entity(&id).unwrap().expect("the ledger exists");
        assert!(record.lock.is_none());
        let state: Ledger = serde_json::from_str(record.state.unwrap().as_str()).unwrap();
        assert_eq!(
            state.duplicates, 0,
            "ledger {ledger}: a signal was applied twice"
        );
        assert_eq!(
            state.out_of_order, 0,
            "ledger {ledger}: a task's signals were applied out of order"
        );
        for &(task, seq) in acknowledged
            .iter()
            .filter(|(task, _)| task % LEDGERS == ledger)
        {
            assert!(
                state.contains(task, seq),
                "ledger {ledger}: acknowledged signal {task}/{seq} was lost"
            );
        }
        applied += state.count;
    }
    // Signals in flight at the kill (sent, not acknowledged) may or may not have landed;
    // every other one is accounted for.
    let unacknowledged_in_flight = applied - acknowledged.len() as u64;
    assert!(
        unacknowledged_in_flight <= u64::from(TASKS),
        "at most one signal per task can be in flight: {unacknowledged_in_flight}"
    );

    let expected = expected_balances();
    for (index, balance) in expected.iter().enumerate() {
        let id = EntityId::new("Account", format!("acct-{index}")).unwrap();
        let record = store.entity(&id).unwrap().expect("the account exists");
        assert!(record.lock.is_none(), "acct-{index} is still locked");
        let state: Account = serde_json::from_str(record.state.unwrap().as_str()).unwrap();
        assert_eq!(state.balance, *balance, "acct-{index}");
    }
    for (id, _) in transfers() {
        let record = store
            .instance(&durable::InstanceId::new(&id).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(record.status, RuntimeStatus::Completed, "{id}");
    }
    let stranded: Vec<InboxKey> = store
        .scan_inbox(None, 100)
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert!(
        stranded.is_empty(),
        "messages left in the inbox: {stranded:?}"
    );
    eprintln!(
        "entity crash test: {} signals acknowledged before the kill, {} in all, {applied} applied; \
         {transfers_before_kill} of {TRANSFERS} transfers done before the kill",
        acknowledged_before_kill.len(),
        acknowledged.len()
    );
}
