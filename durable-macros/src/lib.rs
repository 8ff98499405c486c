//! The attribute macros of durable: `#[activity]` and `#[orchestrator]` turn an
//! `async fn` into a zero-sized value that carries the function's registered name and its
//! input and output types, so that calling it with the wrong input, or reading its output
//! as the wrong type, is a compile error.
//!
//! This crate knows nothing of the runtime or the store: it emits paths into `::durable`
//! only. Use the macros through `durable` (`use durable::prelude::*;`).
//!
//! The examples below are doctests of this crate, which has `durable` as a
//! dev-dependency for them (a path one, dropped on publishing).

mod check;
mod entity;
mod function;

use proc_macro::TokenStream;

/// Makes an `async fn` an activity: the unit of real work (I/O, side effects), run at least
/// once.
///
/// ```
/// use durable::prelude::*;
///
/// #[activity]
/// async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
///     Ok(x + 1)
/// }
///
/// /// Registered as `F1`, the name Durable Functions' samples use.
/// #[activity(name = "F1")]
/// async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, Error> {
///     Ok(format!("Hello {city}!"))
/// }
///
/// assert_eq!(<add_one as Activity>::NAME, "add_one");
/// assert_eq!(<say_hello as Activity>::NAME, "F1");
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
/// ```
/// use durable::prelude::*;
/// use std::time::Duration;
///
/// # #[activity]
/// # async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
/// #     Ok(x + 1)
/// # }
/// #[orchestrator]
/// async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
///     let a = ctx.call_activity(add_one, x).await?;
///     ctx.call_activity(add_one, a).await
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::builder()
///     .in_memory()
///     .register(chain)
///     .register(add_one)
///     .start()
///     .await?;
/// let instance = runtime.client().start(chain, 1).await?;
/// assert_eq!(instance.wait(Duration::from_secs(10)).await?, 3);
/// runtime.shutdown().await;
/// # Ok(())
/// # }
/// ```
///
/// The function must be `async`, take an `OrchestrationContext` and optionally one owned
/// input, and return `Result<Output, E>`. Its future does not need to be `Send`: it runs on
/// the runtime's orchestration threads. `#[orchestrator(name = "...")]` sets the registered
/// name.
///
/// # Rules, checked at compile time
///
/// An orchestrator is replayed from its history, so it must do the same thing every time.
/// The macro rejects, with an error at the offending code naming the replay-safe
/// alternative:
///
/// | rejected | use instead |
/// |---|---|
/// | the wall clock: `SystemTime::now`, `Instant::now`, `chrono::Utc::now`/`Local::now`, `time::OffsetDateTime::now_utc` | `ctx.current_utc_datetime()` |
/// | randomness and fresh ids: `rand::*` (`random`, `thread_rng`, `rng`), `Uuid::new_v4`/`new_v7`, `fastrand`, `getrandom`, `RandomState::new` | `ctx.new_guid()`, or an activity |
/// | sleeping and timers: `std::thread::sleep`, `tokio::time::sleep`/`sleep_until`/`timeout`/`interval` | `ctx.sleep`, `ctx.create_timer` |
/// | threads and tasks: `std::thread::spawn`/`scope`, `tokio::spawn`, `spawn_blocking`, `spawn_local`, `JoinSet` | activities, `ctx.join_all` |
/// | racing futures: `select!`, `join!`, `try_join!` (tokio's or futures'), `futures::future::select*`, `FuturesUnordered` | `ctx.join_all`, `ctx.select` |
/// | I/O: `std::fs`, `tokio::fs`, `std::net`, `tokio::net`, `std::process`, `reqwest`, `std::io::stdin`, `File`, `TcpStream`, `Command::new` | an activity |
/// | the environment: `std::env::var`/`vars`/`args`/`current_dir`/... | pass it in the input |
/// | `HashMap`, `HashSet` (their iteration order differs per process) | `BTreeMap`, `BTreeSet`, or an explicit sort |
/// | `unsafe` blocks (and so `static mut` access), `static mut` items, `thread_local!` and `THREAD_LOCAL.with(..)` | locals, the input |
/// | blocking on futures: `futures::executor::block_on`, `Handle::block_on`, any `.block_on(..)` | `.await` a durable task |
///
/// The check sees every path, type, method call and macro of the body — closures, nested
/// blocks, async blocks, nested functions, and the arguments of macros that parse as
/// expressions — and resolves the `use` declarations made inside the body, renames and
/// globs included. Names bound in the body (a variable called `now` or `sleep`) are the
/// user's own and are not flagged.
///
/// **What it cannot see**: code in other functions the body calls, and the `use`
/// declarations outside the function (for those it recognises the distinctive spellings
/// above, such as `SystemTime::now` or `thread::sleep`, not every conceivable alias). The
/// runtime is the second line of defence: orchestrators are polled outside any tokio
/// runtime, so tokio reached through a helper (`tokio::spawn`, `tokio::time::sleep`) fails
/// the instance with a message saying what to use instead. A blocking call in a helper
/// (`std::thread::sleep`) cannot be caught: it stalls the orchestration thread, and the
/// runtime logs the turn with its instance once it passes `slow_turn_warning`.
///
/// A reviewed exception is marked on the statement or expression, with a reason that
/// `grep` finds:
///
/// ```
/// # use durable::prelude::*;
/// # #[activity]
/// # async fn charge(_ctx: ActivityContext, cents: u64) -> Result<u64, Error> { Ok(cents) }
/// #[orchestrator]
/// async fn timed(ctx: OrchestrationContext, cents: u64) -> Result<u64, Error> {
///     #[durable::allow_nondeterministic("only measures this turn's duration for a log line")]
///     let started = std::time::Instant::now();
///     let charged = ctx.call_activity(charge, cents);
///     println!("scheduled in {:?}", started.elapsed());
///     charged.await
/// }
/// ```
///
/// The attribute without a reason is an error. It cannot go inside the arguments of a
/// macro call.
#[proc_macro_attribute]
pub fn orchestrator(attr: TokenStream, item: TokenStream) -> TokenStream {
    function::expand(function::Kind::Orchestrator, attr.into(), item.into()).into()
}

/// Makes a type a durable entity: on its `impl` block, every method is an operation.
///
/// An operation takes `&self` (to read the state) or `&mut self` (to change it), optionally
/// `ctx: &EntityContext` right after it, then any owned arguments (`Serialize +
/// Deserialize`, no references), and returns nothing, a value, or `Result<Output, E>` with
/// `E: Into<durable::Error>`. It cannot be `async`, generic or `unsafe`, nor be named
/// `signal` or `id` (the call proxy's own methods). Functions without `self` go in another
/// `impl` block; a `#[cfg]` on an operation applies to its proxies too. The type must be
/// `Default + Serialize + Deserialize` and not generic; `#[entity(name = "...")]` sets the
/// registered name.
///
/// ```
/// use durable::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Counter {
///     value: i64,
/// }
///
/// #[entity]
/// impl Counter {
///     fn add(&mut self, amount: i64) {
///         self.value += amount;
///     }
///
///     fn get(&self) -> i64 {
///         self.value
///     }
/// }
///
/// /// Orchestrations call operations (and wait for the result) or signal them.
/// #[orchestrator]
/// async fn add_and_read(ctx: OrchestrationContext, amount: i64) -> Result<i64, Error> {
///     ctx.entity::<Counter>("visits").signal().add(amount);
///     ctx.entity::<Counter>("visits").get().await
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::builder()
///     .in_memory()
///     .register_entity::<Counter>()
///     .register(add_and_read)
///     .start()
///     .await?;
/// let client = runtime.client();
/// client.entity::<Counter>("visits").signal().add(2).await?; // stored, then run
/// let read = client.start(add_and_read, 3).await?;
/// assert_eq!(read.wait(std::time::Duration::from_secs(10)).await?, 5);
/// let counter = client.entity_state::<Counter>("visits").await?;
/// assert_eq!(counter.map(|c| c.value), Some(5));
/// runtime.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[proc_macro_attribute]
pub fn entity(attr: TokenStream, item: TokenStream) -> TokenStream {
    entity::expand(attr.into(), item.into()).into()
}
