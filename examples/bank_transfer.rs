//! Entities with critical sections: bank accounts are entities, and a transfer is an
//! orchestration that locks both accounts, checks the balance and moves the money.
//!
//! One entity needs no lock: its operations run one at a time, so `withdraw` checks the
//! funds and takes them in one step (see `withdraw_cash`, which is declined with the
//! entity's own error). A transfer touches two entities, and between "is there enough in
//! A?" and "take it from A, give it to B" another transfer could drain A or read B half
//! way. `ctx.lock_entities(&[from, to])` closes that gap: until the guard is dropped (or
//! the orchestration ends, however it ends) both accounts run only this orchestration's
//! operations, and locks are taken in one global order, so two transfers in opposite
//! directions cannot deadlock.
//!
//! The example runs 200 random transfers among 10 accounts at once (a fixed seed, so the
//! same transfers every run; the order they commit in is up to the scheduler), then checks
//! that no money was made or lost, that no balance went negative, that every balance is
//! exactly what the transfers reported, and that no lock is left behind. It exits non-zero
//! if any check fails.
//!
//! Run: `cargo run --example bank_transfer` (state goes to
//! `./durable-data/bank_transfer`, or `$DURABLE_DATA`).

use durable::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const ACCOUNTS: usize = 10;
const TRANSFERS: usize = 200;
const OPENING_DEPOSIT: i64 = 100;
/// Transfers are of 1 to this much: more than an opening balance, so some are refused.
const MAX_AMOUNT: u64 = 150;
const SEED: u64 = 0x5eed_2024_d00d_cafe;
const WAIT: Duration = Duration::from_secs(60);

#[derive(Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[entity]
impl Account {
    fn deposit(&mut self, amount: i64) {
        self.balance += amount;
    }

    /// Fails when the funds are short. A failed operation changes nothing (the runtime
    /// restores the state it had before) and the caller receives the error.
    fn withdraw(&mut self, amount: i64) -> Result<i64, String> {
        if amount > self.balance {
            return Err(format!(
                "insufficient funds: balance {}, asked for {amount}",
                self.balance
            ));
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

#[derive(Debug, Serialize, Deserialize)]
enum Outcome {
    Moved,
    /// Refused for insufficient funds: the balance the transfer saw, under the lock.
    Refused {
        balance: i64,
    },
}

/// Moves `amount` from one account to the other, or refuses if the funds are short.
#[orchestrator]
async fn transfer(ctx: OrchestrationContext, t: Transfer) -> Result<Outcome, Error> {
    let from = ctx.entity_id::<Account>(&t.from)?;
    let to = ctx.entity_id::<Account>(&t.to)?;
    // The lock is itself a durable task: the orchestration waits (durably, for as long as
    // it takes) until both accounts are free, then holds them until `_lock` is dropped at
    // the end of this function.
    let _lock = ctx.lock_entities(&[from, to]).await?;
    let balance = ctx.entity::<Account>(&t.from).balance().await?;
    if balance < t.amount {
        return Ok(Outcome::Refused { balance });
    }
    // Under the lock nothing else can withdraw in between, so this cannot fail for lack of
    // funds; if it ever did, `?` would fail the transfer before the deposit, and the
    // money would stay where it was.
    ctx.entity::<Account>(&t.from).withdraw(t.amount).await?;
    ctx.entity::<Account>(&t.to).deposit(t.amount).await?;
    Ok(Outcome::Moved)
}

/// Takes cash out of one account with no lock and no prior check: the entity decides, and
/// a refusal comes back as an error of kind `EntityOperationFailed`.
#[orchestrator]
async fn withdraw_cash(
    ctx: OrchestrationContext,
    (account, amount): (String, i64),
) -> Result<String, Error> {
    match ctx.entity::<Account>(&account).withdraw(amount).await {
        Ok(left) => Ok(format!("paid {amount}, {left} left")),
        Err(error) if error.kind() == ErrorKind::EntityOperationFailed => Ok(format!(
            "declined ({:?}): {}",
            error.kind(),
            error.root_cause()
        )),
        Err(error) => Err(error),
    }
}

/// xorshift64: a few lines of deterministic pseudo-randomness, enough to pick transfers.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn account(index: usize) -> String {
    format!("acct-{index}")
}

async fn balances(client: &Client) -> anyhow::Result<Vec<i64>> {
    let mut balances = Vec::with_capacity(ACCOUNTS);
    for index in 0..ACCOUNTS {
        let state = client.entity_state::<Account>(account(index)).await?;
        balances.push(state.map_or(0, |account| account.balance));
    }
    Ok(balances)
}

/// Transfers that a run stopped half way (a kill, a crash) left behind resume when the
/// runtime starts: let them end before the books are opened, so that every balance this
/// run checks is explained by this run's transfers.
async fn finish_unfinished_transfers(client: &Client) -> anyhow::Result<()> {
    let unfinished = durable::InstanceQuery {
        statuses: Some(vec![RuntimeStatus::Running]),
        ..Default::default()
    };
    loop {
        let page = client.list(&unfinished, 100, None).await?;
        if page.instances.is_empty() {
            return Ok(());
        }
        println!(
            "finishing {} transfers of an earlier run",
            page.instances.len()
        );
        for status in page.instances {
            client
                .wait_for_completion(&status.instance_id, WAIT)
                .await?;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Each example keeps its state in a directory of its own, so that two can run at
    // once: `./durable-data/bank_transfer`, or the directory `$DURABLE_DATA` names.
    let data =
        std::env::var("DURABLE_DATA").unwrap_or_else(|_| "durable-data/bank_transfer".to_owned());
    let runtime = Runtime::builder()
        .store_from_env(&data)
        .register_entity::<Account>()
        .register(transfer)
        .register(withdraw_cash)
        .start()
        .await?;
    let client = runtime.client();
    finish_unfinished_transfers(&client).await?;

    for index in 0..ACCOUNTS {
        client
            .entity::<Account>(account(index))
            .signal()
            .deposit(OPENING_DEPOSIT)
            .await?;
    }
    // Read back rather than assumed: a kept store carries the balances of earlier runs.
    let opening = balances(&client).await?;
    let opening_total: i64 = opening.iter().sum();
    println!("opening balances: {opening:?} (total {opening_total})");

    // The same 200 transfers every run, each started and awaited by its own task, so all
    // of them compete for the accounts at once.
    let mut rng = XorShift(SEED);
    let mut tasks = Vec::with_capacity(TRANSFERS);
    let started = Instant::now();
    for _ in 0..TRANSFERS {
        let from = rng.below(ACCOUNTS as u64) as usize;
        // Any account but `from`.
        let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
        let amount = 1 + rng.below(MAX_AMOUNT) as i64;
        let t = Transfer {
            from: account(from),
            to: account(to),
            amount,
        };
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let instance = client.start(transfer, t).await?;
            let outcome = instance.wait(WAIT).await?;
            Ok::<_, durable::client::Error>((from, to, amount, outcome))
        }));
    }

    // What each account should hold, from what the transfers say they did.
    let mut expected = opening.clone();
    let mut moved = 0;
    let mut moved_amount = 0;
    let mut refused = 0;
    for task in tasks {
        let (from, to, amount, outcome) = task.await??;
        match outcome {
            Outcome::Moved => {
                moved += 1;
                moved_amount += amount;
                expected[from] -= amount;
                expected[to] += amount;
            }
            Outcome::Refused { balance } => {
                anyhow::ensure!(
                    balance < amount,
                    "a transfer of {amount} was refused with {balance} available"
                );
                refused += 1;
            }
        }
    }
    println!(
        "{TRANSFERS} transfers in {:.2?}: {moved} moved (total {moved_amount}), {refused} refused for insufficient funds",
        started.elapsed()
    );

    let closing = balances(&client).await?;
    let closing_total: i64 = closing.iter().sum();
    println!("closing balances: {closing:?} (total {closing_total})");
    anyhow::ensure!(
        closing_total == opening_total,
        "money was made or lost: {opening_total} became {closing_total}"
    );
    anyhow::ensure!(
        closing.iter().all(|&balance| balance >= 0),
        "a balance went negative: {closing:?}"
    );
    anyhow::ensure!(
        closing == expected,
        "the balances {closing:?} are not what the transfers reported: {expected:?}"
    );
    anyhow::ensure!(moved + refused == TRANSFERS, "transfers went missing");

    // Every transfer has ended, so every lock is released. The release is a message each
    // account receives when its holder ends, applied in the account's next round, so a
    // listing taken the instant the last transfer ends may still show its lock: wait for
    // it, briefly.
    let mut locked = BTreeMap::new();
    for _ in 0..200 {
        let page = client
            .list_entities(Some("Account"), ACCOUNTS + 1, None)
            .await?;
        locked = page
            .entities
            .iter()
            .filter_map(|entity| {
                let holder = entity.locked_by.as_ref()?;
                Some((entity.id.to_string(), holder.to_string()))
            })
            .collect::<BTreeMap<String, String>>();
        if locked.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::ensure!(locked.is_empty(), "locks left behind: {locked:?}");
    println!(
        "ok: total conserved at {closing_total}, no negative balance, balances match the {moved} transfers, no lock left"
    );

    // One entity alone needs no lock: `withdraw` checks and takes in one step, and says no
    // with its own error. The balance is untouched by the refused operation.
    let (poorest, &balance) = closing
        .iter()
        .enumerate()
        .min_by_key(|&(_, balance)| *balance)
        .unwrap_or((0, &0));
    let instance = client
        .start(withdraw_cash, (account(poorest), balance + 1))
        .await?;
    let answer = instance.wait(WAIT).await?;
    println!(
        "withdraw {} from {}: {answer}",
        balance + 1,
        account(poorest)
    );
    let after = balances(&client).await?;
    anyhow::ensure!(
        answer.starts_with("declined") && after[poorest] == balance,
        "the overdraft was not declined cleanly: {answer}, balance {}",
        after[poorest]
    );

    runtime.shutdown().await;
    Ok(())
}
