//! Pattern 1, function chaining: F1 → F2 → F3 → F4, each step's output the next step's
//! input. Here the four functions fulfil an order: reserve stock, charge the card, ship,
//! notify the customer.
//!
//! Each `.await` on an activity is a checkpoint: kill the process at any point and run it
//! again, and the orchestration resumes after the last completed step.
//!
//! Run: `cargo run --example chaining` (state goes to
//! `./durable-data/chaining`, or `$DURABLE_DATA`).

use durable::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u32,
    item: String,
    quantity: u32,
    unit_price_cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reservation {
    order: Order,
    warehouse: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    reservation: Reservation,
    charged_cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Shipment {
    receipt: Receipt,
    tracking: String,
}

/// F1: reserve the items in a warehouse.
#[activity]
async fn reserve_stock(_ctx: ActivityContext, order: Order) -> Result<Reservation, Error> {
    Ok(Reservation {
        order,
        warehouse: "Rotterdam".to_owned(),
    })
}

/// F2: charge the customer. The idempotency key is the same on every run of this call —
/// again after a crash, or as the next attempt of a retried call — so a payment provider
/// charges once even if the activity ran twice.
#[activity]
async fn charge_payment(ctx: ActivityContext, reservation: Reservation) -> Result<Receipt, Error> {
    let order = &reservation.order;
    let charged_cents = order.unit_price_cents * u64::from(order.quantity);
    println!(
        "  charging {charged_cents} cents (idempotency key {}, attempt {})",
        ctx.idempotency_key(),
        ctx.attempt()
    );
    Ok(Receipt {
        reservation,
        charged_cents,
    })
}

/// F3: hand the parcel to the carrier.
#[activity]
async fn ship(_ctx: ActivityContext, receipt: Receipt) -> Result<Shipment, Error> {
    let tracking = format!(
        "TRK-{}-{}",
        receipt.reservation.order.id, receipt.reservation.warehouse
    );
    Ok(Shipment { receipt, tracking })
}

/// F4: tell the customer.
#[activity]
async fn notify_customer(_ctx: ActivityContext, shipment: Shipment) -> Result<String, Error> {
    let receipt = &shipment.receipt;
    let order = &receipt.reservation.order;
    Ok(format!(
        "order {}: {} x {} reserved in {}, charged ${:.2}, shipped as {}",
        order.id,
        order.quantity,
        order.item,
        receipt.reservation.warehouse,
        receipt.charged_cents as f64 / 100.0,
        shipment.tracking
    ))
}

/// The orchestrator: four steps in sequence, as plain code.
#[orchestrator]
async fn fulfil_order(ctx: OrchestrationContext, order: Order) -> Result<String, Error> {
    let reservation = ctx.call_activity(reserve_stock, order).await?;
    let receipt = ctx.call_activity(charge_payment, reservation).await?;
    let shipment = ctx.call_activity(ship, receipt).await?;
    ctx.call_activity(notify_customer, shipment).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Each example keeps its state in a directory of its own, so that two can run at
    // once: `./durable-data/chaining`, or the directory `$DURABLE_DATA` names.
    let data = std::env::var("DURABLE_DATA").unwrap_or_else(|_| "durable-data/chaining".to_owned());
    let runtime = Runtime::builder()
        .store_from_env(&data)
        .register(fulfil_order)
        .register(reserve_stock)
        .register(charge_payment)
        .register(ship)
        .register(notify_customer)
        .start()
        .await?;
    let client = runtime.client();

    let order = Order {
        id: 42,
        item: "widget".to_owned(),
        quantity: 3,
        unit_price_cents: 999,
    };
    let instance = client.start(fulfil_order, order).await?;
    println!("started instance {}", instance.id());
    let summary = instance.wait(Duration::from_secs(30)).await?;
    println!("result: {summary}");

    let status = client.status_with_history(instance.id()).await?;
    if let Some(status) = status {
        let events = status.history.map_or(0, |history| history.len());
        println!(
            "status: {} ({events} history events)",
            status.runtime_status
        );
    }
    // On fjall (on PostgreSQL, `DURABLE_POSTGRES`, there is no directory).
    if let Ok(data) = std::fs::canonicalize(&data) {
        println!(
            "state is stored in {} (fjall, fsync on every commit)",
            data.display()
        );
    }
    runtime.shutdown().await;
    Ok(())
}
