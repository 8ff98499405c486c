//! durable: Durable Functions for Rust.
#![allow(missing_docs)]

// Lets the macros' `::durable::` paths resolve inside this crate's own tests.
extern crate self as durable;

mod activity;
pub mod client;
mod context;
pub(crate) mod core;
mod error;
mod function;
mod runtime;

pub use activity::ActivityContext;
pub use client::{Client, InstanceHandle, InstanceStatus};
pub use runtime::{Clock, MetricsSnapshot, Runtime, RuntimeBuilder};
pub use durable_store::{Durability, InstanceQuery};
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
        Activity, ActivityContext, Client, Error, ErrorKind, InstanceStatus,
        OrchestrationContext, Orchestrator, RetryPolicy, Runtime, RuntimeStatus, activity,
        orchestrator,
    };
}
