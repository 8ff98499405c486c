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
}

#[derive(Default, Serialize, Deserialize)]
struct Forwarder;

#[entity]
impl Forwarder {
    fn forward(&self, ctx: &EntityContext, amount: i64) {
        ctx.entity::<Counter>("k").signal().nope(amount);
    }
}

fn main() {}
