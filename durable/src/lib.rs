//! durable: Durable Functions for Rust.
#![allow(missing_docs)]

// Lets the macros' `::durable::` paths resolve inside this crate's own tests.
extern crate self as durable;

mod activity;
mod context;
pub(crate) mod core;
mod error;
mod function;

pub use activity::ActivityContext;
pub use context::{OrchestrationContext, RetryPolicy};
pub use core::tasks::{ContinueAsNew, DurableTask, JoinAll};
pub use durable_macros::{activity, orchestrator};
pub use durable_store as store;
pub use durable_store::{ExecutionId, InstanceId, Json, RuntimeStatus, TaskId, Timestamp};
pub use error::{Error, ErrorKind};
pub use function::{Activity, BoxFuture, LocalBoxFuture, Orchestrator, Registrable, Registry};

/// Everything an application needs in scope: `use durable::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Activity, ActivityContext, Error, ErrorKind, OrchestrationContext, Orchestrator,
        RetryPolicy, RuntimeStatus, activity, orchestrator,
    };
}
