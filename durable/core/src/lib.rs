//! The deterministic core of `durable`: what an orchestration does, decided from its
//! history alone, with no I/O, no clock, no threads and no randomness.
//!
//! - [`OrchestrationContext`], [`DurableTask`] and the combinators are what orchestrator
//!   code calls; [`Activity`], [`Orchestrator`] and [`Entity`] are the traits user code
//!   implements (through `durable`'s attribute macros); [`Error`] is what it returns.
//! - [`Engine`] runs one execution of a Rust orchestrator: it turns (history so far, new
//!   events) into a [`Turn`] (events to append, [`Action`]s to perform, an [`Outcome`]),
//!   polling the orchestrator's future in between, and checks on replay that the code
//!   still produces what the history recorded.
//! - [`Ledger`] is the same history state machine without any code: what a history says
//!   is outstanding, and how a turn's inputs and actions computed elsewhere (by a worker in
//!   another language) become events.
//!
//! The runtime around the core loads history, feeds events in, commits what comes out and
//! only then performs the actions. This crate cannot reach the runtime, the store or the
//! network: it depends on `durable-types`, serde and uuid only, and its `clippy.toml` bans
//! the system clock, sleeping, spawning, random ids, file and network types and
//! `HashMap` (whose iteration order differs per process).

// Data from disk or the network never reaches `unwrap()`.
#![warn(clippy::unwrap_used)]

mod activity;
mod context;
mod engine;
mod entity;
mod error;
mod events;
mod function;
mod history;
mod limits;
mod retry;
mod state;
mod tasks;
mod turn;

pub use activity::{ActivityContext, Cancellation, Cancelled};
pub use context::OrchestrationContext;
pub use engine::{Engine, panic_message};
pub use entity::{
    Effects, Entity, EntityContext, EntityLock, EntityProxy, EntitySignaler, LockTask,
    OperationError, SignalRef, SignalSink, check_no_input, decode_arguments, decode_input,
    encode_output, invalid_input, unknown_operation,
};
pub use error::{Error, ErrorKind};
pub use events::{EventName, ExternalEvent};
pub use function::{
    Activity, ActivityFn, BoxFuture, InputCheck, LocalBoxFuture, Orchestrator, OrchestratorFn,
    check_input, run_activity, run_orchestrator,
};
pub use history::{Ledger, Outstanding};
pub use limits::{Limits, PayloadTooLarge, check_turn};
pub use retry::RetryPolicy;
pub use tasks::{ContinueAsNew, DurableTask, Either, JoinAll, Select, SelectAll, Timeout};
pub use turn::{Action, Outcome, Recording, Turn};

#[cfg(test)]
mod tests;
