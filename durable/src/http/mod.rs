//! The HTTP management API of Durable Functions, over [axum]: start orchestrations, poll
//! their status, raise events, terminate, suspend, resume, restart, purge, list, and
//! signal and read entities — with Durable Functions' paths, verbs, query parameters,
//! status codes and JSON field names, under `/runtime/webhooks/durabletask/`.
//!
//! It is an adapter over the [`Client`](crate::Client): serve it on its own with [`serve`], or mount
//! [`router`] in your own axum app:
//!
//! ```no_run
//! use durable::http::{self, Options};
//! # async fn demo(runtime: durable::Runtime) -> Result<(), Box<dyn std::error::Error>> {
//! let api = http::router(runtime.client(), Options::with_key("a long random secret"));
//! let app = axum::Router::new()
//!     .route("/health", axum::routing::get(|| async { "ok" }))
//!     .merge(api);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Every route but the OpenAPI document ([`OPENAPI_PATH`]) requires the key, as
//! `Authorization: Bearer <key>`, `x-functions-key: <key>` or `?code=<key>` (as Durable
//! Functions' function keys),
//! unless the options say [`Options::anonymous`] — an explicit choice, logged as a
//! warning.
//!
//! # Where this API differs from Durable Functions, and why
//! - Starting an instance id that is still running answers `409 Conflict` (Durable
//!   Functions has answered `500` here in some versions): the request conflicts with the
//!   instance's state, and a 5xx would tell clients and proxies to retry what can never
//!   succeed.
//! - Lists (`GET instances`, `GET entities`) return pages of `top` items (default 100)
//!   with the `x-ms-continuation-token` header for the next page.
//! - Management URLs carry the key as `code=` only when the request itself used `code=`;
//!   a bearer key is never echoed into a response.
//! - Purging an instance that is still running answers `409 Conflict` (Durable
//!   Functions: `412 Precondition Failed`); terminate it first.
//! - Orchestrator names, the literal path segments and the query parameter names
//!   (`showHistory`, not `showhistory`) are case-sensitive. Entity names are not (held
//!   lowercased, as Durable Functions does); entity keys are. A trailing `/` is taken on
//!   every path, as Durable Functions takes it.
//! - A body is JSON, sent with a JSON `Content-Type` or none (another type is `415`); one
//!   encoded twice (a JSON string whose text is JSON, as Durable Functions' Python client
//!   sends it) is decoded once more where the target type is not a string. The body limit
//!   is above the runtime's payload limit ([`Options::max_body_bytes`]).
//! - Query values are percent-decoded strictly (bytes that are not UTF-8 are `400`, as in
//!   paths); only `runtimeStatus` may be given more than once. Event names and reasons
//!   have limits ([`EVENT_NAME_MAX_LEN`](crate::client::EVENT_NAME_MAX_LEN),
//!   [`REASON_MAX_LEN`](crate::client::REASON_MAX_LEN)).
//! - Error bodies are RFC 9457 problems that also carry the message as `Message` and
//!   `ExceptionMessage`, the fields of Durable Functions' error bodies.
//! - The URLs in responses start with the request's `Host` (and `X-Forwarded-Proto`):
//!   trust it only when every request comes through a proxy that sets it, or configure
//!   [`Options::public_base_url`].
//! - A signal (`POST entities/{name}/{key}?op=`) names an operation the entity type has,
//!   with a body that decodes as its argument; otherwise it answers `400`, listing the
//!   operations or saying what does not decode (Durable Functions accepts it with `202`,
//!   and the entity then drops it). A signal, read or delete of an entity type the
//!   runtime does not register is `400` too; a read of a registered type's entity that
//!   has no state is `404`.
//! - `POST instances/{id}/rewind` answers `501 Not Implemented`; entity lists do not
//!   filter by `lastOperationTimeFrom`/`To` (`400`).
//! - History events (`showHistory=true`) follow Durable Functions' shape (`EventType`,
//!   `Timestamp`, `FunctionName`, `Result`, scheduling folded into completions) with its
//!   event type names (`SubOrchestrationInstanceCreated`, `TimerCreated`, ...) where it
//!   has the event, this runtime's for the others (entity events), the other fields in
//!   PascalCase and every time in ISO 8601 (`FireAt` too); `Input` is shown too with
//!   `showHistoryOutput=true`.
mod auth;
mod check_status;
mod handlers;
mod model;
mod options;
mod router;
mod server;
mod shared;
mod time;
mod wire;

pub use check_status::{CheckStatusResponse, create_check_status_response};
pub use options::{ANONYMOUS_VAR, Error, KEY_VAR, Options};
pub use router::router;
pub use server::{Server, serve};
pub use shared::{BASE_PATH, OPENAPI, OPENAPI_PATH};
