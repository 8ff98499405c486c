//! Panics in user code that the runtime catches. A panicking activity, orchestrator or
//! entity operation is an outcome, not a crash: it fails its task or instance with the
//! panic's message, and every other instance keeps running. Rust's default panic hook
//! would still print it to stderr as `thread '…' panicked at …`, which reads like a crash;
//! so while user code runs under one of the runtime's `catch_unwind`s, a thread-local
//! says whose code it is ([`UserCode`]), and the runtime's hook logs such a panic once
//! through `tracing`, with the instance and the function, instead of passing it on.
//!
//! Every other panic goes to the hook that was installed before the runtime's (the
//! default one, or a test's or an application's own), as if the runtime were not there.
//! The hook is installed once per process, by the first runtime that starts; a hook set
//! after that replaces it, and then sees every panic, caught or not.

use durable_types::InstanceId;
use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::panic::PanicHookInfo;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    /// The user code running on this thread under a `catch_unwind` of the runtime.
    static RUNNING: RefCell<Option<UserCode>> = const { RefCell::new(None) };
}

/// Whose code runs: what a caught panic is logged with.
#[derive(Clone, Debug)]
pub(crate) struct UserCode {
    /// "activity", "orchestrator", "entity operation", ...
    kind: &'static str,
    /// The registered name (`send`, `Counter.add`).
    function: Cow<'static, str>,
    /// The instance it runs for, when there is one.
    instance: Option<InstanceId>,
}

impl UserCode {
    /// The code of `function`, a `kind`, running for `instance`.
    pub(crate) fn new(
        kind: &'static str,
        function: impl Into<Cow<'static, str>>,
        instance: Option<InstanceId>,
    ) -> UserCode {
        UserCode {
            kind,
            function: function.into(),
            instance,
        }
    }

    /// Runs `f` as this code: a panic inside is logged by the runtime's hook rather than
    /// printed. Only for code that runs under a `catch_unwind` of the runtime.
    pub(crate) fn run<T>(self, f: impl FnOnce() -> T) -> T {
        let _restore = Restore(RUNNING.with(|running| running.replace(Some(self))));
        f()
    }
}

/// Puts back what ran before, also when a panic unwinds through (the hook has run by
/// then: it runs where the panic starts).
struct Restore(Option<UserCode>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        // `try_with`: at thread exit the thread-local may be gone; nothing to restore then.
        let _ = RUNNING.try_with(|running| *running.borrow_mut() = previous);
    }
}

/// A future whose every poll runs as `code`.
pub(crate) struct UserFuture<F> {
    code: UserCode,
    future: F,
}

impl<F> UserFuture<F> {
    /// `future`, polled as `code`.
    pub(crate) fn new(code: UserCode, future: F) -> UserFuture<F> {
        UserFuture { code, future }
    }
}

impl<F: Future + Unpin> Future for UserFuture<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let future = &mut this.future;
        this.code.clone().run(|| Pin::new(future).poll(cx))
    }
}

/// Installs the runtime's panic hook in front of the current one, once per process.
pub(crate) fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !log_user_panic(info) {
                previous(info);
            }
        }));
    });
}

/// Logs `info` if it comes from user code that the runtime catches; returns whether it
/// did.
fn log_user_panic(info: &PanicHookInfo<'_>) -> bool {
    let code = RUNNING
        .try_with(|running| running.try_borrow().ok().and_then(|code| code.clone()))
        .ok()
        .flatten();
    let Some(code) = code else {
        return false;
    };
    let message = info.payload_as_str().unwrap_or("Box<dyn Any>");
    let location = info
        .location()
        .map(|location| location.to_string())
        .unwrap_or_default();
    // `RUST_BACKTRACE` decides, as for the default hook.
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
        _ => String::new(),
    };
    let instance = code.instance.as_ref().map_or("", InstanceId::as_str);
    tracing::error!(
        kind = code.kind,
        function = %code.function,
        instance,
        "{} `{}` panicked at {location}: {message} (caught: it fails with this message, and the runtime goes on){backtrace}",
        code.kind,
        code.function,
    );
    true
}
