//! A minimal HTTP/1.1 client for the `http-start` workload: one keep-alive connection over a
//! tokio `TcpStream`, one request at a time, bodies framed by `Content-Length` only. The
//! workspace has no HTTP client crate and the bench adds no dependency; this is enough to
//! drive the management API on loopback. Anything it does not expect — a chunked body, a
//! closed connection, headers or a body over its bounds — is an error, never a guess.

use crate::BenchError;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Bound on the status line and headers of one response.
const MAX_HEAD_BYTES: u64 = 16 * 1024;
/// Bound on one response body; the management API's answers here are a few hundred bytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One keep-alive connection to the server, authorized with a bearer key.
pub struct Connection {
    stream: BufReader<TcpStream>,
    host: String,
    key: String,
    /// Reused for every request, so a request costs one `write` and no allocation.
    request: Vec<u8>,
    /// The server said `Connection: close`: no further request may be sent.
    closed: bool,
}

/// A response: its status code and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, BenchError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            BenchError::Failed(format!(
                "HTTP {} body is not JSON ({error}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ))
        })
    }
}

fn failed(what: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(format!("HTTP client: {what}"))
}

impl Connection {
    /// Connects to `addr`; every request will carry `Authorization: Bearer <key>`.
    pub async fn open(addr: SocketAddr, key: &str) -> Result<Connection, BenchError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|error| failed(format!("cannot connect to {addr}: {error}")))?;
        // Requests are written whole; Nagle would only delay them.
        stream.set_nodelay(true).map_err(failed)?;
        Ok(Connection {
            stream: BufReader::new(stream),
            host: addr.to_string(),
            key: key.to_owned(),
            request: Vec::with_capacity(512),
            closed: false,
        })
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Response, BenchError> {
        self.send("POST", path, Some(body)).await
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<Response, BenchError> {
        self.send("GET", path, None).await
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, BenchError> {
        if self.closed {
            return Err(failed("the server closed this keep-alive connection"));
        }
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n",
                self.host, self.key
            )
            .as_bytes(),
        );
        if let Some(body) = body {
            self.request.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        self.request.extend_from_slice(b"\r\n");
        if let Some(body) = body {
            self.request.extend_from_slice(body);
        }
        self.stream
            .get_mut()
            .write_all(&self.request)
            .await
            .map_err(|error| failed(format!("{method} {path}: {error}")))?;
        self.read_response()
            .await
            .map_err(|error| failed(format!("{method} {path}: {error}")))
    }

    async fn read_response(&mut self) -> Result<Response, String> {
        let mut head = (&mut self.stream).take(MAX_HEAD_BYTES);
        let mut line = String::new();
        read_line(&mut head, &mut line).await?;
        let status = parse_status_line(&line)?;
        let mut content_length = None;
        loop {
            line.clear();
            read_line(&mut head, &mut line).await?;
            let header = line.trim_end_matches(['\r', '\n']);
            if header.is_empty() {
                break;
            }
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| format!("malformed header line {header:?}"))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let length: usize = value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?;
                content_length = Some(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!(
                    "Transfer-Encoding {value:?}: this client reads Content-Length bodies only"
                ));
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                self.closed = true;
            }
        }
        let length =
            content_length.ok_or_else(|| format!("HTTP {status} without Content-Length"))?;
        if length > MAX_BODY_BYTES {
            return Err(format!("a body of {length} bytes is over the bound"));
        }
        let mut body = vec![0; length];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|error| format!("reading a body of {length} bytes: {error}"))?;
        Ok(Response { status, body })
    }
}

/// Reads one line; a line cut short by the end of the stream (or by the head's bound) is
/// an error.
async fn read_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    line: &mut String,
) -> Result<(), String> {
    let read = reader
        .read_line(line)
        .await
        .map_err(|error| format!("reading the response head: {error}"))?;
    if read == 0 || !line.ends_with('\n') {
        return Err(format!(
            "the response head ended early or is over {MAX_HEAD_BYTES} bytes: {line:?}"
        ));
    }
    Ok(())
}

/// `HTTP/1.1 202 Accepted` → 202.
fn parse_status_line(line: &str) -> Result<u16, String> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some("HTTP/1.1" | "HTTP/1.0"), Some(Ok(status))) => Ok(status),
        _ => Err(format!("malformed status line {line:?}")),
    }
}
