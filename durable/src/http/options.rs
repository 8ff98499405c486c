//! How the management API is served: its key (from the environment or given), the
//! largest body it accepts, and the public address its URLs start with.

use std::net::SocketAddr;
use std::time::Duration;

/// The environment variable [`Options::from_env`] reads the key from.
pub const KEY_VAR: &str = "DURABLE_HTTP_KEY";
/// Set to `1` to serve without a key when [`KEY_VAR`] is not set.
pub const ANONYMOUS_VAR: &str = "DURABLE_HTTP_ANONYMOUS";

/// How the management API is served: its key, body size limit and public address.
#[derive(Clone)]
pub struct Options {
    pub(super) key: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) public_base_url: Option<String>,
    pub(super) header_timeout: Duration,
    pub(super) body_timeout: Duration,
    pub(super) shutdown_grace: Duration,
    pub(super) max_connections: usize,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("public_base_url", &self.public_base_url)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Options {
    /// Requires `key` on every request (as a bearer token or `code=`).
    pub fn with_key(key: impl Into<String>) -> Options {
        Options {
            key: Some(key.into()),
            ..Options::anonymous_unlogged()
        }
    }

    /// Serves without any key: anyone who can reach the port can manage every instance.
    /// Meant for local development; logged as a warning when the API starts.
    pub fn anonymous() -> Options {
        Options::anonymous_unlogged()
    }

    fn anonymous_unlogged() -> Options {
        Options {
            key: None,
            max_body_bytes: None,
            public_base_url: None,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            max_connections: 1024,
        }
    }

    /// The key from [`KEY_VAR`]; without it, anonymous only if [`ANONYMOUS_VAR`] is `1`.
    ///
    /// # Errors
    /// [`Error::NoKey`] when neither is set.
    pub fn from_env() -> Result<Options, Error> {
        match std::env::var(KEY_VAR) {
            Ok(key) => Ok(Options::with_key(key)),
            Err(_) if std::env::var(ANONYMOUS_VAR).is_ok_and(|value| value == "1") => {
                Ok(Options::anonymous())
            }
            Err(_) => Err(Error::NoKey),
        }
    }

    /// The largest request body accepted; larger ones get `413`, which says the number.
    /// Default: twice the runtime's largest payload
    /// ([`RuntimeBuilder::max_payload_bytes`](crate::RuntimeBuilder::max_payload_bytes),
    /// 16 MiB unless set) and 64 KiB, so that every input the client API takes is taken
    /// over HTTP too, even as a client that encodes its body twice sends it.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Options {
        self.max_body_bytes = Some(bytes);
        self
    }

    /// How long a connection of [`serve`](super::serve) may take to send a request's head
    /// (default 10 s); a slower one is disconnected.
    #[must_use]
    pub fn header_timeout(mut self, timeout: Duration) -> Options {
        self.header_timeout = timeout;
        self
    }

    /// How long a request's body may take to arrive, whole (default 30 s); a slower one is
    /// answered `408 Request Timeout`.
    #[must_use]
    pub fn body_timeout(mut self, timeout: Duration) -> Options {
        self.body_timeout = timeout;
        self
    }

    /// How long [`Server::shutdown`](super::Server::shutdown) lets requests in progress (a
    /// start that waits for its instance, say) finish before it ends them (default 5 s).
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Options {
        self.shutdown_grace = grace;
        self
    }

    /// The most connections [`serve`](super::serve) serves at once (default 1,024); more
    /// wait in the listen backlog.
    #[must_use]
    pub fn max_connections(mut self, connections: usize) -> Options {
        self.max_connections = connections.max(1);
        self
    }

    /// The body limit in force, for a runtime whose payload limit is `max_payload_bytes`.
    pub(super) fn body_limit(&self, max_payload_bytes: usize) -> usize {
        self.max_body_bytes.unwrap_or_else(|| {
            max_payload_bytes
                .saturating_mul(2)
                .saturating_add(64 * 1024)
        })
    }

    /// The scheme and host the management URLs in responses start with (e.g.
    /// `https://api.example.com`), when the `Host` header a request carries is not the
    /// address clients should use (behind a proxy). Default: from the request.
    #[must_use]
    pub fn public_base_url(mut self, url: impl Into<String>) -> Options {
        self.public_base_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Whether a key is configured and empty: such a server refuses every request.
    pub(super) fn has_empty_key(&self) -> bool {
        self.key.as_deref().is_some_and(str::is_empty)
    }
}

/// The management API cannot be served as configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No key was configured, and serving without one was not chosen.
    #[error(
        "the HTTP management API needs a key: set {KEY_VAR} (or use Options::with_key); to serve it without one, set {ANONYMOUS_VAR}=1 (or Options::anonymous)"
    )]
    NoKey,
    /// The key is empty.
    #[error("the HTTP management API key is empty; use a long random secret")]
    EmptyKey,
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
