use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter<T> {
    value: T,
}

#[entity]
impl<T: Clone> Counter<T> {
    fn get(&self) -> T {
        self.value.clone()
    }
}

fn main() {}
