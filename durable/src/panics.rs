//! Panics in user code that the runtime catches. A panicking activity, orchestrator or
//! entity operation is an outcome, not a crash: it fails its task or instance with the
//! panic's message, and every other instance keeps running. Rust's default panic hook
//! would still print it to stderr as `thread '…' panicked at …`, which reads like a crash;
//! so while user code runs under one of the runtime's `catch_unwind`s, a thread-local
//! says whose code it is ([`UserCode`]: two static strings, so that marking costs nothing
//! on the hot path), and the runtime's hook keeps such a panic's message and location
//! instead of passing it on. The site that catches it, which knows the instance, logs it
//! once through `tracing` ([`log_caught`]).
//!
//! Every other panic goes to the hook that was installed before the runtime's (the
//! default one, or a test's or an application's own), as if the runtime were not there.
//! The hook is installed once per process, by the first runtime that starts; a hook set
//! after that replaces it, and then sees every panic, caught or not.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::PanicHookInfo;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    /// The user code running on this thread under a `catch_unwind` of the runtime.
    static RUNNING: Cell<Option<UserCode>> = const { Cell::new(None) };
    /// The last panic of user code on this thread, until its catch site logs it.
    static CAUGHT: RefCell<Option<Caught>> = const { RefCell::new(None) };
}

/// Whose code runs: what a caught panic is logged with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UserCode {
    /// "activity", "orchestrator", "entity operation", ...
    kind: &'static str,
    /// The registered name (`send`, `Counter`).
    function: &'static str,
}

impl UserCode {
    /// The code of `function`, a `kind`.
    pub(crate) const fn new(kind: &'static str, function: &'static str) -> UserCode {
        UserCode { kind, function }
    }

    /// Runs `f` as this code: a panic inside is kept for [`log_caught`] rather than
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
        // `try_with`: at thread exit the thread-local may be gone; nothing to restore then.
        let _ = RUNNING.try_with(|running| running.set(self.0));
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
        this.code.run(|| Pin::new(future).poll(cx))
    }
}

/// A panic of user code, as the hook saw it.
struct Caught {
    code: UserCode,
    message: String,
    location: String,
    backtrace: String,
}

/// Installs the runtime's panic hook in front of the current one, once per process.
pub(crate) fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !keep_user_panic(info) {
                previous(info);
            }
        }));
    });
}

/// Keeps `info` for [`log_caught`] if it comes from user code that the runtime catches;
/// returns whether it did.
fn keep_user_panic(info: &PanicHookInfo<'_>) -> bool {
    let Some(code) = RUNNING.try_with(Cell::get).ok().flatten() else {
        return false;
    };
    let message = info.payload_as_str().unwrap_or("Box<dyn Any>").to_owned();
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
    let caught = Caught {
        code,
        message,
        location,
        backtrace,
    };
    CAUGHT
        .try_with(|kept| kept.try_borrow_mut().map(|mut kept| *kept = Some(caught)))
        .is_ok_and(|kept| kept.is_ok())
}

/// Logs, once, the panic of user code this thread caught last — called where the runtime
/// catches it, with the instance it ran for and, for an entity, the operation. Does
/// nothing when no panic is waiting (the cheap, common case).
pub(crate) fn log_caught(instance: Option<&str>, operation: Option<&str>) {
    let Some(caught) = CAUGHT
        .try_with(|kept| kept.try_borrow_mut().ok().and_then(|mut kept| kept.take()))
        .ok()
        .flatten()
    else {
        return;
    };
    let Caught {
        code,
        message,
        location,
        backtrace,
    } = caught;
    let function = match operation {
        Some(operation) => format!("{}.{operation}", code.function),
        None => code.function.to_owned(),
    };
    tracing::error!(
        kind = code.kind,
        function = %function,
        instance = instance.unwrap_or(""),
        "{} `{function}` panicked at {location}: {message} (caught: it fails with this message, and the runtime goes on){backtrace}",
        code.kind,
    );
}
