//! A panic in user code that the runtime catches (an activity, an orchestrator, an entity
//! operation) fails its task or instance and is logged once through `tracing`, naming the
//! instance and the function; Rust's default hook does not print it as if the process had
//! crashed. Any other panic still reaches the hook that was there before the runtime's.
//! What a process prints is only seen from outside: the test runs a child process and
//! reads its stderr.

use durable::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD: &str = "DURABLE_PANICS_CHILD";
const WAIT: Duration = Duration::from_secs(60);

#[activity]
async fn explode(_ctx: ActivityContext, _input: ()) -> Result<(), Error> {
    panic!("activity exploded");
}

#[orchestrator]
async fn self_destruct(_ctx: OrchestrationContext, _input: ()) -> Result<(), Error> {
    panic!("orchestrator exploded");
}

#[derive(Default, Serialize, Deserialize)]
struct Fuse {
    lit: bool,
}

#[entity]
impl Fuse {
    fn blow(&mut self) {
        self.lit = true;
        panic!("entity exploded");
    }
}

/// Calls what panics and reports what it got back.
#[orchestrator]
async fn call_what_explodes(ctx: OrchestrationContext, _input: ()) -> Result<String, Error> {
    let activity = ctx.call_activity(explode, ()).await.unwrap_err();
    let entity = ctx.entity::<Fuse>("f").blow().await.unwrap_err();
    Ok(format!("{activity:?} | {entity:?}"))
}

/// A `tracing` subscriber that writes each event as one `LOG` line to stderr.
struct StderrLog;

impl tracing::Subscriber for StderrLog {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = format!("LOG {}", event.metadata().level());
        event.record(&mut Fields(&mut line));
        eprintln!("{}", line.replace('\n', " / "));
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

/// The child: a hook of its own (as a test or an application may have), then a runtime
/// whose user code panics three ways, then a panic outside user code.
#[test]
fn child() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    tracing::subscriber::set_global_default(StderrLog).unwrap();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("OWN HOOK saw a panic");
        previous(info);
    }));
    durable_testkit::block_on(async {
        let runtime = Runtime::builder()
            .in_memory()
            .register(explode)
            .register(self_destruct)
            .register(call_what_explodes)
            .register_entity::<Fuse>()
            .start()
            .await
            .unwrap();
        let client = runtime.client();
        let calls = client.start(call_what_explodes, ()).await.unwrap();
        let got = calls.wait(WAIT).await.unwrap();
        assert!(got.contains("activity exploded"), "{got}");
        assert!(got.contains("entity exploded"), "{got}");
        let failed = client.start_with_id(self_destruct, "sd", ()).await.unwrap();
        let error = failed.wait(WAIT).await.unwrap_err();
        assert!(
            error.to_string().contains("orchestrator exploded"),
            "{error}"
        );
        runtime.shutdown().await;
    });
    let outside = std::panic::catch_unwind(|| panic!("not user code"));
    assert!(outside.is_err());
    eprintln!("CHILD DONE");
}

#[test]
fn caught_user_panics_are_logged_once_and_not_printed_as_crashes() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(exe)
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the child failed:\n{stderr}");
    assert!(stderr.contains("CHILD DONE"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();

    // The default hook printed one panic: the one outside user code, through the child's
    // own hook, which saw only that one.
    let printed: Vec<usize> = (0..lines.len())
        .filter(|&at| lines[at].starts_with("thread '") && lines[at].contains("panicked at"))
        .collect();
    assert_eq!(printed.len(), 1, "{stderr}");
    assert_eq!(
        lines.get(printed[0] + 1),
        Some(&"not user code"),
        "{stderr}"
    );
    let own_hook = lines.iter().filter(|line| line.starts_with("OWN HOOK"));
    assert_eq!(own_hook.count(), 1, "{stderr}");

    // Each caught panic is logged once, as an error naming the function and the instance.
    for (function, message, instance) in [
        ("activity `explode`", "activity exploded", None),
        (
            "orchestrator `self_destruct`",
            "orchestrator exploded",
            Some("sd"),
        ),
        (
            "entity operation `fuse.blow`",
            "entity exploded",
            Some("@fuse@f"),
        ),
    ] {
        let logged: Vec<&&str> = lines
            .iter()
            .filter(|line| line.starts_with("LOG ERROR") && line.contains(message))
            .collect();
        assert_eq!(logged.len(), 1, "{message}: {stderr}");
        let line = logged[0];
        assert!(line.contains(&format!("{function} panicked at")), "{line}");
        assert!(line.contains("tests/panics.rs"), "{line}");
        if let Some(instance) = instance {
            assert!(line.contains(&format!("instance=\"{instance}\"")), "{line}");
        }
    }
}
