//! Pattern 3, async HTTP APIs: an HTTP call starts a long-running orchestration and gets
//! `202 Accepted` with a `Location` to poll; polling answers `202` while it runs and `200`
//! with the output once it completes — Durable Functions' built-in management API, served
//! by `durable::http::serve(..)` on 127.0.0.1.
//!
//! Run: `cargo run --example http_api` and follow the `curl` session it prints (the README
//! shows one). It serves until Ctrl-C, on 127.0.0.1 only. Settings, from the environment:
//!
//! - `DURABLE_HTTP_KEY`: the key (default: a key printed at start), sent as
//!   `Authorization: Bearer <key>` or as `?code=<key>` (what the Durable Functions client
//!   libraries send in their webhook URLs);
//! - `DURABLE_HTTP_ANONYMOUS=1` (without a key): no key at all, as a Functions host's local
//!   endpoint, which the client libraries call without one in their `rpcBaseUrl` mode —
//!   logged, and served on the loopback interface only;
//! - `DURABLE_HTTP_PORT`: the port (default 7071, as the Functions host);
//! - `DURABLE_HTTP_PUBLIC_URL`: the scheme and host its URLs start with, behind a proxy
//!   (default: the request's `Host`);
//! - `DURABLE_DATA`: where the state goes (default `./durable-data/http_api`), or
//!   `DURABLE_POSTGRES` to use PostgreSQL.
//!
//! `--self-test` runs the session itself and exits.

use durable::http::{self, Options, Server};
use durable::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    city: String,
    summary: String,
}

/// The long-running part: compiles a report on one city.
#[activity]
async fn compile_report(_ctx: ActivityContext, city: String) -> Result<Report, Error> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(Report {
        summary: format!("{} sunny days a year in {city}", 100 + city.len() * 17),
        city,
    })
}

/// Compiles the reports of several cities, in parallel.
#[orchestrator]
async fn city_reports(
    ctx: OrchestrationContext,
    cities: Vec<String>,
) -> Result<Vec<Report>, Error> {
    ctx.set_custom_status(format!("compiling {} reports", cities.len()))?;
    let tasks: Vec<_> = cities
        .into_iter()
        .map(|city| ctx.call_activity(compile_report, city))
        .collect();
    ctx.join_all(tasks).await
}

/// A counter entity (the aggregator's), to try the entity endpoints: signal `add` with a
/// number, read its state.
#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: i64) {
        self.value += amount;
    }

    fn reset(&mut self) {
        self.value = 0;
    }

    fn get(&self) -> i64 {
        self.value
    }
}

/// Waits for an approval event, to show raising events over HTTP.
#[orchestrator]
async fn approval(ctx: OrchestrationContext, request: String) -> Result<String, Error> {
    let approved: bool = ctx.wait_for_event("Approval").await?;
    Ok(format!(
        "{request}: {}",
        if approved { "approved" } else { "rejected" }
    ))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match serve().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("http_api: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    // Each example keeps its state in a directory of its own, so that two can run at
    // once: `./durable-data/http_api`, or the directory `$DURABLE_DATA` names.
    let dir = std::env::var("DURABLE_DATA").unwrap_or_else(|_| "durable-data/http_api".to_owned());
    let runtime = Runtime::builder()
        .store_from_env(&dir)
        .register(compile_report)
        .register(city_reports)
        .register(approval)
        .register_entity::<Counter>()
        .start()
        .await?;
    let anonymous = std::env::var(http::KEY_VAR).is_err()
        && std::env::var(http::ANONYMOUS_VAR).is_ok_and(|value| value == "1");
    let key =
        std::env::var(http::KEY_VAR).unwrap_or_else(|_| format!("demo-{}", std::process::id()));
    let port = match std::env::var("DURABLE_HTTP_PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|_| format!("DURABLE_HTTP_PORT must be a port number, not `{port}`"))?,
        Err(_) => 7071,
    };
    let self_test = std::env::args().any(|arg| arg == "--self-test");
    let port = if self_test { 0 } else { port };
    let mut options = if anonymous {
        Options::anonymous()
    } else {
        Options::with_key(&key)
    };
    if let Ok(url) = std::env::var("DURABLE_HTTP_PUBLIC_URL") {
        options = options.public_base_url(url);
    }
    // The loopback interface only: with no key, nothing else may reach it.
    let server = http::serve(runtime.client(), ([127, 0, 0, 1], port), options).await?;
    let base = server.base_url();
    if anonymous {
        println!(
            "Durable Functions management API at {base}, WITHOUT a key ({}=1): loopback only\n",
            http::ANONYMOUS_VAR
        );
    } else {
        println!("Durable Functions management API at {base} (key: {key})\n");
    }
    println!("Start an orchestration (202 + Location):");
    println!(
        "  curl -i -X POST -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n    -d '[\"Tokyo\",\"Seattle\",\"London\"]' {base}/orchestrators/city_reports"
    );
    println!("Poll the Location until 200 (202 while it runs):");
    println!("  curl -i -H 'Authorization: Bearer {key}' {base}/instances/<id>");
    println!("Raise an event:");
    println!(
        "  curl -i -X POST -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' {base}/orchestrators/approval/req-1 -d '\"new laptop\"'"
    );
    println!(
        "  curl -i -X POST -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d true {base}/instances/req-1/raiseEvent/Approval"
    );
    println!("Signal the counter entity, then read it:");
    println!(
        "  curl -i -X POST -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d 5 '{base}/entities/counter/visits?op=add'"
    );
    println!("  curl -i -H 'Authorization: Bearer {key}' {base}/entities/counter/visits");
    println!("The OpenAPI document: curl {base}/openapi.json\n");

    if self_test {
        let outcome = run_session(&server, &key).await;
        drop(server);
        runtime.shutdown().await;
        return outcome;
    }
    // Ctrl-C or SIGTERM: a graceful stop, which the poison-activity guard does not count.
    durable::stop_signal().await?;
    server.shutdown().await;
    runtime.shutdown().await;
    Ok(())
}

/// The curl session above, over a plain TCP socket: start, poll 202 until 200.
async fn run_session(server: &Server, key: &str) -> Result<(), Box<dyn std::error::Error>> {
    let addr = server.local_addr();
    let start = http(
        addr,
        "POST",
        "/runtime/webhooks/durabletask/orchestrators/city_reports",
        key,
        "[\"Tokyo\",\"Seattle\"]",
    )
    .await?;
    println!("{}", start.lines().next().unwrap_or_default());
    let location = start
        .lines()
        .find_map(|line| line.strip_prefix("location: "))
        .ok_or("no Location header")?
        .trim()
        .to_owned();
    let path = location
        .split_once(&addr.to_string())
        .map(|(_, path)| path.to_owned())
        .ok_or("Location is not on this server")?;
    // The reports take 1.5 s; a minute without completion is a failure, not a wait.
    for _ in 0..120 {
        let poll = http(addr, "GET", &path, key, "").await?;
        let status_line = poll.lines().next().unwrap_or_default().to_owned();
        println!("GET {path} -> {status_line}");
        if status_line.contains(" 200 ") {
            let body = poll.split("\r\n\r\n").nth(1).unwrap_or_default();
            println!("{body}");
            if !body.contains("\"runtimeStatus\":\"Completed\"") {
                return Err("the instance did not complete".into());
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err("the instance did not complete within a minute".into())
}

/// One HTTP/1.1 request on a fresh connection; the whole response as text.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}
