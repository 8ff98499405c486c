use durable::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Journal {
    lines: Vec<String>,
}

#[entity]
impl Journal {
    fn append(&mut self, line: String) -> std::io::Result<u64> {
        self.lines.push(line);
        Ok(self.lines.len() as u64)
    }
}

fn main() {}
