//! Serving the management API on a socket of its own: [`serve`] binds, spawns the
//! accept loop on the current tokio runtime, and hands back the [`Server`] that stops it.
//!
//! The loop is hyper's HTTP/1 with the limits a server on a network needs
//! ([`Options`]): a request head must arrive within its header timeout (and a body within
//! the router's body timeout), a bounded number of connections are served at once (more
//! wait in the listen backlog), and a shutdown lets requests in progress finish for a
//! grace period, then ends them.

use super::check_status::CheckStatusResponse;
use super::options::{Error, Options};
use super::router::router;
use super::shared::BASE_PATH;
use crate::InstanceId;
use crate::client::Client;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

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
    let limits = Limits {
        header_timeout: options.header_timeout,
        shutdown_grace: options.shutdown_grace,
        max_connections: options.max_connections,
    };
    let app = router(client, options);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(accept_loop(listener, app, limits, stopped));
    tracing::info!(address = %local, "serving the HTTP management API at http://{local}{BASE_PATH}");
    Ok(Server {
        addr: local,
        stop: Some(stop),
        task: Some(task),
    })
}

/// What the accept loop holds connections to.
struct Limits {
    header_timeout: Duration,
    shutdown_grace: Duration,
    max_connections: usize,
}

/// Serves connections until `stopped`, then shuts down within the grace period.
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    mut stopped: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let (permit, stream) = tokio::select! {
            _ = &mut stopped => break,
            // Finished connections are reaped as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = accept(&listener, &permits) => accepted,
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "an HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let grace = limits.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "HTTP requests still in progress {grace:?} after the shutdown began were ended"
        );
    }
    connections.shutdown().await;
}

/// The next connection, once a permit says fewer than the most are open.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> (tokio::sync::OwnedSemaphorePermit, tokio::net::TcpStream) {
    loop {
        let Ok(permit) = Arc::clone(permits).acquire_owned().await else {
            unreachable!("the semaphore is never closed");
        };
        match listener.accept().await {
            Ok((stream, _)) => return (permit, stream),
            Err(error) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(%error, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
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

    /// Stops accepting connections and waits for the requests in progress, at most
    /// [`Options::shutdown_grace`]: those still going then are ended.
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
