//! Three more tools of an orchestration, in one billing job:
//!
//! - **`continue_as_new`** — an eternal orchestration: the job bills one cycle, waits on a
//!   durable timer, then starts over as a new execution with the next cycle's number. Its
//!   history holds one cycle at a time; a loop inside one execution would keep every
//!   cycle's events forever, and replay them all after a restart.
//! - **Sub-orchestrations** — each customer's bill is an orchestration of its own, started
//!   by the cycle and awaited together with `join_all`: its own history, status and
//!   retries, and one customer's trouble does not hold up the others' progress.
//! - **`call_activity_with_retry`** — the payment gateway fails now and then. A
//!   `RetryPolicy` retries the charge with exponential back-off on durable timers (a retry
//!   waiting for its turn survives a restart), gives up on the whole call after a minute,
//!   and does not retry what no retry can fix: a declined card. Every attempt of one call
//!   has the same idempotency key, so a charge whose answer was lost is not made twice.
//!
//! The example bills three customers for three cycles against a gateway that loses its
//! answer to ada's first attempt (after charging her) and declines linus's card in cycle
//! 2. It then checks that every customer was charged exactly once per cycle (linus not in
//! cycle 2), and that the job's history holds only its last cycle. It exits non-zero if
//! a check fails.
//!
//! Run: `cargo run --example billing_cycles` (state goes to
//! `./durable-data/billing_cycles`, or `$DURABLE_DATA`).

use durable::InstanceQuery;
use durable::prelude::*;
use durable::store::HistoryEvent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

const CUSTOMERS: [&str; 3] = ["ada", "grace", "linus"];
const CYCLES: u32 = 3;
/// The time between two billing cycles (a month, in a real job).
const PERIOD: Duration = Duration::from_millis(200);

/// Where the job stands: the cycle to bill and the last one to bill.
#[derive(Debug, Serialize, Deserialize)]
struct Cycle {
    number: u32,
    last: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Bill {
    /// The billing job's instance id (the same in every cycle).
    job: String,
    customer: String,
    cycle: u32,
}

/// How one customer's bill for one cycle ended.
#[derive(Debug, Serialize, Deserialize)]
enum Receipt {
    Paid { customer: String, cents: u64 },
    Declined { customer: String },
}

/// What the gateway says when a charge does not go through, as the details of the
/// activity's error: the retry policy reads them.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum GatewayError {
    /// No answer in time: the charge may or may not have been made. Worth a retry.
    Timeout,
    /// The bank said no. No retry changes that.
    Declined,
}

/// The gateway's books: one charge per idempotency key, as payment providers keep them.
#[derive(Default)]
struct Gateway {
    charges: BTreeMap<String, (Bill, u64)>,
    attempts: BTreeMap<(String, String, u32), u32>,
}

/// The payment provider, in this process. (A job that a killed run left unfinished resumes
/// here too, under its own id: the checks look at this run's job only.)
static GATEWAY: Mutex<Gateway> = Mutex::new(Gateway {
    charges: BTreeMap::new(),
    attempts: BTreeMap::new(),
});

/// What a customer owes for a cycle.
#[activity]
async fn compute_amount(_ctx: ActivityContext, bill: Bill) -> Result<u64, Error> {
    Ok(1_000 + 250 * bill.customer.len() as u64 + 10 * u64::from(bill.cycle))
}

/// Charges a card. The gateway charges once per idempotency key: the key is the same for
/// every attempt of one `call_activity_with_retry`, so the retry after a lost answer finds
/// the charge made and does not make it again.
#[activity]
async fn charge_card(ctx: ActivityContext, (bill, cents): (Bill, u64)) -> Result<u64, Error> {
    let key = ctx.idempotency_key();
    let mut gateway = GATEWAY.lock().expect("the gateway's lock");
    let id = (bill.job.clone(), bill.customer.clone(), bill.cycle);
    *gateway.attempts.entry(id).or_default() += 1;
    let who = format!(
        "{} (cycle {}, attempt {})",
        bill.customer,
        bill.cycle,
        ctx.attempt()
    );
    if bill.customer == "linus" && bill.cycle == 2 {
        println!("    {who}: card declined");
        return Err(Error::msg("card declined").with_details(GatewayError::Declined));
    }
    if let Some((_, charged)) = gateway.charges.get(&key) {
        println!("    {who}: key {key} was charged already: {charged} cents, not charged again");
        return Ok(*charged);
    }
    gateway.charges.insert(key.clone(), (bill.clone(), cents));
    if bill.customer == "ada" && ctx.attempt() == 1 {
        println!("    {who}: charged {cents} cents with key {key}, but the answer was lost");
        return Err(Error::msg("the gateway timed out").with_details(GatewayError::Timeout));
    }
    println!("    {who}: charged {cents} cents with key {key}");
    Ok(cents)
}

/// Writes a cycle's outcome to the books.
#[activity]
async fn record_cycle(
    _ctx: ActivityContext,
    (cycle, cents, declined): (u32, u64, Vec<String>),
) -> Result<(), Error> {
    println!("  cycle {cycle}: billed {cents} cents, declined: {declined:?}");
    Ok(())
}

/// Whether a failed charge is worth another attempt: not when the card was declined.
fn worth_retrying(error: &Error) -> bool {
    let gateway = error
        .cause()
        .and_then(|cause| cause.details::<GatewayError>());
    gateway != Some(GatewayError::Declined)
}

/// One customer's bill for one cycle: compute it, then charge it, retrying the gateway.
#[orchestrator]
async fn bill_customer(ctx: OrchestrationContext, bill: Bill) -> Result<Receipt, Error> {
    let cents = ctx.call_activity(compute_amount, bill.clone()).await?;
    // Five attempts at most, 100 ms before the first retry, doubling after that; each wait
    // is a durable timer. A declined card is not retried, and the whole call gives up
    // after a minute.
    let policy = RetryPolicy {
        max_attempts: 5,
        first_interval: Duration::from_millis(100),
        backoff_coefficient: 2.0,
        timeout: Some(Duration::from_secs(60)),
        retry_if: Some(worth_retrying),
        ..RetryPolicy::default()
    };
    let customer = bill.customer.clone();
    match ctx
        .call_activity_with_retry(charge_card, (bill, cents), policy)
        .await
    {
        Ok(cents) => Ok(Receipt::Paid { customer, cents }),
        // Someone has to update the card: that is for the next cycle.
        Err(error) if !worth_retrying(&error) => Ok(Receipt::Declined { customer }),
        Err(error) => Err(error),
    }
}

/// The eternal job: bills one cycle through one sub-orchestration per customer, waits for
/// the next period, and continues as new.
#[orchestrator]
async fn billing(ctx: OrchestrationContext, cycle: Cycle) -> Result<String, Error> {
    // `generation` counts the executions of this start: 1, then one more per
    // continue_as_new.
    ctx.set_custom_status(format!(
        "billing cycle {} of {} (generation {})",
        cycle.number,
        cycle.last,
        ctx.generation()
    ))?;
    let job = ctx.instance_id().to_string();
    let bills = CUSTOMERS.iter().map(|customer| {
        let bill = Bill {
            job: job.clone(),
            customer: (*customer).to_owned(),
            cycle: cycle.number,
        };
        ctx.call_sub_orchestrator(bill_customer, bill)
    });
    let mut total = 0;
    let mut declined = Vec::new();
    for receipt in ctx.join_all(bills).await? {
        match receipt {
            Receipt::Paid { cents, .. } => total += cents,
            Receipt::Declined { customer } => declined.push(customer),
        }
    }
    ctx.call_activity(record_cycle, (cycle.number, total, declined))
        .await?;
    if cycle.number == cycle.last {
        return Ok(format!("billed {} cycles", cycle.last));
    }
    ctx.sleep(PERIOD).await?;
    // The next cycle is a new execution with an empty history. The future never
    // resolves: the execution ends with this turn.
    let next = Cycle {
        number: cycle.number + 1,
        last: cycle.last,
    };
    ctx.continue_as_new(billing, next).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Each example keeps its state in a directory of its own, so that two can run at
    // once: `./durable-data/billing_cycles`, or the directory `$DURABLE_DATA` names.
    let data =
        std::env::var("DURABLE_DATA").unwrap_or_else(|_| "durable-data/billing_cycles".to_owned());
    let runtime = Runtime::builder()
        .store_from_env(&data)
        .register(billing)
        .register(bill_customer)
        .register(compute_amount)
        .register(charge_card)
        .register(record_cycle)
        .start()
        .await?;
    let client = runtime.client();

    let first = Cycle {
        number: 1,
        last: CYCLES,
    };
    let job = client.start(billing, first).await?;
    println!("started billing job {}", job.id());
    let done = job.wait(Duration::from_secs(60)).await?;
    println!("{done}");

    // Exactly one charge per customer and cycle, however many attempts; none for a
    // declined card.
    let (charges, attempts) = {
        let gateway = GATEWAY.lock().expect("the gateway's lock");
        let mut charges: BTreeMap<(String, u32), u32> = BTreeMap::new();
        for (bill, _) in gateway.charges.values() {
            if bill.job == job.id().as_str() {
                *charges
                    .entry((bill.customer.clone(), bill.cycle))
                    .or_default() += 1;
            }
        }
        let attempts: u32 = gateway
            .attempts
            .iter()
            .filter(|((id, _, _), _)| id == job.id().as_str())
            .map(|(_, n)| n)
            .sum();
        (charges, attempts)
    };
    let charged: u32 = charges.values().sum();
    println!("{charged} charges in {attempts} attempts");
    for customer in CUSTOMERS {
        for cycle in 1..=CYCLES {
            let expected = if customer == "linus" && cycle == 2 {
                None
            } else {
                Some(&1)
            };
            let count = charges.get(&(customer.to_owned(), cycle));
            anyhow::ensure!(
                count == expected,
                "{customer} was charged {count:?} times in cycle {cycle}, expected {expected:?}"
            );
        }
    }

    // The job's history is its last execution's: one cycle's, however many ran before.
    let status = client
        .status_with_history(job.id())
        .await?
        .expect("the job exists");
    let history = status.history.unwrap_or_default();
    let bills_done = history
        .iter()
        .filter(|event| matches!(event, HistoryEvent::SubOrchestrationCompleted { .. }))
        .count();
    println!(
        "the job's last execution holds {} history events, {bills_done} bills; custom status {}",
        history.len(),
        status
            .custom_status
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    anyhow::ensure!(
        bills_done == CUSTOMERS.len(),
        "the last execution's history holds {bills_done} bills, not one cycle's"
    );

    // Each customer's bill is an instance of its own, listed like any other; its id
    // starts with its parent's.
    let bills = InstanceQuery {
        name: Some("bill_customer".to_owned()),
        id_prefix: Some(format!("{}:", job.id())),
        ..InstanceQuery::default()
    };
    let listed = client.list(&bills, 100, None).await?.instances;
    let completed = listed
        .iter()
        .filter(|bill| bill.runtime_status == RuntimeStatus::Completed)
        .count();
    println!(
        "the job ran {} bill_customer sub-orchestrations, {completed} completed",
        listed.len()
    );
    let expected = CUSTOMERS.len() * CYCLES as usize;
    anyhow::ensure!(
        completed == expected,
        "{completed} bills completed, not {expected}"
    );
    runtime.shutdown().await;
    Ok(())
}
