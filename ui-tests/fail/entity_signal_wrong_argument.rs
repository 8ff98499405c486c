use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: i64) {
        self.value += amount;
    }

    fn get(&self) -> i64 {
        self.value
    }
}

#[orchestrator]
async fn bump(ctx: OrchestrationContext) -> Result<(), Error> {
    ctx.entity::<Counter>("k").signal().add("x");
    Ok(())
}

fn main() {}
