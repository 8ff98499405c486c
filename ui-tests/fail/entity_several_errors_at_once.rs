use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: &i64) {
        self.value += amount;
    }

    fn set(self: Box<Self>, value: i64) {
        let _ = value;
    }

    fn reset(&mut self, ctx: &mut EntityContext) {
        ctx.delete_state();
    }

    unsafe fn get(&self) -> i64 {
        self.value
    }
}

fn main() {}
