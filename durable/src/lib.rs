//! Durable Functions for Rust: stateful workflows written as ordinary `async` code,
//! checkpointed at every `.await` and replayed after a crash. What follows is the
//! repository's README; [This crate](#this-crate), at the end, says where to look.
//!
// The README is `durable/README.md`, a link to the repository's, so that the published
// crate carries it; its Rust example is compiled as a doctest of this crate.
#![doc = include_str!("../README.md")]
//!
//! # This crate
//!
//! The [`prelude`] has what an application needs in scope. Start with
//! [`Runtime::builder`]; [`RuntimeBuilder::in_memory`] keeps everything in memory, for
//! tests:
//!
//! ```
//! use durable::prelude::*;
//! use std::time::Duration;
//!
//! #[activity]
//! async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
//!     Ok(x + 1)
//! }
//!
//! #[orchestrator]
//! async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
//!     let a = ctx.call_activity(add_one, x).await?; // `x` must be a u64; `a` is one
//!     ctx.call_activity(add_one, a).await
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::builder()
//!     .in_memory()
//!     .register(chain)
//!     .register(add_one)
//!     .start()
//!     .await?;
//! let instance = runtime.client().start(chain, 1).await?;
//! let out: u64 = instance.wait(Duration::from_secs(10)).await?;
//! assert_eq!(out, 3);
//! runtime.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Where to look:
//! - [`OrchestrationContext`]: what an orchestrator can do (activities, retries,
//!   sub-orchestrations, timers, events, `select`, entities, `continue_as_new`);
//! - the [`orchestrator`], [`activity`] and [`entity`](macro@entity) attributes, with the
//!   rules an orchestrator is held to at compile time;
//! - [`Client`] and [`client::StartOptions`]: starting and managing instances;
//! - [`RuntimeBuilder`]: stores, limits and tuning; [`MetricsSnapshot`]: what it did;
// A link only where the module exists: the `http` feature is on by default.
#![cfg_attr(
    feature = "http",
    doc = "- [`http`]: Durable Functions' HTTP management API;"
)]
#![cfg_attr(
    not(feature = "http"),
    doc = "- `http` (the default feature `http`): Durable Functions' HTTP management API;"
)]
//! - [`store`]: the storage contract, for stores of your own.

// Data from disk or the network never reaches `unwrap()`.
#![warn(clippy::unwrap_used)]

// Lets the macros' `::durable::` paths resolve inside this crate's own tests.
extern crate self as durable;

pub mod client;
#[cfg(feature = "http")]
pub mod http;
mod panics;
pub mod registry;
pub mod runtime;

pub use client::{Client, InstanceHandle, InstanceStatus};
pub use durable_core::{
    Activity, ActivityContext, BoxFuture, Cancellation, Cancelled, ContinueAsNew, DurableTask,
    Either, Entity, EntityContext, EntityLock, Error, ErrorKind, EventName, ExternalEvent, JoinAll,
    LocalBoxFuture, OperationError, OrchestrationContext, Orchestrator, RetryPolicy, Select,
    SelectAll, Timeout,
};
pub use durable_macros::{activity, entity, orchestrator};
pub use durable_store::{Durability, Store};
pub use durable_types::{
    EntityId, ExecutionId, InstanceId, InstanceQuery, Json, RuntimeStatus, TaskId, Timestamp,
};
pub use registry::{Registrable, Registry};
pub use runtime::{Clock, MetricsSnapshot, Runtime, RuntimeBuilder, stop_signal};

/// The storage layer: the records the runtime keeps (history events, instance records,
/// failures), the [`Store`] trait for stores of your own, and the embedded stores.
pub use durable_store as store;

/// The untyped halves of the proxies `#[entity]` generates: what the generated code calls.
/// Not for direct use; the typed proxies are.
#[doc(hidden)]
pub mod entity {
    pub use durable_core::{
        EntityProxy, EntitySignaler, SignalRef, SignalSink, check_no_input, decode_arguments,
        decode_input, encode_output, invalid_input, unknown_operation,
    };
}

/// Everything an application needs in scope: `use durable::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Activity, ActivityContext, Client, Either, Entity, EntityContext, EntityId, Error,
        ErrorKind, ExternalEvent, InstanceStatus, OrchestrationContext, Orchestrator, RetryPolicy,
        Runtime, RuntimeStatus, activity, entity, orchestrator,
    };
}
