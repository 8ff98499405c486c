use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Debug)]
struct Overdrawn;

#[entity]
impl Account {
    fn withdraw(&mut self, amount: i64) -> Result<i64, Overdrawn> {
        if amount > self.balance {
            return Err(Overdrawn);
        }
        self.balance -= amount;
        Ok(self.balance)
    }
}

fn main() {}
