//! The attribute macros of durable: `#[activity]` and `#[orchestrator]` turn an
//! `async fn` into a zero-sized value that carries the function's registered name and its
//! input and output types, so that calling it with the wrong input, or reading its output
//! as the wrong type, is a compile error.
//!
//! This crate knows nothing of the runtime or the store: it emits paths into `::durable`
//! only. Use the macros through `durable` (`use durable::prelude::*;`).

mod check;
mod function;

use proc_macro::TokenStream;

/// Makes an `async fn` an activity: the unit of real work (I/O, side effects), run at least
/// once.
///
/// ```ignore
/// use durable::prelude::*;
///
/// #[activity]
/// async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
///     Ok(x + 1)
/// }
/// ```
///
/// The function must be `async`, take an `ActivityContext` and optionally one input (any
/// owned `Deserialize` type; use a tuple or a struct for several values), and return
/// `Result<Output, E>` with `Output: Serialize` and `E: Into<durable::Error>` (any
/// `std::error::Error`, `String`, `&str`, or `durable::Error`). Its future must be `Send`.
///
/// The macro replaces the function with a unit struct of the same name implementing
/// `durable::Activity` and `durable::Registrable`. `#[activity(name = "F1")]` registers it
/// under another name (the name is stored in history: renaming a function breaks running
/// instances unless the name stays).
#[proc_macro_attribute]
pub fn activity(attr: TokenStream, item: TokenStream) -> TokenStream {
    function::expand(function::Kind::Activity, attr.into(), item.into()).into()
}

/// Makes an `async fn` an orchestrator: deterministic code that is checkpointed at every
/// `.await` on a durable task and replayed from its history.
///
/// ```ignore
/// use durable::prelude::*;
///
/// #[orchestrator]
/// async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
///     let a = ctx.call_activity(add_one, x).await?;
///     ctx.call_activity(add_one, a).await
/// }
/// ```
///
/// The function must be `async`, take an `OrchestrationContext` and optionally one owned
/// input, and return `Result<Output, E>`. Its future does not need to be `Send`: it runs on
/// the runtime's orchestration threads. `#[orchestrator(name = "...")]` sets the registered
/// name.
#[proc_macro_attribute]
pub fn orchestrator(attr: TokenStream, item: TokenStream) -> TokenStream {
    function::expand(function::Kind::Orchestrator, attr.into(), item.into()).into()
}
