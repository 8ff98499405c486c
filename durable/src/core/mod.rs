//! The deterministic core: replay and turns of one orchestration execution, with no I/O,
//! no clock, no threads and no randomness. The runtime around it loads history, feeds
//! events in, commits what comes out and only then performs the actions.
//!
//! A tidy test (`tests/tidy.rs` of this crate) fails if anything in this module mentions
//! tokio, the file system, the network, the system clock, randomness or `HashMap`
//! (whose iteration order differs per process).

pub(crate) mod action;
pub(crate) mod engine;
pub(crate) mod limits;
pub(crate) mod state;
pub(crate) mod tasks;

pub use action::{Action, Outcome};
pub(crate) use engine::panic_message;
pub use engine::{Engine, Outstanding, Turn, outstanding_in};
pub use limits::{TurnLimits, check_turn};

#[cfg(test)]
mod tests;
