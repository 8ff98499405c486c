//! Helpers shared by the integration tests of the workspace: bounded waits for states a
//! test cannot be told of directly, a side-effect log that activities append to (so a test
//! can count how often each one really ran, across processes), and ways to run a test body,
//! or a whole `harness = false` test binary, as a child process that a test can kill with
//! SIGKILL.
//!
//! None of these waits is for *time*: a test that needs a durable timer to come due moves a
//! manual clock (`durable::Clock::manual`). They poll for a state that settles after
//! messages the test cannot await (a signal an entity forwards, a lock released when an
//! orchestration ends, a child process's progress), and give up after [`PATIENCE`], which
//! only a broken test ever reaches.

pub mod postgres;

/// The variable that picks the store of the runtime integration tests that run on any
/// store ([`test_store`]): `memory` (the default) or `postgres` (then
/// [`postgres::SERVER_VAR`] must name a server, where each runtime gets a new database).
pub const STORE_VAR: &str = "DURABLE_TEST_STORE";

/// `builder` on the store this test run asks for ([`STORE_VAR`]): in memory, or a worker
/// of a new PostgreSQL database, so the same tests hold every store to the same behaviour.
///
/// # Panics
/// When [`STORE_VAR`] names a store that is not available.
pub fn test_store(builder: durable::RuntimeBuilder) -> durable::RuntimeBuilder {
    match std::env::var(STORE_VAR).as_deref() {
        Err(_) | Ok("" | "memory") => builder.in_memory(),
        Ok("postgres") => {
            assert!(
                std::env::var_os(postgres::SERVER_VAR).is_some(),
                "{STORE_VAR}=postgres needs {} to name a running server (`.ci/run` starts one)",
                postgres::SERVER_VAR
            );
            let server = postgres::Server::start().unwrap_or_else(|why| panic!("{why}"));
            let url = server
                .database("suite")
                .unwrap_or_else(|why| panic!("{why}"));
            builder.postgres(url)
        }
        Ok(other) => panic!("{STORE_VAR}={other}: the stores are `memory` and `postgres`"),
    }
}

use std::fmt::Debug;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::task::Poll;
use std::time::{Duration, Instant};

/// How long the waits of this crate give a condition before they fail the test: far more
/// than anything here takes on a loaded two-core machine, so that only a broken test waits
/// this long.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(5);

/// Waits, without blocking tokio, until `condition` holds.
///
/// # Panics
/// When it still does not hold after [`PATIENCE`], saying that the test waited for `what`.
pub async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} for {what}, in vain"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits, without blocking tokio, until `read` returns `expected`.
///
/// # Panics
/// When it still does not after [`PATIENCE`], with `what` and the last value read.
pub async fn eventually_eq<T: PartialEq + Debug>(
    what: &str,
    expected: T,
    mut read: impl AsyncFnMut() -> T,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let value = read().await;
        if value == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} for {what}: expected {expected:?}, last read {value:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `future` once, so that it runs up to the first point where it must wait, and
/// returns what that poll returned. For a test that must know a future has begun (a client
/// registered as a waiter, a shutdown under way) before it goes on.
pub async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
}

/// An append-only file of lines, one per side effect.
///
/// Each line is written with one `write` call on a file opened with `O_APPEND`, so lines
/// from concurrent writers do not interleave, and a process killed mid-write leaves at most
/// one incomplete last line, which [`SideEffectLog::lines`] ignores.
#[derive(Clone, Debug)]
pub struct SideEffectLog {
    path: PathBuf,
}

impl SideEffectLog {
    /// A log at `path` (created on first append).
    pub fn new(path: impl Into<PathBuf>) -> SideEffectLog {
        SideEffectLog { path: path.into() }
    }

    /// Appends one line.
    ///
    /// # Panics
    /// When the file cannot be written: a test cannot go on without its evidence.
    pub fn append(&self, line: &str) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", self.path.display()));
        let record = format!("{line}\n");
        file.write_all(record.as_bytes())
            .unwrap_or_else(|error| panic!("cannot append to {}: {error}", self.path.display()));
    }

    /// Every complete line so far.
    pub fn lines(&self) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Vec::new();
        };
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        complete
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Runs the test named `test` of the current test binary in a child process, with `env`
/// set. The child's stderr goes to this process's stderr (its stdout, the test harness chatter, is dropped).
///
/// # Panics
/// When the child cannot be started.
pub fn spawn_test_child(test: &str, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut command = Command::new(exe);
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("cannot start the child process")
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes; returns
/// whether it held. The blocking form of [`eventually`], for the parent side of the crash
/// tests.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    condition()
}

/// The values of the environment variables `names` in a child process, or `None` when one
/// is not set: the test function is then not running as a child, and returns at once.
pub fn child_env<const N: usize>(names: [&str; N]) -> Option<[String; N]> {
    let values = names.map(|name| std::env::var(name).ok());
    if values.iter().any(Option::is_none) {
        return None;
    }
    Some(values.map(Option::unwrap_or_default))
}

/// Runs `body` to its end on a new tokio runtime with two worker threads: the runtime of
/// the crash tests' child processes.
///
/// # Panics
/// When the runtime cannot be built.
pub fn block_on<F: Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
        .block_on(body)
}

/// Kills `child` with SIGKILL as soon as `ready` holds, or after [`PATIENCE`], and reaps
/// it; returns whether `ready` held (the test asserts it after the child is gone).
///
/// # Panics
/// When the child cannot be killed or reaped.
pub fn kill_when(mut child: Child, ready: impl FnMut() -> bool) -> bool {
    let ready = wait_until(PATIENCE, ready);
    child.kill().expect("cannot kill the child process"); // SIGKILL
    child.wait().expect("cannot reap the child process");
    ready
}

/// Waits for `child` to exit, up to twice [`PATIENCE`] (a child runs a whole workload).
///
/// # Panics
/// When it did not exit by then (it is killed first, so that it does not outlive the test)
/// or exited with a failure; the message names `what`.
pub fn expect_success(mut child: Child, what: &str) {
    let exited = wait_until(2 * PATIENCE, || {
        child.try_wait().is_ok_and(|status| status.is_some())
    });
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("cannot reap the child process");
    assert!(exited, "{what} did not finish in {:?}", 2 * PATIENCE);
    assert!(status.success(), "{what} failed: {status}");
}

/// Starts this executable again as a child process, with `args` and `env` set, its stdout
/// piped (read it with [`stdout_lines`]) and its stderr going to this process's stderr. For
/// test targets with `harness = false`, whose `main` tells from `env` that it is the child.
///
/// # Panics
/// When the child cannot be started.
pub fn spawn_self(args: &[&str], env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut command = Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("cannot start the child process")
}

/// The lines a child prints on its stdout, forwarded to a channel by a thread of their own,
/// so that a test can wait for one with [`Receiver::recv_timeout`]. The channel closes when
/// the child's stdout does (it exited or was killed).
///
/// # Panics
/// When the child's stdout was not piped, or was taken already.
pub fn stdout_lines(child: &mut Child) -> Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}
