use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Store {
    items: Vec<u64>,
}

#[entity]
impl Store {
    fn items(&self) -> Result<&[u64], String> {
        Ok(&self.items)
    }
}

fn main() {}
