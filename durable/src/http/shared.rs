//! What the handlers share: the [`Api`] state and the paths the API is served under.

use super::options::Options;
use crate::client::Client;

/// Where Durable Functions serves its management API; [`serve`](super::serve) serves
/// [`router`](super::router) here.
pub const BASE_PATH: &str = "/runtime/webhooks/durabletask";

/// The OpenAPI 3 document of this API, served without a key at [`OPENAPI_PATH`].
pub const OPENAPI: &str = include_str!("openapi.json");

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/runtime/webhooks/durabletask/openapi.json";

/// What the handlers share.
pub(crate) struct Api {
    pub(crate) client: Client,
    pub(crate) options: Options,
    /// The largest body taken, in bytes.
    pub(crate) body_limit: usize,
}
