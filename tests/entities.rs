//! Durable entities: typed signals and calls, one operation at a time and exactly once,
//! failed operations undone, critical sections whose locks are always released, the
//! client's entity management, and backpressure.

use durable::client::Error as ClientError;
use durable::prelude::*;
use durable::registry::Kind;
use durable::{Client, Clock, EntityId, InstanceHandle, InstanceId};
use durable_testkit::{eventually, eventually_eq};
use serde::{Deserialize, Serialize};
use std::time::{Duration, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(60);

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: i64) {
        self.value += amount;
    }

    fn add_and_get(&mut self, amount: i64) -> i64 {
        self.value += amount;
        self.value
    }

    fn reset(&mut self) {
        self.value = 0;
    }

    fn get(&self) -> i64 {
        self.value
    }

    /// Changes the state, then panics: the change must not stick.
    fn corrupt_then_panic(&mut self) {
        self.value = -999;
        panic!("operation exploded");
    }

    /// Changes the state, then fails: the change must not stick.
    fn corrupt_then_fail(&mut self) -> Result<(), String> {
        self.value = -111;
        Err("refused".to_owned())
    }

    /// Forwards to another counter and deletes itself.
    fn move_to(&mut self, ctx: &EntityContext, other: String) {
        ctx.entity::<Counter>(&other).signal().add(self.value);
        ctx.delete_state();
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

    fn withdraw(&mut self, amount: i64) -> Result<i64, String> {
        if amount > self.balance {
            return Err(format!("insufficient funds: {} < {amount}", self.balance));
        }
        self.balance -= amount;
        Ok(self.balance)
    }

    fn balance(&self) -> i64 {
        self.balance
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Transfer {
    from: String,
    to: String,
    amount: i64,
}

impl Transfer {
    fn new(from: impl Into<String>, to: impl Into<String>, amount: i64) -> Transfer {
        Transfer {
            from: from.into(),
            to: to.into(),
            amount,
        }
    }
}

/// Moves money between two accounts inside a critical section.
#[orchestrator]
async fn transfer(ctx: OrchestrationContext, t: Transfer) -> Result<bool, Error> {
    let from = ctx.entity_id::<Account>(&t.from)?;
    let to = ctx.entity_id::<Account>(&t.to)?;
    let _lock = ctx.lock_entities(&[from, to]).await?;
    let balance = ctx.entity::<Account>(&t.from).balance().await?;
    if balance < t.amount {
        return Ok(false);
    }
    ctx.entity::<Account>(&t.from).withdraw(t.amount).await?;
    ctx.entity::<Account>(&t.to).deposit(t.amount).await?;
    Ok(true)
}

#[orchestrator]
async fn add_and_get(ctx: OrchestrationContext, key: String) -> Result<i64, Error> {
    ctx.entity::<Counter>(&key).add_and_get(1).await
}

#[orchestrator]
async fn call_failing(ctx: OrchestrationContext, key: String) -> Result<String, Error> {
    ctx.entity::<Counter>(&key).add(10).await?;
    let panicked = ctx
        .entity::<Counter>(&key)
        .corrupt_then_panic()
        .await
        .unwrap_err();
    let failed = ctx
        .entity::<Counter>(&key)
        .corrupt_then_fail()
        .await
        .unwrap_err();
    let value = ctx.entity::<Counter>(&key).get().await?;
    Ok(format!(
        "{value}|{:?}|{panicked}|{:?}|{failed}",
        panicked.kind(),
        failed.kind()
    ))
}

/// Locks an account and fails (or waits to be terminated) while holding the lock.
#[orchestrator]
async fn hold_and_fail(
    ctx: OrchestrationContext,
    (key, fail): (String, bool),
) -> Result<(), Error> {
    let id = ctx.entity_id::<Account>(&key)?;
    let _lock = ctx.lock_entities(&[id]).await?;
    ctx.entity::<Account>(&key).deposit(1).await?;
    if fail {
        return Err(Error::msg("failing while holding the lock"));
    }
    ctx.wait_for_event::<()>("never").await
}

#[orchestrator]
async fn hold_until_event(ctx: OrchestrationContext, key: String) -> Result<i64, Error> {
    let id = ctx.entity_id::<Counter>(&key)?;
    let lock = ctx.lock_entities(&[id]).await?;
    ctx.entity::<Counter>(&key).add(1000).await?;
    ctx.wait_for_event::<()>("release").await?;
    drop(lock);
    // After the release, the signals that waited are applied before this call.
    ctx.entity::<Counter>(&key).get().await
}

async fn runtime(
    configure: impl FnOnce(durable::RuntimeBuilder) -> durable::RuntimeBuilder,
) -> Runtime {
    let builder = durable_testkit::test_store(Runtime::builder())
        .register_entity::<Counter>()
        .register_entity::<Account>()
        .register(transfer)
        .register(add_and_get)
        .register(call_failing)
        .register(hold_and_fail)
        .register(hold_until_event);
    configure(builder).start().await.unwrap()
}

/// Signals `add(amount)` to counter `key`.
async fn add(client: &Client, key: &str, amount: i64) {
    client
        .entity::<Counter>(key)
        .signal()
        .add(amount)
        .await
        .unwrap();
}

/// The value of counter `key`: 0 while it has no state.
async fn value(client: &Client, key: &str) -> i64 {
    client
        .entity_state::<Counter>(key)
        .await
        .unwrap()
        .map_or(0, |counter| counter.value)
}

/// Waits until counter `key` reads `expected`: for operations applied after the call that
/// caused them returned (a forwarded signal, a signal that waited for a lock).
async fn value_becomes(client: &Client, key: &str, expected: i64, what: &str) {
    let what = format!("counter `{key}`: {what}");
    eventually_eq(&what, expected, async || value(client, key).await).await;
}

/// Waits until `holder` holds the lock of `entity`.
async fn lock_taken(client: &Client, entity: &EntityId, holder: &InstanceId) {
    let what = format!("`{holder}` to lock {entity}");
    eventually(&what, async || {
        let status = client.entity_status(entity).await.unwrap();
        status.and_then(|status| status.locked_by).as_ref() == Some(holder)
    })
    .await;
}

/// Starts `hold_until_event` on counter `key` and waits until it holds the lock and its
/// own +1000 is applied: from then on the counter moves only when the holder lets go.
async fn start_holder(client: &Client, key: &str) -> InstanceHandle<i64> {
    let holder = client
        .start(hold_until_event, key.to_owned())
        .await
        .unwrap();
    let id = EntityId::new("Counter", key).unwrap();
    lock_taken(client, &id, holder.id()).await;
    value_becomes(client, key, 1000, "the holder's own call").await;
    holder
}

/// The kinds of the events in the current history of `instance`.
async fn history_kinds(client: &Client, instance: &InstanceId) -> Vec<&'static str> {
    let status = client.status_with_history(instance).await.unwrap().unwrap();
    let history = status.history.unwrap();
    history.iter().map(|event| event.kind()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_signals_to_one_counter_count_exactly() {
    let runtime = runtime(|b| b).await;
    let client = runtime.client();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                add(&client, "hot", 1).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Every signal returned, so every one is applied: the state says so at once.
    assert_eq!(value(&client, "hot").await, 10_000);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_orchestrations_calling_twenty_entities() {
    let runtime = runtime(|b| b).await;
    let client = runtime.client();
    let mut handles = Vec::new();
    for i in 0..200 {
        let key = format!("shared-{}", i % 20);
        handles.push((key.clone(), client.start(add_and_get, key).await.unwrap()));
    }
    let mut seen: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for (key, handle) in handles {
        seen.entry(key)
            .or_default()
            .push(handle.wait(WAIT).await.unwrap());
    }
    assert_eq!(seen.len(), 20);
    for (key, mut values) in seen {
        values.sort();
        assert_eq!(
            values,
            (1..=10).collect::<Vec<_>>(),
            "{key}: each call ran once, in turn"
        );
        assert_eq!(value(&client, &key).await, 10, "{key}");
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_locked_transfers_conserve_the_total() {
    let runtime = runtime(|b| b).await;
    let client = runtime.client();
    for account in 0..10 {
        client
            .entity::<Account>(format!("acct-{account}"))
            .signal()
            .deposit(100)
            .await
            .unwrap();
    }
    let mut handles = Vec::new();
    for i in 0..200u64 {
        let transfer_input = Transfer::new(
            format!("acct-{}", i % 10),
            format!("acct-{}", (i * 7 + 3) % 10),
            30 + (i % 5) as i64 * 20,
        );
        if transfer_input.from == transfer_input.to {
            continue;
        }
        handles.push(client.start(transfer, transfer_input).await.unwrap());
    }
    let mut moved = 0;
    for handle in &handles {
        if handle.wait(WAIT).await.unwrap() {
            moved += 1;
        }
    }
    assert!(moved > 0, "some transfers went through");
    let mut total = 0;
    for account in 0..10 {
        let state = client
            .entity_state::<Account>(format!("acct-{account}"))
            .await
            .unwrap()
            .unwrap();
        assert!(
            state.balance >= 0,
            "acct-{account} went negative: {}",
            state.balance
        );
        total += state.balance;
    }
    assert_eq!(total, 1000, "money was created or destroyed");
    // No lock is left behind. (Releases are messages sent when each transfer ends, so
    // the last ones may land just after its `wait` returns.)
    eventually("every account's lock to be released", async || {
        let page = client
            .list_entities(Some("Account"), 100, None)
            .await
            .unwrap();
        page.entities
            .iter()
            .all(|entity| entity.locked_by.is_none())
    })
    .await;
    runtime.shutdown().await;
}

/// Breaks each rule of critical sections in turn; returns the error kinds seen.
#[orchestrator]
async fn break_locking_rules(
    ctx: OrchestrationContext,
    keys: (String, String),
) -> Result<Vec<String>, Error> {
    let (a, b) = keys;
    let mut kinds = Vec::new();
    let lock = ctx.lock_entities(&[ctx.entity_id::<Counter>(&a)?]).await?;
    let nested = ctx.lock_entities(&[ctx.entity_id::<Counter>(&b)?]).await;
    kinds.push(format!("{:?}", nested.err().map(|e| e.kind())));
    let unlocked_call = ctx.entity::<Counter>(&b).get().await;
    kinds.push(format!("{:?}", unlocked_call.err().map(|e| e.kind())));
    let child = ctx.call_sub_orchestrator(add_and_get, b.clone()).await;
    kinds.push(format!("{:?}", child.err().map(|e| e.kind())));
    // What is allowed: calls to the locked entity, signals to any.
    ctx.entity::<Counter>(&a).add(1).await?;
    ctx.entity::<Counter>(&b).signal().add(1);
    drop(lock);
    // Outside the critical section, everything again.
    kinds.push(format!("{}", ctx.entity::<Counter>(&b).get().await?));
    Ok(kinds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_section_rules_fail_the_call_instead_of_deadlocking() {
    let runtime = runtime(|b| b.register(break_locking_rules)).await;
    let client = runtime.client();
    // Two orchestrations that, nesting locks in opposite orders, would deadlock.
    let one = client
        .start(break_locking_rules, ("p".to_owned(), "q".to_owned()))
        .await
        .unwrap();
    let two = client
        .start(break_locking_rules, ("q".to_owned(), "p".to_owned()))
        .await
        .unwrap();
    for handle in [one, two] {
        let kinds = handle.wait(WAIT).await.unwrap();
        assert_eq!(
            kinds[..3],
            [
                "Some(LockingRules)",
                "Some(LockingRules)",
                "Some(LockingRules)"
            ],
            "{kinds:?}"
        );
    }
    // Each orchestration added 1 to its own entity and signalled 1 to the other; signals
    // are applied soon after they are sent.
    eventually_eq("the counters `p` and `q`", (2, 2), async || {
        (value(&client, "p").await, value(&client, "q").await)
    })
    .await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_panicking_operation_changes_nothing_and_tells_the_caller() {
    let runtime = runtime(|b| b).await;
    let client = runtime.client();
    let instance = client
        .start(call_failing, "fragile".to_owned())
        .await
        .unwrap();
    let out = instance.wait(WAIT).await.unwrap();
    let parts: Vec<&str> = out.split('|').collect();
    assert_eq!(
        parts[0], "10",
        "the state is as before the failed operations: {out}"
    );
    assert_eq!(parts[1], "EntityOperationFailed");
    assert!(parts[2].contains("operation exploded"), "{out}");
    assert!(parts[4].contains("refused"), "{out}");
    // A signal that fails does not disturb later ones either.
    client
        .entity::<Counter>("fragile")
        .signal()
        .corrupt_then_fail()
        .await
        .unwrap();
    add(&client, "fragile", 1).await;
    assert_eq!(value(&client, "fragile").await, 11);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_released_when_the_holder_fails_or_is_terminated() {
    let runtime = runtime(|b| b).await;
    let client = runtime.client();
    let failing = client
        .start(hold_and_fail, ("locked".to_owned(), true))
        .await
        .unwrap();
    assert!(failing.wait(WAIT).await.is_err());
    // Another orchestration can lock the same account afterwards.
    let ok = client
        .start(transfer, Transfer::new("locked", "other", 1))
        .await
        .unwrap();
    assert!(ok.wait(WAIT).await.unwrap(), "the transfer went through");

    let holding = client
        .start(hold_and_fail, ("locked".to_owned(), false))
        .await
        .unwrap();
    // Wait until it holds the lock, then terminate it.
    let id = EntityId::new("Account", "locked").unwrap();
    lock_taken(&client, &id, holding.id()).await;
    client.terminate(holding.id(), "stop").await.unwrap();
    let again = client
        .start(transfer, Transfer::new("other", "locked", 1))
        .await
        .unwrap();
    assert!(again.wait(WAIT).await.unwrap());
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_wait_for_the_lock_and_beyond_the_queue_bound_are_stored_not_dropped() {
    // A queue of 50 in memory; 2,000 signals arrive while the entity is locked.
    let runtime = runtime(|b| b.max_entity_queue(50)).await;
    let client = runtime.client();
    let holder = start_holder(&client, "queued").await;
    for _ in 0..2000 {
        add(&client, "queued", 1).await;
    }
    // Locked: none applied yet, only the holder's own +1000.
    assert_eq!(value(&client, "queued").await, 1000);
    client
        .raise_event(holder.id(), "release", ())
        .await
        .unwrap();
    assert_eq!(holder.wait(WAIT).await.unwrap(), 3000);
    assert_eq!(value(&client, "queued").await, 3000);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_entity_management() {
    let runtime = runtime(|b| b).await;
    let client = runtime.client();
    for key in 0..30 {
        add(&client, &format!("k{key:02}"), key).await;
    }
    client
        .entity::<Account>("a")
        .signal()
        .deposit(5)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut continuation = None;
    loop {
        let page = client
            .list_entities(Some("Counter"), 7, continuation.as_deref())
            .await
            .unwrap();
        seen.extend(page.entities.iter().map(|e| e.id.key().to_owned()));
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30);
    assert_eq!(
        client
            .list_entities(None, 100, None)
            .await
            .unwrap()
            .entities
            .len(),
        31
    );

    // An operation moves its value to another entity and deletes itself.
    client
        .entity::<Counter>("k05")
        .signal()
        .move_to("k06".to_owned())
        .await
        .unwrap();
    assert!(
        client
            .entity_state::<Counter>("k05")
            .await
            .unwrap()
            .is_none()
    );
    // The forwarded signal is a message of its own, applied soon after.
    value_becomes(&client, "k06", 11, "its 6 and the 5 moved to it").await;

    client
        .delete_entity(&EntityId::new("Counter", "k07").unwrap())
        .await
        .unwrap();
    assert!(
        client
            .entity_state::<Counter>("k07")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        client.purge_empty_entities().await.unwrap(),
        0,
        "deleted entities leave nothing"
    );

    // Bad input.
    let error = client
        .entity::<Counter>("bad/key")
        .signal()
        .add(1)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::InvalidInstanceId(_)),
        "{error:?}"
    );
    let unknown = EntityId::new("Nope", "x").unwrap();
    let error = client
        .signal_entity(&unknown, "add", durable::Json::null())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::NotRegistered { .. }),
        "{error:?}"
    );
    runtime.shutdown().await;
}

/// Asks for a lock, gives up on it at once, then waits: the entity must not stay locked.
#[orchestrator]
async fn abandon_lock_request(ctx: OrchestrationContext, key: String) -> Result<(), Error> {
    let request = ctx.lock_entities(&[ctx.entity_id::<Counter>(&key)?]);
    drop(request);
    ctx.wait_for_event::<()>("finish").await?;
    Ok(())
}

/// Waits a while for a lock queued behind another holder, then gives up on it.
#[orchestrator]
async fn lock_with_timeout(ctx: OrchestrationContext, key: String) -> Result<bool, Error> {
    let lock = ctx.lock_entities(&[ctx.entity_id::<Counter>(&key)?]);
    ctx.sleep(Duration::from_millis(50)).await?;
    drop(lock);
    ctx.wait_for_event::<()>("finish").await?;
    Ok(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_lock_requests_do_not_keep_the_lock() {
    // The waiter's timeout is a durable timer: it comes due when the test moves the clock.
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let runtime = runtime(|b| {
        b.clock(clock.clone())
            .register(abandon_lock_request)
            .register(lock_with_timeout)
    })
    .await;
    let client = runtime.client();

    // Dropped before the grant: released as soon as the grant arrives.
    let dropped = client
        .start(abandon_lock_request, "free".to_owned())
        .await
        .unwrap();
    add(&client, "free", 1).await;
    value_becomes(&client, "free", 1, "the entity stayed locked").await;

    // Lost a select while queued behind another holder: once that holder lets go, the
    // late grant is released and others get through.
    let holder = start_holder(&client, "contended").await;
    let waiter = client
        .start(lock_with_timeout, "contended".to_owned())
        .await
        .unwrap();
    // Its first turn, committed when `start` returned, asked for the lock and set its
    // timer; past the timeout it drops the request, still queued behind the holder.
    clock.advance(Duration::from_secs(1));
    eventually("the waiter's timeout to fire", async || {
        history_kinds(&client, waiter.id())
            .await
            .contains(&"TimerFired")
    })
    .await;
    client
        .raise_event(holder.id(), "release", ())
        .await
        .unwrap();
    assert_eq!(holder.wait(WAIT).await.unwrap(), 1000);
    add(&client, "contended", 1).await;
    value_becomes(&client, "contended", 1001, "the late grant kept the lock").await;

    for handle in [dropped.id().to_owned(), waiter.id().to_owned()] {
        client.raise_event(&handle, "finish", ()).await.unwrap();
    }
    assert!(!waiter.wait(WAIT).await.unwrap());
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_an_orchestration_waiting_for_a_lock_leaves_nothing_locked() {
    let runtime = runtime(|b| b).await;
    let client = runtime.client();
    let holder = start_holder(&client, "queue").await;
    // Queued behind the holder: its first turn, committed when `start` returned, sent the
    // request, which reaches the entity before anything sent after it.
    let queued = client
        .start(hold_until_event, "queue".to_owned())
        .await
        .unwrap();
    assert!(
        history_kinds(&client, queued.id())
            .await
            .contains(&"LocksRequested")
    );
    client
        .terminate(queued.id(), "changed my mind")
        .await
        .unwrap();
    client
        .raise_event(holder.id(), "release", ())
        .await
        .unwrap();
    holder.wait(WAIT).await.unwrap();
    // The request is granted to an execution that has ended, and released at once.
    add(&client, "queue", 1).await;
    value_becomes(&client, "queue", 1001, "the entity stayed locked").await;
    runtime.shutdown().await;
}

#[orchestrator]
async fn use_unregistered_entity(ctx: OrchestrationContext, key: String) -> Result<String, Error> {
    let nope = EntityId::new("Unregistered", "x").unwrap();
    let call = ctx
        .call_entity::<i64>(&nope, "get", durable::Json::null())
        .await
        .unwrap_err();
    let registered = ctx.entity_id::<Counter>(&key)?;
    // Locks are taken in id order: the registered entity first, then the chain fails.
    let lock = ctx.lock_entities(&[registered, nope]).await.err();
    // An invalid key is an error of the call, not a panic.
    let bad_key = ctx.entity::<Counter>("bad/key").get().await.unwrap_err();
    Ok(format!(
        "{:?}|{:?}|{}",
        call.kind(),
        lock.map(|e| e.kind()),
        bad_key.message().contains("bad/key")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_locks_on_an_unregistered_entity_fail_instead_of_hanging() {
    let runtime = runtime(|b| b.register(use_unregistered_entity)).await;
    let client = runtime.client();
    let handle = client
        .start(use_unregistered_entity, "A-first".to_owned())
        .await
        .unwrap();
    assert_eq!(
        handle.wait(WAIT).await.unwrap(),
        "EntityOperationFailed|Some(NotRegistered)|true"
    );
    // What the failed chain had locked is free again.
    add(&client, "A-first", 3).await;
    value_becomes(&client, "A-first", 3, "the failed chain kept its lock").await;
    runtime.shutdown().await;
}

/// A state that serde_json cannot serialize once it holds an entry (a map with tuple keys).
#[derive(Default, Serialize, Deserialize)]
struct Grid {
    cells: std::collections::BTreeMap<(u8, u8), i32>,
    writes: u32,
}

#[entity]
impl Grid {
    fn touch(&mut self) {
        self.writes += 1;
    }

    fn set(&mut self, x: u8, y: u8) {
        self.writes += 1;
        self.cells.insert((x, y), 1);
    }

    fn writes(&self) -> u32 {
        self.writes
    }
}

#[orchestrator]
async fn unserializable_state(ctx: OrchestrationContext, _input: ()) -> Result<String, Error> {
    ctx.entity::<Grid>("g").touch().await?;
    let error = ctx.entity::<Grid>("g").set(1, 2).await.unwrap_err();
    ctx.entity::<Grid>("g").touch().await?;
    let writes = ctx.entity::<Grid>("g").writes().await?;
    Ok(format!("{writes}|{:?}", error.kind()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_whose_state_cannot_be_saved_fails_and_changes_nothing() {
    let runtime = runtime(|b| b.register_entity::<Grid>().register(unserializable_state)).await;
    let client = runtime.client();
    let handle = client.start(unserializable_state, ()).await.unwrap();
    let out = handle.wait(WAIT).await.unwrap();
    assert_eq!(
        out, "2|EntityOperationFailed",
        "the failed `set` was undone"
    );
    let grid = client.entity_state::<Grid>("g").await.unwrap().unwrap();
    assert_eq!((grid.writes, grid.cells.len()), (2, 0));
    runtime.shutdown().await;
}

/// Operations whose arguments accept more than one shape of JSON.
#[derive(Default, Serialize, Deserialize)]
struct Notes {
    seen: Vec<String>,
}

#[entity]
impl Notes {
    fn maybe(&mut self, amount: Option<i64>) {
        self.seen.push(format!("maybe {amount:?}"));
    }

    fn any(&mut self, value: serde_json::Value) {
        self.seen.push(format!("any {value}"));
    }

    fn pair(&mut self, a: i64, b: String) {
        self.seen.push(format!("pair {a} {b}"));
    }

    fn clear(&mut self) {
        self.seen.clear();
    }
}

/// An entity type that no runtime of these tests registers.
#[derive(Default, Serialize, Deserialize)]
struct Unlisted {
    touched: u32,
}

#[entity]
impl Unlisted {
    fn touch(&mut self) {
        self.touched += 1;
    }
}

fn json(text: &str) -> durable::Json {
    durable::Json::parse(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_with_an_unknown_operation_or_a_wrong_input_is_refused_at_the_call() {
    let runtime = runtime(|b| b).await;
    let client = runtime.client();
    let id = EntityId::new("Counter", "checked").unwrap();

    let error = client
        .signal_entity(&id, "nope", json("1"))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("entity `counter` has no operation `nope`"),
        "{text}"
    );
    assert!(text.contains("add, add_and_get, reset, get"), "{text}");

    for (operation, input, expect) in [
        ("add", "\"one\"", "invalid type"),
        ("add", "null", "invalid type"),
        ("reset", "5", "takes no input"),
    ] {
        let error = client
            .signal_entity(&id, operation, json(input))
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains(&format!("operation `{operation}` of entity `counter`")),
            "{input}: {text}"
        );
        assert!(text.contains(expect), "{input}: {text}");
    }
    // Nothing refused reached the entity: it has no state yet.
    assert!(client.entity_status(&id).await.unwrap().is_none());
    client.signal_entity(&id, "add", json("2")).await.unwrap();
    client
        .signal_entity(&id, "reset", json("null"))
        .await
        .unwrap();
    client.signal_entity(&id, "add", json("3")).await.unwrap();
    value_becomes(&client, "checked", 3, "the accepted signals").await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_any_json_and_several_arguments_are_accepted() {
    let runtime = runtime(|b| b.register_entity::<Notes>()).await;
    let client = runtime.client();
    let id = EntityId::new("Notes", "n").unwrap();
    for (operation, input) in [
        ("maybe", "null"),
        ("maybe", "4"),
        ("any", "{\"x\":[1,true]}"),
        ("any", "null"),
        ("pair", "[1,\"b\"]"),
    ] {
        client
            .signal_entity(&id, operation, json(input))
            .await
            .unwrap_or_else(|error| panic!("{operation}({input}): {error}"));
    }
    let error = client
        .signal_entity(&id, "pair", json("[1]"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("operation `pair`"), "{error}");
    let seen = async || {
        let notes = client.entity_state::<Notes>("n").await.unwrap();
        notes.map(|notes| notes.seen).unwrap_or_default()
    };
    let expected = vec![
        "maybe None".to_owned(),
        "maybe Some(4)".to_owned(),
        "any {\"x\":[1,true]}".to_owned(),
        "any null".to_owned(),
        "pair 1 b".to_owned(),
    ];
    eventually_eq("every accepted signal applied", expected, seen).await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_or_deleting_an_unregistered_entity_type_is_not_registered_as_signalling_it_is() {
    let runtime = runtime(|b| b).await;
    let client = runtime.client();
    let signal = client
        .entity::<Unlisted>("k")
        .signal()
        .touch()
        .await
        .unwrap_err();
    assert!(
        matches!(signal, ClientError::NotRegistered { .. }),
        "{signal:?}"
    );
    let state = client.entity::<Unlisted>("k").state().await;
    assert!(
        matches!(state, Err(ClientError::NotRegistered { .. })),
        "{:?}",
        state.err()
    );
    let state = client.entity_state::<Unlisted>("k").await;
    assert!(
        matches!(state, Err(ClientError::NotRegistered { .. })),
        "{:?}",
        state.err()
    );
    let id = EntityId::new("Unlisted", "k").unwrap();
    let status = client.entity_status(&id).await;
    assert!(
        matches!(status, Err(ClientError::NotRegistered { .. })),
        "{:?}",
        status.err()
    );
    let deleted = client.delete_entity(&id).await;
    assert!(
        matches!(
            deleted,
            Err(ClientError::NotRegistered {
                kind: Kind::Entity,
                ..
            })
        ),
        "{:?}",
        deleted.err()
    );
    let text = signal.to_string();
    assert!(text.contains("register_entity::<"), "{text}");
    runtime.shutdown().await;
}
