use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Ledger {
    lines: Vec<String>,
}

#[derive(Deserialize)]
struct Line {
    text: String,
}

#[entity]
impl Ledger {
    fn append(&mut self, line: Line) {
        self.lines.push(line.text);
    }

    fn insert(&mut self, at: usize, line: Line) {
        self.lines.insert(at, line.text);
    }
}

fn main() {}
