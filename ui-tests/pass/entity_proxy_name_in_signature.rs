//! The proxies `#[entity]` generates for `Counter` are named `CounterCalls`,
//! `CounterSignals` and `CounterClientSignals`, which compile errors show. An operation
//! whose signature names a type of one of those names still means the user's type.
use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct CounterSignals {
    pub received: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    signals: CounterSignals,
}

#[entity]
impl Counter {
    fn record(&mut self, signals: CounterSignals) {
        self.signals = signals;
    }

    fn signals(&self) -> CounterSignals {
        self.signals.clone()
    }
}

#[orchestrator]
async fn read(ctx: OrchestrationContext) -> Result<u64, Error> {
    ctx.entity::<Counter>("k")
        .record(CounterSignals { received: 1 })
        .await?;
    let signals: CounterSignals = ctx.entity::<Counter>("k").signals().await?;
    Ok(signals.received)
}

fn main() {
    let _ = read;
}
