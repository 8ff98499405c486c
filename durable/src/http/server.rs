//! Serving the management API on a socket of its own: [`serve`] binds, spawns axum on the
//! current tokio runtime, and hands back the [`Server`] that stops it.

use super::check_status::CheckStatusResponse;
use super::options::{Error, Options};
use super::router::router;
use super::shared::BASE_PATH;
use crate::InstanceId;
use crate::client::Client;
use std::net::SocketAddr;

/// Serves the management API of `client`'s runtime on `addr` (e.g. `([127, 0, 0, 1],
/// 8080)`, or port 0 for any free one) with `options`, until the returned [`Server`] is
/// shut down or dropped. Must be called within a tokio runtime.
///
/// ```
/// use durable::http::{self, Options};
/// use durable::prelude::*;
///
/// #[orchestrator]
/// async fn hello(_ctx: OrchestrationContext, name: String) -> Result<String, Error> {
///     Ok(format!("hello, {name}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::builder().in_memory().register(hello).start().await?;
/// // In production: `Options::from_env()?`, the key from `DURABLE_HTTP_KEY`.
/// let options = Options::with_key("a long random secret");
/// // Port 0: any free port (7071 is the Functions host's).
/// let server = http::serve(runtime.client(), ([127, 0, 0, 1], 0), options).await?;
/// let base = server.base_url(); // http://127.0.0.1:<port>/runtime/webhooks/durabletask
/// assert!(base.ends_with("/runtime/webhooks/durabletask"));
/// println!("POST {base}/orchestrators/hello to start one");
/// server.shutdown().await;
/// runtime.shutdown().await;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::EmptyKey`], [`Error::Bind`].
pub async fn serve(
    client: Client,
    addr: impl Into<SocketAddr>,
    options: Options,
) -> Result<Server, Error> {
    if options.has_empty_key() {
        return Err(Error::EmptyKey);
    }
    let addr = addr.into();
    let bind = |source| Error::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let app = router(client, options);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the HTTP management API stopped");
        }
    });
    tracing::info!(address = %local, "serving the HTTP management API at http://{local}{BASE_PATH}");
    Ok(Server {
        addr: local,
        stop: Some(stop),
        task: Some(task),
    })
}

/// The management API served by [`serve`]; dropping it stops the server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// The address it listens on (with the port chosen, if `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the API: `http://addr/runtime/webhooks/durabletask`.
    pub fn base_url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.addr)
    }

    /// The `202 Accepted` answer with the management URLs of `instance_id` on this server,
    /// absolute ([`base_url`](Server::base_url)): for routes of your own that start
    /// orchestrations. A route that cannot reach the `Server` gets the same from
    /// [`create_check_status_response`](super::create_check_status_response)`(..)`
    /// [`.base_url(server.base_url())`](CheckStatusResponse::base_url).
    pub fn check_status_response(&self, instance_id: &InstanceId) -> CheckStatusResponse {
        CheckStatusResponse::new(instance_id.clone(), self.base_url(), None)
    }

    /// Stops accepting connections and waits for the requests in progress.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
