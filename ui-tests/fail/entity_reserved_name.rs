use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Player {
    id: String,
    signals: u64,
}

#[entity]
impl Player {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn signal(&mut self) {
        self.signals += 1;
    }
}

fn main() {}
